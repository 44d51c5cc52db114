"""Structural validation of a catalog before anything is written or mounted.

A catalog may come from elsewhere (a shared hololib, a download), so every field that
decides *where* bytes go or *which* bytes are read is checked first: entry names, symlinked
directories that could redirect writes, digests (they become blob paths), rewrite offsets,
sizes and modes. :func:`validate_catalog` raises a one-line :class:`CatalogError` naming the
first bad entry, and is cheap enough to run on every use (under 1 µs per entry).

The contents a catalog records beneath a symlinked directory (never restored or served) are
checked when they are first decoded (:class:`holofs.catalog.LinkedDir`), not here.

What it does not check: blob contents and decoded sizes (done while reading blobs), and
symlink *targets*, which are data: they are created verbatim and never followed on write.
"""

from __future__ import annotations

import os
import re
import sys

from .catalog import Catalog, DirEntry, FileEntry
from .errors import CatalogError
from .modes import GO_DIR, GO_KNOWN_BITS, GO_SPECIAL_TYPES, GO_SYMLINK

_DIGEST = re.compile(r"[0-9a-f]{32}(?:[0-9a-f]{32})?")
"""Plain lowercase hex of a known length: 32 (SipHash-128) or 64 (SHA-256)."""
_NOT_SHADOW = "lies beneath a symlinked directory but is not marked shadow (it would be written through the link)"

_DELETE_HEX = dict.fromkeys(map(ord, "0123456789abcdef"))
"""A ``str.translate`` table that deletes the characters :data:`_DIGEST` allows."""

NAME_MAX = 255
"""Longest file name in bytes that the common file systems accept."""


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _bad(path: str, problem: str) -> CatalogError:
    return CatalogError(f"catalog entry {path or '/'!r}: {problem}")


def _check_name(name: object, key: object, parent: str, windows: bool) -> None:
    """Raise unless ``name`` is a single, harmless path component equal to its map key."""
    path = _join(parent, str(key))
    if not isinstance(name, str) or not isinstance(key, str):
        raise _bad(path, "name is not a string")
    if name != key:
        raise _bad(path, f"map key {key!r} differs from name {name!r}")
    if not name:
        raise _bad(f"{parent}/", "empty name")
    if name in (".", ".."):
        raise _bad(path, f"name {name!r} is not allowed")
    if name[0] == "/" or (windows and (name[0] == "\\" or (len(name) > 1 and name[1] == ":"))):
        raise _bad(path, "absolute name")
    if "/" in name:
        raise _bad(path, "name contains '/'")
    if "\0" in name:
        raise _bad(path, "name contains a NUL byte")
    if windows and ("\\" in name or ":" in name):
        raise _bad(path, "name contains '\\' or ':' (not allowed on Windows)")
    if not name.isascii() or len(name) > NAME_MAX:
        try:
            encoded = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise _bad(path, "name is not valid Unicode") from None
        if len(encoded) > NAME_MAX:
            raise _bad(path, f"name is longer than {NAME_MAX} bytes")


def _check_collisions(node: DirEntry, path: str, casefold: bool) -> None:
    both = node.files.keys() & node.subdirs.keys()
    if both:
        raise _bad(_join(path, min(both)), "is both a file and a directory")
    if casefold:
        seen: dict[str, str] = {}
        for name in (*node.subdirs, *node.files):
            folded = name.casefold()
            if folded in seen:
                raise _bad(_join(path, name), f"differs from {seen[folded]!r} only in case "
                           "(one would be written through the other on this platform)")
            seen[folded] = name


def _check_mode(mode: object, path: str, *, is_dir: bool, is_symlink: bool) -> int:
    if type(mode) is not int or mode < 0:
        raise _bad(path, f"mode {mode!r} is not a Go file mode")
    if mode & ~GO_KNOWN_BITS:
        raise _bad(path, f"mode {mode:#o} has unknown bits")
    if is_symlink:
        return mode  # the link target's mode at record time; never applied
    if mode & GO_SPECIAL_TYPES:
        raise _bad(path, f"mode {mode:#o} is a device, pipe, socket or irregular file")
    if is_dir and not mode & GO_DIR:
        raise _bad(path, f"directory has a non-directory mode {mode:#o}")
    if not is_dir and mode & GO_DIR:
        raise _bad(path, f"file has a directory mode {mode:#o}")
    if mode & GO_SYMLINK:
        raise _bad(path, f"mode {mode:#o} says symlink but the entry has no symlink target")
    return mode


