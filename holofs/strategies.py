"""How one catalog file becomes a real file: the strategy matrix and its fallbacks.

=================  ===========================================================
strategy           used for
=================  ===========================================================
reflink            raw blob, same filesystem with copy-on-write (FICLONE); files
                   with rewrites are cloned and then only the rewrite ranges are
                   pwritten (those blocks become unshared)
copy_file_range    raw blob when reflink is impossible (other fs, no CoW)
decompress         gzip/zstd blob: streamed decode + write, rewrites applied in
                   the buffer
copy               plain copy (sendfile, then read/write): ``--strategy copy``,
                   copy-pattern matches, and the end of every fallback chain
hardlink           opt-in (``mode="hardlink"``), raw blob, no rewrites, blob
                   permissions already right: the file *shares the inode* with
                   the library (writing to it corrupts the library; its times
                   are the blob's, not RCC's mother time)
symlink            entries with a recorded symlink target (verbatim)
=================  ===========================================================

Fallback chain on EXDEV/EOPNOTSUPP/EINVAL/ENOTTY/...: reflink -> copy_file_range -> copy.
Whether reflink works is learned once per (library st_dev, target st_dev) pair and cached.
With ``verify`` the original content is hashed while it is produced (decoded stream, or an
mmap of a raw source as it is cloned), never by reading the result back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import threading
import time
import zlib

from .catalog import FileEntry
from .digest import SHA256, SIPHASH128, algorithm_of, new_hasher, siphash128
from .errors import CatalogError, CorruptBlob, MissingBlob
from .fsutil import current_umask, raise_for_disk
from .library import GZIP_MAGIC, ZSTD_MAGIC, Hololib, blob_relpath
from .logs import logger
from .relocation import Relocation
from .verification import VerifyPolicy, blob_key_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import zstandard

try:  # the optional C accelerator (holofs/_native.c, Linux): decodes and hashes without the GIL
    from . import _native
except ImportError:  # pragma: no cover - exercised where no compiler built it
    _native = None


REFLINK = "reflink"
COPY_FILE_RANGE = "copy_file_range"
DECOMPRESS = "decompress"
COPY = "copy"
HARDLINK = "hardlink"
SYMLINK = "symlink"
STRATEGIES = (REFLINK, COPY_FILE_RANGE, DECOMPRESS, COPY, HARDLINK, SYMLINK)
COMPRESSED_REFLINK_WARNING = ("reflink needs raw blobs and this library's are compressed: decompressing "
                              "(see holofs library convert --to none)")
NO_REFLINK_WARNING = "reflink is impossible from the library to the target; copying"
MODES = ("auto", "reflink", "copy", "hardlink")

FICLONE = 0x40049409
CHUNK = 1 << 20
SMALL = 1 << 20
NATIVE_DECODE_MAX = 64 << 20
"""Blobs and contents up to this size are decoded in one native call, in memory (larger ones
stream in 1 MiB chunks): with 8 fill threads at most ~1 GiB is held at once."""
_UNSUPPORTED = {
    errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOTTY, errno.ENOSYS,
    errno.EPERM, errno.EBADF, errno.ETXTBSY,
}
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_BLOB = os.O_RDONLY | os.O_CLOEXEC
_inflate: tuple[Any, tuple[type[BaseException], ...]] | None = None


def _inflater() -> tuple[Any, tuple[type[BaseException], ...]]:
    """zlib-ng (it inflates about twice as fast as zlib, with the same API and output), else
    zlib, and the errors either raises. Imported on first use: it costs a start-up that
    decodes no gzip blob ~2 ms."""
    global _inflate
    if _inflate is None:
        try:
            from zlib_ng import zlib_ng as lib
        except ImportError:  # pragma: no cover - the dependency is optional at runtime
            lib = zlib
        _inflate = (lib, (zlib.error, lib.error))
    return _inflate


class StrategyCounter:
    __slots__ = ("files", "bytes", "seconds")

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.seconds = 0.0


class ProduceResult:
    __slots__ = ("strategy", "nbytes", "verified")

    def __init__(self, strategy: str, nbytes: int, verified: bool) -> None:
        self.strategy = strategy
        self.nbytes = nbytes
        self.verified = verified


class Linker:
    """Chooses and proves strategies per (library fs, target fs) pair; thread-safe.

    ``mode``: ``auto`` (reflink, else copy_file_range, else copy), ``reflink`` (the same, but
    warns once when reflink is impossible), ``copy`` (plain copies only), ``hardlink``
    (hardlink raw unrewritten blobs, auto for the rest). ``copy_patterns`` are fnmatch globs
    on the entry path whose files are always copied, never shared."""

    def __init__(self, mode: str = "auto", copy_patterns: tuple[str, ...] = ()) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown strategy mode {mode!r}")
        self.mode = mode
        self.copy_patterns = tuple(copy_patterns)
        self.counters: dict[str, StrategyCounter] = {}
        self._reflink: dict[tuple[int, int], bool] = {}
        self._cfr: dict[tuple[int, int], bool] = {}
        self._warned: dict[str, str] = {}
        self._lock = threading.Lock()
        # Mode bits a create cannot be trusted to set (fchmod follows): those the umask strips,
        # and the special bits (a later write by a non-root process clears setuid/setgid).
        self.chmod_after = current_umask() | 0o7000

    # -- bookkeeping -----------------------------------------------------------------

    def record(self, strategy: str, nbytes: int, seconds: float, files: int = 1) -> None:
        with self._lock:
            c = self.counters.get(strategy)
            if c is None:
                c = self.counters[strategy] = StrategyCounter()
            c.files += files
            c.bytes += nbytes
            c.seconds += seconds

    def absorb(self, counters: dict[str, dict[str, float]], warnings: list[str]) -> None:
        """Add another Linker's :meth:`as_dict` counters and warnings (already shown) to this one."""
        with self._lock:
            for name, c in counters.items():
                mine = self.counters.setdefault(name, StrategyCounter())
                mine.files += int(c["files"])
                mine.bytes += int(c["bytes"])
                mine.seconds += c["seconds"]
            for message in warnings:
                self._warned.setdefault(f"absorbed:{message}", message)

    def warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned[key] = message
        logger("holofs.strategies").warning("%s", message)

    @property
    def warnings(self) -> list[str]:
        """The messages warned about so far (each once)."""
        with self._lock:
            return list(self._warned.values())

    def must_copy(self, path: str) -> bool:
        """True if ``path`` matches a copy pattern (always copied, never reflinked)."""
        if not self.copy_patterns:
            return False
        import fnmatch

        return any(fnmatch.fnmatchcase(path, pat) for pat in self.copy_patterns)

    def reflink_known(self, pair: tuple[int, int]) -> bool | None:
        return self._reflink.get(pair)

    def _set(self, table: dict[tuple[int, int], bool], pair: tuple[int, int], ok: bool) -> None:
        """Learn once per pair (the first answer sticks)."""
        if pair not in table:
            with self._lock:
                table.setdefault(pair, ok)

    def as_dict(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                name: {"files": c.files, "bytes": c.bytes, "seconds": round(c.seconds, 6)}
                for name, c in sorted(self.counters.items())
            }


