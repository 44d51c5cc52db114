"""The read-only virtual tree a mount serves: an inode table built from a catalog.

Platform neutral (no FUSE import); a frontend translates kernel requests into calls here.

Inode layout: ``ROOT_INO`` (1) is the environment's root. The children of one directory get
*consecutive* inodes in sorted name order, so a directory is just a range ``[first_child,
first_child + child_count)``: ``readdir`` walks the range and ``lookup`` bisects the (sorted)
names inside it. A directory's children are numbered the first time it is looked into (the
table grows on demand: a mount is ready without walking the catalog). Every per-inode field
lives in a flat list or ``array`` indexed by inode; nothing per entry is allocated beyond the
catalog's own objects. Inodes never change while mounted (the tree is immutable), so
frontends may use long kernel cache timeouts.

Attributes mirror what ``holofs materialize`` (and RCC) produce: files carry the catalog's
permission bits, directories are 0o750, symlinks (file or directory) show their recorded
target text and hide any shadow subtree, every time is RCC's MOTHER_TIME, and the owner is
the mounting user.

Open files are served from the content-addressed cache (:mod:`holofs.cache`): ``open``
materializes the file there (once) and keeps a real fd in the handle table; ``read`` is a
plain ``os.pread``. Read-ahead: the first miss in a directory also queues a job that fills
its other small files that an interpreter loads (modules and shared libraries, see
:func:`worth_prefetching`; at most ``PREFETCH_MAX_SIZE`` bytes each), one directory per
background worker thread at a time, so that a program
walking a package (an interpreter importing it) finds the next files ready; bigger shared
libraries, and the ones a filled library loads from the tree (:mod:`holofs.elfdeps`), go to a
thread of their own. A foreground open of a file being prefetched waits for that one fill
instead of starting its own. Handles are allocated through :meth:`VirtualTree.add_handle`. A frontend whose kernel
reads without opening (see :mod:`holofs.frontends.fuse_shim`) uses :meth:`VirtualTree.read_inode`
and :meth:`VirtualTree.fill` instead: one cache fd is kept per inode read lately.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from .catalog import MOTHER_TIME, Catalog, DirEntry, FileEntry
from .elfdeps import needed_in_tree
from .errors import HolofsError, NotFound, ReadOnly
from .logs import logger
from .modes import permissions

log = logger("holofs.vtree")

ROOT_INO = 1
PREFETCH_MAX_SIZE = 1 << 20
PREFETCH_LIBRARY_MAX_SIZE = 64 << 20
"""Shared libraries up to this size are read ahead too (on the library thread)."""
MODULES, LIBRARIES = "modules", "libraries"
PREFETCH_THREADS = {MODULES: 2, LIBRARIES: 1}
"""Read-ahead threads: directories of small modules; big shared libraries and what they load."""
INODE_FDS_MAX = 512
"""Cache fds kept open for reads that come without an open (least recently used closed first)."""
PREFETCH_SUFFIXES = (".py", ".so", ".pyd", ".pth", ".dll", ".dylib")
"""What an interpreter opens while importing (type stubs, headers, data and docs it does not:
filling those cost a cold import as much CPU as it saved waiting)."""
DIR_PERMISSIONS = 0o750
"""RCC creates every restored directory 0o750 whatever the catalog records."""
BLOCK_SIZE = 4096
NAME_MAX = 255
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
_DIR_MODE = stat.S_IFDIR | DIR_PERMISSIONS
_LNK_MODE = stat.S_IFLNK | 0o777


class IsADirectory(HolofsError):
    errno = errno.EISDIR


class NotADirectory(HolofsError):
    errno = errno.ENOTDIR


class NotASymlink(HolofsError):
    errno = errno.EINVAL


class BadHandle(HolofsError):
    errno = errno.EBADF


class FileSource(Protocol):
    """Where open files come from (the cache): real, readable fds of a file's content."""

    def open_cached(self, entry: FileEntry) -> int | None:
        """An fd if the content is already materialized, else None (no blocking work)."""

    def open(self, entry: FileEntry, *, read_ahead: bool = False) -> int:
        """An fd of the content, materializing it first if needed (may block; ``read_ahead``:
        called by a read-ahead thread)."""


