"""Relocation: where the recorded identity sits inside files, and rewriting it.

At record time every occurrence of the identity (the recording directory's basename) is
noted by offset; at restore the target identity is written over each offset. RCC requires
the same length and, unless the user opts out, the same base directory.
"""

from __future__ import annotations

import os

from .catalog import Catalog
from .errors import RelocationError


class OffsetFinder:
    """Finds every (non-overlapping) occurrence of ``needle`` across streamed chunks."""

    def __init__(self, needle: bytes) -> None:
        if not needle:
            raise ValueError("empty identity")
        self.needle = needle
        self.offsets: list[int] = []
        self._tail = b""
        self._tail_start = 0  # stream offset of self._tail[0]
        self._next_allowed = 0  # first offset a new match may start at

    def feed(self, chunk: bytes | memoryview) -> None:
        if not chunk:
            return
        window = self._tail + bytes(chunk)
        base = self._tail_start
        needle = self.needle
        pos = max(0, self._next_allowed - base)
        while True:
            hit = window.find(needle, pos)
            if hit < 0:
                break
            self.offsets.append(base + hit)
            pos = hit + len(needle)
            self._next_allowed = base + pos
        keep = min(len(window), len(needle) - 1)
        self._tail = window[len(window) - keep :] if keep else b""
        self._tail_start = base + len(window) - keep


def find_offsets(data: bytes, needle: bytes) -> list[int]:
    """All non-overlapping offsets of ``needle`` in ``data``."""
    finder = OffsetFinder(needle)
    finder.feed(data)
    return finder.offsets


class Relocation:
    """What to write over each rewrite offset when restoring to ``target``."""

    __slots__ = ("recorded", "target", "target_path")

    def __init__(self, recorded: bytes, target: bytes, target_path: str) -> None:
        self.recorded = recorded
        self.target = target
        self.target_path = target_path

    @property
    def is_identity(self) -> bool:
        return self.recorded == self.target


def plan_relocation(catalog: Catalog, target: str | os.PathLike[str], *, allow_name_only: bool = False) -> Relocation:
    """Check RCC's rules for restoring ``catalog`` at ``target`` and return the rewrite.

    Same-length basename always; same base directory (so the same full path length)
    unless ``allow_name_only``."""
    target_path = os.path.abspath(os.fspath(target))
    new_identity = os.path.basename(target_path.rstrip(os.sep))
    old = catalog.identity
    if len(new_identity.encode()) != len(old.encode()):
        raise RelocationError(
            f"base name length mismatch: the environment was recorded as {old!r} ({len(old.encode())} bytes) "
            f"but the target is named {new_identity!r} ({len(new_identity.encode())} bytes); "
            f"restore into a directory whose name has {len(old.encode())} bytes, e.g. {os.path.join(os.path.dirname(target_path), old)}"
        )
    if not allow_name_only:
        recorded_base = os.path.dirname(catalog.path)
        target_base = os.path.dirname(target_path)
        if recorded_base != target_base:
            raise RelocationError(
                f"base directory mismatch: recorded in {recorded_base!r}, target is in {target_base!r}; "
                "absolute paths baked into files would point to the wrong place. Restore under "
                f"{recorded_base!r}, or pass --relocate-name-only to rewrite only the name"
            )
    return Relocation(recorded=old.encode(), target=new_identity.encode(), target_path=target_path)


def apply_in_buffer(buf: bytearray, offsets: list[int], identity: bytes) -> None:
    """Write ``identity`` at each offset of an in-memory file."""
    n = len(identity)
    for off in offsets:
        buf[off : off + n] = identity


def apply_to_fd(fd: int, offsets: list[int], identity: bytes) -> None:
    """pwrite ``identity`` at each offset of an open file (used on top of a clone)."""
    for off in offsets:
        os.pwrite(fd, identity, off)
