"""Which blobs still need hashing before use: the "trusted" verification record.

Policies: ``always`` hashes every blob every time it is used, ``skip`` never hashes, and
``trusted`` hashes a blob the first time holofs uses it and records that, keyed on the blob
file's identity (digest, st_dev, st_ino, size, mtime_ns, ctime_ns). Replacing or modifying the
blob file changes its inode or ctime (which users cannot set), so it is hashed again.

The record is one small file per digest, ``<cache>/verified/<d0d1>/<digest>``, holding the key,
written atomically (temp + rename): several processes may share it without locks, since the
worst race makes two of them hash the same blob. Directories are private (0700).
"""

from __future__ import annotations

import contextlib
import os
import threading
from enum import StrEnum
from pathlib import Path

from .fsutil import part_name

_READ = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)


class VerifyPolicy(StrEnum):
    ALWAYS = "always"
    TRUSTED = "trusted"
    SKIP = "skip"


def blob_key(digest: str, st: os.stat_result) -> str:
    """The identity of a blob file as verified: any replacement or change alters it."""
    return f"{digest} {st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}\n"


class VerifiedStore:
    """The on-disk record of blobs already hashed (``cache_dir/verified``), thread-safe."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.root = os.path.join(os.fspath(cache_dir), "verified")
        self._memo: dict[str, str] = {}
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def _record_path(self, digest: str) -> str:
        return f"{self.root}/{digest[0:2]}/{digest}"

    # -- stat-based API (callers that already hold an fstat avoid a second stat) -------

    def is_verified_stat(self, digest: str, st: os.stat_result) -> bool:
        """True if ``digest`` was verified for exactly this blob file (by its stat)."""
        key = blob_key(digest, st)
        if self._memo.get(digest) == key:
            return True
        path = self._record_path(digest)
        try:
            fd = os.open(path, _READ)
        except PermissionError:  # O_NOATIME on a record someone else owns
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return False
        except OSError:
            return False
        try:
            stored = os.read(fd, 512)
        except OSError:
            return False
        finally:
            os.close(fd)
        if stored == key.encode("ascii"):
            with self._lock:
                self._memo[digest] = key
            return True
        return False

    def needs_check_stat(self, digest: str, st: os.stat_result, policy: VerifyPolicy) -> bool:
        if policy == VerifyPolicy.ALWAYS:
            return True
        if policy == VerifyPolicy.SKIP:
            return False
        return not self.is_verified_stat(digest, st)

    def mark_verified_stat(self, digest: str, st: os.stat_result) -> None:
        """Record that the blob file described by ``st`` hashes to ``digest``."""
        key = blob_key(digest, st)
        with self._lock:
            if self._memo.get(digest) == key:
                return
            self._memo[digest] = key
        final = self._record_path(digest)
        parent = os.path.dirname(final)
        if parent not in self._made:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            for d in (self.root, os.path.dirname(self.root)):
                try:
                    if os.stat(d).st_mode & 0o077:
                        os.chmod(d, 0o700)
                except OSError:
                    pass
            self._made.add(parent)
        tmp = part_name(final)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, key.encode("ascii"))
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError:
            # The record is an optimisation: failing to write it only means hashing again.
            with contextlib.suppress(OSError):
                os.unlink(tmp)

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

    def forget(self, digest: str) -> None:
        with self._lock:
            self._memo.pop(digest, None)
        with contextlib.suppress(OSError):
            os.unlink(self._record_path(digest))


def default_store() -> VerifiedStore:
    from .paths import default_cache_dir

    return VerifiedStore(Path(default_cache_dir()))
