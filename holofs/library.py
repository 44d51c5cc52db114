"""The hololib blob store: RCC's fan-out layout, encoding detection, atomic writes.

``<hololib>/library/<d0d1>/<d2d3>/<d4d5>/<digest>`` holds one blob per distinct content,
gzip-compressed, zstd-compressed or raw. The encoding is read from the blob's magic bytes,
never guessed from names; a blob whose stored size equals the catalog size is raw (a gzip or
zstd container always adds a header), which keeps raw ``.gz`` files in raw libraries right.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Iterator

from .catalog import Catalog, catalog_name, read_catalog
from .errors import CorruptBlob, LibraryError, MissingBlob, NotFound, UsageError
from .fsutil import part_name, raise_for_disk, unlink_quietly

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import BinaryIO

GZIP = "gzip"
ZSTD = "zstd"
RAW = "none"
ENCODINGS = (GZIP, ZSTD, RAW)
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESS_NO_MARKER = "compress.no"
CHUNK = 1 << 20


def detect_encoding(head: bytes, stored_size: int | None = None, expected_size: int | None = None) -> str:
    """Encoding of a blob from its first bytes (and sizes, to recognise raw look-alikes)."""
    if stored_size is not None and expected_size is not None and stored_size == expected_size:
        return RAW
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    return RAW


def blob_relpath(digest: str) -> str:
    """RCC's fan-out location of a blob, relative to ``library/``."""
    return f"{digest[0:2]}/{digest[2:4]}/{digest[4:6]}/{digest}"


