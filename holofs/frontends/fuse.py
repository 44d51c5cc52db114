"""pyfuse3 + trio adapter: serves a :class:`holofs.vtree.VirtualTree` at a mountpoint.

Thin by design: every handler translates one kernel request into one vtree call.
- ``HolofsError`` becomes ``FUSEError(error.errno)``; any other exception is logged with its
  traceback and answered with EIO (an exception escaping a handler would end the mount).
- Cache fills (first open of a file) run in worker threads under a CapacityLimiter, never on
  the trio loop; opens of already-cached files and reads (``os.pread`` on the cache fd) are
  cheap and run inline.
- The tree is immutable, so the kernel may cache everything for long: entries and attributes
  (24 h timeouts), missing names too (negative entries, not ENOENT), and open files keep the
  page cache (``keep_cache``): warm reads never reach this process. ``getxattr`` and
  ``listxattr`` answer ENOSYS, after which the kernel stops asking (the tree has no xattrs).
- Opens stay in the kernel: with :mod:`holofs.frontends.fuse_shim` (built by default), open
  and opendir are answered ENOSYS once, after which the kernel sends no OPEN/RELEASE/OPENDIR/
  RELEASEDIR at all, keeps file pages across opens and caches listings itself. Reads and
  listings then name the inode (``NO_OPEN_FH | ino`` as the handle); the first read of a file
  fills the cache. Without the shim, every open and close is a round trip here, as pyfuse3
  does by default.
- A directory's listing is encoded once (names and entry attributes) and replayed to every
  later ``readdir`` of it (the kernel's own listing cache needs the shim).
"""

from __future__ import annotations

import errno
import functools
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import fuse_shim

fuse_shim.load()  # before pyfuse3's extension loads, so that it binds to the shim

import pyfuse3  # noqa: E402
import trio  # noqa: E402

from ..errors import HolofsError, NotFound  # noqa: E402
from ..logs import logger  # noqa: E402
from ..vtree import ROOT_INO, Attr, VirtualTree  # noqa: E402
from .fuse_shim import INODE_MASK, NO_OPEN_FH  # noqa: E402

log = logger("holofs.fuse")

CACHE_TIMEOUT = 24 * 3600.0
"""Seconds the kernel may cache entries, attributes and missing names (the tree never changes)."""
FILL_THREADS = 8
LISTING_CACHE_ENTRIES = 1 << 16
"""Directory entries kept encoded for readdir (~0.3 KiB each); beyond, the cache restarts."""

