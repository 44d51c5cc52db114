"""A real Python venv from PyPI (with a C extension), imported into a hololib once per session.

Several test modules mount it; :func:`build_venv_catalog` builds it at most once per pytest
session (a module-level memo; each module wraps it in its own fixture). Also :func:`write_wheel`: a tiny pure-Python wheel
zipped by hand, for ``pip install`` without network.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from holofs.library import Hololib
from support.fusemount import run_holofs

VENV_ID = "hvenv00_0123456789abcdeft"
MOUNT_ID = "hvenv00_0123456789abcdefu"  # same length, same base directory
PACKAGE = "markupsafe"

_built: dict[str, tuple[Path, Path]] = {}


def python_env(**extra: str) -> dict[str, str]:
    """The environment for interpreters run in a mount: bytecode writing allowed, no user site."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def build_venv_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(catalog path, base dir): ``base/VENV_ID`` is a venv with markupsafe, imported to ``base/hololib``."""
    if "venv" in _built:
        return _built["venv"]
    base = tmp_path_factory.mktemp("venvbase")
    venv = base / VENV_ID
    subprocess.run([sys.executable, "-m", "venv", os.fspath(venv)], check=True, capture_output=True)
    pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
                          "--no-cache-dir", "--only-binary", ":all:", PACKAGE], capture_output=True, text=True)
    if pip.returncode != 0:
        pytest.fail(f"pip install {PACKAGE} failed (PyPI must be reachable):\n{pip.stderr[-2000:]}")
    proc = run_holofs("import", venv, "--hololib", base / "hololib", "--json", "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    catalogs = Hololib.open(base / "hololib").catalog_paths()
    assert len(catalogs) == 1
    _built["venv"] = (catalogs[0], base)
    return _built["venv"]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(directory: Path, name: str = "holotiny", version: str = "1.0",
                source: str = "VALUE = 42\n") -> Path:
    """A valid pure-Python wheel ``<name>-<version>-py3-none-any.whl`` with one module package."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: holofs-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist_info}/RECORD", record)
    return wheel
