"""Mount management: run a mount in the foreground or as a daemon, find and unmount mounts.

A daemonized mount is a forked child (it inherits the already-imported modules, which keeps
start-up fast) in its own session, with stdio redirected to ``<cache>/mounts/<id>/holofs.log``.
It reports back through a pipe: ``ready`` once the kernel mount exists, or ``error <msg>``;
the parent returns only after that (and after seeing the mount in /proc/self/mountinfo).

Each live mount has a runtime directory ``<cache>/mounts/<id>/`` (``id`` = hash of the
mountpoint) holding ``mount.json`` (pid, mountpoint, catalog, ...), the daemon's log and, on
SIGUSR1, ``stats.json`` with the cache fill counters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Busy, HolofsError, NotFound, UsageError
from .logs import logger

log = logger("holofs.mounts")

FS_TYPE = "fuse.holofs"
OVERLAY_FS_TYPES = ("overlay", "fuse.fuse-overlayfs")
READY_TIMEOUT = 60.0
INDEX_WAIT = 2.0
"""Longest the daemon waits, after ``go``, for the parent to finish writing the catalog index."""


@dataclass(frozen=True, slots=True)
class MountOptions:
    catalog: str
    mountpoint: str | None = None
    hololib: str | None = None
    cache: str | None = None
    verify: str = "trusted"
    allow_other: bool = False
    relocate_name_only: bool = False
    read_only: bool = False
    upper: str | None = None
    prefetch: bool = True
    kernel_opens: bool = True


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    fstype: str
    source: str
    options: str = ""
    """The superblock options, as the kernel shows them (values escaped)."""
    device: int = -1
    """The ``st_dev`` of files on this filesystem (``major:minor``)."""

    def option(self, name: str) -> str | None:
        """The value of superblock option ``name`` (e.g. an overlay's ``lowerdir``), unescaped."""
        for item in self.options.split(","):
            key, sep, value = item.partition("=")
            if sep and key == name:
                return _unescape(value)
        return None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def list_mounts() -> list[MountInfo]:
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        try:
            device = os.makedev(*map(int, fields[2].split(":")))
        except (ValueError, TypeError):
            device = -1
        out.append(MountInfo(_unescape(fields[4]), tail[0], _unescape(tail[1]), tail[2] if len(tail) > 2 else "",
                             device))
    return out


def find_mount(mountpoint: str | os.PathLike[str]) -> MountInfo | None:
    """The (last, i.e. topmost) mount at ``mountpoint``, if any."""
    path = os.path.abspath(os.fspath(mountpoint))
    found = None
    for info in list_mounts():
        if info.mountpoint == path:
            found = info
    return found


def is_holofs_mount(mountpoint: str | os.PathLike[str]) -> bool:
    """True for a holofs FUSE mount or the writable overlay holofs puts over one."""
    info = find_mount(mountpoint)
    return info is not None and (info.fstype == FS_TYPE or (info.fstype in OVERLAY_FS_TYPES and info.source == "holofs"))


def runtime_dir(cache_root: Path, mountpoint: str) -> Path:
    digest = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:16]
    return cache_root / "mounts" / digest


def read_record(cache_root: Path, mountpoint: str) -> dict[str, Any] | None:
    try:
        return json.loads((runtime_dir(cache_root, mountpoint) / "mount.json").read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    from .fsutil import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2).encode(), mode=0o600)


# -- serving ----------------------------------------------------------------------------


def _prepare(opts: MountOptions, preloaded: Any = None) -> tuple[Any, Any, str, Any]:
    """Load (and validate) the catalog, unless ``preloaded`` (already validated) is given, and
    plan the mount: (catalog, hololib, absolute mountpoint, a function that writes the
    parsed-catalog index, or None)."""
    from .catalog_index import load_catalog
    from .library import Hololib, catalog_file
    from .paths import default_cache_dir

    path, lib = catalog_file(opts.catalog, opts.hololib)
    if preloaded is not None and preloaded.validated:
        catalog, save_index = preloaded, None
    else:
        catalog, save_index = load_catalog(path, opts.cache or default_cache_dir())
    if lib is None:
        lib = Hololib.of_catalog(path)
    mountpoint = os.path.abspath(opts.mountpoint or catalog.path)
    return catalog, lib, mountpoint, save_index


