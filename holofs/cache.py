"""Content-addressed cache of materialized files, shared by all mounts.

Layout under the cache root (``holofs.paths.default_cache_dir()`` or ``--cache``), every
directory 0700, every file 0644::

    files/<d0d1>/<digest>                                  content = the blob as recorded
    relocated/<d0d1>/<digest>.<target-identity>.<tag>      content = blob + rewrites applied
    mounts/<id>/                                           per-mount runtime files (mounts.py)

A file without rewrites (or mounted at its recorded identity) is identical in every
environment, so it is keyed by digest alone and shared by every mount and catalog. A file
with rewrites is keyed by digest, target identity and ``tag`` (a hash of the recorded
identity and the offsets, which together decide the result).

Fills produce the content into a ``part_name`` temp file beside the final name and rename
it atomically: a final name only ever holds complete content, a killed process leaves only
temp files (ignored by readers, removed by :meth:`FileCache.gc` once their writer is dead).
In one process, concurrent opens of one key fill it once (a lock per key); across processes
two fills may race, and the second rename harmlessly replaces identical content.

Use is recorded by touching a file's mtime the first time a process opens it, and
:meth:`FileCache.gc` evicts least recently used files first. It never removes a file that a
live process holds open (checked through ``/proc/*/fd``); a file evicted anyway (e.g. by
hand) stays readable through fds already open, and the next open simply fills it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import FileEntry
from .errors import UnsafePath, UsageError
from .fsutil import is_part_name, part_name
from .library import Hololib
from .logs import logger
from .paths import default_cache_dir, private_dir
from .relocation import Relocation

log = logger("holofs.cache")

PLAIN = "files"
RELOCATED = "relocated"
MOUNTS = "mounts"
KINDS = (PLAIN, RELOCATED)
FILE_MODE = 0o644
_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
TAKEOVER_SECONDS = 0.05
"""How long a reader waits for a read-ahead thread filling the same file (see CacheFiller.open)."""


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where one materialized content lives: ``<kind>/<name[:2]>/<name>``."""

    kind: str
    name: str

    @property
    def relpath(self) -> str:
        return f"{self.kind}/{self.name[:2]}/{self.name}"


def cache_key(entry: FileEntry, relocation: Relocation | None) -> CacheKey:
    """The key of ``entry``'s content when mounted with ``relocation``."""
    if not entry.rewrite or relocation is None or relocation.is_identity:
        return CacheKey(PLAIN, entry.digest)
    h = hashlib.sha256(relocation.recorded)
    h.update(b"\0" + ",".join(map(str, entry.rewrite)).encode())
    target = relocation.target.decode("utf-8", "surrogateescape")
    return CacheKey(RELOCATED, f"{entry.digest}.{target}.{h.hexdigest()[:12]}")


