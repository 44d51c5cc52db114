"""Shared fixtures: the real RCC hololib fixture and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HOLOFS_SHARED", REPO.parent / "shared"))
RCC_FIXTURE_ZIP = SHARED / "fixtures" / "rcc-simple_linux.zip"
RCC_CATALOG_NAME = "c34ed96c2d8a459av12.linux_amd64"


@pytest.fixture(scope="session")
def rcc_fixture_zip() -> Path:
    if not RCC_FIXTURE_ZIP.is_file():
        pytest.fail(f"RCC fixture missing: {RCC_FIXTURE_ZIP} (shared/ must sit beside the checkout)")
    return RCC_FIXTURE_ZIP


@pytest.fixture
def rcc_hololib(tmp_path: Path, rcc_fixture_zip: Path) -> Path:
    """A fresh, writable copy of the real RCC hololib (the zip itself is never touched)."""
    root = tmp_path / "rcc-hololib"
    with zipfile.ZipFile(rcc_fixture_zip) as zf:
        for member in zf.infolist():
            name = member.filename.replace("\\", "/")
            if name.endswith("/"):
                continue
            dest = root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(member))
    return root


@pytest.fixture
def rcc_catalog(rcc_hololib: Path) -> Path:
    return rcc_hololib / "catalog" / RCC_CATALOG_NAME


def run_holofs(*args: str | os.PathLike[str], check: bool = False, input: str | None = None,
               env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``holofs`` CLI in a subprocess (as a user would)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "holofs", *map(os.fspath, args)],
        capture_output=True, text=True, input=input, env=full_env, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"holofs {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def holofs_cli():
    return run_holofs
