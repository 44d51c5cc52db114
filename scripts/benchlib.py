"""Shared helpers for the holofs benchmark scripts: paths, subprocesses, timing, loop
filesystems and tables.

Not part of the ``holofs`` package and not imported by tests beyond ``--help``. Every
helper runs real commands (mkfs, mount, losetup, cp, tar, uv, holofs) as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_WORK = Path("/var/tmp/holofs-bench")
"""Default work directory (sparse images, corpus, uv cache, hololibs)."""

IDENTITY_PREFIX = "h0c0ffee_"
IDENTITY_LEN = 24


def identity_like(tag: str) -> str:
    """A 24-character RCC-looking identity (``h0c0ffee_<tag padded with 0>t``)."""
    body = (tag + "0" * IDENTITY_LEN)[: IDENTITY_LEN - len(IDENTITY_PREFIX) - 1]
    name = f"{IDENTITY_PREFIX}{body}t"
    assert len(name) == IDENTITY_LEN, name
    return name


CORPUS_IDENTITY = identity_like("bench")

VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A console script of the running venv (holofs, uv), else one from PATH."""
    cand = VENV_BIN / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"bench: {name!r} not found (pip install -e '.[bench]')")
    return found


def precompile_holofs() -> None:
    """Write holofs's bytecode, as ``pip install`` of a wheel does: an editable install under
    PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module on every timed run."""
    import compileall

    pkg = Path(__file__).resolve().parent.parent / "holofs"
    if not compileall.compile_dir(pkg, quiet=1):
        raise SystemExit(f"bench: compiling {pkg} failed")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | os.PathLike[str]], *, check: bool = True, capture: bool = True,
        env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its stderr tail (never silently continue)."""
    args = [os.fspath(c) for c in cmd]
    proc = subprocess.run(args, capture_output=capture, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stderr or "")[-2000:] + (proc.stdout or "")[-500:]
        raise CommandFailed(f"{shlex.join(args)} -> exit {proc.returncode}\n{tail}")
    return proc


class CommandFailed(RuntimeError):
    """A benchmarked or setup command exited non-zero."""


def rmtree(path: str | os.PathLike[str]) -> None:
    """Remove a tree (faster and more robust than shutil for huge trees: ``rm -rf``)."""
    if os.path.lexists(path):
        run(["rm", "-rf", "--one-file-system", os.fspath(path)])


def sync() -> None:
    os.sync()


def drop_caches() -> bool:
    """Drop the kernel page cache if allowed (root, writable /proc); report whether it worked."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall-clock samples of one benchmarked operation."""

    name: str
    samples: list[float] = field(default_factory=list)
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "median_s": self.median, "samples_s": self.samples,
                "error": self.error or None, **self.extra}


