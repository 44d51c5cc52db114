"""Spread Python-heavy work over forked processes: the GIL caps threads at one core.

The parent holds everything the work needs (catalog, open directory fds, settings); children
inherit it through ``fork`` (nothing is pickled on the way in), each runs its share and sends
back one small pickled result, plus progress counts as it goes. Children die with the parent
(``PR_SET_PDEATHSIG``) and inherit its fds, so a lock the parent holds is held until every child
is gone: a killed run cannot leave a child writing behind the back of the next one.

Linux only (``available()``); elsewhere callers keep to threads. ``pickle``, ``select`` and
``signal`` are imported only once work is forked (~2 ms that most restores never need).
"""

from __future__ import annotations

import contextlib
import gc
import os
import struct
import sys
from collections.abc import Callable

from .errors import HolofsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

_HEAD = struct.Struct("<cQ")  # kind (b"P" progress count, b"R" pickled result), payload size
_PR_SET_PDEATHSIG = 1


def available() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _die_with_parent(parent: int) -> None:
    import signal

    try:
        from . import _native

        _native.set_parent_death_signal(signal.SIGKILL)
    except (ImportError, OSError):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a HolofsError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - anything unpicklable is replaced
        return HolofsError(f"{type(exc).__name__}: {exc}")


def _child(work: Callable[[Any, Callable[[int], None]], Any], share: Any, fd: int, parent: int) -> None:
    import pickle

    _die_with_parent(parent)
    try:
        def progress(n: int) -> None:
            _write_all(fd, _HEAD.pack(b"P", n))

        outcome: tuple[str, Any] = ("ok", work(share, progress))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        outcome = ("error", _portable(exc))
    try:
        try:
            payload = pickle.dumps(outcome)
        except Exception as exc:  # noqa: BLE001
            payload = pickle.dumps(("error", HolofsError(f"unpicklable result: {exc}")))
        _write_all(fd, _HEAD.pack(b"R", len(payload)) + payload)
    finally:
        os._exit(0)


def run_forked(work: Callable[[Any, Callable[[int], None]], T], shares: list[Any],
               progress: Callable[[int], None] | None = None,
               meanwhile: Callable[[], None] | None = None) -> list[T]:
    """``[work(share, progress) for share in shares]``, each in its own forked process.

    ``meanwhile`` runs in this process once the children are started (work of the parent's
    own that overlaps theirs). The first exception raised in a child is re-raised here (after
    every child has ended)."""
    import pickle
    import select
    import signal

    parent = os.getpid()
    children: dict[int, tuple[int, int]] = {}  # read fd -> (index, pid)
    results: list[Any] = [None] * len(shares)
    buffers: dict[int, bytearray] = {}
    error: BaseException | None = None
    reaped: set[int] = set()
    gc.freeze()  # keep the inherited heap shared (no copy-on-write from collection passes)
    try:
        for index, share in enumerate(shares):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _child(work, share, w, parent)
            os.close(w)
            children[r] = (index, pid)
            buffers[r] = bytearray()
        gc.unfreeze()
        if meanwhile is not None:
            meanwhile()
        poller = select.poll()  # not select(): the caller may hold well over 1024 fds
        for fd in children:
            poller.register(fd, select.POLLIN)
        open_fds = set(children)
        while open_fds:
            for fd, _event in poller.poll():
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                buf = buffers[fd]
                buf += chunk
                while len(buf) >= _HEAD.size:
                    kind, n = _HEAD.unpack_from(buf)
                    if kind == b"P":
                        del buf[: _HEAD.size]
                        if progress is not None:
                            progress(n)
                        continue
                    if len(buf) < _HEAD.size + n:
                        break
                    outcome = pickle.loads(bytes(buf[_HEAD.size : _HEAD.size + n]))
                    del buf[: _HEAD.size + n]
                    index = children[fd][0]
                    if outcome[0] == "ok":
                        results[index] = outcome[1]
                    elif error is None:
                        error = outcome[1]
        for index, pid in children.values():
            _, status = os.waitpid(pid, 0)
            reaped.add(pid)
            if results[index] is None and error is None:
                error = HolofsError(f"worker process {pid} ended without a result (status {status})")
    except BaseException:
        for _fd, (_index, pid) in children.items():
            if pid in reaped:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        raise
    finally:
        gc.unfreeze()
        for fd in children:
            with contextlib.suppress(OSError):
                os.close(fd)
    if error is not None:
        raise error
    return results
