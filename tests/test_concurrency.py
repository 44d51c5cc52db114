"""Several holofs processes sharing one library and cache at the same time."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from support.fusemount import diff_snapshots, expected_snapshot, mounted, requires_fuse, snapshot
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
    """The second run waits for the first (it says so when it really had to) and both succeed;
    the deterministic waiting/--no-wait behaviour is tested in test_reconcile.py."""
    catalog_path, base = _import(tmp_path)
    cache = tmp_path / "cache"
    target = base / "hconcur_9123456789abcdeft"
    first = _materialize(catalog_path, target, cache)
    lock = target.parent / f".{target.name}.holofs.lock"
    deadline = time.monotonic() + 60
    while first.poll() is None and time.monotonic() < deadline:  # until the first holds the lock
        try:
            if lock.read_text().strip() == str(first.pid):
                break
        except OSError:
            pass
        time.sleep(0.001)
    second = _materialize(catalog_path, target, cache)
    results = [(p.communicate(timeout=300), p.returncode) for p in (first, second)]
    for (_out, err), code in results:
        assert code == 0 and "Traceback" not in err, err
    (_out, err), _code = results[1]
    assert not err.strip() or f"waiting for another holofs materialize (pid {first.pid})" in err, err
    catalog = read_catalog(catalog_path)
    lib = Hololib.of_catalog(catalog_path)
    assert not diff_snapshots(snapshot(target), expected_snapshot(catalog, lib, target.name))


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
