"""holofs._fuseshim's loading rules (a real mount with and without it: tests/test_mount.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the shim is Linux-only")


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_frontend_loads_the_shim_before_pyfuse3() -> None:
    out = _run("""
        import sys
        from holofs.frontends import fuse, fuse_shim
        assert fuse_shim.load() is not None, "the shim is not built"
        print(sorted(m for m in sys.modules if m in ("pyfuse3", "holofs._fuseshim")))
        print(fuse_shim.installed(), fuse_shim.active())
    """)
    assert out.splitlines() == ["['holofs._fuseshim', 'pyfuse3']", "False False"]  # no session yet


def test_too_late_after_pyfuse3_the_mount_works_the_ordinary_way() -> None:
    out = _run("""
        import pyfuse3
        from holofs.frontends import fuse_shim
        print(fuse_shim.load(), fuse_shim.installed(), fuse_shim.active())
    """)
    assert out == "None False False"
