"""Several holofs processes sharing one library and cache at the same time."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.fusemount import diff_snapshots, expected_snapshot, mounted, requires_fuse, snapshot, wait_for
from support.trees import make_env_tree

from holofs.cache import cache_key
from holofs.catalog import iter_files, read_catalog
from holofs.fsutil import is_part_name
from holofs.library import Hololib
from holofs.relocation import apply_in_buffer, plan_relocation

IDENTITY = "hconcur_0123456789abcdeft"


def _import(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "holotree" / IDENTITY
    make_env_tree(src, big=False)
    # Enough small files that a materialize takes a noticeable while.
    rng = random.Random(3)
    for i in range(1500):
        p = src / "bulk" / f"d{i % 30}" / f"f{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randrange(64, 4096)) + IDENTITY.encode() * (i % 3))
    hololib = tmp_path / "hololib"
    out = subprocess.run([sys.executable, "-m", "holofs", "import", src, "--hololib", hololib, "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    catalogs = Hololib.open(hololib).catalog_paths()
    assert len(catalogs) == 1
    return catalogs[0], tmp_path / "holotree"


def _materialize(catalog: Path, target: Path, cache: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HOLOFS_CACHE": os.fspath(cache)}
    return subprocess.Popen([sys.executable, "-m", "holofs", "materialize", catalog, target, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_parallel_materializes_share_library_and_cache(tmp_path: Path) -> None:
    catalog_path, base = _import(tmp_path)
    cache = tmp_path / "cache"
    targets = [base / f"hconcur_{i}123456789abcdeft" for i in range(4)]
    procs = [_materialize(catalog_path, t, cache) for t in targets]
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    catalog = read_catalog(catalog_path)
    lib = Hololib.of_catalog(catalog_path)
    for target in targets:
        problems = diff_snapshots(snapshot(target), expected_snapshot(catalog, lib, target.name))
        assert not problems, problems[:5]
    # The shared verification record is consistent: a further run verifies nothing new and changes nothing.
    rerun = _materialize(catalog_path, targets[0], cache)
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err


def test_two_materializes_into_one_target_are_serialized(tmp_path: Path) -> None:
    """Two real materializes of one target, the second started while the first is certainly
    mid-run: the second waits (and says so, naming the first's pid), then reconciles the
    finished tree without writing anything; both exit 0 and the tree is exact.

    The overlap is made certain, not likely: once the lock file holds the first's pid (it
    holds the lock), the first is stopped with SIGSTOP until the second has said it waits.
    (The waiting/--no-wait behaviour against a lock held by the test is in test_reconcile.py.)"""
    catalog_path, base = _import(tmp_path)
    cache = tmp_path / "cache"
    target = base / "hconcur_9123456789abcdeft"
    lock = target.parent / f".{target.name}.holofs.lock"
    first = _materialize(catalog_path, target, cache, "--json")
    second = None
    try:
        wait_for(lambda: _lock_holder(lock) == first.pid or first.poll() is not None, 60,
                 "the first materialize to take the target lock")
        assert first.poll() is None, f"the first run ended before it was seen holding the lock: {first.communicate()}"
        os.kill(first.pid, signal.SIGSTOP)  # it holds the lock and cannot finish until SIGCONT
        second = _materialize(catalog_path, target, cache, "--json")
        said = _wait_for_line(second, "waiting for another holofs materialize", 120)
        assert f"(pid {first.pid})" in said and os.fspath(target) in said, said
        assert second.poll() is None, "the second run did not wait for the lock"
        # Meanwhile the half-done target is never called complete.
        mid = _check(catalog_path, target, cache)
        assert mid.returncode != 0, mid.stdout
    except BaseException:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
        raise
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and "Traceback" not in err1, err1
    assert second.returncode == 0 and "Traceback" not in err2, err2
    report1, report2 = json.loads(out1), json.loads(out2)
    assert report1["fresh"] is True and report1["files_written"] > 1500, report1
    # The second ran after the first had finished: it found the whole tree intact.
    assert report2["fresh"] is False and report2["files_written"] == 0, report2
    assert report2["files_intact"] >= 1500, report2
    catalog = read_catalog(catalog_path)
    lib = Hololib.of_catalog(catalog_path)
    assert not diff_snapshots(snapshot(target), expected_snapshot(catalog, lib, target.name))
    check = _check(catalog_path, target, cache)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [p for p in target.rglob("*") if is_part_name(p.name)]
    assert not [p for p in base.iterdir() if "staging" in p.name]


def _check(catalog: Path, target: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holofs", "materialize", catalog, target, "--check"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOLOFS_CACHE": os.fspath(cache)})


def _lock_holder(lock: Path) -> int | None:
    """The pid written into a materialize lock file (by whoever holds or last held it)."""
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """Read ``proc``'s stderr line by line until one contains ``needle``; return it."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {needle!r} on stderr within {timeout} s; got {seen}"
        line = proc.stderr.readline()
        assert line, f"stderr closed without {needle!r}; got {seen}"
        if needle in line:
            return line
        seen.append(line)


@requires_fuse
def test_materializes_and_a_mount_share_library_and_cache(tmp_path: Path) -> None:
    """Two materializes and a mount reading every file, all at once on one library and one
    cache: every result exact, and the shared cache holds only complete, correct files."""
    catalog_path, base = _import(tmp_path)
    cache = tmp_path / "cache"
    catalog = read_catalog(catalog_path)
    lib = Hololib.of_catalog(catalog_path)
    mount_target = base / "hconcur_m123456789abcdeft"
    with mounted(catalog_path, mount_target, cache=cache, args=("--read-only",)) as m:
        targets = [base / f"hconcur_{i}123456789abcdeft" for i in range(2)]
        procs = [_materialize(catalog_path, t, cache) for t in targets]
        seen = snapshot(m.mountpoint)  # reads every file through the mount meanwhile
        for proc in procs:
            _out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        assert not diff_snapshots(seen, expected_snapshot(catalog, lib, mount_target.name))
    for target in targets:
        assert not diff_snapshots(snapshot(target), expected_snapshot(catalog, lib, target.name))
    relocation = plan_relocation(catalog, mount_target, allow_name_only=True)
    wanted = {}
    for _rel, entry, _parent in iter_files(catalog.tree, include_shadow=False):
        if not entry.symlink:
            data = bytearray(lib.read_blob(entry.digest, entry.size))
            apply_in_buffer(data, entry.rewrite, relocation.target)
            wanted[cache_key(entry, relocation).relpath] = bytes(data)
    cached = [p for p in cache.rglob("*") if p.is_file() and p.parent.parent.name in ("files", "relocated")]
    assert cached and not [p for p in cached if is_part_name(p.name)]
    for p in cached:
        assert p.read_bytes() == wanted[p.relative_to(cache).as_posix()], p
