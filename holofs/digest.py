"""Content digests exactly as RCC computes them.

RCC hashes the original (uncompressed, unrelocated) content. A library used with
``compress.no`` gets SipHash-2-4 with 128-bit output keyed ``Very_Random-Seed`` (32 hex
chars); otherwise SHA-256 (64 hex chars). The digest's length tells which.
"""

from __future__ import annotations

import mmap
import os
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Protocol

    class Hasher(Protocol):
        def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
        def hexdigest(self) -> str: ...


SIPHASH_KEY = b"Very_Random-Seed"
SHA256 = "sha256"
SIPHASH128 = "siphash128"
_HEX = re.compile(r"[0-9a-f]+\Z")
_LENGTHS = {64: SHA256, 32: SIPHASH128}


def algorithm_of(digest: str) -> str | None:
    """The algorithm a digest was made with, or None if it is not a valid digest."""
    if not _HEX.match(digest):
        return None
    return _LENGTHS.get(len(digest))


def is_valid_digest(digest: str) -> bool:
    return algorithm_of(digest) is not None


def siphash128(data: bytes | bytearray | memoryview | mmap.mmap, key: bytes = SIPHASH_KEY) -> bytes:
    """SipHash-2-4-128 of a buffer (zero-copy for mmaps and memoryviews); ``key`` is 16 bytes."""
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    from siphash import _siphash  # type: ignore[import-untyped]  # C SipHash, 128-bit output; cffi: ~1.5 ms to import

    ffi, lib = _siphash.ffi, _siphash.lib
    out = ffi.new("uint8_t[16]")
    src = ffi.from_buffer(data) if len(data) else ffi.new("uint8_t[1]")
    if lib.siphash(src, len(data), key, out, 16) != 0:  # pragma: no cover
        raise RuntimeError("siphash failed")
    return bytes(ffi.buffer(out, 16))


class SipHash128:
    """Streaming facade over the one-shot C SipHash: buffers input in memory and spills
    to an anonymous temporary file past ``spill`` bytes, hashing once at the end."""

    name = SIPHASH128
    _SPILL = 64 << 20

    def __init__(self) -> None:
        self._buf = bytearray()
        self._file: IO[bytes] | None = None

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        if self._file is not None:
            self._file.write(data)
            return
        self._buf += data
        if len(self._buf) > self._SPILL:
            import tempfile  # only for this (with random: ~2 ms to import)

            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in hexdigest
            self._file.write(self._buf)
            self._buf = bytearray()

    def digest(self) -> bytes:
        if self._file is None:
            return siphash128(self._buf)
        self._file.flush()
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as view:
            result = siphash128(view)
        self._file.close()
        self._file = None
        return result

    def hexdigest(self) -> str:
        return self.digest().hex()


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex: by the accelerator where it is built (a restore then
    never imports hashlib, ~3 ms), else by hashlib."""
    try:
        from ._native import sha256
    except ImportError:  # pragma: no cover - where the accelerator is not built
        digest = None
    else:
        digest = sha256(data)
    if digest is None:
        import hashlib

        return hashlib.sha256(data).hexdigest()
    return digest.hex()


def new_hasher(algorithm: str) -> Hasher:
    """A fresh streaming hasher for ``algorithm`` (SHA256 or SIPHASH128)."""
    if algorithm == SHA256:
        import hashlib  # on first use: a restore's start-up does without it

        return hashlib.sha256()
    if algorithm == SIPHASH128:
        return SipHash128()
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


def hasher_for(digest: str) -> Hasher:
    """A hasher of the same algorithm as ``digest``."""
    algorithm = algorithm_of(digest)
    if algorithm is None:
        raise ValueError(f"not a digest: {digest!r}")
    return new_hasher(algorithm)


def hash_file(path: str | os.PathLike[str], algorithm: str) -> str:
    """Digest of a whole file (mmap'd, so large files are not copied into memory)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            h = new_hasher(algorithm)
            return h.hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            if algorithm == SIPHASH128:
                return siphash128(view).hex()
            import hashlib

            return hashlib.sha256(view).hexdigest()
