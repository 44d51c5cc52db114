"""ELF dependency lookup for the mount's read-ahead, on libraries built by the real toolchain."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from support.elf import shared_library

from holofs.elfdeps import needed, needed_in_tree


def _needed(path: Path) -> tuple[list[str], list[str]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return needed(fd)
    finally:
        os.close(fd)


def test_reads_needed_libraries_and_runpath_as_the_linker_does(tmp_path: Path) -> None:
    dep = shared_library(tmp_path / "pkg.libs" / "libdep-1a2b.so.1", symbol="g")
    ext = shared_library(tmp_path / "pkg" / "sub" / "_ext.so", needs=(dep,), runpath="$ORIGIN/../../pkg.libs:/opt/x")
    names, search = _needed(ext)
    assert "libdep-1a2b.so.1" in names and "libc.so.6" in names
    assert search == ["$ORIGIN/../../pkg.libs", "/opt/x"]
    fd = os.open(ext, os.O_RDONLY)
    try:
        paths = needed_in_tree(fd, "pkg/sub/_ext.so")
        assert "pkg.libs/libdep-1a2b.so.1" in paths
        assert all(p.startswith("pkg.libs/") for p in paths)  # /opt/x is not $ORIGIN-relative
        # the same file recorded one level higher: $ORIGIN/../.. leaves the tree, nothing is returned
        assert needed_in_tree(fd, "_ext.so") == []
    finally:
        os.close(fd)
    assert _needed(dep) == (["libc.so.6"], [])


def test_anything_else_has_no_dependencies(tmp_path: Path) -> None:
    lib = shared_library(tmp_path / "libx.so", runpath="$ORIGIN")
    data = lib.read_bytes()
    cases = {"empty": b"", "text": b"import os\n" * 100, "elf header only": data[:64],
             "cut in the dynamic section": data[: len(data) // 2], "32-bit": data[:4] + b"\x01" + data[5:],
             "big-endian": data[:5] + b"\x02" + data[6:]}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert _needed(path) == ([], []), name
    assert _needed(Path(sys.executable).resolve())[0]  # a real executable parses too
