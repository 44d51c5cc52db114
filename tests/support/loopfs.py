"""Real loop-mounted filesystems for tests (root only): xfs (reflink=1), btrfs, ext4.

    with loop_filesystem("xfs", tmp_path) as mnt:   # a mounted, empty filesystem
        ...

A sparse image file is formatted, attached to a loop device by ``mount -o loop`` and
unmounted (lazily if busy) and detached in teardown, even when the body fails. Tests skip
with a reason only when the machine cannot do this (not root, no mkfs, no loop devices).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
}
MIN_MIB = {"xfs": 300, "btrfs": 120, "ext4": 2}


def loopfs_unavailable(fstype: str) -> str | None:
    """Why this machine cannot make a ``fstype`` loop filesystem, or None if it can."""
    if os.geteuid() != 0:
        return "needs root for loop devices and mount"
    if fstype not in MKFS:
        return f"unknown filesystem {fstype}"
    if shutil.which(MKFS[fstype][0]) is None:
        return f"{MKFS[fstype][0]} is not installed"
    if shutil.which("losetup") is None or shutil.which("mount") is None:
        return "losetup/mount missing"
    if not (os.path.exists("/dev/loop-control") or os.path.exists("/dev/loop0")):
        return "no loop devices (/dev/loop-control)"
    return None


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@contextmanager
def loop_filesystem(fstype: str, workdir: str | os.PathLike[str], size_mib: int | None = None,
                    mount_options: str = "") -> Iterator[Path]:
    """Mount a fresh ``fstype`` filesystem (``size_mib`` sparse image) under ``workdir``."""
    reason = loopfs_unavailable(fstype)
    if reason:
        pytest.skip(f"{fstype} loop filesystem: {reason}")
    size = max(size_mib or (512 if fstype in ("xfs", "btrfs") else 64), MIN_MIB[fstype])
    workdir = Path(workdir)
    tag = uuid.uuid4().hex[:8]
    image = workdir / f"{fstype}-{tag}.img"
    mnt = workdir / f"{fstype}-{tag}.mnt"
    mnt.mkdir(parents=True)
    with open(image, "wb") as f:
        f.truncate(size << 20)
    made = _run([*MKFS[fstype], str(image)])
    if made.returncode != 0:
        image.unlink()
        raise RuntimeError(f"mkfs {fstype} failed: {made.stderr.strip()}")
    loopdev = _run(["losetup", "--find", "--show", str(image)])
    if loopdev.returncode != 0:
        image.unlink()
        pytest.skip(f"{fstype} loop filesystem: losetup failed: {loopdev.stderr.strip()}")
    dev = loopdev.stdout.strip()
    mounted = False
    try:
        opts = ["-o", mount_options] if mount_options else []
        result = _run(["mount", "-t", fstype, *opts, dev, str(mnt)])
        if result.returncode != 0:
            raise RuntimeError(f"mount {fstype} failed: {result.stderr.strip()}")
        mounted = True
        yield mnt
    finally:
        if mounted and _run(["umount", str(mnt)]).returncode != 0:
            _run(["umount", "-l", str(mnt)])
        _run(["losetup", "-d", dev])
        image.unlink(missing_ok=True)
        with suppress(OSError):
            mnt.rmdir()


def shared_extents(path: str | os.PathLike[str]) -> bool:
    """True if any extent of ``path`` is marked shared (FIEMAP_EXTENT_SHARED, via filefrag)."""
    return any("shared" in flags.split(",") for _s, _n, flags in extent_flags(path))


_EXTENT = re.compile(r"^\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*\d+\.\.\s*\d+:\s*(\d+):\s*(?:\d+:)?\s*(.*)$")


def extent_flags(path: str | os.PathLike[str]) -> list[tuple[int, int, str]]:
    """``(first 4 KiB block, length in blocks, flags)`` per extent, from ``filefrag -v -b4096``."""
    out = subprocess.run(["filefrag", "-v", "-b4096", os.fspath(path)], capture_output=True, text=True,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        m = _EXTENT.match(line)
        if m:
            rows.append((int(m.group(1)), int(m.group(3)), m.group(4).strip()))
    return rows


def shared_blocks(path: str | os.PathLike[str]) -> set[int]:
    """The 4 KiB blocks of ``path`` that lie in extents marked shared."""
    out: set[int] = set()
    for start, length, flags in extent_flags(path):
        if "shared" in flags.split(","):
            out.update(range(start, start + length))
    return out