def time_cmd(cmd: Sequence[str | os.PathLike[str]], *, cwd: str | os.PathLike[str] | None = None,
             env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall-clock seconds of one command run (fork+exec included), raising if it fails."""
    t0 = time.perf_counter()
    proc = run(cmd, cwd=cwd, env=env)
    return time.perf_counter() - t0, proc


def measure(name: str, runs: int, action: Callable[[], float], *,
            before: Callable[[], None] | None = None, after: Callable[[], None] | None = None) -> Timing:
    """Run ``before``/``action``/``after`` ``runs`` times; ``action`` returns its own seconds.

    A failure is recorded on the Timing (reported as a miss), not raised."""
    t = Timing(name)
    for i in range(runs):
        try:
            if before:
                before()
            t.samples.append(action())
            if after:
                after()
        except Exception as exc:  # recorded and reported, the run goes on
            t.error = f"run {i + 1}: {str(exc).strip()[:600]}"
            log(f"  FAILED {name}: {t.error}")
            break
    if t.samples:
        log(f"  {name}: median {t.median:.3f}s  samples {', '.join(f'{s:.3f}' for s in t.samples)}")
    return t


def fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table (also readable on a terminal)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# ---------------------------------------------------------------- filesystem helpers


def count_tree(root: str | os.PathLike[str]) -> dict[str, int]:
    """Files, symlinks, dirs and regular-file bytes of a tree (symlinks not followed)."""
    files = links = dirs = nbytes = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                links += 1
            else:
                dirs += 1
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            if os.path.islink(os.path.join(dirpath, f)):
                links += 1
            else:
                files += 1
                nbytes += st.st_size
    return {"files": files, "symlinks": links, "dirs": dirs, "bytes": nbytes}


def du_bytes(path: str | os.PathLike[str]) -> int:
    """Allocated bytes under ``path`` (``du -sb``-like apparent size)."""
    out = run(["du", "-sb", os.fspath(path)]).stdout.split()[0]
    return int(out)


@dataclass
class LoopFs:
    """A sparse image file formatted as ``fstype``, loop-attached and mounted."""

    fstype: str
    image: Path
    mountpoint: Path
    device: str = ""

    def mkfs_cmd(self) -> list[str]:
        if self.fstype == "ext4":
            return ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.device]
        if self.fstype == "xfs":
            return ["mkfs.xfs", "-q", "-f", "-m", "reflink=1", self.device]
        if self.fstype == "btrfs":
            return ["mkfs.btrfs", "-q", "-f", self.device]
        raise ValueError(f"unsupported filesystem {self.fstype!r}")

    @property
    def reflinks(self) -> bool:
        return self.fstype in ("xfs", "btrfs")


_ACTIVE: list[LoopFs] = []


def _cleanup_active() -> None:
    for fs in list(_ACTIVE):
        teardown_fs(fs)


def _on_signal(signum: int, _frame: object) -> None:
    _cleanup_active()
    raise SystemExit(128 + signum)


def install_cleanup_handlers() -> None:
    """Unmount and detach loop filesystems on SIGTERM/SIGINT/SIGHUP too."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def teardown_fs(fs: LoopFs) -> None:
    """Unmount (lazily if busy), detach the loop device, delete the image. Never raises."""
    mounted = os.path.ismount(fs.mountpoint)
    if mounted and run(["umount", os.fspath(fs.mountpoint)], check=False).returncode != 0:
        run(["umount", "-l", os.fspath(fs.mountpoint)], check=False)
    if fs.device:
        run(["losetup", "-d", fs.device], check=False)
        fs.device = ""
    with contextlib.suppress(OSError):
        fs.image.unlink()
    if fs in _ACTIVE:
        _ACTIVE.remove(fs)


@contextlib.contextmanager
def loop_fs(fstype: str, work: Path, size_bytes: int) -> Iterator[LoopFs]:
    """Create ``<work>/images/<fstype>.img`` (sparse), mkfs, mount at ``<work>/mnt/<fstype>``;
    always unmount, detach and delete the image on exit, even on failure."""
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    fs = LoopFs(fstype, images / f"{fstype}.img", work / "mnt" / fstype)
    # a previous crashed run may have left this mounted/attached
    stale = LoopFs(fstype, fs.image, fs.mountpoint)
    for line in run(["losetup", "-j", os.fspath(fs.image)], check=False).stdout.splitlines():
        stale.device = line.split(":", 1)[0]
        teardown_fs(stale)
    if os.path.ismount(fs.mountpoint):
        teardown_fs(stale)
    with contextlib.suppress(FileNotFoundError):
        fs.image.unlink()
    fs.mountpoint.mkdir(parents=True, exist_ok=True)
    _ACTIVE.append(fs)
    try:
        with open(fs.image, "wb") as f:
            f.truncate(size_bytes)
        fs.device = run(["losetup", "--find", "--show", os.fspath(fs.image)]).stdout.strip()
        run(fs.mkfs_cmd())
        run(["mount", fs.device, os.fspath(fs.mountpoint)])
        yield fs
    finally:
        teardown_fs(fs)


# ---------------------------------------------------------------- holofs + machine


def holofs_commands() -> set[str]:
    """Sub-command names that ``holofs --help`` lists right now (others add them concurrently)."""
    proc = run([tool("holofs"), "--help"], check=False)
    names: set[str] = set()
    in_cmds = False
    for line in proc.stdout.splitlines():
        if line.strip().startswith("Commands:"):
            in_cmds = True
            continue
        if in_cmds and line.startswith("  ") and line.strip():
            names.add(line.split()[0])
    return names


def holofs_help(*sub: str) -> str:
    return run([tool("holofs"), *sub, "--help"], check=False).stdout


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    uv_version = run([tool("uv"), "--version"], check=False).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "uv": uv_version,
        "holofs_commit": run(["git", "-C", os.fspath(Path(__file__).resolve().parent.parent), "rev-parse", "--short",
                              "HEAD"], check=False).stdout.strip(),
    }


def load_corpus(work: Path, profile: str) -> dict[str, Any]:
    """The ``corpus.json`` written by build_corpus.py (exit with guidance if missing)."""
    path = work / profile / "corpus.json"
    if not path.exists():
        small = " --small" if profile == "small" else ""
        raise SystemExit(f"bench: no corpus at {path}; run scripts/build_corpus.py --work {work}{small} first")
    return json.loads(path.read_text())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")
    log(f"wrote {path}")
