"""ELF dependency lookup for the mount's read-ahead, on libraries built by the real toolchain."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

from support.elf import shared_library

from holofs import elfdeps
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


def _elf(names: list[str], runpath: str) -> bytes:
    """A minimal 64-bit little-endian ELF file: one PT_LOAD over everything, a PT_DYNAMIC with
    DT_NEEDED entries and a DT_RUNPATH, and their string table."""
    strtab = b"\0" + b"".join(os.fsencode(n) + b"\0" for n in [runpath, *names])
    offsets, at = [], 1
    for text in [runpath, *names]:
        offsets.append(at)
        at += len(os.fsencode(text)) + 1
    dyn_at = 64 + 2 * 56
    dyn = [(elfdeps.DT_NEEDED, off) for off in offsets[1:]] + [(elfdeps.DT_RUNPATH, offsets[0])]
    str_at = dyn_at + 16 * (len(dyn) + 3)
    dyn += [(elfdeps.DT_STRTAB, str_at), (elfdeps.DT_STRSZ, len(strtab)), (elfdeps.DT_NULL, 0)]
    total = str_at + len(strtab)
    head = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", elfdeps.PT_LOAD, 4, 0, 0, 0, total, total, 4096)
    phdrs += struct.pack("<IIQQQQQQ", elfdeps.PT_DYNAMIC, 4, dyn_at, dyn_at, dyn_at, 16 * len(dyn), 16 * len(dyn), 8)
    return head + phdrs + b"".join(struct.pack("<qQ", t, v) for t, v in dyn) + strtab


def test_hostile_libraries_cannot_make_the_read_ahead_loop_long(tmp_path: Path) -> None:
    """Thousands of needed names or search paths are cut to a few; names with a slash and
    search paths that leave the tree are dropped."""
    path = tmp_path / "lib.so"
    path.write_bytes(_elf(["libok.so", "sub/libslash.so"], "$ORIGIN/x:$ORIGIN/../../../..:${ORIGIN}/y"))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert needed(fd) == (["libok.so", "sub/libslash.so"], ["$ORIGIN/x", "$ORIGIN/../../../..", "${ORIGIN}/y"])
        assert needed_in_tree(fd, "a/lib.so") == ["a/x/libok.so", "a/y/libok.so"]
    finally:
        os.close(fd)
    path.write_bytes(_elf([f"lib{i}.so" for i in range(5000)], ":".join(f"$ORIGIN/{i}" for i in range(500))))
    fd = os.open(path, os.O_RDONLY)
    try:
        names, search = needed(fd)
        assert len(names) == elfdeps.NEEDED_MAX and len(search) == elfdeps.SEARCH_MAX
        assert len(needed_in_tree(fd, "lib.so")) == elfdeps.NEEDED_MAX * elfdeps.SEARCH_MAX
    finally:
        os.close(fd)
