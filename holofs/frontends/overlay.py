"""Writable mounts: an overlay filesystem with the FUSE catalog tree as its lower layer.

Linux overlayfs (as root) or fuse-overlayfs (unprivileged) gives the writable layer full
POSIX semantics (atomic rename, O_EXCL, unlinked-but-open files, hard links, whiteouts
that survive remounts) without re-implementing them in Python. The upper directory format
is described in :mod:`holofs.upper`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import HolofsError
from ..upper import LayerDirs

KERNEL = "overlayfs"
FUSE_OVERLAYFS = "fuse-overlayfs"


class OverlayError(HolofsError):
    """The writable layer could not be mounted."""


def available_backend() -> str | None:
    """The overlay implementation this process can use, or None."""
    if os.geteuid() == 0 and _kernel_has_overlay():
        return KERNEL
    if shutil.which("fuse-overlayfs") and os.path.exists("/dev/fuse"):
        return FUSE_OVERLAYFS
    return None


def _kernel_has_overlay() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


def _escape(path: Path) -> str:
    # overlayfs option values use ',' and ':' as separators; escape them.
    return os.fspath(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def mount_overlay(lower: Path, layer: LayerDirs, target: Path, backend: str) -> None:
    """Mount ``layer`` over ``lower`` at ``target``."""
    layer.create()
    options = f"lowerdir={_escape(lower)},upperdir={_escape(layer.upper)},workdir={_escape(layer.work)}"
    if backend == KERNEL:
        # No index/redirect/metacopy: the upper dir stays a plain, portable overlay upper.
        cmd = ["mount", "-t", "overlay", "holofs", "-o", options + ",index=off,redirect_dir=off,metacopy=off",
               os.fspath(target)]
    elif backend == FUSE_OVERLAYFS:
        cmd = ["fuse-overlayfs", "-o", options, os.fspath(target)]
    else:
        raise OverlayError("no overlay filesystem is available: run as root (kernel overlayfs) or install "
                           "fuse-overlayfs, or mount with --read-only")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OverlayError(f"cannot mount the writable layer at {target}: {proc.stderr.strip() or proc.returncode}")


def unmount_overlay(target: Path, backend: str | None = None, *, lazy: bool = False) -> None:
    """Unmount an overlay mounted by :func:`mount_overlay`."""
    if backend == FUSE_OVERLAYFS or (backend is None and os.geteuid() != 0):
        cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [os.fspath(target)]
    else:
        cmd = ["umount"] + (["-l"] if lazy else []) + [os.fspath(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise OverlayError(f"cannot unmount {target}: {proc.stderr.strip() or proc.returncode}")
