"""A real Python venv (with a C extension from PyPI) imported, mounted elsewhere, and run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.fusemount import mounted, requires_fuse
from support.venvs import MOUNT_ID, VENV_ID, build_venv_catalog, python_env

pytestmark = [requires_fuse, pytest.mark.fuse]


@pytest.fixture(scope="module")
def venv_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The session's venv with markupsafe, imported: (catalog, base)."""
    return build_venv_catalog(tmp_path_factory)


def test_mounted_venv_runs_with_c_extension_and_pip(venv_catalog: tuple[Path, Path], tmp_path: Path) -> None:
    catalog, base = venv_catalog
    target = base / MOUNT_ID
    with mounted(catalog, target, cache=tmp_path / "cache", args=("--read-only",)) as m:
        python = m.mountpoint / "bin" / "python"
        # bin/python is the venv's symlink to the base interpreter, recorded verbatim
        assert os.readlink(python) == os.readlink(base / VENV_ID / "bin" / "python")
        code = ("import sys, json, markupsafe\n"
                "from markupsafe import _speedups\n"
                "print(json.dumps({'prefix': sys.prefix, 'ext': _speedups.__file__,"
                " 'escaped': str(markupsafe.escape('<a&b>'))}))")
        run = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                             env=python_env())
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["prefix"] == os.fspath(target)
        assert out["ext"].startswith(os.fspath(target) + "/") and out["ext"].endswith(".so")
        assert out["escaped"] == "&lt;a&amp;b&gt;"
        # console scripts were relocated: their shebang points into the mount
        shebang = (m.mountpoint / "bin" / "pip").read_bytes().split(b"\n", 1)[0]
        assert shebang.startswith(b"#!" + os.fsencode(target / "bin" / "python")), shebang
        pip = subprocess.run([m.mountpoint / "bin" / "pip", "list", "--disable-pip-version-check"],
                             capture_output=True, text=True, cwd=tmp_path, env=python_env())
        assert pip.returncode == 0, pip.stderr
        assert any(line.split()[:1] == ["MarkupSafe"] for line in pip.stdout.splitlines())
        # bytecode writing was on (python_env): the read-only mount refused it, and nothing else broke
        assert not list(m.mountpoint.rglob("__pycache__"))
        stats = m.stats()
        assert stats["fills"] > 0 and set(stats["per_key"].values()) == {1}