def check_mountpoint(mountpoint: str, *, create: bool) -> None:
    if find_mount(mountpoint) is not None:
        raise Busy(f"{mountpoint} is already a mount point (holofs umount {mountpoint} first)")
    if os.path.lexists(mountpoint):
        if not os.path.isdir(mountpoint) or os.path.islink(mountpoint):
            raise UsageError(f"mount point {mountpoint} exists and is not a directory")
    elif create:
        os.makedirs(mountpoint, mode=0o755, exist_ok=True)
    else:
        raise NotFound(f"mount point {mountpoint} does not exist")


def serve_foreground(opts: MountOptions, *, on_ready: Any = None, preloaded: Any = None) -> None:
    """Mount and serve until unmounted or SIGINT/SIGTERM (blocks). ``preloaded``: the
    catalog, already parsed and validated (by the daemon start-up)."""
    from .cache import CacheFiller, FileCache
    from .relocation import plan_relocation
    from .verification import VerifyPolicy
    from .vtree import VirtualTree

    catalog, lib, mountpoint, save_index = _prepare(opts, preloaded)
    try:
        policy = VerifyPolicy(opts.verify)
    except ValueError:
        raise UsageError(f"unknown verify policy {opts.verify!r}: use always, trusted or skip") from None
    relocation = plan_relocation(catalog, mountpoint, allow_name_only=opts.relocate_name_only)
    check_mountpoint(mountpoint, create=True)
    cache = FileCache(opts.cache).ensure()
    filler = CacheFiller(cache, lib, relocation, verify=policy)
    tree = VirtualTree(catalog, filler, prefetch=opts.prefetch)
    rundir = runtime_dir(cache.root, mountpoint)
    rundir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stats_seq = 0

    def dump_stats() -> None:
        nonlocal stats_seq
        stats_seq += 1
        _write_json(rundir / "stats.json", {"seq": stats_seq, "open_handles": tree.open_handles,
                                            "kernel_opens": mount.ops.kernel_opens, "inode_fds": tree.inode_fds,
                                            "requests": dict(mount.ops.requests), **filler.fill_stats()})

    import trio

    from .frontends.fuse import FuseMount

    layer = None if opts.read_only else _layer_for(opts, cache.root, mountpoint)
    fuse_point = mountpoint
    if layer is not None:
        from .frontends.overlay import available_backend

        backend = available_backend()
        if backend is None:
            raise HolofsError("a writable mount needs kernel overlayfs (as root) or fuse-overlayfs; "
                              "install fuse-overlayfs, or mount with --read-only")
        fuse_point = os.fspath(rundir / "lower")
        with contextlib.suppress(OSError):
            os.rmdir(fuse_point)  # a leftover from a killed daemon (stale mounts are cleaned by umount)
        os.makedirs(fuse_point, mode=0o700, exist_ok=True)
    mount = FuseMount(tree, fuse_point, allow_other=opts.allow_other, on_stats=dump_stats,
                      kernel_opens=opts.kernel_opens)
    try:
        mount.__enter__()
    except RuntimeError as exc:
        raise HolofsError(f"cannot mount {mountpoint}: {exc} (see the messages above)") from None
    overlay_up = False
    try:
        record = {
            "pid": os.getpid(), "mountpoint": mountpoint, "catalog": os.fspath(catalog.source or opts.catalog),
            "hololib": os.fspath(lib.root), "cache": os.fspath(cache.root), "identity": catalog.identity,
            "target_identity": relocation.target.decode(), "log": os.fspath(rundir / "holofs.log"),
            "started": time.time(), "verify": opts.verify, "allow_other": opts.allow_other,
            "relocate_name_only": opts.relocate_name_only, "writable": layer is not None, "prefetch": opts.prefetch,
            "kernel_opens": opts.kernel_opens,
            "lower": fuse_point if layer is not None else None,
            "upper": os.fspath(layer.root) if layer is not None else None,
        }

        async def main() -> None:
            nonlocal overlay_up
            async with trio.open_nursery() as nursery:

                async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    await mount.serve(task_status=task_status)
                    nursery.cancel_scope.cancel()  # unmounted: the overlay watch ends too

                await nursery.start(serve)  # signals handled before anyone hears "ready"
                if layer is not None:
                    # The kernel looks the lower tree up while mounting: serve FUSE meanwhile.
                    await trio.to_thread.run_sync(functools.partial(_mount_layer, fuse_point, layer, mountpoint, catalog,
                                                                      allow_other=opts.allow_other))
                    overlay_up = True
                    nursery.start_soon(_end_when_overlay_gone, mountpoint, nursery.cancel_scope)
                _write_json(rundir / "mount.json", record)
                if on_ready is not None:
                    on_ready(mountpoint, rundir)
                log.info("mounted %s at %s (%d inodes, %s)", catalog.source, mountpoint, len(tree),
                         "writable" if layer is not None else "read-only")
                await trio.to_thread.run_sync(filler.prepare)  # the first fill's one-time work, now
                if save_index is not None:  # for the next mount of this catalog; off the ready path
                    await trio.to_thread.run_sync(save_index)

        trio.run(main)
    finally:
        try:
            if overlay_up and is_holofs_mount(mountpoint):
                _unmount_layer(mountpoint)
        finally:
            try:
                mount.__exit__(None, None, None)
            finally:
                dump_stats()
                (rundir / "mount.json").unlink(missing_ok=True)
                log.info("unmounted %s", mountpoint)


