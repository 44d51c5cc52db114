"""``holofs materialize``: an eager, byte-exact restore of a catalog into a directory.

Fresh targets are built in a sibling staging directory and renamed into place once. An
existing target is reconciled like RCC does: extras removed, wrong files replaced, correct
files left untouched. A state file next to the target (``<parent>/.<name>.holofs``) records
whether the last restore completed and the digest each path got, so that files whose
recorded digest changed are replaced even when size and mode still match.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import time
from collections.abc import Callable

from . import fastclone, forkpool
from .catalog import Catalog, DirEntry, FileEntry, file_count
from .digest import algorithm_of, new_hasher
from .errors import CatalogError, HolofsError, NoSpace, UnsafePath, UsageError
from .fsutil import DIR_FLAGS, part_suffix, raise_for_disk, reserve_fds
from .library import Hololib
from .modes import permissions
from .relocation import Relocation, plan_relocation
from .restore_state import (
    DIR_MODE,
    MOTHER_NS,
    MaterializeReport,
    State,
    catalog_digests,
    catalog_fingerprint,
    confirm_intact,
    live_dirs,
    manifest_body,
    state_path,
    target_lock,
)
from .strategies import Linker, produce_file
from .verification import VerifiedStore, VerifyPolicy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BATCH = 256
FORK_MIN_FILES = 2000  # below this, forking worker processes costs more than it saves
FD_SPARE = 32  # descriptors a restore needs beyond one per directory and two per worker
# A unit of work: (directory, its node, a batch of its file names or None for all, handle extras).
Job = list[tuple[str, DirEntry, "list[str] | None", bool]]


class MaterializeOptions:
    """How to restore; ``meanwhile``: the caller's own work, done while the workers run."""

    def __init__(self, strategy: str = "auto", verify: VerifyPolicy = VerifyPolicy.TRUSTED, workers: int = 4,
                 keep_special_bits: bool = False, relocate_name_only: bool = False, copy_patterns: tuple[str, ...] = (),
                 cache_dir: str | None = None, progress: Callable[[int], None] | None = None,
                 total_hook: Callable[[int], None] | None = None, wait: bool = True,
                 wait_hook: Callable[[str], None] | None = None, meanwhile: Callable[[], None] | None = None) -> None:
        self.strategy = strategy
        self.verify = verify
        self.workers = workers
        self.keep_special_bits = keep_special_bits
        self.relocate_name_only = relocate_name_only
        self.copy_patterns = copy_patterns
        self.cache_dir = cache_dir
        self.progress = progress
        self.total_hook = total_hook
        self.wait = wait
        self.wait_hook = wait_hook
        self.meanwhile = meanwhile


class CheckReport:
    """What ``materialize --check`` found: ``status`` is complete, incomplete or modified."""

    def __init__(self, target: str, status: str, problems: list[str]) -> None:
        self.target = target
        self.status = status
        self.problems = problems

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status, "problems": self.problems[:200],
                "problem_count": len(self.problems)}


# --- state file ------------------------------------------------------------------------


# --- catalog walking -------------------------------------------------------------------


def _validate(catalog: Catalog) -> None:
    if catalog.validated:  # e.g. loaded through catalog_index, which only keeps valid ones
        return
    from .validate import validate_catalog

    validate_catalog(catalog)
    for rel, node in live_dirs(catalog.tree):
        for name in (*node.subdirs, *node.files):
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise CatalogError(f"catalog entry {rel + '/' + name if rel else name!r}: unsafe name")


# --- the restore -----------------------------------------------------------------------


