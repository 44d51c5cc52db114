"""RCC catalog model, reader and writer.

A catalog is one gzip stream of Go's indented JSON (``htfs.Root``). The model keeps every
field RCC writes, in RCC's order, so that a catalog read and written again has the same
JSON semantics (and, for catalogs RCC wrote, the same bytes once decompressed).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import zlib
from collections.abc import Callable, Iterator

from .errors import CatalogError, NotFound
from .modes import GO_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    JsonPair = tuple[dict[str, Any], dict[str, Any]]
    """A directory's ``subdirs`` and ``files`` as the catalog file has them."""

MOTHER_TIME = 1610000000
"""RCC's fixed mtime/atime for every restored file and directory."""


class _Record:
    """``==`` and ``repr`` over the fields a model class lists in ``_FIELDS``, as a dataclass
    has them: the model is written out by hand because importing dataclasses costs every
    start-up ~12 ms (it imports inspect)."""

    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._FIELDS)})"


class FileEntry(_Record):
    """A regular file (or a symlink to a file) as RCC records it."""

    __slots__ = _FIELDS = ("name", "size", "mode", "digest", "rewrite", "symlink")

    def __init__(self, name: str, size: int, mode: int, digest: str, rewrite: list[int] | None = None,
                 symlink: str = "") -> None:
        self.name = name
        self.size = size
        self.mode = mode
        self.digest = digest
        self.rewrite: list[int] = [] if rewrite is None else rewrite
        self.symlink = symlink

    @property
    def is_symlink(self) -> bool:
        return bool(self.symlink)


class DirEntry(_Record):
    """A directory; ``symlink`` set means the directory is a symlink, ``shadow`` that it
    lies beneath one (recorded, never restored)."""

    __slots__ = _FIELDS = ("name", "mode", "subdirs", "files", "symlink", "shadow")

    def __init__(self, name: str, mode: int = GO_DIR | 0o755, subdirs: dict[str, DirEntry] | None = None,
                 files: dict[str, FileEntry] | None = None, symlink: str = "", shadow: bool = False) -> None:
        self.name = name
        self.mode = mode
        self.subdirs: dict[str, DirEntry] = {} if subdirs is None else subdirs
        self.files: dict[str, FileEntry] = {} if files is None else files
        self.symlink = symlink
        self.shadow = shadow

    def __eq__(self, other: object) -> bool:
        # Any two directories compare by their fields, so that a lazily decoded LinkedDir or
        # RowsDir equals the DirEntry it stands for (reading the fields decodes them).
        if not isinstance(other, DirEntry):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in DirEntry._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # as _Record's

    @property
    def is_symlink(self) -> bool:
        return bool(self.symlink)

    @property
    def contents_decoded(self) -> bool:
        """False for a :class:`LinkedDir` whose recorded contents have not been read yet."""
        return True


_SUBDIRS, _FILES = DirEntry.subdirs, DirEntry.files  # the slots behind the fields
_DECODING = threading.RLock()


def _decoding(slot: Any) -> property:
    """A field of :class:`LinkedDir`: the slot, read or written once the contents are decoded."""

    def get(self: LinkedDir) -> Any:
        self._decode()
        return slot.__get__(self, DirEntry)

    def put(self: LinkedDir, value: Any) -> None:
        self._decode()
        slot.__set__(self, value)

    return property(get, put)


