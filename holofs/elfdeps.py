"""The shared libraries an ELF file asks the dynamic linker for, found inside one tree.

A mount's read-ahead (:mod:`holofs.vtree`) uses this: once an extension module is in the
cache, the libraries it needs from its own wheel (auditwheel puts them in ``<dist>.libs/``
and points ``RUNPATH`` there with ``$ORIGIN``) are filled next, before the dynamic linker
opens them. Only 64-bit little-endian ELF (x86-64, aarch64) is read; anything else, or a file
that does not parse, has no dependencies here. Nothing is resolved outside the tree: search
paths that are not ``$ORIGIN``-relative are ignored.
"""

from __future__ import annotations

import os
import posixpath
import struct

_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_DYN = struct.Struct("<qQ")
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 15, 29
MAX_TABLE = 1 << 20
"""Bytes read at most for the program headers, the dynamic section or the strings wanted."""
STRING_MAX = 4096
"""Longest library name or search path read."""
NEEDED_MAX = 256
SEARCH_MAX = 16
"""At most this many needed names and search path entries are used (real libraries have a
handful; a hostile file must not turn the read-ahead into a long loop)."""


def _read(fd: int, size: int, offset: int) -> bytes:
    if size < 0 or size > MAX_TABLE:
        raise ValueError("table too big")
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise ValueError("short read")
    return data


def _string(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    if offset >= len(table) or end < 0:
        raise ValueError("string outside the table")
    return os.fsdecode(table[offset:end])


def needed(fd: int) -> tuple[list[str], list[str]]:
    """``(DT_NEEDED names, search path entries)`` of the ELF file open at ``fd`` (RUNPATH, or
    RPATH without one); ``([], [])`` if it is not a 64-bit little-endian ELF file."""
    try:
        head = _read(fd, _HEADER.size, 0)
        ident, _type, _machine, _version, _entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum, *_ = (
            _HEADER.unpack(head))
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1 or phentsize != _PHDR.size:
            return [], []
        phdrs = _read(fd, phentsize * phnum, phoff)
        loads, dynamic = [], None
        for i in range(phnum):
            p_type, _pf, p_offset, p_vaddr, _pa, p_filesz, _memsz, _align = _PHDR.unpack_from(phdrs, i * phentsize)
            if p_type == PT_LOAD:
                loads.append((p_vaddr, p_filesz, p_offset))
            elif p_type == PT_DYNAMIC:
                dynamic = (p_offset, p_filesz)
        if dynamic is None:
            return [], []
        dyn = _read(fd, dynamic[1] - dynamic[1] % _DYN.size, dynamic[0])
        tags: dict[int, list[int]] = {}
        for tag, value in _DYN.iter_unpack(dyn):
            if tag == DT_NULL:
                break
            tags.setdefault(tag, []).append(value)
        strtab, strsz = tags.get(DT_STRTAB, [None])[0], tags.get(DT_STRSZ, [0])[0]
        if strtab is None:
            return [], []
        where = next((off + strtab - vaddr for vaddr, filesz, off in loads if vaddr <= strtab < vaddr + filesz), None)
        if where is None:
            return [], []
        name_offs = tags.get(DT_NEEDED, [])[:NEEDED_MAX]
        path_offs = tags.get(DT_RUNPATH, tags.get(DT_RPATH, []))[:SEARCH_MAX]
        if not name_offs:
            return [], []
        # only the part of the string table that holds these strings (it also names every symbol)
        first, last = min(name_offs + path_offs), max(name_offs + path_offs)
        if last >= strsz:
            return [], []
        table = _read(fd, min(strsz, last + STRING_MAX) - first, where + first)
        names = [_string(table, off - first) for off in name_offs]
        paths = [_string(table, off - first) for off in path_offs]
        return names, [p for path in paths for p in path.split(":") if p][:SEARCH_MAX]
    except (OSError, ValueError, struct.error):
        return [], []


def needed_in_tree(fd: int, rel_path: str) -> list[str]:
    """Tree-relative paths where the libraries that the ELF file at ``rel_path`` (open at
    ``fd``) needs may be: each ``$ORIGIN``-relative search path joined with each name. Paths
    that leave the tree are dropped; whether they exist is the caller's question."""
    names, search = needed(fd)
    origin = posixpath.dirname(rel_path)
    out = []
    for entry in search:
        if not entry.startswith(("$ORIGIN", "${ORIGIN}")):
            continue
        base = posixpath.normpath(posixpath.join(origin, entry.replace("${ORIGIN}", ".").replace("$ORIGIN", ".")))
        if base == ".." or base.startswith("../") or base.startswith("/"):
            continue
        out += [posixpath.normpath(posixpath.join(base, name)) for name in names if "/" not in name]
    return out