class _Ctx:
    """One restore's shared state. ``known``: path -> digest of the previous complete-or-not
    restore; ``direct``: building a fresh private staging dir (files go straight to their
    names); ``dir_fds``: rel -> fd, opened beneath the parent's fd."""

    def __init__(self, lib: Hololib, relocation: Relocation, linker: Linker, store: VerifiedStore,
                 policy: VerifyPolicy, keep_special: bool, root: str, known: dict[str, str] | None,
                 same_catalog: bool, dry_run: bool = False, direct: bool = False, target_dev: int | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.lib = lib
        self.relocation = relocation
        self.linker = linker
        self.store = store
        self.policy = policy
        self.keep_special = keep_special
        self.root = root
        self.known = known
        self.same_catalog = same_catalog
        self.dry_run = dry_run
        self.direct = direct
        self.target_dev = target_dev
        self.progress = progress
        self.dir_fds: dict[str, int] = {}
        self.part_prefix = part_suffix()
        self.counter = itertools.count()
        self._perms: dict[int, int] = {}

    def perm(self, go_mode: int) -> int:
        """chmod bits for a Go mode (memoised: a tree has few distinct modes)."""
        p = self._perms.get(go_mode)
        if p is None:
            p = self._perms[go_mode] = permissions(go_mode, keep_special=self.keep_special)
        return p


class _DirResult:
    """What the work on some directories did (summed with :meth:`add`)."""

    def __init__(self) -> None:
        self.written = 0
        self.intact = 0
        self.times_fixed = 0
        self.symlinks = 0
        self.removed = 0
        self.verified = 0
        self.problems: list[str] = []
        self.dir_changed = False
        self.current = ""

    def add(self, other: _DirResult) -> None:
        self.written += other.written
        self.intact += other.intact
        self.times_fixed += other.times_fixed
        self.symlinks += other.symlinks
        self.removed += other.removed
        self.verified += other.verified
        self.problems.extend(other.problems)
        self.dir_changed |= other.dir_changed


def _rmtree(path: str, **kwargs: Any) -> None:
    import shutil  # only to remove a tree: with its lzma and bz2, it costs a start-up ~5 ms

    shutil.rmtree(path, **kwargs)


def _remove_any(dir_fd: int, name: str, st_mode: int) -> None:
    if stat.S_ISDIR(st_mode):
        _rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _existing_content_ok(dir_fd: int, name: str, entry: FileEntry, ctx: _Ctx) -> bool:
    """Deep check (``--verify always``): hash the file with the recorded identity put back."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = bytearray(f.read(entry.size + 1))
    finally:
        os.close(fd)
    if len(data) != entry.size:
        return False
    n = len(ctx.relocation.recorded)
    for off in entry.rewrite:
        data[off : off + n] = ctx.relocation.recorded
    h = new_hasher(algorithm_of(entry.digest) or "sha256")
    h.update(data)
    return h.hexdigest() == entry.digest


def _os_error(exc: OSError, where: str) -> HolofsError:
    """A one-line HolofsError for an unexpected OS failure while writing ``where``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"no space left on device while writing {where}")
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return HolofsError(f"{where}: too many open files: raise the open-files limit (ulimit -n) and run again")
    return HolofsError(f"{where}: {exc.strerror or exc}")


def _dir_task(ctx: _Ctx, units: Job, scan: bool) -> _DirResult:
    """Reconcile (or fill) a few directories, or a batch of one big directory's files."""
    res = _DirResult()
    for rel, node, names, handle_extras in units:
        res.current = rel or "."
        try:
            _dir_work(ctx, rel, node, names, scan, handle_extras, res)
        except OSError as exc:
            raise _os_error(exc, res.current) from None
    return res


def _dir_work(ctx: _Ctx, rel: str, node: DirEntry, names: list[str] | None, scan: bool, handle_extras: bool,
              res: _DirResult) -> _DirResult:
    fd = ctx.dir_fds[rel]  # shared by this directory's batches: only *at calls on it
    if not scan:
        return _dir_files(ctx, rel, node, names, fd, None, handle_extras, res)
    # scandir reads through the fd's file position (and its entries stat through that fd):
    # give it an fd of its own.
    own = os.open(".", DIR_FLAGS, dir_fd=fd)
    try:
        with os.scandir(own) as it:
            existing = {e.name: e for e in it}
        return _dir_files(ctx, rel, node, names, fd, existing, handle_extras, res)
    finally:
        os.close(own)


