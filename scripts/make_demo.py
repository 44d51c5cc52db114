#!/usr/bin/env python3
"""Build a small, self-made demo environment, import it with holofs and show it off.

Creates ``demo/holotree/h0123456_demo0000000000t`` (a few hundred files shaped like a Python
environment: launcher scripts with the identity in their shebang, site-packages, a small
.so-like binary with an RPATH-like string, symlinks), imports it into ``demo/hololib``, runs
``holofs info`` and ``holofs ls``, and, when the ``materialize`` command exists, restores it
next to the recorded path and checks every file against the original (identity rewritten).

Everything lives under ``./demo`` (or ``--dir``), which is rebuilt on each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

IDENTITY = "h0123456_demo0000000000t"
TARGET_IDENTITY = "h0123456_demo0000000001t"  # same length, same base dir: RCC's relocation rule
MARKER = ".holofs-demo"
KILL = {"__MACOSX", "__pycache__", ".pyc", ".git", ".hg", ".svn", ".gitignore"}


def ignored(name: str) -> bool:
    dot = name.rfind(".")
    return name in KILL or (dot >= 0 and name[dot:] in KILL)


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def build_env(root: Path) -> None:
    """A fake but realistic Python environment recorded at ``root``."""
    prefix = str(root).encode()
    py = "python3.12"
    write(root / "bin" / "python", b"#!/bin/sh\n# demo interpreter launcher for " + prefix + b"\n"
          b'exec /usr/bin/env python3 "$@"\n', 0o755)
    os.symlink("python", root / "bin" / "python3")
    os.symlink("python", root / "bin" / py)
    for tool in ("pip", "pip3", "demo-cli", "robot", "wheel"):
        write(root / "bin" / tool, b"#!" + prefix + b"/bin/python3\n# -*- coding: utf-8 -*-\nimport sys\n"
              b"from " + tool.replace("-", "_").encode() + b".main import main\nsys.exit(main())\n", 0o755)
    write(root / "bin" / "activate", b"export VIRTUAL_ENV=" + prefix + b"\nexport PATH=\"$VIRTUAL_ENV/bin:$PATH\"\n")
    write(root / "pyvenv.cfg", b"home = /usr/bin\nversion = 3.12.0\nprefix = " + prefix + b"\n")
    # A small ELF-looking shared object with an RPATH-like string.
    blob = bytearray(b"\x7fELF\x02\x01\x01\x00" + bytes(56))
    blob += bytes((i * 37) & 0xFF for i in range(8192))
    blob += b"\x00$ORIGIN/../lib:" + prefix + b"/lib\x00libpython3.12.so.1.0\x00"
    write(root / "lib" / "libdemo.so.1.0", bytes(blob), 0o755)
    os.symlink("libdemo.so.1.0", root / "lib" / "libdemo.so.1")
    os.symlink("libdemo.so.1", root / "lib" / "libdemo.so")
    os.symlink("lib", root / "lib64")  # a symlinked directory: recorded, contents shadowed
    site = root / "lib" / py / "site-packages"
    for p in range(12):
        pkg = f"demopkg{p:02d}"
        for m in range(18):
            body = "".join(f"def f{m}_{k}(x):\n    return x * {k} + {m}\n\n" for k in range(20 + m))
            write(site / pkg / f"mod{m:02d}.py", f'"""{pkg}.mod{m:02d}"""\n\n{body}'.encode())
        write(site / pkg / "__init__.py", f'__version__ = "1.{p}.0"\n'.encode())
        write(site / pkg / "py.typed", b"")  # empty files share one blob
        info = site / f"{pkg}-1.{p}.0.dist-info"
        write(info / "METADATA", f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 1.{p}.0\n".encode())
        write(info / "INSTALLER", b"pip\n")
        write(info / "LICENSE", b"Apache License 2.0 (demo text, identical in every package)\n" * 40)
        write(info / "direct_url.json", b'{"url": "file://' + prefix + b'/wheels"}\n')
        write(info / "RECORD", "".join(f"{pkg}/mod{m:02d}.py,,\n" for m in range(18)).encode())
    # Things RCC never records (they must not show up in the catalog).
    write(site / "demopkg00" / "__pycache__" / "mod00.cpython-312.pyc", b"\x00bytecode")
    write(root / "conda-meta" / "history", b"==> 2024-01-01 00:00:00 <==\n# cmd: create -p " + prefix + b"\n")
    write(root / "identity.yaml", b"name: demo\nchannels: [conda-forge]\n")


def holofs(*args: object, capture: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "holofs", *map(str, args)]
    print("$ holofs " + " ".join(map(str, args)), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=capture)
    if proc.returncode != 0:
        if capture:
            sys.stderr.write(proc.stderr)
        raise SystemExit(f"make_demo: 'holofs {args[0]}' failed with exit code {proc.returncode}")
    return proc


def has_command(name: str) -> bool:
    proc = subprocess.run([sys.executable, "-m", "holofs", name, "--help"], capture_output=True, text=True)
    return proc.returncode == 0


def compare(original: Path, restored: Path, old: bytes, new: bytes) -> list[str]:
    """Differences between the original tree (identity swapped) and a restored one."""
    problems: list[str] = []
    for dirpath, dirs, files in os.walk(original):
        dirs[:] = [d for d in dirs if not ignored(d)]
        rel_dir = Path(dirpath).relative_to(original)
        for name in [*files, *dirs]:
            if ignored(name):
                continue
            src, dst = Path(dirpath, name), restored / rel_dir / name
            rel = str(rel_dir / name)
            if src.is_symlink():
                if not dst.is_symlink() or os.readlink(dst) != os.readlink(src):
                    problems.append(f"{rel}: symlink differs")
                if name in dirs:
                    dirs.remove(name)  # never descend into symlinked directories
                continue
            if src.is_dir():
                if not dst.is_dir():
                    problems.append(f"{rel}: directory missing")
                continue
            if not dst.is_file() or dst.is_symlink():
                problems.append(f"{rel}: file missing")
                continue
            if dst.read_bytes() != src.read_bytes().replace(old, new):
                problems.append(f"{rel}: content differs")
            if stat.S_IMODE(dst.stat().st_mode) != stat.S_IMODE(src.stat().st_mode):
                problems.append(f"{rel}: mode differs")
    for dirpath, _dirs, files in os.walk(restored):
        for name in files:
            rel = Path(dirpath, name).relative_to(restored)
            if not os.path.lexists(original / rel):
                problems.append(f"{rel}: extra file")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="demo", help="working directory for the demo (default: ./demo)")
    args = parser.parse_args()
    base = Path(args.dir).absolute()
    if base.exists():
        if not (base / MARKER).exists():
            raise SystemExit(f"make_demo: {base} exists and was not made by this script; pass --dir elsewhere")
        if has_command("umount"):  # a mount left from an earlier demo would make rmtree fail
            for target in (base / "holotree").glob("*"):
                if os.path.ismount(target):
                    subprocess.run([sys.executable, "-m", "holofs", "umount", str(target)], capture_output=True)
        shutil.rmtree(base)
    base.mkdir(parents=True)
    (base / MARKER).write_text("created by scripts/make_demo.py; safe to delete\n")
    holotree, hololib = base / "holotree", base / "hololib"
    env = holotree / IDENTITY
    env.mkdir(parents=True)
    build_env(env)
    n_files = sum(len(f) for _, _, f in os.walk(env))
    print(f"built demo environment {env} ({n_files} files)")

    result = json.loads(holofs("import", env, "--hololib", hololib, "--json", capture=True).stdout)
    print(f"  catalog {result['catalog']}: {result['files']} files, {result['symlinks']} symlinks, "
          f"{result['distinct_blobs']} blobs, {result['relocated_files']} files carry the identity")
    catalog = result["catalog"]
    holofs("info", catalog)
    listing = holofs("ls", catalog, capture=True).stdout.splitlines()
    print("\n".join(listing[:25]))
    print(f"  ... ({len(listing)} entries)")

    if not has_command("materialize"):
        print("holofs materialize is not available in this build: skipping the restore check")
        return 0
    target = holotree / TARGET_IDENTITY
    holofs("materialize", catalog, target)
    problems = compare(env, target, IDENTITY.encode(), TARGET_IDENTITY.encode())
    if problems:
        print(f"materialized tree differs from the original in {len(problems)} places:", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"materialized {target}: identical to the original with the identity rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
