"""Real shared libraries for tests, compiled with the machine's C compiler (the dev setup
installs gcc, which also builds holofs' native modules)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def compiler() -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler: scripts/dev.sh installs gcc")
    return cc


def shared_library(out: Path, *, needs: tuple[Path, ...] = (), runpath: str | None = None, symbol: str = "f") -> Path:
    """Compile a one-function shared library at ``out`` that links to the libraries ``needs``
    (DT_NEEDED by their file names) with ``runpath`` as its DT_RUNPATH."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_name(out.name + ".c")
    src.write_text(f"int {symbol}(void) {{ return 42; }}\n")
    cmd = [compiler(), "-shared", "-fPIC", "-o", str(out), str(src), "-Wl,--no-as-needed"]
    for lib in needs:
        cmd += [f"-L{lib.parent}", f"-l:{lib.name}"]
    if runpath is not None:
        cmd.append(f"-Wl,--enable-new-dtags,-rpath,{runpath}")
    subprocess.run(cmd, check=True, capture_output=True)
    src.unlink()
    return out