def parse_size(text: str) -> int:
    """Bytes for '123', '500M', '1.5G', '2GiB', '10 MB' (binary multiples)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"invalid size {text!r}: use e.g. 500M, 2G or a number of bytes")
    factor = 1024 ** " kmgtp".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * factor)


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (a dead, unreaped daemon)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _part_writer_pid(name: str) -> int | None:
    tail = name.rpartition(".part")[2]
    head = tail.split("x", 1)[0]
    return int(head) if head.isdigit() else None


def open_cache_files(root: Path) -> set[str]:
    """Paths under ``root`` that some live process holds open (from ``/proc/*/fd``)."""
    prefix = os.fspath(root.resolve()) + os.sep
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.add(target)
    return found


class FileCache:
    """The cache directory: paths, statistics and garbage collection."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root if root is not None else default_cache_dir()).absolute()

    def ensure(self) -> FileCache:
        """Create the root (0700) if needed. A root that another user owns is refused: that
        user could plant files under final names, and a mount would serve them."""
        if self.root.exists():
            self.refuse_foreign()
        private_dir(self.root)
        self.refuse_foreign()
        return self

    def refuse_foreign(self) -> None:
        """Raise :class:`UnsafePath` unless the root belongs to this process' effective user."""
        if not hasattr(os, "geteuid"):
            return
        owner = self.root.stat().st_uid
        if owner != os.geteuid():
            raise UnsafePath(f"cache directory {self.root} belongs to uid {owner}, not to you (uid {os.geteuid()}); "
                             "that user could plant its content: use a cache directory of your own "
                             "(--cache or HOLOFS_CACHE)")

    def path(self, key: CacheKey) -> Path:
        return self.root / key.relpath

    def mounts_dir(self) -> Path:
        return self.root / MOUNTS

    def _walk(self) -> list[tuple[str, Path, os.stat_result]]:
        """``(kind, path, stat)`` of every cache file; kind 'temp' for leftovers."""
        out = []
        for kind in KINDS:
            base = self.root / kind
            if not base.is_dir():
                continue
            for fan in os.scandir(base):
                if not fan.is_dir(follow_symlinks=False):
                    continue
                for item in os.scandir(fan.path):
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out.append(("temp" if is_part_name(item.name) else kind, Path(item.path), st))
        return out

    def stats(self) -> dict[str, Any]:
        """Counts and sizes by kind (``files``, ``relocated``, ``temp``)."""
        by_kind: dict[str, dict[str, int]] = {k: {"files": 0, "bytes": 0} for k in (*KINDS, "temp")}
        for kind, _path, st in self._walk():
            by_kind[kind]["files"] += 1
            by_kind[kind]["bytes"] += st.st_size
        mounts = self.mounts_dir()
        return {
            "cache": os.fspath(self.root),
            "files": sum(v["files"] for k, v in by_kind.items() if k != "temp"),
            "bytes": sum(v["bytes"] for k, v in by_kind.items() if k != "temp"),
            "by_kind": by_kind,
            "mount_records": len(list(mounts.iterdir())) if mounts.is_dir() else 0,
        }

    def gc(self, max_size: int | None = None) -> dict[str, Any]:
        """Remove temp leftovers of dead writers; evict LRU files down to ``max_size``.

        Files open in any live process are never removed."""
        removed_temp = 0
        evicted = 0
        freed = 0
        entries = self._walk()
        in_use = open_cache_files(self.root)
        keep: list[tuple[float, int, Path]] = []
        for kind, path, st in entries:
            if kind == "temp":
                pid = _part_writer_pid(path.name)
                if pid is not None and pid != os.getpid() and pid_alive(pid):
                    continue  # a live fill is writing it
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed_temp += 1
                freed += st.st_size
            else:
                keep.append((st.st_mtime, st.st_size, path))
        total = sum(size for _m, size, _p in keep)
        if max_size is not None and total > max_size:
            for _mtime, size, path in sorted(keep, key=lambda t: t[0]):
                if total <= max_size:
                    break
                if os.fspath(path) in in_use:
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                evicted += 1
                freed += size
                total -= size
        return {"removed_temp": removed_temp, "evicted": evicted, "freed_bytes": freed,
                "remaining_bytes": total, "skipped_in_use": len(in_use)}


def _normal_priority(thread: int) -> bool:
    """Move the (read-ahead) thread ``thread`` from SCHED_IDLE to normal scheduling; False if
    not permitted or not supported."""
    try:
        os.sched_setscheduler(thread, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


class CacheFiller:
    """Open files of one mount from the cache, materializing them on first use.

    Implements :class:`holofs.vtree.FileSource`."""

    def __init__(self, cache: FileCache, lib: Hololib, relocation: Relocation | None, *,
                 verify: Any = None, linker: Any = None) -> None:
        self.cache = cache.ensure()
        self.lib = lib
        self.relocation = None if relocation is None or relocation.is_identity else relocation
        self.verify_policy = verify
        self._linker = linker
        self._verified: Any = None
        self._locks: dict[CacheKey, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._read_ahead: dict[CacheKey, int] = {}  # keys a read-ahead thread is filling: its thread id
        self._touched: set[CacheKey] = set()
        self._root = os.fspath(self.cache.root)
        self._made_dirs: set[str] = set()
        self.fills: Counter[str] = Counter()
        self.hits = 0
        self.fill_seconds = 0.0

    # -- FileSource --------------------------------------------------------------------

    def _path(self, key: CacheKey) -> str:
        return f"{self._root}/{key.relpath}"

    def open_cached(self, entry: FileEntry) -> int | None:
        return self._open_cached(cache_key(entry, self.relocation), entry)

    def _open_cached(self, key: CacheKey, entry: FileEntry) -> int | None:
        path = self._path(key)
        try:
            fd = os.open(path, _O_READ)
        except FileNotFoundError:
            return None
        if os.fstat(fd).st_size != entry.size:
            os.close(fd)
            log.warning("cache file %s has the wrong size; filling it again", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return None
        self.hits += 1
        if key not in self._touched:
            self._touched.add(key)
            with contextlib.suppress(OSError):
                os.utime(path)  # LRU: mark as used
        return fd

    def open(self, entry: FileEntry, *, read_ahead: bool = False) -> int:
        """``read_ahead``: the caller is a read-ahead thread (idle CPU priority, which a busy
        machine may starve). A reader that finds the file being filled by one raises that
        thread to normal priority and waits for it; where that is not permitted, it waits
        ``TAKEOVER_SECONDS`` at most, then fills the file itself (the later rename replaces
        identical content)."""
        key = cache_key(entry, self.relocation)
        fd = self._open_cached(key, entry)
        if fd is not None:
            return fd
        lock = self._lock_for(key)
        if not lock.acquire(blocking=False):
            raised = self._raise_read_ahead(key)
            while not lock.acquire(timeout=TAKEOVER_SECONDS):
                if not raised:
                    raised = self._raise_read_ahead(key)
                    if not raised and key in self._read_ahead:
                        return self._fill_and_open(key, entry)
        try:
            if read_ahead:
                self._read_ahead[key] = threading.get_native_id()
            fd = self._open_cached(key, entry)  # filled by another thread meanwhile?
            return fd if fd is not None else self._fill_and_open(key, entry)
        finally:
            if read_ahead:
                self._read_ahead.pop(key, None)
            lock.release()

    def _raise_read_ahead(self, key: CacheKey) -> bool:
        """True if a read-ahead thread fills ``key`` and now runs at normal priority."""
        thread = self._read_ahead.get(key)
        return thread is not None and _normal_priority(thread)

    def _fill_and_open(self, key: CacheKey, entry: FileEntry) -> int:
        for _ in range(2):  # once more if it was removed between rename and open (gc)
            fd = self._fill(key, entry)
            if fd is not None:
                return fd
            with contextlib.suppress(FileNotFoundError):
                return os.open(self._path(key), _O_READ)  # just written: no size check, no touch
        return os.open(self._path(key), _O_READ)

    # -- filling -----------------------------------------------------------------------

    def _lock_for(self, key: CacheKey) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def _verified_store(self) -> Any:
        if self._verified is None:
            from .verification import VerifiedStore

            with self._locks_guard:  # one store per filler: its pending records are flushed once
                if self._verified is None:
                    self._verified = VerifiedStore(self.cache.root)
        return self._verified

    def _the_linker(self) -> Any:
        if self._linker is None:
            from .strategies import Linker

            with self._locks_guard:
                if self._linker is None:
                    self._linker = Linker()
        return self._linker

    def prepare(self) -> None:
        """Do the first fill's one-time work now (the strategy imports, the linker, the
        verification record: ~20 ms that a mount's first read would wait for). Call it off
        the request path, e.g. in a thread once the mount is ready."""
        from . import strategies  # noqa: F401

        self._the_linker()
        if self.verify_policy is not None:
            self._verified_store()

    def _fill(self, key: CacheKey, entry: FileEntry) -> int | None:
        """Materialize ``key``; returns a read-only fd of it when the native path made and opened it."""
        from .strategies import fill_natively, produce_file

        linker = self._the_linker()
        final = self._path(key)
        parent = os.path.dirname(final)
        if parent not in self._made_dirs:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            os.chmod(f"{self._root}/{key.kind}", 0o700)
            self._made_dirs.add(parent)
        tmp = part_name(final)
        started = time.perf_counter()
        store = self._verified_store() if self.verify_policy is not None else None
        relocation = self.relocation if key.kind == RELOCATED else None
        # Both create tmp (O_EXCL) with perm 0644 and mtime = now (the LRU clock, not RCC's
        # mother time), hash the blob as the policy asks, and remove tmp on error.
        fd = fill_natively(self.lib, entry, tmp, final, relocation=relocation, linker=linker, label=key.relpath,
                           perm=FILE_MODE, verified_store=store, policy=self.verify_policy)
        if fd is not None:
            self._filled(key, entry, started)
            return fd if fd >= 0 else None  # None: removed meanwhile (gc); the caller opens or fills again
        try:
            produce_file(self.lib, entry, tmp, relocation=relocation,
                         verify=False, linker=linker, label=key.relpath, perm=FILE_MODE,
                         verified_store=store, policy=self.verify_policy)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._filled(key, entry, started)
        return None

    def _filled(self, key: CacheKey, entry: FileEntry, started: float) -> None:
        self._touched.add(key)
        self.fills[key.relpath] += 1
        self.fill_seconds += time.perf_counter() - started
        log.debug("filled %s (%d bytes)", key.relpath, entry.size)

    def fill_stats(self) -> dict[str, Any]:
        """Fill counters of this process (for tests and ``mount`` diagnostics)."""
        return {"fills": sum(self.fills.values()), "hits": self.hits,
                "fill_seconds": round(self.fill_seconds, 6), "per_key": dict(self.fills)}
