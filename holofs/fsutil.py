"""Small filesystem helpers shared by every writer: atomic files, temp names."""

from __future__ import annotations

import contextlib
import errno
import os

from .errors import NoSpace

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How a directory inside a target or library is opened: never through a symlink."""


def part_suffix() -> str:
    """A fresh ``.part<pid>x<8 random hex digits>`` (``os.urandom``, as ``secrets`` uses)."""
    return f".part{os.getpid()}x{os.urandom(4).hex()}"


def part_name(final: str | os.PathLike[str]) -> str:
    """A unique temporary name next to ``final`` (RCC style ``<name>.part<id>``)."""
    return os.fspath(final) + part_suffix()


def is_part_name(name: str) -> bool:
    """True for temporary names made by :func:`part_name` (left behind by a crash)."""
    head, sep, tail = name.rpartition(".part")
    return bool(sep and head and tail and "x" in tail and tail.split("x", 1)[0].isdigit())


def raise_for_disk(exc: OSError, what: str) -> None:
    """Turn ENOSPC/EDQUOT into a clear NoSpace error; re-raise anything else."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise NoSpace(f"no space left on device while writing {what}") from None
    raise exc


def reserve_fds(needed: int) -> int | None:
    """Make room for ``needed`` open files at once: raise the soft limit towards it (up to the
    hard limit; a restore keeps every directory of the tree open, more than the common soft
    limit of 1024) and grow this process's descriptor table to that size now, in one step.
    Returns the soft limit now in effect (None: unlimited, or not a POSIX system).

    Left to grow on demand, the table doubles at each new power of two, and in a process with
    threads each doubling waits for an RCU grace period (Linux ``expand_fdtable``) while every
    thread that opens a file meanwhile waits too: ~30 ms of a 17k-file restore on 2 CPUs."""
    try:
        import fcntl
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if want > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    top = needed if soft == resource.RLIM_INFINITY else min(needed, soft)
    with contextlib.suppress(OSError):  # only an optimisation
        probe = os.open("/", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The lowest free descriptor at or above top - 1 (F_DUPFD never replaces one in use).
            os.close(fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, top - 1))
        finally:
            os.close(probe)
    return None if soft == resource.RLIM_INFINITY else soft


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file and one rename."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = part_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        unlink_quietly(tmp)
        raise_for_disk(exc, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def unlink_quietly(path: str) -> None:
    """Remove ``path`` if it can be (a temporary file, on the way out of an error)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; else a brief set/restore)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