def _dir_files(ctx: _Ctx, rel: str, node: DirEntry, names: list[str] | None, fd: int,
               scanned: dict[str, os.DirEntry[str]] | None, handle_extras: bool, res: _DirResult) -> _DirResult:
    """Produce or check ``names`` (all files when None) of one directory; ``scanned`` holds its
    current entries (None: a fresh directory, nothing to compare or remove)."""
    scan = scanned is not None
    existing = scanned if scanned is not None else {}
    known = ctx.known
    files = node.files
    for name in names if names is not None else files:
        entry = files[name]
        label = res.current = f"{rel}/{name}" if rel else name
        ex = existing.pop(name, None) if scan else None
        ex_mode = 0
        if ex is not None:
            st = ex.stat(follow_symlinks=False)
            ex_mode = st.st_mode
            if entry.symlink:
                if stat.S_ISLNK(ex_mode) and os.readlink(name, dir_fd=fd) == entry.symlink:
                    res.intact += 1
                    continue
                res.problems.append(f"{label}: symlink differs")
            else:
                perm = ctx.perm(entry.mode)
                if not stat.S_ISREG(ex_mode):
                    res.problems.append(f"{label}: not a regular file")
                elif st.st_size != entry.size:
                    res.problems.append(f"{label}: size {st.st_size}, expected {entry.size}")
                elif stat.S_IMODE(ex_mode) != perm:
                    res.problems.append(f"{label}: mode {stat.S_IMODE(ex_mode):o}, expected {perm:o}")
                elif not ctx.same_catalog and (known is None or known.get(label) != entry.digest):
                    res.problems.append(f"{label}: content digest changed since the last restore")
                elif ctx.policy == VerifyPolicy.ALWAYS and not _existing_content_ok(fd, name, entry, ctx):
                    res.problems.append(f"{label}: content modified")
                else:
                    # atime moves on every read: not compared. A hardlinked file (nlink > 1,
                    # --strategy hardlink) shares the library blob's times: never re-stamped.
                    if st.st_mtime_ns != MOTHER_NS and st.st_nlink == 1:
                        res.problems.append(f"{label}: mtime differs")
                        if not ctx.dry_run:
                            os.utime(name, ns=(MOTHER_NS, MOTHER_NS), dir_fd=fd, follow_symlinks=False)
                        res.times_fixed += 1
                    res.intact += 1
                    continue
        else:
            if scan:
                res.problems.append(f"{label}: missing")
        if ctx.dry_run:
            continue
        # In a fresh staging dir nobody sees (it is renamed into place once, complete, and
        # removed if the run fails) files are made under their own names; in a live target
        # they are made under a temp name and renamed over the old one.
        tmp = name if ctx.direct else f"{name}{ctx.part_prefix}{next(ctx.counter)}"
        perm = None if entry.symlink else ctx.perm(entry.mode)
        result = produce_file(
            ctx.lib, entry, tmp, relocation=ctx.relocation, verify=False, linker=ctx.linker, dir_fd=fd,
            label=label, perm=perm, times_ns=MOTHER_NS, verified_store=ctx.store, policy=ctx.policy,
            target_dev=ctx.target_dev,
        )
        if not ctx.direct:
            try:
                if ex is not None and stat.S_ISDIR(ex_mode):
                    _rmtree(name, dir_fd=fd)
                os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise
        res.dir_changed = True
        if result.verified:
            res.verified += 1
        if entry.symlink:
            res.symlinks += 1
        else:
            res.written += 1
    if handle_extras:
        for name, sub in node.subdirs.items():
            ex = existing.pop(name, None) if scan else None
            label = f"{rel}/{name}" if rel else name
            if not sub.symlink:
                continue  # real subdirectories were made by the directory pass
            if ex is not None:
                if ex.is_symlink() and os.readlink(name, dir_fd=fd) == sub.symlink:
                    res.intact += 1
                    continue
                res.problems.append(f"{label}: directory symlink differs")
            elif scan:
                res.problems.append(f"{label}: missing")
            if ctx.dry_run:
                continue
            tmp = f"{name}{ctx.part_prefix}{next(ctx.counter)}"
            os.symlink(sub.symlink, tmp, dir_fd=fd)
            if ex is not None and ex.is_dir(follow_symlinks=False):
                _rmtree(name, dir_fd=fd)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            ctx.linker.record("symlink", 0, 0.0)
            res.symlinks += 1
            res.dir_changed = True
        own = ctx.part_prefix
        for name, ex in existing.items():
            if name in node.files or own in name:
                continue  # handled by another batch of this directory / its temp file
            label = f"{rel}/{name}" if rel else name
            res.problems.append(f"{label}: extra")
            if not ctx.dry_run:
                _remove_any(fd, name, ex.stat(follow_symlinks=False).st_mode)
                res.dir_changed = True
            res.removed += 1
    if ctx.direct and names is None:
        # A fresh directory done in one unit (its subdirectories were made before any unit
        # ran): nothing changes it any more, so it gets its mode and mother time here, in
        # parallel, instead of in _finish_dirs.
        _stamp_dir(ctx, fd, True)
    if ctx.progress is not None:
        ctx.progress(len(names) if names is not None else len(node.files))
    return res


