"""A private cache of parsed, validated catalogs: the second load of a catalog is ~5x faster.

Parsing an RCC catalog (gunzip, JSON, building the tree) and validating it costs ~0.3 s for
a 35k-entry catalog, on every ``materialize`` and ``mount``. The first load keeps the result
in ``<cache>/catalogs/<sha256(absolute path)>`` (0600, directory 0700): the tree as nested
tuples in ``marshal`` form, with the identity of the catalog file it came from (st_dev,
st_ino, size, mtime_ns, ctime_ns). A later load of the same path with the same identity reads
that instead and skips validation (only validated catalogs are stored). Any change to the
file (a new inode, or an in-place write: new ctime) makes it parse and validate again. The
index is an optimisation: unreadable, stale or foreign index files are ignored and replaced.

The contents RCC records beneath a symlinked directory (the shadow subtree, e.g. a venv's
``lib64 -> lib`` repeats all of ``lib``) are never restored or served, so the index keeps them
packed (a nested ``marshal`` blob) and unpacks them only when something reads that
directory's ``subdirs`` or ``files``: for such a catalog, half the entries are never decoded.

One index file per catalog path, so the directory does not grow with catalog versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import marshal
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .catalog import Catalog, DirEntry, FileEntry, gc_paused, parse_catalog, read_catalog_bytes
from .errors import CatalogError, HolofsError
from .fsutil import atomic_write_bytes
from .paths import private_dir

FORMAT = 2  # bump when Catalog/DirEntry/FileEntry fields change
MARSHAL_VERSION = 2  # no back-references: writing is ~2.5x faster, reading as fast, the file ~10% bigger
SUBDIR = "catalogs"


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def index_path(cache_root: str | os.PathLike[str], catalog_path: str | os.PathLike[str]) -> Path:
    key = hashlib.sha256(os.path.abspath(os.fspath(catalog_path)).encode("utf-8", "surrogateescape")).hexdigest()
    return Path(cache_root) / SUBDIR / key[:32]


def _encode_dir(d: DirEntry) -> tuple[Any, ...]:
    subdirs = tuple(_encode_dir(s) for s in d.subdirs.values())
    files = tuple((f.name, f.size, f.mode, f.digest, tuple(f.rewrite), f.symlink) for f in d.files.values())
    if d.symlink:  # the shadow subtree: packed, decoded on demand (_PackedDir)
        return (d.name, d.mode, d.symlink, d.shadow, marshal.dumps((subdirs, files), MARSHAL_VERSION), ())
    return (d.name, d.mode, d.symlink, d.shadow, subdirs, files)


def _decode_into(d: DirEntry, subdirs: tuple[Any, ...], files: tuple[Any, ...]) -> None:
    out = _SUBDIRS.__get__(d, DirEntry)
    for s in subdirs:
        out[s[0]] = _decode_dir(s)
    fout = _FILES.__get__(d, DirEntry)
    for fname, size, fmode, digest, rewrite, fsymlink in files:
        fout[fname] = FileEntry(fname, size, fmode, digest, list(rewrite), fsymlink)


def _decode_dir(t: tuple[Any, ...]) -> DirEntry:
    name, mode, symlink, shadow, subdirs, files = t
    if type(subdirs) is bytes:
        return _PackedDir(name, mode, symlink, shadow, subdirs)
    d = DirEntry(name=name, mode=mode, symlink=symlink, shadow=shadow)
    _decode_into(d, subdirs, files)
    return d


_SUBDIRS, _FILES = DirEntry.subdirs, DirEntry.files  # the slots behind the fields
_UNPACKING = threading.RLock()


def _unpacking(slot: Any) -> property:
    """A field of :class:`_PackedDir`: the slot, read or written once the contents are unpacked."""

    def get(self: _PackedDir) -> Any:
        self._unpack()
        return slot.__get__(self, DirEntry)

    def put(self: _PackedDir, value: Any) -> None:
        self._unpack()
        slot.__set__(self, value)

    return property(get, put)


class _PackedDir(DirEntry):
    """A symlinked directory from the index whose recorded contents stay packed until
    ``subdirs`` or ``files`` is first read (or assigned)."""

    __slots__ = ("_packed",)

    def __init__(self, name: str, mode: int, symlink: str, shadow: bool, packed: bytes) -> None:
        DirEntry.__init__(self, name=name, mode=mode, symlink=symlink, shadow=shadow)
        self._packed: bytes | None = packed

    def _unpack(self) -> None:
        if getattr(self, "_packed", None) is None:
            return
        with _UNPACKING:  # another thread reading meanwhile waits for the whole contents
            packed = self._packed
            if packed is not None:
                try:
                    _decode_into(self, *marshal.loads(packed))
                except (ValueError, TypeError, EOFError, IndexError, RecursionError):
                    raise CatalogError(f"the parsed-catalog index is damaged beneath {self.name!r}: delete the "
                                       f"'{SUBDIR}' directory in holofs' cache (it is rebuilt)") from None
                self._packed = None

    subdirs = _unpacking(_SUBDIRS)  # type: ignore[assignment]
    files = _unpacking(_FILES)  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:  # equal to the DirEntry it stands for
        if not isinstance(other, DirEntry):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # as DirEntry's


_FIELDS = tuple(f.name for f in dataclasses.fields(DirEntry))


def _header(c: Catalog) -> tuple[Any, ...]:
    return (c.identity, c.path, c.controller, c.space, c.platform, c.blueprint, c.lifted, c.rcc)


def _from_index(data: bytes, identity: tuple[int, ...], path: Path) -> Catalog | None:
    try:
        fmt, stored_identity, header, tree = marshal.loads(data)
        if fmt != FORMAT or tuple(stored_identity) != identity:
            return None
        ident, cpath, controller, space, platform, blueprint, lifted, rcc = header
        catalog = Catalog(identity=ident, path=cpath, tree=_decode_dir(tree), controller=controller, space=space,
                          platform=platform, blueprint=blueprint, lifted=lifted, rcc=rcc, source=path)
    except (ValueError, TypeError, EOFError, IndexError, RecursionError):
        return None
    catalog.validated = True
    return catalog


def _load_index(index: Path, identity: tuple[int, ...], path: Path) -> Catalog | None:
    try:
        data = index.read_bytes()
    except OSError:
        return None
    with gc_paused():
        return _from_index(data, identity, path)


def load_indexed(path: str | os.PathLike[str], cache_root: str | os.PathLike[str]) -> Catalog | None:
    """The catalog at ``path`` from the index only (``validated`` set), or None if the index
    has no current entry for it (nothing is parsed)."""
    path = Path(path)
    try:
        identity = _identity(os.stat(path))
    except OSError:
        return None
    return _load_index(index_path(cache_root, path), identity, path)


def read_validated(path: str | os.PathLike[str]) -> tuple[Catalog, str]:
    """Read, parse and validate the catalog file at ``path`` (CatalogError/NotFound on bad input).

    Returns the catalog (``validated`` set) and the SHA-256 of the file bytes it came from, so
    another process can tell whether the bytes it read are the ones validated here."""
    from .validate import validate_catalog

    path = Path(path)
    raw = read_catalog_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    catalog = parse_catalog(raw, path)
    del raw
    validate_catalog(catalog)
    catalog.validated = True
    return catalog, digest


def load_catalog(path: str | os.PathLike[str], cache_root: str | os.PathLike[str] | None,
                 ) -> tuple[Catalog, Callable[[], None] | None]:
    """Read and validate the catalog at ``path`` (CatalogError/NotFound on bad input).

    Returns the catalog (``validated`` set) and, when the index must be (re)written, a
    function that writes it: call it when convenient, off the critical path, or never."""
    catalog, save, _digest = load_catalog_digest(path, cache_root)
    return catalog, save


def load_catalog_digest(path: str | os.PathLike[str], cache_root: str | os.PathLike[str] | None,
                        ) -> tuple[Catalog, Callable[[], None] | None, str | None]:
    """:func:`load_catalog`, plus the SHA-256 of the catalog file's bytes when it parsed them
    (None when it came from the index)."""
    path = Path(path)
    if cache_root is None:
        catalog, digest = read_validated(path)
        return catalog, None, digest
    index = index_path(cache_root, path)
    try:
        identity = _identity(os.stat(path))
    except OSError:
        identity = None  # read_catalog says what is wrong
    if identity is not None:
        catalog = _load_index(index, identity, path)
        if catalog is not None:
            return catalog, None, None
    catalog, digest = read_validated(path)
    if identity is None:
        return catalog, None, digest

    def save() -> None:
        try:
            private_dir(index.parent)
            with gc_paused():  # tens of thousands of new tuples
                blob = marshal.dumps((FORMAT, identity, _header(catalog), _encode_dir(catalog.tree)), MARSHAL_VERSION)
            atomic_write_bytes(index, blob, mode=0o600)
        except (OSError, ValueError, HolofsError):
            pass  # an optimisation only

    return catalog, save, digest