class LinkedDir(DirEntry):
    """A symlinked directory whose recorded contents (the shadow subtree RCC lists beneath it,
    never restored or served) are decoded only when ``subdirs`` or ``files`` is first read or
    assigned: for a venv's ``lib64 -> lib`` that is half of the catalog, which a mount or a
    restore then never turns into objects.

    ``packed`` holds the contents as the catalog file has them, a ``(subdirs, files)`` pair of
    JSON objects, or a function that returns that pair (the parsed-catalog index reads the
    catalog file again); ``where`` is the directory's path, for messages. Decoded contents are
    checked as :func:`holofs.validate.validate_catalog` checks entries beneath a symlinked
    directory (it leaves undecoded ones to this, but for the shadow marks): a bad entry raises
    a one-line CatalogError naming it."""

    __slots__ = ("_packed", "_where")

    def __init__(self, name: str, mode: int, symlink: str, shadow: bool, packed: JsonPair | Callable[[], JsonPair],
                 where: str) -> None:
        DirEntry.__init__(self, name=name, mode=mode, symlink=symlink, shadow=shadow)
        self._packed: JsonPair | Callable[[], JsonPair] | None = packed
        self._where = where

    @property
    def contents_decoded(self) -> bool:
        return self._packed is None

    def contents_json(self) -> JsonPair:
        """The undecoded contents as the JSON pair (``subdirs``, ``files``); only while
        :attr:`contents_decoded` is False."""
        packed = self._packed
        if callable(packed):
            packed = self._packed = packed()
        assert packed is not None
        return packed

    def _decode(self) -> None:
        if getattr(self, "_packed", None) is None:
            return
        with _DECODING:  # another thread reading meanwhile waits for the whole contents
            if self._packed is None:
                return
            subdirs_json, files_json = self.contents_json()
            with gc_paused():
                subdirs, files = _contents_from_json(subdirs_json, files_json, self._where)
            from .validate import check_beneath_link

            check_beneath_link(self._where, self.name, subdirs, files)
            _SUBDIRS.__set__(self, subdirs)
            _FILES.__set__(self, files)
            self._packed = None

    subdirs = _decoding(_SUBDIRS)  # type: ignore[assignment]
    files = _decoding(_FILES)  # type: ignore[assignment]



FileRow = tuple  # (name, size, mode, digest, rewrite offsets (a tuple), symlink), as the catalog index keeps a file


class RowsDir(DirEntry):
    """A directory whose files stay the catalog index's rows (:data:`FileRow`) until ``files``
    is first read or assigned: a restore reads the rows themselves (:func:`file_rows`), and
    makes FileEntry objects only for the few files it leaves to Python (17k of them took ~12
    ms of every restore of the corpus)."""

    __slots__ = ("_rows",)

    def __init__(self, name: str, mode: int, symlink: str, shadow: bool, rows: tuple[FileRow, ...]) -> None:
        # The fields are set here, not by DirEntry.__init__: its ``files = {}`` would go through
        # the decoding property (an index load makes one per directory, 2.8k for the corpus).
        self.name = name
        self.mode = mode
        self.subdirs = {}
        self.symlink = symlink
        self.shadow = shadow
        self._rows: tuple[FileRow, ...] | None = rows  # the files slot is filled from them when first read

    def _decode(self) -> None:
        if getattr(self, "_rows", None) is None:
            return
        with _DECODING:
            if self._rows is None:
                return
            _FILES.__set__(self, {name: FileEntry(name, size, mode, digest, list(rewrite), symlink)
                                  for name, size, mode, digest, rewrite, symlink in self._rows})
            self._rows = None

    files = _decoding(_FILES)  # type: ignore[assignment]


def file_rows(node: DirEntry) -> tuple[FileRow, ...] | list[FileRow]:
    """The files of ``node`` as :data:`FileRow` tuples, without decoding a :class:`RowsDir`."""
    rows = getattr(node, "_rows", None)
    if rows is not None:
        return rows
    return [(name, f.size, f.mode, f.digest, tuple(f.rewrite), f.symlink) for name, f in node.files.items()]


def file_count(node: DirEntry) -> int:
    """``len(node.files)``, without decoding a :class:`RowsDir`."""
    rows = getattr(node, "_rows", None)
    return len(node.files) if rows is None else len(rows)


class Catalog(_Record):
    """An RCC catalog (``htfs.Root``). Not part of the file format: ``validated``,
    validate.validate_catalog passed; ``fingerprint``, the SHA-256 of the file it was read
    from, when known."""

    _FIELDS = ("identity", "path", "tree", "controller", "space", "platform", "blueprint", "lifted", "rcc", "source",
               "validated")
    __slots__ = (*_FIELDS, "fingerprint")

    def __init__(self, identity: str, path: str, tree: DirEntry, controller: str = "", space: str = "",
                 platform: str = "", blueprint: str = "", lifted: bool = False, rcc: str | None = None,
                 source: str | None = None, validated: bool = False) -> None:
        self.identity = identity
        self.path = path
        self.tree = tree
        self.controller = controller
        self.space = space
        self.platform = platform
        self.blueprint = blueprint
        self.lifted = lifted
        self.rcc = rcc
        self.source = source
        self.validated = validated
        self.fingerprint: str | None = None

    @property
    def base_dir(self) -> str:
        """The holotree base directory the environment was recorded in."""
        return os.path.dirname(self.path)

    def info(self) -> dict[str, Any]:
        """The top-level fields, as RCC writes them to the ``.info`` sidecar."""
        out: dict[str, Any] = {}
        if self.rcc is not None:
            out["rcc"] = self.rcc
        out.update(
            identity=self.identity,
            path=self.path,
            controller=self.controller,
            space=self.space,
            platform=self.platform,
            blueprint=self.blueprint,
        )
        return out