def _ensure_dirs(ctx: _Ctx, dirs: list[tuple[str, DirEntry]], fresh: bool, problems: list[str]) -> set[str]:
    """Open (creating where missing) every real directory, parents first, into ``ctx.dir_fds``.

    Each one is made and opened relative to its parent's fd with O_NOFOLLOW, so no component
    of any path written to is ever a symlink (a symlink or file where a directory belongs is
    replaced); those already in ``ctx.dir_fds`` are kept. Returns the directories created or
    replaced. In a dry run, missing directories (and so their subtrees) get no fd."""
    made: set[str] = set()
    fds = ctx.dir_fds
    if "" not in fds:
        fds[""] = os.open(ctx.root, DIR_FLAGS)
    for rel, _node in dirs:
        if rel in fds:
            continue  # the root, or made by the native fast path
        parent, _, name = rel.rpartition("/")
        pfd = fds.get(parent)
        if pfd is None:
            continue  # beneath a missing directory (dry run)
        if not fresh:
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                what = "missing"
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                what = "not a directory"
            else:
                fds[rel] = fd
                st = os.fstat(fd)
                if stat.S_IMODE(st.st_mode) != DIR_MODE or st.st_mtime_ns != MOTHER_NS:
                    problems.append(f"{rel}/: directory mode or time differs")
                continue
            problems.append(f"{rel}/: {what}")
            if ctx.dry_run:
                continue
            if what != "missing":
                os.unlink(name, dir_fd=pfd)
        elif ctx.dry_run:
            continue
        try:
            os.mkdir(name, DIR_MODE, dir_fd=pfd)
        except OSError as exc:
            raise_for_disk(exc, rel)
        fds[rel] = os.open(name, DIR_FLAGS, dir_fd=pfd)
        made.add(rel)
    return made


def _stamp_dir(ctx: _Ctx, fd: int, fresh: bool) -> None:
    """Mode 0o750 (chmod only if a fresh mkdir's umask took bits) and mother time."""
    if not fresh or DIR_MODE & ctx.linker.chmod_after:
        os.fchmod(fd, DIR_MODE)
    os.utime(fd, ns=(MOTHER_NS, MOTHER_NS))


def _finish_dirs(ctx: _Ctx, dirs: list[tuple[str, DirEntry]], force: bool, fresh: bool = False,
                 units_stamped: bool = False, only: set[str] | None = None) -> None:
    """Directories: mode 0o750 and mother time, set after their contents are done
    (``units_stamped``: those done in one unit of work were stamped by it; ``only``: the
    others were stamped by the native fast path)."""
    for rel, node in reversed(dirs):
        if (units_stamped and len(node.files) <= BATCH) or (only is not None and rel not in only):
            continue
        fd = ctx.dir_fds[rel]
        if not force:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) == DIR_MODE and st.st_mtime_ns == MOTHER_NS:
                continue
        _stamp_dir(ctx, fd, fresh)


def _clone_fast(ctx: _Ctx, dirs: list[tuple[str, DirEntry]], workers: int,
                meanwhile: Callable[[], None]) -> fastclone.ClonedTree | None:
    """The native fast path of a fresh build (:mod:`holofs.fastclone`); None if it does not
    apply. The directories it made join ``ctx.dir_fds``; what it left is in the result. One
    thread per CPU at most: more only queue in the kernel (a bare C loop of the same calls on
    2 CPUs took 0.54-0.62 s with 2 threads, 0.72 s with 4)."""
    if not fastclone.available(ctx.linker):
        return None
    try:
        lib_fd = os.open(ctx.lib.library_fspath, DIR_FLAGS)
    except OSError:
        return None  # the general path reports a missing library per blob
    try:
        ctx.dir_fds[""] = os.open(ctx.root, DIR_FLAGS)
        return fastclone.clone_tree(
            lib_fd, os.fstat(lib_fd).st_dev, ctx.dir_fds, ctx.target_dev, dirs, perm=ctx.perm,
            ident=b"" if ctx.relocation.is_identity else ctx.relocation.target, linker=ctx.linker, store=ctx.store, policy=ctx.policy,
            times_ns=MOTHER_NS, dir_mode=DIR_MODE, threads=min(workers, forkpool.cpu_count()), progress=ctx.progress, meanwhile=meanwhile)
    finally:
        os.close(lib_fd)