OVERLAY_CHECK_EVERY = 1.0
"""Seconds between a writable mount's checks that its overlay is still mounted."""


async def _end_when_overlay_gone(mountpoint: str, scope: Any) -> None:
    """End the mount (``scope``: the serving nursery's) once the overlay at ``mountpoint`` has
    been unmounted by someone else, e.g. ``umount(8)`` or systemd. Otherwise the daemon would
    go on serving the hidden FUSE tree beneath it, which nobody can reach any more."""
    import trio

    while True:
        await trio.sleep(OVERLAY_CHECK_EVERY)
        if not is_holofs_mount(mountpoint):
            log.info("the overlay at %s was unmounted: unmounting the FUSE tree beneath it", mountpoint)
            scope.cancel()
            return


def _layer_for(opts: MountOptions, cache_root: Path, mountpoint: str) -> Any:
    from .upper import LayerDirs, layer_dirs_for

    return LayerDirs(Path(opts.upper).absolute()) if opts.upper else layer_dirs_for(mountpoint, cache_root)


def _mount_layer(lower: str, layer: Any, mountpoint: str, catalog: Any, *, allow_other: bool = False) -> None:
    from .frontends.overlay import available_backend, mount_overlay
    from .upper import write_layer_record

    layer.create()
    # The merged root takes the upper root's mode. Kernel overlayfs has no allow_other check:
    # unless the mount is shared, its root is 0700 so that nobody else (not even the owner's
    # group, which 0750 would let in) gets past it; shared, it looks like the catalog's.
    os.chmod(layer.upper, os.stat(lower).st_mode & 0o7777 if allow_other else 0o700)
    write_layer_record(layer, catalog, mountpoint)
    mount_overlay(Path(lower), layer, Path(mountpoint), available_backend() or "")


def _unmount_layer(mountpoint: str) -> None:
    from .frontends.overlay import OverlayError, unmount_overlay

    info = find_mount(mountpoint)
    backend = "fuse-overlayfs" if info is not None and info.fstype == "fuse.fuse-overlayfs" else "overlayfs"
    try:
        unmount_overlay(Path(mountpoint), backend)
    except OverlayError:
        unmount_overlay(Path(mountpoint), backend, lazy=True)


def _daemon_log_path(opts: MountOptions) -> Path:
    """Where a daemon logs before it knows its mountpoint (the cache's mounts dir)."""
    from .paths import default_cache_dir, private_dir

    root = Path(opts.cache or default_cache_dir())
    return private_dir(root.absolute() / "mounts") / f"daemon-{os.getpid()}.log"


