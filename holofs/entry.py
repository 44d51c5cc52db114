"""The ``holofs`` console command: a background ``mount`` forks its daemon before anything else,
then the command line (:mod:`holofs.cli`) runs.

The daemon's ~0.2 s of FUSE-stack imports (pyfuse3, trio) then overlap the CLI's own start-up
instead of following it. Only ``os`` and ``sys`` are used before the fork (importing
:mod:`holofs.mounts` alone takes ~0.07 s)."""

from __future__ import annotations

import os
import sys

EARLY_EXCLUDED = frozenset({"-f", "--foreground", "-h", "--help", "--version"})

_early_daemon: tuple[int, int, int] | None = None  # (pid, job/go pipe, ready pipe)


def wants_early_daemon(args: list[str]) -> bool:
    """True for a command line of a background ``holofs mount`` on Linux."""
    first = next((a for a in args if not a.startswith("-")), None)
    return (first == "mount" and sys.platform.startswith("linux")
            and not any(a in EARLY_EXCLUDED for a in args))


def fork_daemon() -> tuple[int, int, int]:
    """Fork a mount daemon now: ``(pid, job/go pipe, ready pipe)``. It imports, then waits for
    :func:`holofs.mounts.mount_daemon` to send its options; if this process ends without
    mounting (a usage error, a bad catalog), the pipe closes and the daemon exits."""
    job_read, job_write = os.pipe()
    ready_read, ready_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(job_write)
        os.close(ready_read)
        try:
            from .mounts import early_daemon_main

            early_daemon_main(job_read, ready_write)
        finally:
            os._exit(1)
    os.close(job_read)
    os.close(ready_write)
    return pid, job_write, ready_read


def take_early_daemon() -> tuple[int, int, int] | None:
    """The daemon :func:`main` forked (see :func:`fork_daemon`), once; None if there is none."""
    global _early_daemon
    early, _early_daemon = _early_daemon, None
    return early


def main() -> None:
    global _early_daemon
    if wants_early_daemon(sys.argv[1:]):
        _early_daemon = fork_daemon()
    from .cli import main as cli_main

    try:
        cli_main()
    except SystemExit as exc:
        exit_without_teardown(exc.code)
    exit_without_teardown(0)


def exit_without_teardown(code: object) -> None:
    """End the process as ``sys.exit(code)`` would, but without the interpreter's teardown:
    freeing a big catalog's objects one by one took 25-35 ms after a materialize. Everything
    holofs writes is closed by then; the standard streams are flushed here. If a thread is
    still running (none should be), the normal exit joins it instead."""
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: what was lost is lost either way
            stream.flush()
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    os._exit(code)
