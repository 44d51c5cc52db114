"""A private cache of parsed, validated catalogs: the second load of a catalog is ~5x faster.

Parsing an RCC catalog (gunzip, JSON, building the tree) and validating it costs ~0.3 s for
a 35k-entry catalog, on every ``materialize`` and ``mount``. The first load keeps the result
in ``<cache>/catalogs/<sha256(absolute path)>`` (0600, directory 0700): the tree as nested
tuples in ``marshal`` form, with the identity of the catalog file it came from (st_dev,
st_ino, size, mtime_ns, ctime_ns) and the SHA-256 of its bytes (a restore's fingerprint of
the catalog, which then need not be read and hashed again). A later load of the same path with the same identity reads
that instead and skips validation (only validated catalogs are stored). Any change to the
file (a new inode, or an in-place write: new ctime) makes it parse and validate again. The
index is an optimisation: unreadable, stale or foreign index files are ignored and replaced.

The contents RCC records beneath a symlinked directory (the shadow subtree, e.g. a venv's
``lib64 -> lib`` repeats all of ``lib``) are never restored or served, so the index keeps
none of them: they are read from the catalog file again (its identity checked) only when
something reads that directory's ``subdirs`` or ``files`` (:class:`holofs.catalog.LinkedDir`):
for such a catalog, half the entries are never decoded, nor written to the index.

Each directory's files stay the index's rows (:class:`holofs.catalog.RowsDir`) until
something reads ``files``: a restore reads the rows themselves.

One index file per catalog path, so the directory does not grow with catalog versions.
"""

from __future__ import annotations

import functools
import marshal
import os
from collections.abc import Callable

from .catalog import (
    Catalog,
    DirEntry,
    LinkedDir,
    RowsDir,
    catalog_json,
    gc_paused,
    parse_catalog,
    read_catalog_bytes,
)
from .digest import sha256_hex
from .errors import CatalogError, HolofsError
from .fsutil import atomic_write_bytes
from .paths import path_key, private_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .catalog import JsonPair

FORMAT = 4  # bump when Catalog/DirEntry/FileEntry fields change
MARSHAL_VERSION = 2  # no back-references: writing is ~2.5x faster, reading as fast, the file ~10% bigger
SUBDIR = "catalogs"


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def index_path(cache_root: str | os.PathLike[str], catalog_path: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(cache_root), SUBDIR, path_key(catalog_path))


def _encode_dir(d: DirEntry, where: str = "") -> tuple[Any, ...]:
    if d.symlink:  # its recorded contents are not kept: read from the catalog file on demand
        return (d.name, d.mode, d.symlink, d.shadow, None, where)
    subdirs = tuple(_encode_dir(s, f"{where}/{k}" if where else k) for k, s in d.subdirs.items())
    files = tuple((f.name, f.size, f.mode, f.digest, tuple(f.rewrite), f.symlink) for f in d.files.values())
    return (d.name, d.mode, d.symlink, d.shadow, subdirs, files)


def _decode_dir(t: tuple[Any, ...], path: str, identity: tuple[int, ...]) -> DirEntry:
    name, mode, symlink, shadow, subdirs, files = t
    if subdirs is None:
        return LinkedDir(name, mode, symlink, shadow, functools.partial(_reread, path, identity, files), files)
    d = RowsDir(name, mode, symlink, shadow, files)
    if subdirs:  # most directories have none: RowsDir starts with an empty dict
        d.subdirs = {s[0]: _decode_dir(s, path, identity) for s in subdirs}
    return d


