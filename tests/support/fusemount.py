"""Real FUSE mounts for tests: ``holofs mount`` in a subprocess, always unmounted afterwards.

pyfuse3 keeps process-global state, so a mount never runs inside the pytest process. Also
helpers to snapshot a tree (what ``find``/``stat``/``readlink``/``cat`` show) and to compute
the snapshot a correct restore of a catalog must have, independently of holofs' producers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from holofs.catalog import MOTHER_TIME, Catalog, iter_dirs, iter_files
from holofs.library import Hololib
from holofs.modes import permissions
from holofs.relocation import apply_in_buffer


def fuse_unavailable_reason() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if shutil.which("fusermount3") is None:
        return "fusermount3 (fuse3) is not installed"
    return None


requires_fuse = pytest.mark.skipif(fuse_unavailable_reason() is not None, reason=str(fuse_unavailable_reason()))


def is_mounted(path: str | os.PathLike[str]) -> bool:
    target = os.path.abspath(os.fspath(path))
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace("\\040", " ") == target:
                return True
    return False


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def force_unmount(path: str | os.PathLike[str]) -> None:
    """Unmount whatever is mounted at ``path`` (FUSE or a writable overlay; normal, then
    lazy); never raises."""
    for cmd in (["fusermount3", "-u"], ["umount"], ["fusermount3", "-u", "-z"], ["umount", "-l"]):
        if not is_mounted(path):
            return
        subprocess.run([*cmd, os.fspath(path)], capture_output=True)


def run_holofs(*args: str | os.PathLike[str], timeout: float = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holofs", *map(os.fspath, args)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@dataclass
class Mounted:
    """A live mount made by :func:`mounted`."""

    mountpoint: Path
    cache: Path
    pid: int
    runtime_dir: Path
    log: Path

    def stats(self, timeout: float = 30.0) -> dict[str, Any]:
        """The daemon's fill counters (SIGUSR1 makes it write stats.json)."""
        path = self.runtime_dir / "stats.json"
        before = json.loads(path.read_text())["seq"] if path.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)

        def fresh() -> bool:
            try:
                return json.loads(path.read_text())["seq"] > before
            except (OSError, ValueError):
                return False

        wait_for(fresh, timeout, "stats.json")
        return json.loads(path.read_text())

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def mounted(catalog: str | os.PathLike[str], mountpoint: str | os.PathLike[str] | None, *,
            cache: str | os.PathLike[str], args: tuple[str, ...] = ()) -> Iterator[Mounted]:
    """``holofs mount`` (daemonized, in a subprocess); yields once mounted; always unmounts."""
    cmd = ["mount", os.fspath(catalog)]
    if mountpoint is not None:
        cmd.append(os.fspath(mountpoint))
    proc = run_holofs(*cmd, "--cache", os.fspath(cache), "--json", *args)
    if proc.returncode != 0:
        raise AssertionError(f"holofs mount failed ({proc.returncode}): {proc.stderr}")
    info = json.loads(proc.stdout)
    where = Path(info["mountpoint"])
    pid = int(info["pid"])
    try:
        wait_for(lambda: is_mounted(where), 30, f"mount at {where}")
        yield Mounted(where, Path(cache), pid, Path(info["runtime_dir"]), Path(info["log"]))
    finally:
        lower = Path(info["runtime_dir"]) / "lower"  # the hidden FUSE mount under a writable overlay
        force_unmount(where)
        force_unmount(lower)
        try:
            wait_for(lambda: not pid_alive(pid), 30, f"daemon {pid} to exit")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
            force_unmount(where)
            force_unmount(lower)


# -- tree snapshots ---------------------------------------------------------------------------


def snapshot(root: str | os.PathLike[str]) -> dict[str, tuple[Any, ...]]:
    """What find/stat/readlink/cat show below ``root``: path -> (kind, perm, size, mtime, data)."""
    root = os.fspath(root)
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", perm, int(st.st_mtime))
            else:
                with open(full, "rb") as f:
                    data = f.read()
                out[rel] = ("file", perm, st.st_size, int(st.st_mtime), data)
    return out


def expected_snapshot(catalog: Catalog, lib: Hololib, target_identity: str) -> dict[str, tuple[Any, ...]]:
    """The snapshot a correct restore of ``catalog`` as ``target_identity`` has (RCC rules:
    dirs 0o750, symlinks verbatim, shadow subtrees absent, mother time), from blobs."""
    out: dict[str, tuple[Any, ...]] = {}
    hidden: list[str] = []
    for path, node in iter_dirs(catalog.tree):
        if not path:
            continue
        if any(path.startswith(h + "/") for h in hidden) or node.shadow and not node.symlink:
            continue
        if node.symlink:
            out[path] = ("link", node.symlink)
            hidden.append(path)
        else:
            out[path] = ("dir", 0o750, MOTHER_TIME)
    for path, entry, _parent in iter_files(catalog.tree, include_shadow=False):
        if any(path.startswith(h + "/") for h in hidden):
            continue
        if entry.symlink:
            out[path] = ("link", entry.symlink)
            continue
        data = bytearray(lib.read_blob(entry.digest, entry.size))
        apply_in_buffer(data, entry.rewrite, target_identity.encode())
        out[path] = ("file", permissions(entry.mode), entry.size, MOTHER_TIME, bytes(data))
    return out


def diff_snapshots(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Human-readable differences (empty when equal)."""
    problems = []
    for path in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing: {path}")
    for path in sorted(actual.keys() - expected.keys()):
        problems.append(f"unexpected: {path}")
    for path in sorted(actual.keys() & expected.keys()):
        if actual[path] != expected[path]:
            a, e = actual[path], expected[path]
            problems.append(f"differs: {path}: {a[:4] if a[0] == 'file' else a} != {e[:4] if e[0] == 'file' else e}"
                            + (" (content)" if a[:4] == e[:4] else ""))
    return problems