@dataclass(frozen=True, slots=True)
class Attr:
    """The stat data of one inode."""

    ino: int
    mode: int
    nlink: int
    size: int
    uid: int
    gid: int
    time_ns: int = MOTHER_TIME * 1_000_000_000

    @property
    def blocks(self) -> int:
        """512-byte blocks, as a materialized copy would occupy (rounded to 4 KiB)."""
        return -(-self.size // BLOCK_SIZE) * (BLOCK_SIZE // 512)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    files: int
    name_max: int = NAME_MAX


def _dir_nlink(node: DirEntry) -> int:
    """2 + the real (not symlinked) subdirectories, as a restored directory has."""
    return 2 + sum(1 for sub in node.subdirs.values() if not sub.symlink)


def _idle_priority() -> None:
    """Run this (read-ahead) thread at SCHED_IDLE: only when nothing else wants the CPU. On two
    cores the read-ahead otherwise took the CPU from the request loop and the readers' fills
    (the loop's run-queue wait in a cold import: 230-337 ms, 93-137 ms with this)."""
    with contextlib.suppress(AttributeError, OSError):  # Linux only
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def worth_prefetching(name: str) -> bool:
    """True for a module or shared library (``libfoo.so.1.2`` included)."""
    return name.endswith(PREFETCH_SUFFIXES) or ".so." in name


def is_shared_library(name: str) -> bool:
    return name.endswith(".so") or ".so." in name


class VirtualTree:
    """The inode table of one catalog plus the open-file handle table."""

    def __init__(self, catalog: Catalog, source: FileSource | None = None, *,
                 uid: int | None = None, gid: int | None = None, prefetch: bool = False) -> None:
        self.catalog = catalog
        self.source = source
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        # Per-inode tables; index 0 is unused so that inode numbers index them directly.
        self.names: list[str] = ["", ""]
        self.parents = array("Q", [0, ROOT_INO])
        self.modes = array("L", [0, _DIR_MODE])
        self.sizes = array("Q", [0, 0])
        self.nlinks = array("L", [0, _dir_nlink(catalog.tree)])
        self.first_child = array("Q", [0, 0])
        self.child_count = array("L", [0, 0])
        self.files: list[FileEntry | None] = [None, None]
        self.link_targets: dict[int, str] = {}
        self._unnumbered: dict[int, DirEntry] = {ROOT_INO: catalog.tree}  # children not numbered yet
        self._number_lock = threading.Lock()
        self._totals: tuple[int, int] | None = None  # (inodes, bytes of regular files)
        self._handles: dict[int, tuple[int, int]] = {}
        self._handle_ids = itertools.count(1)
        self._handle_lock = threading.Lock()
        self.prefetch = prefetch
        self._prefetched_dirs: set[int] = set()
        self._scanned_libraries: set[int] = set()  # shared libraries whose ELF needs were queued
        self._prefetchers: dict[str, ThreadPoolExecutor] = {}
        self._prefetch_stopped = False
        self._inode_fds: OrderedDict[int, int] = OrderedDict()

    # -- construction ---------------------------------------------------------------------

    def _children(self, dir_ino: int) -> tuple[int, int]:
        """The inode range ``[first, end)`` of a directory's children (numbered on first use)."""
        if dir_ino in self._unnumbered:  # it leaves only once its children are numbered
            with self._number_lock:
                node = self._unnumbered.get(dir_ino)
                if node is not None:
                    self._number_children(dir_ino, node)
                    del self._unnumbered[dir_ino]
        first = self.first_child[dir_ino]
        return first, first + self.child_count[dir_ino]

    def _number_children(self, dir_ino: int, node: DirEntry) -> None:
        names, parents, modes, sizes = self.names, self.parents, self.modes, self.sizes
        nlinks, first_child, child_count = self.nlinks, self.first_child, self.child_count
        files, link_targets, unnumbered = self.files, self.link_targets, self._unnumbered
        subdirs, dfiles = node.subdirs, node.files
        children = sorted(subdirs.keys() | dfiles.keys()) if dfiles else sorted(subdirs)
        first = len(names)
        for name in children:
            ino = len(names)
            names.append(name)
            parents.append(dir_ino)
            first_child.append(0)
            child_count.append(0)
            sub = subdirs.get(name)
            if sub is not None:
                files.append(None)
                if sub.symlink:
                    modes.append(_LNK_MODE)
                    sizes.append(len(sub.symlink.encode()))
                    nlinks.append(1)
                    link_targets[ino] = sub.symlink
                else:
                    modes.append(_DIR_MODE)
                    sizes.append(0)
                    nlinks.append(_dir_nlink(sub))
                    unnumbered[ino] = sub
                continue
            entry = dfiles[name]
            nlinks.append(1)
            if entry.symlink:
                files.append(None)
                modes.append(_LNK_MODE)
                sizes.append(len(entry.symlink.encode()))
                link_targets[ino] = entry.symlink
            else:
                files.append(entry)
                modes.append(stat.S_IFREG | permissions(entry.mode))
                sizes.append(entry.size)
        first_child[dir_ino] = first
        child_count[dir_ino] = len(children)

    def _count(self) -> tuple[int, int]:
        """(inodes, bytes of regular files) of the whole tree, from the catalog (once)."""
        if self._totals is None:
            inodes, total = 1, 0
            stack = [self.catalog.tree]
            while stack:
                node = stack.pop()
                inodes += len(node.subdirs.keys() | node.files.keys()) if node.files else len(node.subdirs)
                stack.extend(sub for sub in node.subdirs.values() if not sub.symlink)
                total += sum(f.size for f in node.files.values() if not f.symlink)
            self._totals = (inodes, total)
        return self._totals

    def __len__(self) -> int:
        """Number of inodes the tree has (the root included), numbered yet or not."""
        return self._count()[0]

    # -- metadata -------------------------------------------------------------------------

    def _check(self, ino: int) -> None:
        if not 0 < ino < len(self.names):
            raise NotFound(f"no inode {ino}")

    def getattr(self, ino: int) -> Attr:
        self._check(ino)
        return Attr(ino, self.modes[ino], self.nlinks[ino], self.sizes[ino], self.uid, self.gid)

    def is_dir(self, ino: int) -> bool:
        return stat.S_ISDIR(self.modes[ino])

    def lookup(self, parent_ino: int, name: str) -> Attr:
        """The child ``name`` of directory ``parent_ino`` ('.' and '..' included)."""
        self._check(parent_ino)
        if not self.is_dir(parent_ino):
            raise NotADirectory(f"{self.path_of(parent_ino)} is not a directory")
        if name == ".":
            return self.getattr(parent_ino)
        if name == "..":
            return self.getattr(self.parents[parent_ino])
        lo, hi = self._children(parent_ino)
        i = bisect_left(self.names, name, lo, hi)
        if i < hi and self.names[i] == name:
            return self.getattr(i)
        raise NotFound(f"{self.path_of(parent_ino)}/{name}: no such file or directory")

    def lookup_path(self, path: str) -> Attr:
        """Attributes of a '/'-separated path relative to the root (no symlink following)."""
        attr = self.getattr(ROOT_INO)
        for part in path.split("/"):
            if part:
                attr = self.lookup(attr.ino, part)
        return attr

    def readdir(self, ino: int, start: int = 0) -> Iterator[tuple[str, Attr, int]]:
        """``(name, attr, next_offset)`` for the children of ``ino`` after offset ``start``."""
        self._check(ino)
        if not self.is_dir(ino):
            raise NotADirectory(f"{self.path_of(ino)} is not a directory")
        first, end = self._children(ino)
        for offset in range(start, end - first):
            child = first + offset
            yield self.names[child], self.getattr(child), offset + 1

    def readlink(self, ino: int) -> str:
        self._check(ino)
        target = self.link_targets.get(ino)
        if target is None:
            raise NotASymlink(f"{self.path_of(ino)} is not a symlink")
        return target

    def statfs(self) -> FsStats:
        inodes, total = self._count()
        return FsStats(BLOCK_SIZE, -(-total // BLOCK_SIZE), inodes)

    def path_of(self, ino: int) -> str:
        """The path of an inode relative to the root ('' for the root), for messages."""
        parts = []
        while ino not in (ROOT_INO, 0):
            parts.append(self.names[ino])
            ino = self.parents[ino]
        return "/".join(reversed(parts))

    def file_entry(self, ino: int) -> FileEntry:
        """The catalog entry of a regular file."""
        self._check(ino)
        entry = self.files[ino]
        if entry is None:
            if self.is_dir(ino):
                raise IsADirectory(f"{self.path_of(ino)} is a directory")
            raise HolofsError(f"{self.path_of(ino)} is not a regular file")
        return entry

    # -- open files -----------------------------------------------------------------------

    def _entry_for_open(self, ino: int, flags: int) -> FileEntry:
        entry = self.file_entry(ino)
        if flags & _WRITE_FLAGS or flags & os.O_ACCMODE != os.O_RDONLY:
            raise ReadOnly(f"{self.path_of(ino)}: read-only file system")
        if self.source is None:
            raise HolofsError("this tree has no file source (cache) attached")
        return entry

    def open_cached(self, ino: int, flags: int = os.O_RDONLY) -> int | None:
        """A handle if the file's content is already in the cache, else None (never blocks
        on a fill; the frontend then calls :meth:`open` in a worker thread)."""
        entry = self._entry_for_open(ino, flags)
        fd = self.source.open_cached(entry)  # type: ignore[union-attr]
        return None if fd is None else self.add_handle(ino, fd)

    def open(self, ino: int, flags: int = os.O_RDONLY) -> int:
        """A handle for reading ``ino``; materializes the file into the cache if needed
        (and, with ``prefetch``, queues the rest of its directory)."""
        return self.add_handle(ino, self.fill(ino, flags))

    def fill(self, ino: int, flags: int = os.O_RDONLY) -> int:
        """A new fd of ``ino``'s content, materialized into the cache first if needed (blocks; any
        thread; with ``prefetch``, queues the rest of its directory)."""
        entry = self._entry_for_open(ino, flags)
        if self.prefetch:
            self._prefetch_siblings(ino)
        fd = self.source.open(entry)  # type: ignore[union-attr]
        if self.prefetch and is_shared_library(entry.name) and ino not in self._scanned_libraries:
            self._submit_prefetch(LIBRARIES, self._prefetch_library, ino)  # in the cache now: its needs
        return fd

    # -- reads without an open (the kernel keeps opens to itself) ------------------------------
    # inode_fd/keep_inode_fd/read_inode keep one fd per inode; call them from one thread only
    # (the frontend's loop): an fd is never closed while another thread reads from it.

    def inode_fd(self, ino: int) -> int | None:
        """The fd kept for reading ``ino``, or one opened now if its content is in the cache
        (never blocks on a fill; None: :meth:`fill` it in a worker thread, then keep it)."""
        fd = self._inode_fds.get(ino)
        if fd is not None:
            self._inode_fds.move_to_end(ino)
            return fd
        fd = self.source.open_cached(self._entry_for_open(ino, os.O_RDONLY))  # type: ignore[union-attr]
        return None if fd is None else self.keep_inode_fd(ino, fd)

    def keep_inode_fd(self, ino: int, fd: int) -> int:
        """Keep ``fd`` (now owned here) for reading ``ino``; returns the fd to read from (the one
        kept already, if another fill got there first)."""
        kept = self._inode_fds.get(ino)
        if kept is not None:
            os.close(fd)
            return kept
        self._inode_fds[ino] = fd
        while len(self._inode_fds) > INODE_FDS_MAX:
            os.close(self._inode_fds.popitem(last=False)[1])
        return fd

    def read_inode(self, ino: int, offset: int, size: int) -> bytes | None:
        """``size`` bytes of ``ino`` at ``offset`` if its content is at hand, else None."""
        fd = self.inode_fd(ino)
        return None if fd is None else os.pread(fd, size, offset)

    @property
    def inode_fds(self) -> int:
        return len(self._inode_fds)

    # -- read-ahead -------------------------------------------------------------------------

    def _prefetch_siblings(self, ino: int) -> None:
        """Queue the other modules of ``ino``'s directory (once per directory)."""
        parent = self.parents[ino]
        with self._handle_lock:
            if parent in self._prefetched_dirs:
                return
            self._prefetched_dirs.add(parent)
        self._submit_prefetch(MODULES, self._prefetch_dir, parent, ino)

    def _submit_prefetch(self, queue: str, job: Callable[..., None], *args: int) -> None:
        with self._handle_lock:
            pool = self._prefetchers.get(queue)
            if pool is None:
                pool = self._prefetchers[queue] = ThreadPoolExecutor(
                    PREFETCH_THREADS[queue], thread_name_prefix=f"holofs-{queue}", initializer=_idle_priority)
        with contextlib.suppress(RuntimeError):  # shut down meanwhile
            pool.submit(job, *args)

    def _prefetch_dir(self, parent: int, opened: int) -> None:
        """Fill ``parent``'s small modules but ``opened`` (one job per directory: the opening
        thread, whose reader waits, only submits it); queue its bigger shared libraries one by
        one for the library thread."""
        first, end = self._children(parent)
        for child in range(first, end):
            entry = self.files[child]
            if child == opened or entry is None or entry.symlink or not worth_prefetching(entry.name):
                continue
            if self._prefetch_stopped:
                return
            if entry.size <= PREFETCH_MAX_SIZE:
                self._prefetch_one(child, entry)
            elif is_shared_library(entry.name) and entry.size <= PREFETCH_LIBRARY_MAX_SIZE:
                self._submit_prefetch(LIBRARIES, self._prefetch_library, child)

    def _prefetch_library(self, ino: int) -> None:
        entry = self.files[ino]
        if entry is not None and not self._prefetch_stopped:
            self._prefetch_one(ino, entry)

    def _prefetch_one(self, ino: int, entry: FileEntry) -> None:
        try:
            fd = self.source.open(entry, read_ahead=True)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - read-ahead is best effort; a real open reports it
            log.debug("prefetch of %s failed: %s", entry.name, exc)
            return
        try:
            if is_shared_library(entry.name):
                self._prefetch_needed(ino, fd)
        finally:
            os.close(fd)
            _idle_priority()  # a reader waiting for this fill may have raised it (cache.CacheFiller.open)

    def _prefetch_needed(self, ino: int, fd: int) -> None:
        """Fill the libraries that the shared library ``ino`` (open at ``fd``) loads from this
        tree (:mod:`holofs.elfdeps`), and theirs, before the dynamic linker asks for them."""
        with self._handle_lock:
            if ino in self._scanned_libraries:
                return
            self._scanned_libraries.add(ino)
        for path in needed_in_tree(fd, self.path_of(ino)):
            try:
                dep = self.lookup_path(path).ino
            except HolofsError:
                continue  # not in the tree (a system library) or not a directory on the way
            entry = self.files[dep]
            if self._prefetch_stopped:
                return
            if entry is not None and not entry.symlink and entry.size <= PREFETCH_LIBRARY_MAX_SIZE:
                self._prefetch_one(dep, entry)

    def add_handle(self, ino: int, fd: int) -> int:
        """Register an open fd; returns the handle number frontends hand to the kernel."""
        with self._handle_lock:
            handle = next(self._handle_ids)
            self._handles[handle] = (ino, fd)
        return handle

    def fd_of(self, handle: int) -> int:
        try:
            return self._handles[handle][1]
        except KeyError:
            raise BadHandle(f"no open file handle {handle}") from None

    def read(self, handle: int, offset: int, size: int) -> bytes:
        return os.pread(self.fd_of(handle), size, offset)

    def release(self, handle: int) -> None:
        with self._handle_lock:
            entry = self._handles.pop(handle, None)
        if entry is not None:
            os.close(entry[1])

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        """Stop read-ahead and close every open handle (at unmount)."""
        self._prefetch_stopped = True
        for pool in self._prefetchers.values():
            pool.shutdown(wait=False, cancel_futures=True)
        with self._handle_lock:
            handles, self._handles = self._handles, {}
        fds = [fd for _ino, fd in handles.values()] + list(self._inode_fds.values())
        self._inode_fds.clear()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