def _reread(path: str, identity: tuple[int, ...], where: str) -> JsonPair:
    """What the catalog file records beneath the symlinked directory at ``where``, read again
    (the index does not keep it); CatalogError if the file is no longer the one indexed."""
    changed = CatalogError(f"catalog {path} changed while in use (beneath {where!r}): run the command again")
    try:
        before = _identity(os.stat(path))
        raw = read_catalog_bytes(path)
        after = _identity(os.stat(path))
    except (OSError, HolofsError):
        raise changed from None
    if before != identity or after != identity:
        raise changed
    with gc_paused():
        node = catalog_json(raw, path)
        try:
            node = node["tree"]
            for part in where.split("/"):
                node = node["subdirs"][part]
            subdirs, files = node.get("subdirs") or {}, node.get("files") or {}
        except (KeyError, TypeError, AttributeError):
            raise changed from None
    return subdirs, files


def _header(c: Catalog) -> tuple[Any, ...]:
    return (c.identity, c.path, c.controller, c.space, c.platform, c.blueprint, c.lifted, c.rcc, c.fingerprint)


def _from_index(data: bytes, identity: tuple[int, ...], path: str) -> Catalog | None:
    try:
        fmt, stored_identity, header, tree = marshal.loads(data)
        if fmt != FORMAT or tuple(stored_identity) != identity:
            return None
        ident, cpath, controller, space, platform, blueprint, lifted, rcc, fingerprint = header
        catalog = Catalog(identity=ident, path=cpath, tree=_decode_dir(tree, path, identity), controller=controller, space=space,
                          platform=platform, blueprint=blueprint, lifted=lifted, rcc=rcc, source=path)
        catalog.fingerprint = fingerprint
    except (ValueError, TypeError, EOFError, IndexError, RecursionError):
        return None
    catalog.validated = True
    return catalog


def _load_index(index: str, identity: tuple[int, ...], path: str) -> Catalog | None:
    try:
        with open(index, "rb") as f:
            data = f.read()
    except OSError:
        return None
    with gc_paused():
        return _from_index(data, identity, path)


def load_indexed(path: str | os.PathLike[str], cache_root: str | os.PathLike[str]) -> Catalog | None:
    """The catalog at ``path`` from the index only (``validated`` set), or None if the index
    has no current entry for it (nothing is parsed)."""
    path = os.fspath(path)
    try:
        identity = _identity(os.stat(path))
    except OSError:
        return None
    return _load_index(index_path(cache_root, path), identity, path)


def read_validated(path: str | os.PathLike[str]) -> Catalog:
    """Read, parse and validate the catalog file at ``path`` (CatalogError/NotFound on bad
    input); ``validated`` and ``fingerprint`` set."""
    from .validate import validate_catalog

    path = os.fspath(path)
    raw = read_catalog_bytes(path)
    catalog = parse_catalog(raw, path)
    validate_catalog(catalog)
    catalog.validated = True
    catalog.fingerprint = sha256_hex(raw)
    return catalog


def load_catalog(path: str | os.PathLike[str], cache_root: str | os.PathLike[str] | None,
                 ) -> tuple[Catalog, Callable[[], None] | None]:
    """Read and validate the catalog at ``path`` (CatalogError/NotFound on bad input).

    Returns the catalog (``validated`` set) and, when the index must be (re)written, a
    function that writes it: call it when convenient, off the critical path, or never."""
    path = os.fspath(path)
    if cache_root is None:
        return read_validated(path), None
    index = index_path(cache_root, path)
    try:
        identity = _identity(os.stat(path))
    except OSError:
        identity = None  # read_catalog says what is wrong
    if identity is not None:
        catalog = _load_index(index, identity, path)
        if catalog is not None:
            return catalog, None
    catalog = read_validated(path)
    if identity is None:
        return catalog, None

    def save() -> None:
        try:
            private_dir(os.path.dirname(index))
            with gc_paused():  # tens of thousands of new tuples
                blob = marshal.dumps((FORMAT, identity, _header(catalog), _encode_dir(catalog.tree)), MARSHAL_VERSION)
            atomic_write_bytes(index, blob, mode=0o600)
        except (OSError, ValueError, HolofsError):
            pass  # an optimisation only

    return catalog, save