def _check_symlink_text(text: object, path: str) -> None:
    if not isinstance(text, str):
        raise _bad(path, "symlink target is not a string")
    if "\0" in text:
        raise _bad(path, "symlink target contains a NUL byte")


def check_identity(catalog: Catalog) -> bytes:
    """The catalog's identity as bytes, after checking it and its agreement with ``path``."""
    identity = catalog.identity
    if not isinstance(identity, str) or not identity:
        raise CatalogError("catalog: empty identity")
    if identity in (".", "..") or any(c in identity for c in "/\\\0"):
        raise CatalogError(f"catalog: identity {identity!r} is not a plain directory name")
    path = catalog.path
    if not isinstance(path, str):
        raise CatalogError("catalog: path is not a string")
    # RCC records path = <holotree>/<identity>; a Windows path uses backslashes.
    basename = re.split(r"[\\/]", path.rstrip("/\\"))[-1]
    if basename != identity:
        raise CatalogError(f"catalog: recorded path {path!r} does not end in its identity {identity!r}")
    try:
        return identity.encode("utf-8")
    except UnicodeEncodeError:
        raise CatalogError(f"catalog: identity {identity!r} is not valid Unicode") from None


def validate_catalog(catalog: Catalog, *, windows: bool = os.name == "nt",
                     case_insensitive: bool | None = None) -> None:
    """Raise CatalogError (one line, naming the entry) if ``catalog`` is unsafe or malformed.

    ``windows`` also rejects ``\\`` and ``:`` in names; ``case_insensitive`` (default: on
    Windows and macOS) rejects names in one directory that differ only in case, which a
    case-insensitive file system would merge (a file could land beneath a symlinked sibling).
    """
    if case_insensitive is None:
        case_insensitive = windows or sys.platform == "darwin"
    idlen = len(check_identity(catalog))
    root = catalog.tree
    if not isinstance(root, DirEntry):
        raise CatalogError("catalog: tree is not a directory")
    _check_mode(root.mode, "", is_dir=True, is_symlink=False)
    if root.symlink:
        raise _bad("", "the root directory cannot be a symlink")
    digests: list[str] = []
    try:
        _check_tree(root, idlen, windows, case_insensitive, digests)
        if _all_lower_hex(digests):
            return
    except Exception:  # the walk below decides, exactly as it always did
        pass
    # Something is wrong: walk again, each digest matched where it is met, so that the error
    # names the first bad entry (in the same order as any other problem).
    _check_tree(root, idlen, windows, case_insensitive, None)


def check_beneath_link(where: str, name: str, subdirs: dict[str, DirEntry], files: dict[str, FileEntry]) -> None:
    """Raise CatalogError (one line, naming the entry) if what a catalog records beneath the
    symlinked directory at ``where`` is malformed: the check :func:`validate_catalog` leaves to
    the moment a :class:`holofs.catalog.LinkedDir`'s contents are decoded. Nothing beneath a
    symlinked directory is restored or served, so this is the same check, later."""
    node = DirEntry(name=name, subdirs=subdirs, files=files)
    windows = os.name == "nt"
    _check_tree(node, 0, windows, windows or sys.platform == "darwin", None, start=where, beneath=True)


def _check_all_shadow(subdirs_json: dict[str, object], path: str) -> None:
    """Every directory in the JSON ``subdirs`` of a symlinked directory at ``path`` (at any
    depth) must be marked shadow. Malformed entries are skipped: decoding reports them."""
    stack = [(path, subdirs_json)]
    while stack:
        parent, subdirs = stack.pop()
        for key, sub in subdirs.items():
            if isinstance(sub, dict):
                if sub.get("shadow") is not True:
                    raise _bad(_join(parent, str(key)), _NOT_SHADOW)
                if isinstance(sub.get("subdirs"), dict):
                    stack.append((_join(parent, str(key)), sub["subdirs"]))


