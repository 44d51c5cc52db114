"""A real Python venv (with a C extension from PyPI) imported, mounted elsewhere, and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.fusemount import mounted, requires_fuse, run_holofs

from holofs.library import Hololib

pytestmark = [requires_fuse, pytest.mark.fuse]

VENV_ID = "hvenv00_0123456789abcdeft"
MOUNT_ID = "hvenv00_0123456789abcdefu"  # same length, same base directory


@pytest.fixture(scope="session")
def venv_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A venv with markupsafe (C extension) built once per session, imported: (catalog, base)."""
    base = tmp_path_factory.mktemp("venvbase")
    venv = base / VENV_ID
    subprocess.run([sys.executable, "-m", "venv", os.fspath(venv)], check=True, capture_output=True)
    pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
                          "--no-cache-dir", "--only-binary", ":all:", "markupsafe"], capture_output=True, text=True)
    if pip.returncode != 0:
        pytest.fail(f"pip install markupsafe failed (PyPI must be reachable):\n{pip.stderr[-2000:]}")
    proc = run_holofs("import", venv, "--hololib", base / "hololib", "--json", "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    catalogs = Hololib.open(base / "hololib").catalog_paths()
    assert len(catalogs) == 1
    return catalogs[0], base


def test_mounted_venv_runs_with_c_extension_and_pip(venv_catalog: tuple[Path, Path], tmp_path: Path) -> None:
    catalog, base = venv_catalog
    target = base / MOUNT_ID
    with mounted(catalog, target, cache=tmp_path / "cache") as m:
        python = m.mountpoint / "bin" / "python"
        # bin/python is the venv's symlink to the base interpreter, recorded verbatim
        assert os.readlink(python) == os.readlink(base / VENV_ID / "bin" / "python")
        code = ("import sys, json, markupsafe\n"
                "from markupsafe import _speedups\n"
                "print(json.dumps({'prefix': sys.prefix, 'ext': _speedups.__file__,"
                " 'escaped': str(markupsafe.escape('<a&b>'))}))")
        run = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONNOUSERSITE": "1"})
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["prefix"] == os.fspath(target)
        assert out["ext"].startswith(os.fspath(target) + "/") and out["ext"].endswith(".so")
        assert out["escaped"] == "&lt;a&amp;b&gt;"
        # console scripts were relocated: their shebang points into the mount
        shebang = (m.mountpoint / "bin" / "pip").read_bytes().split(b"\n", 1)[0]
        assert shebang.startswith(b"#!" + os.fsencode(target / "bin" / "python")), shebang
        pip = subprocess.run([m.mountpoint / "bin" / "pip", "list", "--disable-pip-version-check"],
                             capture_output=True, text=True, cwd=tmp_path)
        assert pip.returncode == 0, pip.stderr
        assert any(line.split()[:1] == ["MarkupSafe"] for line in pip.stdout.splitlines())
        # the read-only mount kept Python from writing bytecode, and nothing else broke
        assert not list(m.mountpoint.rglob("__pycache__"))
        stats = m.stats()
        assert stats["fills"] > 0 and set(stats["per_key"].values()) == {1}
