"""Fault injection: ``holofs materialize`` killed with SIGKILL at random points.

After every kill: no file under a final name holds partial or wrong content, ``--check`` does
not claim completeness, and a rerun completes byte-exactly (no temp files or staging dirs
left). A handful of iterations by default; ``HOLOFS_SOAK=1`` runs 50.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.hostile import RECORDED, World, _file, make_world, regular_files, sha256

from holofs.catalog import DirEntry
from holofs.fsutil import is_part_name
from holofs.modes import GO_DIR

ITERATIONS = 50 if os.environ.get("HOLOFS_SOAK") == "1" else 6


def _grow(world: World, n: int = 1500, seed: int = 7) -> None:
    rng = random.Random(seed)
    root = world.catalog.tree
    for i in range(n):
        d = root.subdirs.setdefault(f"pkg{i % 40}", DirEntry(name=f"pkg{i % 40}", mode=GO_DIR | 0o755))
        data = rng.randbytes(rng.randint(0, 48 << 10))
        if i % 9 == 0:
            data += RECORDED.encode() + rng.randbytes(100)
        name = f"m{i}.py"
        path = f"pkg{i % 40}/{name}"
        d.files[name] = _file(name, data)
        world.contents[path] = data
        world.lib.write_blob_from(sha256(data), io.BytesIO(data), "gzip")
    world.save()


def _run(world: World, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "holofs", "materialize", str(world.catalog_path),
                             str(world.target), "--no-progress", "--workers", "2", *args],
                            env=dict(os.environ, **world.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _check(world: World) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holofs", "materialize", str(world.catalog_path),
                           str(world.target), "--check"], env=dict(os.environ, **world.env),
                          capture_output=True, text=True, timeout=120)


def _assert_no_partial_files(world: World, expected: set[str]) -> None:
    if not world.target.exists():
        return
    for dirpath, _dirs, files in os.walk(world.target):
        for name in files:
            full = Path(dirpath, name)
            rel = full.relative_to(world.target).as_posix()
            if is_part_name(name) or full.is_symlink():
                continue
            assert rel in expected, f"unexpected file {rel}"
            assert full.read_bytes() == world.restored(rel), f"partial or wrong content under final name {rel}"


def test_sigkill_at_random_points(tmp_path) -> None:
    world = make_world(tmp_path / "sandbox")
    _grow(world, n=2200)  # past FORK_MIN_FILES: the worker processes get killed too
    files = regular_files(world)
    expected = set(files)
    rng = random.Random(int(os.environ.get("HOLOFS_FAULT_SEED", "1234")))
    # How long a whole run takes here: the kill points are drawn from it (holofs got faster
    # than any fixed delay; a run that always finished first would exercise nothing).
    started = time.monotonic()
    timing = _run(world)
    _out, err = timing.communicate(timeout=300)
    assert timing.returncode == 0, err
    run_time = time.monotonic() - started
    killed = 0
    for i in range(ITERATIONS):
        if i % 2 == 0:  # from scratch (staging build)
            shutil.rmtree(world.target, ignore_errors=True)
        else:  # reconcile: a damaged existing target
            for rel in rng.sample(files, len(files) // 3):
                (world.target / rel).unlink(missing_ok=True)
        proc = _run(world)
        time.sleep(rng.uniform(0.05, 1.0) * run_time)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        _assert_no_partial_files(world, expected)
        check = _check(world)
        if check.returncode == 0:  # claims complete: then it must be
            for rel in files:
                assert (world.target / rel).read_bytes() == world.restored(rel), f"--check said complete, {rel} differs"
        elif world.target.exists():
            assert "incomplete" in check.stdout or "modified" in check.stdout, check.stdout
        rerun = _run(world)
        out, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, err
        assert _check(world).returncode == 0
        for rel in files:
            assert (world.target / rel).read_bytes() == world.restored(rel), rel
        leftovers = [p for p in world.target.rglob("*") if is_part_name(p.name)]
        leftovers += [p for p in world.holotree.iterdir() if "staging" in p.name]
        assert not leftovers, leftovers
    print(f"{killed} of {ITERATIONS} runs killed mid-way")
    if killed == 0:
        pytest.fail("materialize always finished before the kill: the test exercised nothing")
