"""Smoke test of the benchmark scripts: each parses its arguments and prints help (no network, no timing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("script", ["build_corpus.py", "bench_materialize.py", "bench_mount.py"])
def test_script_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "--work" in proc.stdout