def _all_lower_hex(digests: list[str]) -> bool:
    """True if every character of every digest is one of ``0-9a-f`` (one pass in C; matching
    each digest against :data:`_DIGEST` took 40% of the validation of a big catalog)."""
    return not "".join(digests).translate(_DELETE_HEX)


def _check_tree(root: DirEntry, idlen: int, windows: bool, case_insensitive: bool,
                digests: list[str] | None, *, start: str = "", beneath: bool = False) -> None:
    """Check every entry beneath ``root`` (at path ``start``; ``beneath``: inside a symlinked
    directory), but not the contents of a symlinked directory not decoded yet (checked when
    they are: :func:`check_beneath_link`). A restored file's digest must be a string of length
    32 or 64, and is then appended to ``digests`` for :func:`_all_lower_hex`; with ``digests``
    None, it is matched against :data:`_DIGEST` at once instead."""
    digest_ok = _DIGEST.fullmatch
    add_digest = None if digests is None else digests.append
    file_bits = GO_KNOWN_BITS & ~(GO_SPECIAL_TYPES | GO_DIR | GO_SYMLINK)  # a regular file's allowed mode bits
    # (path, node, beneath): beneath = the node lies in a symlinked directory (never written).
    stack: list[tuple[str, DirEntry, bool]] = [(start, root, beneath)]
    while stack:
        path, node, beneath = stack.pop()
        _check_collisions(node, path, case_insensitive)
        inert = beneath or bool(node.symlink)  # children are recorded, never restored
        for key, sub in node.subdirs.items():
            if not isinstance(sub, DirEntry):
                raise _bad(_join(path, str(key)), "subdirectory entry is not a directory")
            _check_name(sub.name, key, path, windows)
            sub_path = _join(path, key)
            if sub.symlink:
                _check_symlink_text(sub.symlink, sub_path)
                if type(sub.mode) is not int or not sub.mode & (GO_DIR | GO_SYMLINK):
                    raise _bad(sub_path, f"symlinked directory has mode {sub.mode!r}")
                _check_mode(sub.mode, sub_path, is_dir=True, is_symlink=True)
            else:
                _check_mode(sub.mode, sub_path, is_dir=True, is_symlink=False)
            if inert and not sub.shadow:
                raise _bad(sub_path, _NOT_SHADOW)
            if sub.contents_decoded:
                stack.append((sub_path, sub, inert))
            else:  # a LinkedDir: the rest is checked when decoded, but nothing may be written through it
                _check_all_shadow(sub.contents_json()[0], sub_path)
        for key, f in node.files.items():
            name = f.name
            if not name or name != key or not name.isprintable() or name in (".", "..") or "/" in name or (
                    windows and ("\\" in name or ":" in name)) or len(name) > 63:
                _check_name(name, key, path, windows)  # slow path: find out what is wrong
            size = f.size
            if type(size) is not int or size < 0:
                raise _bad(_join(path, key), f"size {size!r} is not a non-negative integer")
            if f.symlink:
                _check_symlink_text(f.symlink, _join(path, key))
                _check_mode(f.mode, _join(path, key), is_dir=False, is_symlink=True)
                continue  # verbatim link: no blob is read, no rewrite is applied
            mode = f.mode
            if type(mode) is not int or mode & ~file_bits or mode < 0:
                _check_mode(mode, _join(path, key), is_dir=False, is_symlink=False)
            if inert:
                continue  # shadow content: recorded, never restored, no blob kept
            digest = f.digest
            if add_digest is not None and type(digest) is str and (len(digest) == 64 or len(digest) == 32):
                add_digest(digest)
            elif not isinstance(digest, str) or not digest_ok(digest):
                raise _bad(_join(path, key), f"digest {digest!r} is not lowercase hex of length 32 or 64")
            rewrite = f.rewrite
            if rewrite:
                if not all(type(x) is int for x in rewrite):
                    raise _bad(_join(path, key), "rewrite offsets must be integers")
                low, high = min(rewrite), max(rewrite)
                if low < 0 or high > size - idlen:
                    bad = low if low < 0 else high
                    raise _bad(_join(path, key), f"rewrite offset {bad} is outside the file "
                               f"(size {size}, identity {idlen} bytes)")
