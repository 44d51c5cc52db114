"""Several holofs processes sharing one library and cache at the same time."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from support.fusemount import diff_snapshots, expected_snapshot, snapshot
from support.trees import make_env_tree

from holofs.catalog import read_catalog
from holofs.library import Hololib

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


def _materialize(catalog: Path, target: Path, cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HOLOFS_CACHE": os.fspath(cache)}
    return subprocess.Popen([sys.executable, "-m", "holofs", "materialize", catalog, target],
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
    catalog_path, base = _import(tmp_path)
    cache = tmp_path / "cache"
    target = base / "hconcur_9123456789abcdeft"
    first = _materialize(catalog_path, target, cache)
    # Start the second while the first holds the target (its lock file appears first).
    deadline = time.monotonic() + 60
    lock = target.parent / f".{target.name}.holofs.lock"
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    second = _materialize(catalog_path, target, cache)
    results = [(p.communicate(timeout=300), p.returncode) for p in (first, second)]
    codes = [code for _, code in results]
    assert 0 in codes, results
    for (_out, err), code in results:
        if code != 0:
            assert "another holofs process" in err and "Traceback" not in err, err
            assert len(err.strip().splitlines()) == 1, err
    # Whatever the interleaving, the tree is complete and exact.
    catalog = read_catalog(catalog_path)
    lib = Hololib.of_catalog(catalog_path)
    assert not diff_snapshots(snapshot(target), expected_snapshot(catalog, lib, target.name))