# --- decoding --------------------------------------------------------------------------

_tls = threading.local()


def _zstd_dctx() -> zstandard.ZstdDecompressor:
    dctx = getattr(_tls, "dctx", None)
    if dctx is None:
        import zstandard  # imported where used: it costs a start-up that reads no zstd blob ~1 ms

        dctx = _tls.dctx = zstandard.ZstdDecompressor()
    return dctx


class _FdReader:
    """Minimal file object over a raw fd (for zstandard's stream_reader)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, n: int = -1) -> bytes:
        return os.read(self.fd, CHUNK if n is None or n < 0 else n)


def _gzip_chunks(fd: int, limit: int, label: str):
    inflate_lib, errors = _inflater()
    d = inflate_lib.decompressobj(31)
    total = 0
    done = False
    while True:
        data = os.read(fd, CHUNK)
        if not data:
            break
        while data:
            if done:  # a further gzip member (or trailing garbage)
                d = inflate_lib.decompressobj(31)
                done = False
            try:
                out = d.decompress(data, CHUNK)
            except errors as exc:
                raise CorruptBlob(f"{label}: gzip data is corrupt ({exc})") from None
            if out:
                total += len(out)
                if total > limit:
                    raise _TooBig(total)
                yield out
            if d.eof:
                data = d.unused_data
                done = True
            else:
                data = d.unconsumed_tail
    if not done:
        try:
            out = d.flush()
        except errors as exc:
            raise CorruptBlob(f"{label}: gzip data is corrupt ({exc})") from None
        if out:
            total += len(out)
            if total > limit:
                raise _TooBig(total)
            yield out
        if not d.eof:
            raise CorruptBlob(f"{label}: gzip data is truncated")


def _zstd_chunks(fd: int, limit: int, label: str):
    import zstandard

    reader = _zstd_dctx().stream_reader(_FdReader(fd), read_size=CHUNK, read_across_frames=True, closefd=False)
    total = 0
    try:
        while True:
            out = reader.read(CHUNK)
            if not out:
                break
            total += len(out)
            if total > limit:
                raise _TooBig(total)
            yield out
    except zstandard.ZstdError as exc:
        raise CorruptBlob(f"{label}: zstd data is corrupt ({exc})") from None


def _raw_chunks(fd: int, limit: int, label: str):
    total = 0
    while True:
        out = os.read(fd, CHUNK)
        if not out:
            return
        total += len(out)
        if total > limit:
            raise _TooBig(total)
        yield out


class _TooBig(Exception):
    def __init__(self, seen: int) -> None:
        self.seen = seen


# --- helpers ---------------------------------------------------------------------------


HASH_BUFFER_MAX = 4 << 20
"""Blobs up to this size are hashed from a per-thread buffer, larger ones through mmap. In a
process with several threads every munmap interrupts the other CPUs to flush their TLBs: an
mmap per blob made hashing the corpus's 15k raw blobs ~1.5x slower."""
_hash_buffers = threading.local()


