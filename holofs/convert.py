"""Re-encode every blob of a hololib (gzip / zstd / raw) in place, verified and atomic.

Each blob is decoded, hashed against its digest while it is re-encoded into a temporary file
next to it, and renamed over the old one only if the hash matches. Digests never change:
a library converted to raw keeps its SHA-256 names (and a raw SipHash library converted to
gzip keeps its SipHash names). RCC's ``catalog/compress.no`` marker tells RCC which digest
algorithm to use for *new* files, so it is set (``--to none``) only when every digest is
already SipHash-128, and cleared (``--to gzip|zstd``) only when every digest is SHA-256;
otherwise it is left as it was and the result says so.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .catalog import iter_files, read_catalog
from .digest import SHA256, SIPHASH128, algorithm_of, hasher_for
from .errors import CatalogError, CorruptBlob, HolofsError, NotFound, UsageError
from .fsutil import part_name, raise_for_disk
from .library import ENCODINGS, RAW, Hololib, decoded_stream, detect_encoding, encode_stream


@dataclass
class ConvertResult:
    to: str
    converted: int = 0
    unchanged: int = 0
    corrupt: list[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    marker: str = "unchanged"
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"to": self.to, "converted": self.converted, "unchanged": self.unchanged,
                "corrupt": self.corrupt, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "compress_no_marker": self.marker, "seconds": round(self.seconds, 6)}


class _HashingReader:
    """Reads a decoded stream, hashing and counting what passes through."""

    def __init__(self, stream: Any, digest: str) -> None:
        self._stream = stream
        self.hasher = hasher_for(digest)
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data:
            self.hasher.update(data)
            self.size += len(data)
        return data


def _known_sizes(lib: Hololib) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for path in lib.catalog_paths():
        try:
            catalog = read_catalog(path)
        except (CatalogError, NotFound):
            continue
        for _rel, entry, _parent in iter_files(catalog.tree, include_shadow=False):
            if not entry.symlink:
                sizes[entry.digest] = entry.size
    return sizes


def _convert_one(lib: Hololib, digest: str, to: str, level: int | None, size: int | None) -> tuple[bool, int, int]:
    """Re-encode one blob; returns (changed, bytes before, bytes after)."""
    path = lib.blob_path(digest)
    with open(path, "rb") as f:
        head = f.read(4)
        st = os.fstat(f.fileno())
    encodings = [detect_encoding(head, st.st_size, size)]
    if size is None and encodings[0] != RAW:
        encodings.append(RAW)  # no catalog size: a raw blob may look compressed (a raw .gz file)
    if encodings[0] == to and level is None:
        return False, st.st_size, st.st_size
    last: HolofsError | None = None
    for encoding in encodings:
        tmp = part_name(path)
        try:
            with open(path, "rb") as raw, open(tmp, "xb") as sink:
                reader = _HashingReader(decoded_stream(raw, encoding), digest)
                encode_stream(reader, sink, to, level=level)  # type: ignore[arg-type]
            actual = reader.hasher.hexdigest()
            if actual != digest or (size is not None and reader.size != size):
                raise CorruptBlob(f"blob {digest}: corrupt (expected digest {digest}, actual {actual}, "
                                  f"{reader.size} bytes{'' if size is None else f', catalog says {size}'})")
            os.chmod(tmp, st.st_mode & 0o777)
            os.replace(tmp, path)
            return True, st.st_size, os.stat(path).st_size
        except HolofsError as exc:
            last = exc
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise_for_disk(exc, os.fspath(path))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    assert last is not None
    raise last


def convert_library(root: str | os.PathLike[str], to: str, *, level: int | None = None, workers: int | None = None,
                    progress: Callable[[int], None] | None = None) -> ConvertResult:
    """Re-encode every blob of the hololib at ``root`` as ``to`` (gzip, zstd or none)."""
    if to not in ENCODINGS:
        raise UsageError(f"unknown compression {to!r}: use one of {', '.join(ENCODINGS)}")
    t0 = time.perf_counter()
    lib = Hololib.open(root)
    sizes = _known_sizes(lib)
    digests = [d for d in lib.iter_digests() if algorithm_of(d) is not None]
    result = ConvertResult(to=to)

    def job(digest: str) -> tuple[str, bool, int, int, str | None]:
        try:
            changed, before, after = _convert_one(lib, digest, to, level, sizes.get(digest))
            return digest, changed, before, after, None
        except CorruptBlob as exc:
            return digest, False, 0, 0, str(exc)

    with ThreadPoolExecutor(max_workers=workers or min(32, 2 * (os.cpu_count() or 1))) as pool:
        for _digest, changed, before, after, error in pool.map(job, digests):
            if error is not None:
                result.corrupt.append(error)
            elif changed:
                result.converted += 1
            else:
                result.unchanged += 1
            result.bytes_before += before
            result.bytes_after += after
            if progress is not None:
                progress(1)
    algorithms = {algorithm_of(d) for d in digests}
    if to == RAW and algorithms <= {SIPHASH128} and digests:
        if not lib.compress_no:
            lib.set_compress_no(True)
            result.marker = "set"
    elif to != RAW and algorithms <= {SHA256} and lib.compress_no:
        lib.set_compress_no(False)
        result.marker = "cleared"
    elif (to == RAW) != lib.compress_no:
        result.marker = "unchanged (digests use the other algorithm)"
    result.seconds = time.perf_counter() - t0
    return result