Listing = list[tuple[bytes, pyfuse3.EntryAttributes]]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def fuse_errors(func: F) -> F:
    """Count the request; map HolofsError to FUSEError(errno); log anything unexpected and
    answer EIO."""

    name = func.__name__

    @functools.wraps(func)
    async def wrapper(self: HolofsOperations, *args: Any, **kwargs: Any) -> Any:
        self.requests[name] += 1
        try:
            return await func(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except HolofsError as exc:
            if exc.errno not in (errno.ENOENT,):
                log.info("%s: %s", func.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            log.warning("%s: %s", func.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", func.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _entry(attr: Attr) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = attr.ino
    out.generation = 0
    out.entry_timeout = CACHE_TIMEOUT
    out.attr_timeout = CACHE_TIMEOUT
    out.st_mode = attr.mode
    out.st_nlink = attr.nlink
    out.st_uid = attr.uid
    out.st_gid = attr.gid
    out.st_rdev = 0
    out.st_size = attr.size
    out.st_blksize = 4096
    out.st_blocks = attr.blocks
    out.st_atime_ns = out.st_mtime_ns = out.st_ctime_ns = attr.time_ns
    return out


def _negative_entry() -> pyfuse3.EntryAttributes:
    """A negative entry: the kernel caches "no such name" for CACHE_TIMEOUT (not an ENOENT answer)."""
    out = pyfuse3.EntryAttributes()
    out.st_ino = 0
    out.entry_timeout = CACHE_TIMEOUT
    return out


class HolofsOperations(pyfuse3.Operations):
    """Read-only FUSE operations over a VirtualTree."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, tree: VirtualTree, *, fill_threads: int = FILL_THREADS) -> None:
        super().__init__()
        self.tree = tree
        self.limiter = trio.CapacityLimiter(fill_threads)
        self.requests: Counter[str] = Counter()
        """Requests served, by handler name (the mount's stats.json reports them)."""
        self._negative = _negative_entry()
        self._listings: dict[int, Listing] = {}
        self._listed = 0
        self.shim_session = False
        """The session was set up by the shim (see :attr:`kernel_opens`)."""
        assert pyfuse3.ROOT_INODE == ROOT_INO

    @property
    def kernel_opens(self) -> bool:
        """True once the session leaves opens to the kernel (reads then carry NO_OPEN_FH | ino)."""
        return self.shim_session and fuse_shim.active()

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        try:
            return _entry(self.tree.lookup(parent_inode, os.fsdecode(name)))
        except NotFound:
            return self._negative

    @fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return _entry(self.tree.getattr(inode))

    @fuse_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(self.tree.readlink(inode))

    @fuse_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        if not self.tree.is_dir(inode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        listing = self._listing(fh & INODE_MASK)
        for i in range(start_id, len(listing)):
            name, entry = listing[i]
            if not pyfuse3.readdir_reply(token, name, entry, i + 1):
                break

    def _listing(self, ino: int) -> Listing:
        """The encoded children of directory ``ino`` (offsets are indexes: the tree's own)."""
        listing = self._listings.get(ino)
        if listing is None:
            listing = [(os.fsencode(name), _entry(attr)) for name, attr, _next in self.tree.readdir(ino)]
            self._listed += len(listing)
            if self._listed > LISTING_CACHE_ENTRIES:
                self._listings.clear()
                self._listed = len(listing)
            self._listings[ino] = listing
        return listing

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        return None

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        handle = self.tree.open_cached(inode, flags)
        if handle is None:
            handle = await trio.to_thread.run_sync(self.tree.open, inode, flags, limiter=self.limiter)
        return pyfuse3.FileInfo(fh=handle, keep_cache=True, direct_io=False)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        if not fh & NO_OPEN_FH:
            return self.tree.read(fh, off, size)
        ino = fh & INODE_MASK
        data = self.tree.read_inode(ino, off, size)
        if data is None:  # the first read of a file not in the cache: fill it (once) in a thread
            fd = await trio.to_thread.run_sync(self.tree.fill, ino, limiter=self.limiter)
            data = os.pread(self.tree.keep_inode_fd(ino, fd), size, off)
        return data

    @fuse_errors
    async def release(self, fh: int) -> None:
        self.tree.release(fh)

    @fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = self.tree.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = st.block_size
        out.f_blocks = st.blocks
        out.f_bfree = out.f_bavail = 0
        out.f_files = st.files
        out.f_ffree = out.f_favail = 0
        out.f_namemax = st.name_max
        return out

    @fuse_errors
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        self.tree.getattr(inode)
        return not mode & os.W_OK

    @fuse_errors
    async def forget(self, inode_list: Any) -> None:
        return None  # inodes are permanent for the life of the mount

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOSYS)  # the kernel answers EOPNOTSUPP itself from now on

    @fuse_errors
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        raise pyfuse3.FUSEError(errno.ENOSYS)


def mount_options(*, allow_other: bool = False) -> set[str]:
    opts = {"fsname=holofs", "subtype=holofs", "ro", "default_permissions"}
    if allow_other:
        opts.add("allow_other")
    return opts


class FuseMount:
    """One FUSE mount of a tree: ``with FuseMount(...) as m: trio.run(m.serve)``.

    Entering mounts (the kernel mount exists afterwards); leaving unmounts and closes
    every open handle."""

    def __init__(self, tree: VirtualTree, mountpoint: str, *, allow_other: bool = False,
                 on_stats: Callable[[], None] | None = None, kernel_opens: bool = True) -> None:
        self.tree = tree
        self.mountpoint = mountpoint
        self.allow_other = allow_other
        self.on_stats = on_stats
        self.kernel_opens = kernel_opens
        self.ops = HolofsOperations(tree)

    def __enter__(self) -> FuseMount:
        fuse_shim.configure(self.kernel_opens)
        pyfuse3.init(self.ops, self.mountpoint, mount_options(allow_other=self.allow_other))
        try:
            self.ops.shim_session = fuse_shim.installed()
        except BaseException:
            pyfuse3.close(unmount=True)  # never leave the kernel mount behind without its server
            raise
        if self.kernel_opens and not self.ops.shim_session:
            log.info("holofs._fuseshim is not in use: every open and close goes through the daemon")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            pyfuse3.close(unmount=True)
        finally:
            self.tree.close()

    async def _watch_signals(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    if self.on_stats is not None:
                        self.on_stats()
                    continue
                log.info("signal %d: unmounting %s", signum, self.mountpoint)
                pyfuse3.terminate()
                return

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve requests until unmounted (externally, or by SIGINT/SIGTERM). Started with
        ``nursery.start``, it returns control once SIGINT/SIGTERM/SIGUSR1 are handled here:
        report the mount ready only after that (SIGUSR1's default action ends the process)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._watch_signals)
            task_status.started()
            await pyfuse3.main(min_tasks=4)
            nursery.cancel_scope.cancel()