def _hash_fd(fd: int, size: int, digest: str) -> str:
    """Digest of an open file's first ``size`` bytes (one read into a reused buffer, or an
    mmap past :data:`HASH_BUFFER_MAX`; no copy into a new Python object either way)."""
    alg = algorithm_of(digest)
    if size == 0:
        return new_hasher(alg or "sha256").hexdigest()
    if size > HASH_BUFFER_MAX:
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as view:
            return _hash_view(view, alg)
    buf: bytearray | None = getattr(_hash_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _hash_buffers.buf = bytearray(max(size, CHUNK))
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.preadv(fd, [view[got:size]], got)
        if n == 0:
            break  # shorter than recorded: hash what is there (it will not match)
        got += n
    with view[:got] as data:
        return _hash_view(data, alg)


def _hash_view(data: memoryview | mmap.mmap, alg: str | None) -> str:
    if alg == SIPHASH128:
        return siphash128(data).hex()
    import hashlib  # on first use: a restore the native code hashes for never imports it

    return hashlib.sha256(data).hexdigest()


def _corrupt(label: str, expected: str, actual: str, detail: str = "") -> CorruptBlob:
    extra = f" ({detail})" if detail else ""
    return CorruptBlob(f"{label}: corrupted hololib blob, expected digest {expected}, actual {actual}{extra}")


def _rewrites_of(entry: FileEntry, relocation: Relocation | None, label: str) -> tuple[list[int], bytes]:
    """The offsets to rewrite in ``entry`` and the identity written there (none for no or an
    identity relocation); CatalogError if an offset range leaves the file."""
    if relocation is None or relocation.is_identity or not entry.rewrite:
        return [], b""
    _check_rewrites(entry, len(relocation.target), label)
    return entry.rewrite, relocation.target


def _check_rewrites(entry: FileEntry, n: int, label: str) -> None:
    for off in entry.rewrite:
        if off < 0 or off + n > entry.size:
            raise CatalogError(f"{label}: rewrite offset {off} lies outside the file (size {entry.size})")


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _apply_window(buf: bytearray, pos: int, offsets: list[int], ident: bytes) -> None:
    n = len(ident)
    end = pos + len(buf)
    for off in offsets:
        if off + n <= pos or off >= end:
            continue
        s = max(off, pos)
        e = min(off + n, end)
        buf[s - pos : e - pos] = ident[s - off : e - off]


def _sendfile_all(dst: int, src: int, size: int) -> None:
    off = 0
    while off < size:
        sent = os.sendfile(dst, src, off, size - off)
        if sent == 0:
            raise OSError(errno.EIO, "source shrank while copying")
        off += sent


def _cfr_all(dst: int, src: int, size: int) -> None:
    off = 0
    while off < size:
        n = os.copy_file_range(src, dst, size - off, off, off)
        if n == 0:
            raise OSError(errno.EIO, "source shrank while copying")
        off += n


# --- the producer ---------------------------------------------------------------------


def produce_file(
    lib: Hololib,
    entry: FileEntry,
    dest: str | os.PathLike[str],
    *,
    relocation: Relocation | None,
    verify: bool,
    linker: Linker,
    dir_fd: int | None = None,
    label: str | None = None,
    perm: int | None = None,
    times_ns: int | None = None,
    verified_store=None,
    policy=None,
    target_dev: int | None = None,
) -> ProduceResult:
    """Write ``entry``'s content (relocated) to the new file ``dest``.

    ``dest`` is created with O_EXCL|O_NOFOLLOW (relative to ``dir_fd``), with ``perm`` as its
    mode (``fchmod`` follows only for bits the umask strips or special bits); the caller renames
    it into place unless it builds in a private directory. ``times_ns`` (mtime=atime), when given,
    is applied through the open fd. With ``verified_store`` and ``policy`` the decision to hash is taken here from
    the blob's fstat (``verify`` is then ignored) and a successful hash is recorded. On any
    error ``dest`` is removed. Symlink entries become symlinks with the recorded target."""
    t0 = time.perf_counter()
    label = label or entry.name
    if entry.symlink:
        try:
            os.symlink(entry.symlink, dest, dir_fd=dir_fd)
        except OSError as exc:
            raise_for_disk(exc, label)
        linker.record(SYMLINK, 0, time.perf_counter() - t0)
        return ProduceResult(SYMLINK, 0, False)

    digest = entry.digest
    lib_dir = os.fspath(lib.library_dir)
    blob = f"{lib_dir}/{blob_relpath(digest)}"
    try:
        src = os.open(blob, _OPEN_BLOB)
    except FileNotFoundError:
        raise MissingBlob(f"{label}: blob {digest} is missing from {lib_dir}") from None
    try:
        st = os.fstat(src)
        if verified_store is not None and policy is not None:
            verify = verified_store.needs_check_stat(digest, st, policy)
        rewrites, ident = _rewrites_of(entry, relocation, label)
        whole = b""
        native = False
        if st.st_size == entry.size:
            encoding = "raw"
        else:
            native = _decodes_natively(entry, st.st_size, verify)
            if st.st_size <= SMALL and not native:  # one read serves detection and decoding
                whole = _read_all(src, st.st_size)
                head = whole[:4]
            else:
                head = os.pread(src, 4, 0)
            if head.startswith(GZIP_MAGIC):
                encoding = "gzip"
            elif head.startswith(ZSTD_MAGIC):
                encoding = "zstd"
            else:
                encoding = "raw"

        # hardlink: shares the inode, so only without rewrites and with matching perms.
        if (
            linker.mode == "hardlink" and encoding == "raw" and not rewrites and st.st_size == entry.size
            and (perm is None or (st.st_mode & 0o7777) == perm) and not linker.must_copy(label)
        ):
            if verify:
                actual = _hash_fd(src, st.st_size, digest)
                if actual != digest:
                    raise _corrupt(label, entry.digest, actual)
            try:
                os.link(blob, dest, dst_dir_fd=dir_fd)
                ok = True
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED and exc.errno != errno.EMLINK:
                    raise_for_disk(exc, label)
                linker.warn_once("hardlink", f"hardlink impossible ({exc.strerror}); copying instead")
                ok = False
            if ok:
                _mark(verified_store, verify, digest, st)
                linker.record(HARDLINK, entry.size, time.perf_counter() - t0)
                return ProduceResult(HARDLINK, entry.size, verify)

        try:
            dst = os.open(dest, _CREATE_FLAGS, 0o600 if perm is None else perm, dir_fd=dir_fd)
        except OSError as exc:
            raise_for_disk(exc, label)
        try:
            if encoding == "raw" and st.st_size == entry.size:
                strategy = _produce_raw(src, dst, entry, st, linker, verify, rewrites, ident, label, target_dev)
            else:
                strategy = DECOMPRESS if encoding != "raw" else COPY
                if linker.mode == "reflink" and encoding != "raw":
                    linker.warn_once("reflink:compressed", COMPRESSED_REFLINK_WARNING)
                done = native and encoding != "raw" and _produce_native(src, st.st_size, dst, entry, verify, rewrites,
                                                                         ident, label)
                if not done and whole:
                    done = _produce_small(whole, dst, entry, encoding, verify, rewrites, ident, label)
                if not done:
                    os.lseek(src, 0, os.SEEK_SET)
                    _produce_stream(src, dst, entry, encoding, verify, rewrites, ident, label, strategy)
            if perm is not None and perm & linker.chmod_after:
                os.fchmod(dst, perm)
            if times_ns is not None:
                os.utime(dst, ns=(times_ns, times_ns))
        except BaseException as exc:
            os.close(dst)
            with contextlib.suppress(OSError):
                os.unlink(dest, dir_fd=dir_fd)
            if isinstance(exc, OSError) and not isinstance(exc, CorruptBlob):
                raise_for_disk(exc, label)
            raise
        os.close(dst)
    finally:
        os.close(src)
    _mark(verified_store, verify, digest, st)
    linker.record(strategy, entry.size, time.perf_counter() - t0)
    return ProduceResult(strategy, entry.size, verify)


def _mark(store, verify: bool, digest: str, st: os.stat_result) -> None:
    if store is not None and verify:
        store.mark_verified_stat(digest, st)


def _produce_raw(src: int, dst: int, entry: FileEntry, st: os.stat_result, linker: Linker, verify: bool,
                 rewrites, ident: bytes, label: str, target_dev: int | None) -> str:
    """A raw blob of the right size: reflink, copy_file_range or copy, then rewrite ranges."""
    size = entry.size
    if size == 0:
        strategy = COPY
    else:
        strategy = ""
        if linker.mode == "copy" or linker.must_copy(label):
            pass
        else:
            if target_dev is None:
                target_dev = os.fstat(dst).st_dev
            pair = (st.st_dev, target_dev)
            if linker._reflink.get(pair, True):
                try:
                    fcntl.ioctl(dst, FICLONE, src)
                    strategy = REFLINK
                    linker._set(linker._reflink, pair, True)
                except OSError as exc:
                    if exc.errno not in _UNSUPPORTED:
                        raise
                    if pair not in linker._reflink:
                        linker._set(linker._reflink, pair, False)
                    if linker.mode == "reflink":
                        linker.warn_once(
                            f"reflink:{pair}",
                            f"reflink is impossible from the library to the target ({exc.strerror}); using copy_file_range/copy",
                        )
            elif linker.mode == "reflink":
                linker.warn_once(f"reflink:{pair}", NO_REFLINK_WARNING)
            if not strategy and linker._cfr.get(pair, True):
                try:
                    _cfr_all(dst, src, size)
                    strategy = COPY_FILE_RANGE
                    linker._set(linker._cfr, pair, True)
                except OSError as exc:
                    if exc.errno not in _UNSUPPORTED:
                        raise
                    linker._set(linker._cfr, pair, False)
                    os.ftruncate(dst, 0)
        if not strategy:
            try:
                _sendfile_all(dst, src, size)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                os.ftruncate(dst, 0)
                os.lseek(src, 0, os.SEEK_SET)
                os.lseek(dst, 0, os.SEEK_SET)
                while data := os.read(src, CHUNK):
                    _write_all(dst, data)
            strategy = COPY
    if verify:
        actual = _hash_fd(src, size, entry.digest)
        if actual != entry.digest:
            raise _corrupt(label, entry.digest, actual)
    for off in rewrites:
        os.pwrite(dst, ident, off)
    return strategy


def _decodes_natively(entry: FileEntry, blob_size: int, verify: bool) -> bool:
    """True if ``holofs._native.decode_file`` can take this blob: built, small enough, and able
    to compute the digest when one is wanted (SHA-256 only)."""
    return (_native is not None and max(entry.size, blob_size) <= NATIVE_DECODE_MAX
            and (not verify or (_native.HAS_SHA256 and algorithm_of(entry.digest) == SHA256)))


def _produce_native(src: int, blob_size: int, dst: int, entry: FileEntry, verify: bool, rewrites, ident: bytes,
                    label: str) -> bool:
    """Decode, hash and relocate in C with the GIL released; False (nothing written) if the
    blob is not one it decodes, so that the Python path decodes it or names the problem."""
    digest = _native.decode_file(src, blob_size, dst, entry.size, verify, ident, tuple(rewrites))
    if digest is None:
        return False
    if verify and digest.hex() != entry.digest:
        raise _corrupt(label, entry.digest, digest.hex())
    return True


def fill_natively(lib: Hololib, entry: FileEntry, tmp: str, final: str, *, relocation: Relocation | None,
                  linker: Linker, label: str, perm: int, verified_store=None, policy=None) -> int | None:
    """A cache fill in one native call: ``entry``'s compressed blob decoded (hashed as ``policy``
    asks, relocated) into the new file ``tmp``, renamed to ``final``.

    Returns a read-only fd of ``final``, or -1 if it was removed again before it could be
    opened. None when the native path does not take it (not built, raw or missing blob, not
    decodable there, digest mismatch): nothing was written, and :func:`produce_file` does it or
    names the problem. Python does a few attribute lookups around it: in a mount's fill threads
    that keeps the GIL free for the request loop (the general path takes it a dozen times)."""
    if _native is None or entry.symlink or entry.size > NATIVE_DECODE_MAX:
        return None
    t0 = time.perf_counter()
    blob = os.fsencode(f"{lib.library_dir}/{blob_relpath(entry.digest)}")
    rewrites, ident = _rewrites_of(entry, relocation, label)
    expect, same = b"", None
    if verified_store is not None and policy is not None and policy != VerifyPolicy.SKIP:
        need = True
        if policy != VerifyPolicy.ALWAYS:
            try:
                st = os.stat(blob)
            except FileNotFoundError:
                return None
            if st.st_size == entry.size:
                return None  # raw: produce_file may reflink it (fill_file would say so after an open)
            same = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            need = verified_store.needs_check_key(blob_key_of(entry.digest, same), policy)
        if need:
            if not _native.HAS_SHA256 or algorithm_of(entry.digest) != SHA256:
                return None
            expect, same = bytes.fromhex(entry.digest), None
    try:
        made = _native.fill_file(blob, os.fsencode(tmp), os.fsencode(final), entry.size, perm, expect, same, ident,
                                 tuple(rewrites))
    except OSError as exc:
        raise_for_disk(exc, label)
    if made is None:
        return None
    fd, blob_ident = made
    if expect:
        verified_store.mark_verified_key(blob_key_of(entry.digest, blob_ident))
    linker.record(DECOMPRESS, entry.size, time.perf_counter() - t0)
    return fd


def _read_all(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) < size:
        parts = [data]
        while chunk := os.read(fd, size):
            parts.append(chunk)
        data = b"".join(parts)
    return data


def _produce_small(data: bytes, dst: int, entry: FileEntry, encoding: str, verify: bool, rewrites,
                   ident: bytes, label: str) -> bool:
    """Decode a small blob held in memory in one call; False if it needs the streaming path."""
    size = entry.size
    if encoding == "gzip":
        inflate_lib, errors = _inflater()
        d = inflate_lib.decompressobj(31)
        try:
            out = d.decompress(data, size + 1)
        except errors as exc:
            raise _corrupt(label, entry.digest, "(undecodable)", f"gzip data is corrupt ({exc})") from None
        if len(out) > size:
            raise _corrupt(label, entry.digest, "(not computed: content too large)",
                           f"decodes to more than the recorded {size} bytes")
        if not d.eof or d.unused_data:
            return False  # truncated, or several members: let the streaming path say which
    elif encoding == "zstd":
        # Frames written by streaming compressors (holofs' own, RCC's) often leave the content
        # size out: decode them in one call too, never into more than size + 1 bytes. Bytes
        # after a complete frame of the right size are ignored (the content is what is hashed).
        import zstandard

        try:
            declared = zstandard.frame_content_size(data)
            if declared == -1:
                out = _zstd_dctx().decompress(data, max_output_size=size + 1)
            elif declared == size:
                out = _zstd_dctx().decompress(data)
            else:
                return False  # the streaming path names the size mismatch
        except zstandard.ZstdError:
            return False
        if len(out) != size:
            return False
    else:
        out = data
    if verify:
        h = new_hasher(algorithm_of(entry.digest) or "sha256")
        h.update(out)
        actual = h.hexdigest()
    if len(out) != size:
        raise _corrupt(label, entry.digest, actual if verify else "(not computed)",
                       f"decodes to {len(out)} bytes, catalog says {size}")
    if verify and actual != entry.digest:
        raise _corrupt(label, entry.digest, actual)
    if rewrites:
        buf = bytearray(out)
        n = len(ident)
        for off in rewrites:
            buf[off : off + n] = ident
        out = buf
    if out:
        _write_all(dst, out)
    return True


def _produce_stream(src: int, dst: int, entry: FileEntry, encoding: str, verify: bool, rewrites,
                    ident: bytes, label: str, strategy: str) -> str:
    """Decode (or copy) chunk by chunk, hashing the original and relocating in the buffer."""
    chunks = {"gzip": _gzip_chunks, "zstd": _zstd_chunks}.get(encoding, _raw_chunks)
    hasher = new_hasher(algorithm_of(entry.digest) or "sha256") if verify else None
    pos = 0
    offsets = sorted(rewrites)
    n = len(ident)
    try:
        for chunk in chunks(src, entry.size, label):
            if hasher is not None:
                hasher.update(chunk)
            if offsets and any(off < pos + len(chunk) and off + n > pos for off in offsets):
                buf = bytearray(chunk)
                _apply_window(buf, pos, offsets, ident)
                _write_all(dst, buf)
            else:
                _write_all(dst, chunk)
            pos += len(chunk)
    except CorruptBlob as exc:
        raise _corrupt(label, entry.digest, "(undecodable)", str(exc).split(": ", 1)[-1]) from None
    except _TooBig:
        actual = "(not computed: content too large)"
        raise _corrupt(label, entry.digest, actual, f"decodes to more than the recorded {entry.size} bytes") from None
    if pos != entry.size:
        actual = hasher.hexdigest() if hasher is not None else "(not computed)"
        raise _corrupt(label, entry.digest, actual, f"decodes to {pos} bytes, catalog says {entry.size}")
    if hasher is not None:
        actual = hasher.hexdigest()
        if actual != entry.digest:
            raise _corrupt(label, entry.digest, actual)
    return strategy