def mount_daemon(opts: MountOptions, *, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Start the daemon that serves the mount; return once it is ready (or raise its error).

    Start-up runs on two cores: the daemon (usually forked by the console entry point before
    the CLI loaded) imports the FUSE stack (pyfuse3, trio: ~0.2 s) while this process parses
    and validates the catalog. This process sends the daemon its options, then ``go``, then
    keeps the catalog in the cache's catalog index (:mod:`holofs.catalog_index`) and closes
    the pipe. The daemon waits for that close and loads the index (writing and loading it
    take a fraction of a parse, which the daemon would run on the core this process parses
    on); with no index (e.g. a read-only cache) it loads the catalog itself. A bad catalog is
    reported from here, and the daemon, which has done nothing yet, is killed."""
    log_path = _daemon_log_path(opts)
    from .entry import fork_daemon, take_early_daemon

    # Forked by the console entry point (importing since), or now (e.g. holofs layer's remount).
    pid, go_write, read_fd = take_early_daemon() or fork_daemon()
    job = {"opts": dataclasses.asdict(opts), "log": os.fspath(log_path),
           "level": logging.getLogger().getEffectiveLevel()}
    os.write(go_write, f"{json.dumps(job)}\n".encode())
    try:
        save_index = _preload_catalog(opts)
    except BaseException:
        os.close(go_write)
        os.close(read_fd)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            log_path.unlink()
        raise
    os.write(go_write, b"go\n")
    try:
        if save_index is not None:  # for the daemon (if it is not done first) and the next mount
            save_index()
    finally:
        os.close(go_write)  # the index is written (or will not be): a daemon that got go loads it
    message = _read_ready(read_fd, pid, timeout)
    if message.startswith("ready "):
        info = json.loads(message[len("ready "):])
        deadline = time.monotonic() + timeout
        while not is_holofs_mount(info["mountpoint"]):
            if time.monotonic() > deadline:
                raise HolofsError(f"mount at {info['mountpoint']} did not appear (log: {info['log']})")
            time.sleep(0.005)
        return info
    tail = ""
    try:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1] if lines and not message else ""
    except OSError:
        pass
    if message.startswith("error "):
        err = json.loads(message[len("error "):])
        exc = HolofsError(err["message"])
        exc.errno = err.get("errno", exc.errno)
        exc.exit_code = err.get("exit_code", 1)
        raise exc
    raise HolofsError(f"the mount daemon exited before the mount was ready{': ' + tail if tail else ''} "
                      f"(log: {log_path})")


def early_daemon_main(job_fd: int, ready_fd: int) -> None:
    """The daemon forked by :func:`holofs.entry.fork_daemon`: detach, import the FUSE
    stack, wait for the job line :func:`mount_daemon` sends (options, log file, log level),
    then serve (:func:`_daemon_main`)."""
    code = 0
    try:
        os.setsid()  # no terminal signals: Ctrl-C on the CLI closes the pipe instead
        with contextlib.suppress(Exception):  # a failure recurs in _daemon_main and is reported
            _import_serving_modules()
        buf = b""
        while b"\n" not in buf:
            chunk = os.read(job_fd, 65536)
            if not chunk:
                os._exit(0)  # the CLI ended without mounting
            buf += chunk
        line, pending = buf.split(b"\n", 1)
        job = json.loads(line)
        logging.getLogger().setLevel(int(job["level"]))
        _daemon_main(MountOptions(**job["opts"]), ready_fd, Path(job["log"]), job_fd, pending)
    except BaseException:
        code = 1
    os._exit(code)


def _preload_catalog(opts: MountOptions) -> Any:
    """Parse and validate the catalog (HolofsError if it is bad); return the function that
    writes the catalog index (or None). Any other failure is left to the daemon, which loads
    the catalog itself and reports it in its log."""
    from .catalog_index import load_catalog
    from .library import catalog_file
    from .paths import default_cache_dir

    try:
        path, _lib = catalog_file(opts.catalog, opts.hololib)
        return load_catalog(path, opts.cache or default_cache_dir())[1]
    except HolofsError:
        raise
    except Exception:
        return None


def _read_go(fd: int, pending: bytes = b"") -> bool:
    """Wait for the parent's ``go`` line (False if it closed the pipe without one: it failed),
    then (up to :data:`INDEX_WAIT`) for it to close the pipe, once it has written the index.
    ``pending``: what was already read from the pipe."""
    import select

    buf = pending
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while b"\n" not in buf:
            chunk = pipe.read(256)
            if not chunk:
                return False
            buf += chunk
        deadline = time.monotonic() + INDEX_WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0] or not pipe.read(256):
                break  # waited long enough, or closed (a read of b"")
    return buf.split(b"\n", 1)[0] == b"go"


def _daemon_catalog(opts: MountOptions, go_fd: int, pending: bytes = b"") -> tuple[Any, str]:
    """In the daemon, after its imports: the catalog to serve, from the index the parent
    writes once it has validated the catalog, or None to load it as usual."""
    from .catalog_index import load_indexed
    from .library import catalog_file
    from .paths import default_cache_dir

    if not _read_go(go_fd, pending):  # the parent failed (and kills us): nothing to clean up
        os._exit(0)
    with contextlib.suppress(Exception):
        catalog = load_indexed(catalog_file(opts.catalog, opts.hololib)[0], opts.cache or default_cache_dir())
        if catalog is not None:
            return catalog, "the catalog index"
    return None, "loaded after the parent's go"


def _read_ready(fd: int, pid: int, timeout: float) -> str:
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HolofsError(f"the mount daemon (pid {pid}) did not become ready in {timeout:.0f}s")
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                continue
            chunk = pipe.read(4096)
            if not chunk:
                break
            buf += chunk
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return buf.split(b"\n", 1)[0].decode(errors="replace")


def _import_serving_modules() -> None:
    """Import what serving a mount needs (the daemon does this while its parent parses)."""
    import trio  # noqa: F401

    from . import cache, catalog_index, relocation, validate, verification, vtree  # noqa: F401
    from .frontends import fuse  # noqa: F401


def _daemon_main(opts: MountOptions, ready_fd: int, log_path: Path, go_fd: int, pending: bytes = b"") -> None:
    """The daemon once it has its job: wait for the parent's "go" (the catalog is validated
    by then), log to a file, serve, report readiness."""
    code = 0
    try:
        _import_serving_modules()  # (done already unless it failed: then it raises here)
        preloaded, how = _daemon_catalog(opts, go_fd, pending)
        devnull = os.open(os.devnull, os.O_RDWR)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(devnull)
        os.close(log_fd)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
        log.info("catalog %s: %s", opts.catalog, how)

        def on_ready(mountpoint: str, rundir: Path) -> None:
            final_log = rundir / "holofs.log"
            try:
                os.replace(log_path, final_log)
            except OSError:
                final_log = log_path
            info = {"mountpoint": mountpoint, "pid": os.getpid(), "log": os.fspath(final_log),
                    "runtime_dir": os.fspath(rundir)}
            os.write(ready_fd, f"ready {json.dumps(info)}\n".encode())
            os.close(ready_fd)

        serve_foreground(opts, on_ready=on_ready, preloaded=preloaded)
    except HolofsError as exc:
        payload = {"message": str(exc), "errno": exc.errno, "exit_code": exc.exit_code}
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error {json.dumps(payload)}\n".encode())
        log.error("%s", exc)
        code = exc.exit_code
    except BaseException:
        logging.getLogger("holofs").exception("mount daemon failed")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


# -- unmounting -------------------------------------------------------------------------


def unmount(mountpoint: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None,
            timeout: float = 30.0) -> dict[str, Any]:
    """Unmount a holofs mount (also a stale one whose daemon died); wait for its daemon.

    A writable mount is an overlay over a hidden FUSE mount: the overlay goes first."""
    from .paths import default_cache_dir

    path = os.path.abspath(os.fspath(mountpoint))
    info = find_mount(path)
    if info is None:
        raise NotFound(f"{path} is not mounted")
    if not is_holofs_mount(path):
        raise UsageError(f"{path} is not a holofs mount (it is {info.fstype})")
    cache_root = Path(cache if cache is not None else default_cache_dir()).absolute()
    record = read_record(cache_root, path)
    lazy = False
    fuse_point = path
    if info.fstype in OVERLAY_FS_TYPES:
        from .frontends.overlay import OverlayError, unmount_overlay

        backend = "fuse-overlayfs" if info.fstype == "fuse.fuse-overlayfs" else "overlayfs"
        try:
            unmount_overlay(Path(path), backend)
        except OverlayError:
            lazy = True
            try:
                unmount_overlay(Path(path), backend, lazy=True)
            except OverlayError as exc:
                raise Busy(str(exc)) from None
        fuse_point = os.fspath(runtime_dir(cache_root, path) / "lower")
        lowerdir = info.option("lowerdir")
        if record and record.get("lower"):
            fuse_point = record["lower"]
        elif lowerdir and (lower := find_mount(lowerdir)) is not None and lower.fstype == FS_TYPE:
            fuse_point = lowerdir  # no record under this cache (another --cache): the overlay names it
    if find_mount(fuse_point) is not None:
        lazy = _fusermount(fuse_point) or lazy
    pid = record.get("pid") if record else None
    if isinstance(pid, int):
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not _alive(pid) or lazy:
            (runtime_dir(cache_root, path) / "mount.json").unlink(missing_ok=True)
    return {"mountpoint": path, "lazy": lazy, "pid": pid}


def _fusermount(path: str) -> bool:
    """fusermount3 -u (then -uz); True if it had to be lazy."""
    import subprocess  # only here: importing it costs each mount's start-up ~3 ms

    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise HolofsError("fusermount3 not found: install fuse3")
    proc = subprocess.run([tool, "-u", path], capture_output=True, text=True)
    if proc.returncode == 0 or find_mount(path) is None:
        return False
    proc2 = subprocess.run([tool, "-u", "-z", path], capture_output=True, text=True)
    if proc2.returncode != 0 and find_mount(path) is not None:
        raise Busy(f"cannot unmount {path}: {proc.stderr.strip() or proc2.stderr.strip()}")
    return True


def _alive(pid: int) -> bool:
    from .cache import pid_alive

    return pid_alive(pid)