def iter_dirs(tree: DirEntry, prefix: str = "") -> Iterator[tuple[str, DirEntry]]:
    """Every directory, parents before children, with its relative path ('' for the root)."""
    stack = [(prefix, tree)]
    while stack:
        path, node = stack.pop()
        yield path, node
        for name in sorted(node.subdirs, reverse=True):
            stack.append((f"{path}/{name}" if path else name, node.subdirs[name]))


def iter_files(tree: DirEntry, *, include_shadow: bool = True) -> Iterator[tuple[str, FileEntry, DirEntry]]:
    """Every file with its relative path and parent directory."""
    for path, node in iter_dirs(tree):
        if not include_shadow and (node.shadow or node.is_symlink):
            continue
        for name in sorted(node.files):
            yield (f"{path}/{name}" if path else name), node.files[name], node


# --- reading -------------------------------------------------------------------------


def _expect(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise CatalogError(f"catalog entry {where!r}: missing field {key!r}")
        return default
    value = obj[key]
    if kind is int and isinstance(value, bool):
        raise CatalogError(f"catalog entry {where!r}: field {key!r} must be a number")
    if not isinstance(value, kind):
        raise CatalogError(f"catalog entry {where!r}: field {key!r} has the wrong type")
    return value


def _file_from_json(obj: Any, key: str, parent: str) -> FileEntry:
    # Fast path for well-formed entries (catalog load time is mount-ready time);
    # anything unusual goes through the checked path below for a precise error.
    # ``parent`` is the directory's path: the entry's own is only built for an error.
    if type(obj) is dict:
        name = obj.get("name")
        size = obj.get("size")
        mode = obj.get("mode")
        digest = obj.get("digest")
        rewrite = obj.get("rewrite")
        symlink = obj.get("symlink", "")
        if (
            name == key
            and type(name) is str
            and type(size) is int
            and type(mode) is int
            and type(digest) is str
            and type(symlink) is str
            and (rewrite == [] or (type(rewrite) is list and all(type(x) is int for x in rewrite)))
        ):
            return FileEntry(name, size, mode, digest, rewrite, symlink)
    return _file_from_json_checked(obj, key, f"{parent}/{key}" if parent else key)


def _file_from_json_checked(obj: Any, key: str, where: str) -> FileEntry:
    if not isinstance(obj, dict):
        raise CatalogError(f"catalog entry {where!r}: expected an object")
    name = _expect(obj, "name", str, where)
    if name != key:
        raise CatalogError(f"catalog entry {where!r}: map key {key!r} differs from name {name!r}")
    rewrite = _expect(obj, "rewrite", (list, type(None)), where, [])
    if rewrite is None:
        rewrite = []
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in rewrite):
        raise CatalogError(f"catalog entry {where!r}: rewrite offsets must be integers")
    return FileEntry(
        name=name,
        size=_expect(obj, "size", int, where),
        mode=_expect(obj, "mode", int, where),
        digest=_expect(obj, "digest", str, where),
        rewrite=rewrite,
        symlink=_expect(obj, "symlink", str, where, ""),
    )