def _close_dirs(ctx: _Ctx) -> None:
    for fd in ctx.dir_fds.values():
        os.close(fd)
    ctx.dir_fds.clear()


def _make_jobs(dirs: list[tuple[str, DirEntry]], left: dict[str, list[str]] | None = None) -> list[Job]:
    """Work units: a directory, or a batch of a big one's files (the first batch also scans for
    extras and skips names owned by the other batches). Small directories are grouped into jobs
    of about BATCH files, so that there are few tasks to hand out. With ``left`` (what the
    native fast path left), only those names, and directory symlinks, are done."""
    jobs: list[Job] = []
    job: Job = []
    size = 0
    for rel, node in dirs:
        whole = left is None
        if whole:
            names = list(node.files)
        else:
            names = left.get(rel, [])
            if not names and (not node.subdirs or not any(sub.symlink for sub in node.subdirs.values())):
                continue  # (most directories have no subdirectories: no generator for them)
        if len(names) <= BATCH:
            job.append((rel, node, None if whole else names, True))
            size += len(names) + 1
            if size >= BATCH:
                jobs.append(job)
                job, size = [], 0
        else:
            for i in range(0, len(names), BATCH):
                jobs.append([(rel, node, names[i : i + BATCH], i == 0)])
    if job:
        jobs.append(job)
    return jobs


