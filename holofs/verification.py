"""Which blobs still need hashing before use: the "trusted" verification record.

Policies: ``always`` hashes every blob every time it is used, ``skip`` never hashes, and
``trusted`` hashes a blob the first time holofs uses it and records that, keyed on the blob
file's identity (digest, st_dev, st_ino, size, mtime_ns, ctime_ns). Replacing or modifying the
blob file changes its inode or ctime (which users cannot set), so it is hashed again.

The record is one append-only log per cache, ``<cache>/verified/log``: a line per verified
blob file holding its key. A process reads it once into a set and appends its own lines
(``O_APPEND``, one ``write`` per batch of whole lines, so concurrent writers never interleave
within a line); on a miss it reads what others appended since. Several processes share it
without locks: the worst race makes two of them hash the same blob. The directory is private
(0700), the log 0600.

Duplicate lines and keys of blob files that are gone (a replaced library, a filesystem image
that no longer exists) would make the log grow without end, and every trusted run reads all
of it: once the log is over ``PRUNE_AT_BYTES`` and twice its size after the last pruning (kept
in ``verified/pruned``), it is rewritten by an atomic rename without duplicate lines, without
keys of block devices that no filesystem is mounted from any more, and with the newest
``MAX_KEYS`` at most. Lines another process appends to the old file meanwhile are lost; a key
lost or dropped wrongly only means hashing that blob once more.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from enum import StrEnum

from .errors import HolofsError
from .fsutil import atomic_write_bytes

LOG_NAME = "log"
PRUNED_NAME = "pruned"
FLUSH_EVERY = 256
PRUNE_AT_BYTES = 8 << 20
"""A log smaller than this (~70k keys) is never pruned."""
SNAPSHOT_LOOKUPS = 16
"""Lookups answered from the bytes log_bytes read before the record is loaded into a set."""
MAX_KEYS = 300_000
"""The most keys a pruned log keeps (the newest; ~36 MB)."""
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class VerifyPolicy(StrEnum):
    ALWAYS = "always"
    TRUSTED = "trusted"
    SKIP = "skip"


def blob_key(digest: str, st: os.stat_result) -> str:
    """The identity of a blob file as verified: any replacement or change alters it."""
    return blob_key_of(digest, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def blob_key_of(digest: str, ident: tuple[int, int, int, int, int]) -> str:
    """:func:`blob_key` from ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``."""
    return f"{digest} {ident[0]} {ident[1]} {ident[2]} {ident[3]} {ident[4]}"


class VerifiedStore:
    """The record of blobs already hashed (``cache_dir/verified/log``), thread-safe.

    ``buffered`` stores new lines in memory and appends them in batches (call :meth:`flush`
    when done; lines lost to a crash only mean hashing again); otherwise every mark is
    appended at once (a long-running mount).
    """

    def __init__(self, cache_dir: str | os.PathLike[str], *, buffered: bool = False) -> None:
        self.root = os.path.join(os.fspath(cache_dir), "verified")
        self.path = os.path.join(self.root, LOG_NAME)
        self.buffered = buffered
        self._keys: set[str] = set()
        self._loaded = False
        self._ino = -1  # inode of the log we have read
        self._offset = 0  # bytes of it consumed (whole lines only)
        self._lines = 0
        self._pending: dict[str, None] = {}  # keys not written yet, in order (a dict: O(1) lookups)
        self._snapshot: bytes | None = None  # the log as log_bytes read it (not loaded into the set)
        self._snapshot_lookups = 0
        self._root_made = False
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------

    def _read_new(self) -> None:
        """Take in lines appended since the last read (or the whole log if it was replaced)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if st.st_ino != self._ino:
                self._ino, self._offset = st.st_ino, 0
            if st.st_size <= self._offset:
                return
            chunks = []
            pos = self._offset
            while chunk := os.pread(fd, max(st.st_size - pos, 1 << 16), pos):
                chunks.append(chunk)
                pos += len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        lines = data[:end].decode("ascii", "replace").splitlines()
        self._keys.update(lines)
        self._lines += len(lines)
        self._offset += end

    def load(self) -> None:
        """Read the log now (otherwise it is read on first use)."""
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._read_new()
                self._loaded = True
                if self._prune_due(self._offset):
                    self._prune()

    def is_verified_stat(self, digest: str, st: os.stat_result) -> bool:
        """True if ``digest`` was verified for exactly this blob file (by its stat)."""
        return self.is_verified_key(blob_key(digest, st))

    def is_verified_key(self, key: str) -> bool:
        """True if the blob identity ``key`` (:func:`blob_key`) is recorded."""
        if self._use_snapshot():
            line = f"{key}\n".encode("ascii", "replace")
            snap = self._snapshot or b""
            return snap.startswith(line) or b"\n" + line in snap or key in self._pending
        self._ensure_loaded()
        if key in self._keys:
            return True
        with self._lock:  # perhaps another process verified it since we read the log
            self._read_new()
            return key in self._keys

    def _use_snapshot(self) -> bool:
        """After :meth:`log_bytes`, answer the first few lookups by searching its bytes: loading
        a big record into a set (~150 ms for 200k keys) would cost a restore whose native fast
        path left only a few files for the general path more than it does."""
        if self._loaded or self._snapshot is None or self._snapshot_lookups >= SNAPSHOT_LOOKUPS:
            return False
        self._snapshot_lookups += 1
        return True

    def unverified_keys(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` not recorded (one pass for a whole tree's blobs)."""
        self._ensure_loaded()
        missing = set(keys).difference(self._keys)
        if missing:
            with self._lock:  # perhaps another process verified some since we read the log
                self._read_new()
                missing.difference_update(self._keys)
        return missing

    def log_bytes(self) -> bytes:
        """The recorded keys as the log stores them, one per line, unparsed (with those not
        written yet): for a lookup outside Python (the native fast path) without the cost of
        loading every key into a set."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        with self._lock:  # and the lines not written yet
            if self._prune_due(len(data)):
                data = self._prune(data)
            data = data[: data.rfind(b"\n") + 1]
            if not self._loaded:
                self._snapshot = data
            pending = "".join(f"{key}\n" for key in self._pending).encode("ascii")
        return data + pending

    def needs_check_stat(self, digest: str, st: os.stat_result, policy: VerifyPolicy) -> bool:
        return self.needs_check_key(blob_key(digest, st), policy)

    def needs_check_key(self, key: str, policy: VerifyPolicy) -> bool:
        if policy == VerifyPolicy.ALWAYS:
            return True
        if policy == VerifyPolicy.SKIP:
            return False
        return not self.is_verified_key(key)

    # -- writing ---------------------------------------------------------------------

    def mark_verified_stat(self, digest: str, st: os.stat_result) -> None:
        """Record that the blob file described by ``st`` hashes to ``digest``."""
        self.mark_verified_key(blob_key(digest, st))

    def mark_verified_key(self, key: str) -> None:
        """Record the blob identity ``key`` (:func:`blob_key`) as verified."""
        snapshot = self._snapshot is not None and not self._loaded  # no set to check against
        if not snapshot:
            self._ensure_loaded()
        with self._lock:
            if key in self._keys or (snapshot and key in self._pending):
                return
            if not snapshot:
                self._keys.add(key)
            self._pending[key] = None
            if self.buffered and len(self._pending) < FLUSH_EVERY:
                return
            self._write_pending()

    def mark_verified_keys(self, keys: Iterable[str]) -> None:
        """:meth:`mark_verified_key` for each of ``keys``."""
        for key in keys:
            self.mark_verified_key(key)

    def flush(self) -> None:
        """Append the buffered lines to the log."""
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode("ascii")
        self._pending.clear()
        try:
            self._make_root()
            fd = os.open(self.path, _APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self._lines += data.count(b"\n")
        except OSError:
            pass  # the record is an optimisation: failing to write it only means hashing again

    def _make_root(self) -> None:
        """Create the private record directory, once per store (a mount appends for hours)."""
        if self._root_made:
            return
        from .paths import private_dir

        private_dir(os.path.dirname(self.root))  # the cache root: refused if shared, never chmodded then
        private_dir(self.root)
        self._root_made = True

    def _prune_due(self, size: int) -> bool:
        """True if a log of ``size`` bytes is big and has doubled since it was last pruned."""
        if size < PRUNE_AT_BYTES:
            return False
        try:
            with open(os.path.join(self.root, PRUNED_NAME), "rb") as f:
                last = int(f.read(32) or 0)
        except (OSError, ValueError):
            last = 0
        return size >= 2 * last

    def _prune(self, data: bytes | None = None) -> bytes:
        """Rewrite the log (atomic rename) as described in the module docstring; return what it
        holds now. ``data``: the log's bytes if already read. Caller holds the lock."""
        if data is None:
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
            except OSError:
                return b""
        lines = data[: data.rfind(b"\n") + 1].decode("ascii", "replace").splitlines()
        keep = list(dict.fromkeys(reversed(lines)))  # newest first, each key once
        mounted = mounted_devices()
        if mounted is not None:
            keep = [k for k in keep if _may_be_mounted(_key_device(k), mounted)]
        keep = keep[:MAX_KEYS][::-1]
        body = "".join(f"{k}\n" for k in keep).encode("ascii")
        try:
            atomic_write_bytes(self.path, body, mode=0o600)
            st = os.stat(self.path)
            atomic_write_bytes(os.path.join(self.root, PRUNED_NAME), b"%d" % len(body), mode=0o600)
        except (OSError, HolofsError):  # e.g. a full disk: the record stays as it was
            return data
        if self._loaded:
            self._keys = set(keep) | set(self._pending)
            self._ino, self._offset, self._lines = st.st_ino, st.st_size, len(keep)
        return body

    # -- path-based API --------------------------------------------------------------

    def needs_check(self, digest: str, blob_path: str | os.PathLike[str], policy: VerifyPolicy) -> bool:
        """True if the blob at ``blob_path`` must be hashed before use under ``policy``."""
        if policy == VerifyPolicy.SKIP:
            return False
        if policy == VerifyPolicy.ALWAYS:
            return True
        try:
            st = os.stat(blob_path)
        except OSError:
            return True
        return not self.is_verified_stat(digest, st)

    def mark_verified(self, digest: str, blob_path: str | os.PathLike[str]) -> None:
        """Record that ``blob_path`` (as it is now) hashes to ``digest``."""
        self.mark_verified_stat(digest, os.stat(blob_path))


def mounted_devices() -> set[int] | None:
    """``st_dev`` of every mounted filesystem (from /proc/self/mountinfo), None where unknown."""
    from .mounts import list_mounts  # only when pruning

    return {m.device for m in list_mounts() if m.device >= 0} or None


def _may_be_mounted(dev: int, mounted: set[int]) -> bool:
    """False only for a block device's number that no mounted filesystem has (a removed disk,
    a detached loop image). Files on btrfs, tmpfs, NFS or FUSE report anonymous devices (major
    0) that mountinfo does not always list (a btrfs subvolume's): those are kept."""
    return dev >= 0 and (os.major(dev) == 0 or dev in mounted)


def _key_device(key: str) -> int:
    parts = key.split(" ", 2)
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return -1


def default_store() -> VerifiedStore:
    from .paths import default_cache_dir

    return VerifiedStore(default_cache_dir())