def _dir_from_json(obj: Any, key: str, where: str) -> DirEntry:
    if not isinstance(obj, dict):
        raise CatalogError(f"catalog entry {where or '/'!r}: expected an object")
    name = _expect(obj, "name", str, where)
    if name != key:
        raise CatalogError(f"catalog entry {where!r}: map key {key!r} differs from name {name!r}")
    subdirs_json = _expect(obj, "subdirs", (dict, type(None)), where, {}) or {}
    files_json = _expect(obj, "files", (dict, type(None)), where, {}) or {}
    mode = _expect(obj, "mode", int, where)
    symlink = _expect(obj, "symlink", str, where, "")
    shadow = _expect(obj, "shadow", bool, where, False)
    if symlink and where:  # (a symlinked root is rejected by validation: it has no contents to skip)
        return LinkedDir(name, mode, symlink, shadow, (subdirs_json, files_json), where)
    node = DirEntry(name=name, mode=mode, symlink=symlink, shadow=shadow)
    node.subdirs, node.files = _contents_from_json(subdirs_json, files_json, where)
    return node


def _contents_from_json(subdirs_json: dict[str, Any], files_json: dict[str, Any], where: str,
                        ) -> tuple[dict[str, DirEntry], dict[str, FileEntry]]:
    if not isinstance(subdirs_json, dict) or not isinstance(files_json, dict):
        raise CatalogError(f"catalog entry {where!r}: 'subdirs' and 'files' must be objects")
    subdirs = {sub_key: _dir_from_json(sub, sub_key, f"{where}/{sub_key}" if where else sub_key)
               for sub_key, sub in subdirs_json.items()}
    files = {file_key: _file_from_json(file, file_key, where) for file_key, file in files_json.items()}
    return subdirs, files


def catalog_from_json(obj: Any) -> Catalog:
    """Build a Catalog from decoded JSON, checking types and key/name consistency."""
    if not isinstance(obj, dict):
        raise CatalogError("catalog: top level is not a JSON object")
    if "tree" not in obj:
        raise CatalogError("catalog: no 'tree' field (is this an RCC catalog?)")
    rcc = obj.get("rcc")
    return Catalog(
        rcc=rcc if isinstance(rcc, str) else None,
        identity=_expect(obj, "identity", str, "<top>"),
        path=_expect(obj, "path", str, "<top>"),
        controller=_expect(obj, "controller", str, "<top>", ""),
        space=_expect(obj, "space", str, "<top>", ""),
        platform=_expect(obj, "platform", str, "<top>", ""),
        blueprint=_expect(obj, "blueprint", str, "<top>", ""),
        lifted=_expect(obj, "lifted", bool, "<top>", False),
        tree=_dir_from_json(obj["tree"], obj["tree"].get("name", "") if isinstance(obj["tree"], dict) else "", ""),
    )


def read_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read a gzip'd RCC catalog file; every failure is a one-line CatalogError/NotFound."""
    return parse_catalog(read_catalog_bytes(path), path)


def read_catalog_bytes(path: str | os.PathLike[str]) -> bytes:
    """The raw (gzip'd) bytes of a catalog file; NotFound/CatalogError if unreadable."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise NotFound(f"catalog not found: {path}") from None
    except IsADirectoryError:
        raise CatalogError(f"{path} is a directory, not a catalog file") from None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage-collection passes inside: building a catalog's tens of thousands of objects
    (none cyclic) otherwise triggers many of them for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def gunzip(raw: bytes) -> bytes:
    """``gzip.decompress(raw)``: the usual single gzip member inflated by zlib-ng; anything else
    (an error, several members, trailing bytes) is left to ``gzip.decompress`` itself, so that
    results and errors are exactly its own."""
    try:  # zlib-ng inflates a catalog about three times faster than zlib, with the same API and output
        from zlib_ng import zlib_ng as inflate_lib
    except ImportError:  # pragma: no cover - the dependency is optional at runtime
        inflate_lib = zlib
    inflater = inflate_lib.decompressobj(31)  # 31: a gzip wrapper, its CRC and length checked
    try:
        text = inflater.decompress(raw)
    except inflate_lib.error:
        text = None
    if text is None or not inflater.eof or inflater.unused_data:
        import gzip

        return gzip.decompress(raw)
    return text


def parse_catalog(raw: bytes, path: str | os.PathLike[str]) -> Catalog:
    """Parse the bytes of a gzip'd RCC catalog file read from ``path`` (as :func:`read_catalog`)."""
    path = os.fspath(path)
    with gc_paused():  # JSON decoding, too, makes tens of thousands of objects
        try:
            catalog = catalog_from_json(catalog_json(raw, path))
        except (CatalogError, RecursionError):
            # Decoded by orjson, a number past 64 bits became a float: json decides, and words the error.
            try:
                catalog = catalog_from_json(catalog_json(raw, path, fast=False))
            except RecursionError:
                raise CatalogError(f"{path}: the directory tree is nested too deeply") from None
    catalog.source = path
    return catalog