class _ZstdStream:
    """A readable, closable zstd decompression stream over a file."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard  # imported where used: it costs a start-up that reads no zstd blob ~1 ms

        self._raw = raw
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        self._error = zstandard.ZstdError

    def read(self, n: int = -1) -> bytes:
        try:
            return self._reader.read(n)
        except self._error as exc:
            raise CorruptBlob(f"zstd data is corrupt: {exc}") from None

    def readinto(self, buf: memoryview | bytearray) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._reader.close()
        self._raw.close()

    def __enter__(self) -> _ZstdStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _GzipStream:
    """A readable gzip stream that reports corruption as CorruptBlob."""

    def __init__(self, raw: BinaryIO) -> None:
        import gzip

        self._raw = raw
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")

    def read(self, n: int = -1) -> bytes:
        try:
            return self._gz.read(n)
        except (EOFError, OSError, zlib.error) as exc:
            raise CorruptBlob(f"gzip data is corrupt: {exc}") from None

    def readinto(self, buf: memoryview | bytearray) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._gz.close()
        self._raw.close()

    def __enter__(self) -> _GzipStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decoded_stream(raw: BinaryIO, encoding: str) -> BinaryIO:
    """Wrap an open blob file in the decoder for ``encoding`` (raw returns it as is)."""
    if encoding == GZIP:
        return _GzipStream(raw)  # type: ignore[return-value]
    if encoding == ZSTD:
        return _ZstdStream(raw)  # type: ignore[return-value]
    return raw


class Hololib:
    """A hololib directory: ``catalog/`` and ``library/``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # The root and library as strings too: a restore reads them without importing pathlib.
        self.fspath = os.path.abspath(os.fspath(root))
        self.library_fspath = os.path.join(self.fspath, "library")

    @functools.cached_property
    def root(self) -> Path:
        from pathlib import Path

        return Path(self.fspath)

    @functools.cached_property
    def library_dir(self) -> Path:
        return self.root / "library"

    @functools.cached_property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    # -- construction ---------------------------------------------------------------

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Hololib:
        """An existing hololib; a clear error if ``root`` is not one."""
        lib = cls(root)
        if not os.path.exists(lib.fspath):
            raise NotFound(f"hololib not found: {lib.fspath}")
        if not os.path.isdir(lib.library_fspath):
            raise LibraryError(f"{lib.fspath} is not a hololib: it has no library/ directory")
        return lib

    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> Hololib:
        """A hololib at ``root``, created if needed."""
        lib = cls(root)
        lib.library_dir.mkdir(parents=True, exist_ok=True)
        lib.catalog_dir.mkdir(parents=True, exist_ok=True)
        return lib

    @classmethod
    def of_catalog(cls, catalog_path: str | os.PathLike[str]) -> Hololib:
        """The hololib a catalog file lives in (``<hololib>/catalog/<name>``)."""
        return cls.open(os.path.dirname(os.path.dirname(os.path.abspath(os.fspath(catalog_path)))))

    # -- compression marker ----------------------------------------------------------

    @property
    def compress_no(self) -> bool:
        """True if RCC's ``catalog/compress.no`` marker is present (new blobs raw, SipHash)."""
        return (self.catalog_dir / COMPRESS_NO_MARKER).exists()

    def set_compress_no(self, on: bool) -> None:
        marker = self.catalog_dir / COMPRESS_NO_MARKER
        if on:
            self.catalog_dir.mkdir(parents=True, exist_ok=True)
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    # -- blobs ------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.library_dir / blob_relpath(digest)

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def encoding(self, digest: str, expected_size: int | None = None) -> str:
        """The stored encoding of a blob."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                head = f.read(4)
                stored = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise MissingBlob(f"blob {digest} is missing from {self.library_dir}") from None
        return detect_encoding(head, stored, expected_size)

    def open_raw(self, digest: str) -> BinaryIO:
        """The blob file as stored (not decoded)."""
        try:
            return open(self.blob_path(digest), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise MissingBlob(f"blob {digest} is missing from {self.library_dir}") from None

    def open_blob(self, digest: str, expected_size: int | None = None) -> tuple[BinaryIO, str]:
        """A stream of the blob's original content and the encoding it was stored in."""
        raw = self.open_raw(digest)
        head = raw.read(4)
        raw.seek(0)
        encoding = detect_encoding(head, os.fstat(raw.fileno()).st_size, expected_size)
        return decoded_stream(raw, encoding), encoding

    def read_blob(self, digest: str, expected_size: int | None = None) -> bytes:
        """The whole decoded content of a blob (for small blobs and tests)."""
        stream, _ = self.open_blob(digest, expected_size)
        with stream:
            return stream.read()

    def iter_digests(self) -> Iterator[str]:
        """Every blob digest stored in the library (temporary files skipped)."""
        if not self.library_dir.is_dir():
            return
        for _dirpath, _dirs, files in os.walk(self.library_dir):
            for name in files:
                if ".part" not in name:
                    yield name

    def write_blob_from(self, digest: str, source: BinaryIO, encoding: str, *, level: int | None = None) -> Path:
        """Store ``source`` (original content) under ``digest`` in ``encoding``, atomically.

        The caller is responsible for ``digest`` matching the content. ``source`` must be
        seekable (a compressed result as long as the content is rewritten raw)."""
        if encoding not in ENCODINGS:
            raise UsageError(f"unknown compression {encoding!r}: use one of {', '.join(ENCODINGS)}")
        final = self.blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = part_name(final)
        try:
            counted = _CountingReader(source)
            with open(tmp, "xb") as sink:
                encode_stream(counted, sink, encoding, level=level)  # type: ignore[arg-type]
                if encoding != RAW and sink.tell() == counted.count:
                    # A compressed blob as long as its content would read back as raw
                    # (see detect_encoding): store such rare blobs raw.
                    source.seek(0)
                    sink.seek(0)
                    sink.truncate()
                    encode_stream(source, sink, RAW)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except OSError as exc:
            unlink_quietly(tmp)
            raise_for_disk(exc, os.fspath(final))
        except BaseException:
            unlink_quietly(tmp)
            raise
        return final

    # -- catalogs ---------------------------------------------------------------------

    def catalog_paths(self) -> list[Path]:
        """Catalog files (``.info`` sidecars, markers and temporaries skipped)."""
        if not self.catalog_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.catalog_dir.iterdir()
            if p.is_file() and not p.name.endswith(".info") and p.name != COMPRESS_NO_MARKER and ".part" not in p.name
        )

    def find_catalog(self, name: str) -> Path:
        """A catalog by file name, blueprint, or unique prefix of either."""
        candidates = self.catalog_paths()
        exact = [p for p in candidates if p.name == name]
        if exact:
            return exact[0]
        matches = [p for p in candidates if p.name.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            known = ", ".join(p.name for p in candidates) or "none"
            raise NotFound(f"no catalog {name!r} in {self.catalog_dir} (catalogs: {known})")
        raise UsageError(f"{name!r} matches several catalogs: {', '.join(p.name for p in matches)}")

    def catalog_path_for(self, catalog: Catalog) -> Path:
        return self.catalog_dir / catalog_name(catalog.blueprint, catalog.platform)


class _CountingReader:
    """Counts the bytes read through it (the original content size)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self.count += len(data)
        return data


def encode_stream(source: BinaryIO, sink: BinaryIO, encoding: str, *, level: int | None = None) -> None:
    """Copy ``source`` into ``sink``, compressing as ``encoding`` says."""
    import shutil

    if encoding == RAW:
        shutil.copyfileobj(source, sink, CHUNK)
    elif encoding == GZIP:
        import gzip

        # RCC writes gzip at "best speed"; mtime 0 keeps blobs reproducible.
        with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=level or 1, mtime=0, filename="") as gz:
            shutil.copyfileobj(source, gz, CHUNK)
    elif encoding == ZSTD:
        import zstandard

        cctx = zstandard.ZstdCompressor(level=level or 3)
        cctx.copy_stream(source, sink, read_size=CHUNK, write_size=CHUNK)
    else:
        raise UsageError(f"unknown compression {encoding!r}")


def catalog_file(ref: str, hololib: str | os.PathLike[str] | None = None) -> tuple[str | Path, Hololib | None]:
    """The catalog file named by path, or by name/blueprint inside ``hololib`` (not parsed).

    Returns the path and the opened ``hololib`` (None: the library holding the catalog file)."""
    if hololib is not None:
        lib = Hololib.open(hololib)
        return (ref if os.path.isfile(ref) else lib.find_catalog(ref)), lib
    if os.path.isdir(ref):
        raise UsageError(f"{ref} is a directory: name a catalog file, or pass --hololib with a catalog name")
    return ref, None


def resolve_catalog(ref: str, hololib: str | os.PathLike[str] | None = None) -> tuple[Catalog, Hololib]:
    """Read a catalog named by path, or by name/blueprint inside ``hololib``.

    Returns the catalog and the hololib holding its blobs."""
    path, lib = catalog_file(ref, hololib)
    catalog = read_catalog(path)
    return catalog, lib if lib is not None else Hololib.of_catalog(path)