def _run_tasks(ctx: _Ctx, jobs: list[Job], scan: bool, workers: int,
               meanwhile: Callable[[], None] | None = None) -> _DirResult:
    """Run the jobs: in forked processes when there are enough files to pay for them
    (per-file Python work is GIL-bound), each with a few threads (syscalls overlap).
    ``meanwhile`` is this process's own work, done while the workers run (or after them)."""
    nfiles = sum(len(node.files) if names is None else len(names) for job in jobs for _r, node, names, _x in job)
    procs = min(workers, forkpool.cpu_count(), len(jobs)) if forkpool.available() else 1
    if procs < 2 or nfiles < FORK_MIN_FILES:
        total = _run_jobs(ctx, jobs, scan, workers)
        if meanwhile is not None:
            meanwhile()
        return total
    threads = max(1, -(-workers // procs))
    progress = ctx.progress

    def work(share: list[Job], report: Callable[[int], None]) -> tuple[_DirResult, dict, list[str]]:
        ctx.progress = report
        try:
            return _run_jobs(ctx, share, scan, threads), ctx.linker.as_dict(), ctx.linker.warnings
        finally:
            ctx.store.flush()

    total = _DirResult()
    if ctx.policy == VerifyPolicy.TRUSTED:
        ctx.store.load()  # once, here: the workers inherit the record instead of each reading it
    shares = [jobs[i::procs] for i in range(procs)]
    for result, counters, warnings in forkpool.run_forked(work, shares, progress, meanwhile):
        total.add(result)
        ctx.linker.absorb(counters, warnings)
    return total


def _run_jobs(ctx: _Ctx, jobs: list[Job], scan: bool, workers: int) -> _DirResult:
    """The jobs in a pool of ``workers`` threads; a single job (what the native fast path
    left: a few symlinks) in this thread."""
    if len(jobs) == 1:
        return _dir_task(ctx, jobs[0], scan)
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    total = _DirResult()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="holofs-mat") as pool:
        futures = [pool.submit(_dir_task, ctx, units, scan) for units in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        error: BaseException | None = None
        for f in futures:
            if f.cancelled():
                continue
            try:
                r = f.result()
            except BaseException as exc:  # noqa: BLE001 - first error wins, re-raised below
                if error is None or (isinstance(exc, HolofsError) and not isinstance(error, HolofsError)):
                    error = exc
                continue
            total.add(r)
        if error is not None:
            raise error
    return total


def _prepare(catalog: Catalog, target: str, relocate_name_only: bool) -> tuple[str, Relocation]:
    target = os.path.abspath(os.fspath(target)).rstrip("/") or "/"
    _validate(catalog)
    relocation = plan_relocation(catalog, target, allow_name_only=relocate_name_only)
    if os.path.islink(target):
        raise UnsafePath(f"{target} is a symlink: refusing to materialize through it")
    if os.path.exists(target) and not os.path.isdir(target):
        raise UsageError(f"{target} exists and is not a directory")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise UsageError(f"parent directory {parent} does not exist: create it first")
    return target, relocation


def materialize(catalog: Catalog, lib: Hololib, target: str | os.PathLike[str],
                options: MaterializeOptions | None = None) -> MaterializeReport:
    """Restore ``catalog`` into ``target`` byte-exactly (fresh build or reconcile)."""
    opts = options or MaterializeOptions()
    t0 = time.perf_counter()
    target, relocation = _prepare(catalog, os.fspath(target), opts.relocate_name_only)
    cache_dir = opts.cache_dir
    if cache_dir is None:
        from .paths import default_cache_dir

        cache_dir = os.fspath(default_cache_dir())
    from .paths import private_dir

    private_dir(cache_dir)  # refused at once if shared (world-writable, another user's)
    linker = Linker(opts.strategy, opts.copy_patterns)
    store = VerifiedStore(cache_dir, buffered=True)
    dirs = list(live_dirs(catalog.tree))
    nfiles = sum(file_count(n) for _r, n in dirs)
    if opts.total_hook is not None:
        opts.total_hook(nfiles)
    name_only = os.path.dirname(catalog.path) != os.path.dirname(target)
    lock_fd = target_lock(target, opts.wait, opts.wait_hook)
    try:
        spath = state_path(target)
        fingerprint = catalog_fingerprint(catalog)
        fresh = not os.path.lexists(target)
        parent, name = os.path.split(target)
        for leftover in os.listdir(parent):  # staging dirs of crashed runs (we hold the lock)
            if leftover.startswith(f".{name}.holofs-staging-"):
                _rmtree(os.path.join(parent, leftover), ignore_errors=True)
        state = None if fresh else State.read(spath)
        intact = confirm_intact(state, target, fingerprint, verify=opts.verify, keep_special=opts.keep_special_bits,
                                name_only_allowed=opts.relocate_name_only)
        if intact is not None:
            if opts.progress is not None:
                opts.progress(nfiles)
            return MaterializeReport(target=target, fresh=False, files_intact=intact, dirs=len(dirs),
                                     seconds=time.perf_counter() - t0)
        # Every directory stays open while its files are made, and each worker holds a few more.
        wanted = len(dirs) + 8 * opts.workers + 64
        limit = reserve_fds(wanted)
        if limit is not None and limit < len(dirs) + 2 * opts.workers + FD_SPARE:
            raise UsageError(f"the open-files limit is {limit}, but a restore keeps each of this tree's {len(dirs)} "
                             f"directories open: raise it (ulimit -n {wanted}) and run again")
        if fresh:
            build = os.path.join(parent, f".{name}.holofs-staging-{os.getpid()}")
            os.mkdir(build, DIR_MODE)
            known, same = {}, True
        else:
            build = target
            same = state is not None and state.complete and state.fingerprint == fingerprint
            known = None
            journal_fp, journal_body = "", b""
            if same:
                journal_fp, journal_body = fingerprint, state.blob
            elif state is not None:
                # Paths whose digest changes are uncertain until the restore completes.
                new = catalog_digests(catalog)
                known = {p: d for p, d in state.digests().items() if new.get(p) == d}
                journal_body = {"digests": known}
            # Journal: incomplete until everything is done.
            State.write(spath, complete=False, fingerprint=journal_fp, body=journal_body)
        ctx = _Ctx(lib=lib, relocation=relocation, linker=linker, store=store, policy=opts.verify,
                   keep_special=opts.keep_special_bits, root=build, known=known, same_catalog=same,
                   direct=fresh, target_dev=os.stat(build).st_dev, progress=opts.progress)
        try:
            problems: list[str] = []
            try:
                body: list[bytes] = []  # the state's manifest, encoded while the workers run

                def encode_manifest() -> None:
                    body.append(manifest_body(catalog, ctx.perm, fingerprint, opts.keep_special_bits, cache_dir))
                    if opts.meanwhile is not None:
                        opts.meanwhile()

                cloned = _clone_fast(ctx, dirs, opts.workers, encode_manifest) if fresh else None
                made = _ensure_dirs(ctx, dirs, fresh, problems)
                only = None
                if cloned is None:
                    total = _run_tasks(ctx, _make_jobs(dirs), scan=not fresh, workers=opts.workers,
                                       meanwhile=encode_manifest)
                else:
                    jobs = _make_jobs(dirs, cloned.left)
                    total = _run_tasks(ctx, jobs, scan=False, workers=opts.workers)
                    total.written += cloned.written
                    total.verified += cloned.verified
                    if cloned.dirs_stamped:  # only those written to since, or made here
                        only = made | {rel for job in jobs for rel, _node, _names, _first in job}
                _finish_dirs(ctx, dirs, force=fresh or bool(made) or total.dir_changed, fresh=fresh,
                             units_stamped=fresh and cloned is None, only=only)
            finally:
                _close_dirs(ctx)
            if fresh:
                os.rename(build, target)
        except BaseException as exc:
            if fresh:
                _rmtree(build, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _os_error(exc, target) from None
            raise
        State.write(spath, complete=True, fingerprint=fingerprint, body=body[0], keep_special=opts.keep_special_bits,
                    name_only=name_only)
    finally:
        store.flush()
        os.close(lock_fd)
    return MaterializeReport(
        target=target, fresh=fresh, files_written=total.written, files_intact=total.intact,
        times_fixed=total.times_fixed, symlinks=total.symlinks, dirs=len(dirs),
        removed_extras=total.removed, verified_blobs=total.verified,
        native_files=cloned.written if cloned is not None else 0, strategies=linker.as_dict(),
        warnings=linker.warnings, seconds=time.perf_counter() - t0,
    )


def check(catalog: Catalog, lib: Hololib, target: str | os.PathLike[str], *, relocate_name_only: bool = False,
          verify: VerifyPolicy = VerifyPolicy.TRUSTED, keep_special_bits: bool = False,
          workers: int = 4) -> CheckReport:
    """complete / incomplete / modified, without writing anything."""
    target, relocation = _prepare(catalog, os.fspath(target), relocate_name_only)
    if not os.path.isdir(target):
        return CheckReport(target, "incomplete", [f"{target}: does not exist"])
    state = State.read(state_path(target))
    if state is None or not state.complete:
        return CheckReport(target, "incomplete", ["no record of a completed restore"])
    fingerprint = catalog_fingerprint(catalog)
    if confirm_intact(state, target, fingerprint, verify=verify, keep_special=keep_special_bits,
                      name_only_allowed=relocate_name_only) is not None:
        return CheckReport(target, "complete", [])
    same = state.fingerprint == fingerprint
    ctx = _Ctx(lib=lib, relocation=relocation, linker=Linker(), store=VerifiedStore(os.devnull), policy=verify,
               keep_special=keep_special_bits, root=target, known=None if same else state.digests(),
               same_catalog=same, dry_run=True)
    dirs = list(live_dirs(catalog.tree))
    problems: list[str] = []
    try:
        st = os.lstat(target)
        if stat.S_IMODE(st.st_mode) != DIR_MODE or st.st_mtime_ns != MOTHER_NS:
            problems.append("./: directory mode or time differs")
    except OSError:
        pass
    try:
        _ensure_dirs(ctx, dirs, False, problems)
        live = [(r, n) for r, n in dirs if r in ctx.dir_fds]  # not beneath a missing directory
        total = _run_tasks(ctx, _make_jobs(live), scan=True, workers=workers)
    finally:
        _close_dirs(ctx)
    problems.extend(total.problems)
    return CheckReport(target, "modified" if problems else "complete", sorted(problems))