def _fast_json() -> Any:
    """orjson, which decodes a catalog's JSON about twice as fast as json, to the same objects;
    None without it. Imported on first use: the import costs a start-up ~10 ms."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - the dependency is optional at runtime
        return None
    return orjson


def catalog_json(raw: bytes, path: str, *, fast: bool = True) -> Any:
    """The decoded JSON of the bytes of a gzip'd catalog file read from ``path``: by orjson
    when ``fast`` and it takes them, else by json (which accepts a few things orjson does not:
    a BOM, lone surrogates, NaN; and reads numbers past 64 bits as ints, not floats)."""
    if raw[:2] != b"\x1f\x8b":
        raise CatalogError(f"{path} is not a catalog: not a gzip stream")
    try:
        text = gunzip(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise CatalogError(f"{path} is not a catalog: truncated or corrupt gzip ({exc})") from None
    orjson = _fast_json() if fast else None
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    import json

    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{path} is not a catalog: invalid JSON ({exc})") from None
    except RecursionError:
        raise CatalogError(f"{path}: the directory tree is nested too deeply") from None


# --- writing -------------------------------------------------------------------------

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(text: str) -> str:
    """A JSON string literal exactly as Go's encoding/json writes it."""
    out = ['"']
    for ch in text:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_json(value: Any, indent: str, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = indent + "  "
        out.append("{\n")
        for i, (k, v) in enumerate(value.items()):
            out.append(f"{inner}{_go_string(k)}: ")
            _go_json(v, inner, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(indent + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        inner = indent + "  "
        out.append("[\n")
        for i, v in enumerate(value):
            out.append(inner)
            _go_json(v, inner, out)
            out.append(",\n" if i < len(value) - 1 else "\n")
        out.append(indent + "]")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif value is None:
        out.append("null")
    else:  # pragma: no cover - the model holds no other types
        raise TypeError(f"cannot encode {type(value).__name__}")


def _file_to_json(f: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name}
    if f.symlink:
        out["symlink"] = f.symlink
    out.update(size=f.size, mode=f.mode, digest=f.digest, rewrite=list(f.rewrite))
    return out


def _dir_to_json(d: DirEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"name": d.name}
    if d.symlink:
        out["symlink"] = d.symlink
    out["mode"] = d.mode
    out["subdirs"] = {k: _dir_to_json(d.subdirs[k]) for k in sorted(d.subdirs)}
    out["files"] = {k: _file_to_json(d.files[k]) for k in sorted(d.files)}
    if d.shadow:
        out["shadow"] = True
    return out


def catalog_to_json(catalog: Catalog) -> dict[str, Any]:
    """The catalog as a JSON-ready dict, fields in RCC's (Go struct) order."""
    out = catalog.info()
    out["lifted"] = catalog.lifted
    out["tree"] = _dir_to_json(catalog.tree)
    return out


def dumps_go(value: Any) -> bytes:
    """Go ``json.MarshalIndent(value, "", "  ")`` output for a JSON-ready value."""
    out: list[str] = []
    _go_json(value, "", out)
    return "".join(out).encode("utf-8")


def catalog_bytes(catalog: Catalog) -> bytes:
    """The uncompressed catalog JSON, as RCC would write it."""
    return dumps_go(catalog_to_json(catalog))


def write_catalog(catalog: Catalog, path: str | os.PathLike[str], *, info_sidecar: bool = True) -> Path:
    """Write a gzip'd catalog (and RCC's ``.info`` sidecar) atomically."""
    import gzip
    import io
    from pathlib import Path

    from .fsutil import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0, filename="") as gz:
        gz.write(catalog_bytes(catalog))
    atomic_write_bytes(path, buf.getvalue())
    if info_sidecar:
        atomic_write_bytes(path.with_name(path.name + ".info"), dumps_go(catalog.info()))
    return path


def catalog_name(blueprint: str, platform: str) -> str:
    """RCC's catalog file name: ``<blueprint>v12.<platform>``."""
    return f"{blueprint}v12.{platform}"
