"""Fault injection for a mount's cache fill: the daemon killed with SIGKILL at random points.

Each iteration mounts one catalog (a fresh cache, or the cache a killed daemon left behind),
reads files from several threads, kills the daemon at a random moment (usually while a fill
is under way), cleans the stale mount with ``holofs umount`` and checks the invariants:

* every file under a final name in the cache holds exactly its content (the blob, relocated
  for this mount's identity where it has rewrites): temp files never become final half-done;
* every read that completed returned exactly the right bytes (an interrupted one fails);
* a remount on the same cache serves every file byte-exactly, and ``holofs cache gc``
  removes the temp files of dead writers.

A handful of iterations by default; ``HOLOFS_SOAK=1`` runs 50.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from support.fusemount import is_mounted, mounted, pid_alive, requires_fuse, run_holofs, wait_for

from holofs.cache import cache_key
from holofs.catalog import iter_files, read_catalog
from holofs.fsutil import is_part_name
from holofs.importer import import_tree
from holofs.relocation import Relocation

pytestmark = requires_fuse

ITERATIONS = 50 if os.environ.get("HOLOFS_SOAK") == "1" else 6
RECORDED = "fault00000_mount"
MOUNTED = "fault00000_mounT"  # same length, same base directory


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("faultmount")
    src = base / "space" / RECORDED
    rng = random.Random(5)
    contents: dict[str, bytes] = {}
    block = rng.randbytes(1 << 20)
    # Two big files (fills take a while, so kills land inside them), one with rewrites,
    # and a spread of small ones.
    big = b"".join(block[i:] + block[:i] for i in range(24))
    contents["big-a.bin"] = big
    reloc = bytearray(big[: 16 << 20])
    for off in (0, 5 << 20, (16 << 20) - len(RECORDED)):
        reloc[off : off + len(RECORDED)] = RECORDED.encode()
    contents["bin/big-reloc.bin"] = bytes(reloc)
    for i in range(40):
        data = rng.randbytes(rng.randrange(1, 200_000))
        if i % 5 == 0:
            data += f"#!{base}/space/{RECORDED}/bin/python\n".encode()
        contents[f"lib/m{i % 4}/f{i}.py"] = data
    for rel, data in contents.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    result = import_tree(src, base / "hololib")
    catalog = read_catalog(result.catalog_path)
    relocation = Relocation(RECORDED.encode(), MOUNTED.encode(), str(base / "space" / MOUNTED))
    expected: dict[str, bytes] = {}
    keys: dict[str, bytes] = {}
    for rel, entry, _parent in iter_files(catalog.tree, include_shadow=False):
        data = bytearray(contents[rel])
        for off in entry.rewrite:
            data[off : off + len(MOUNTED)] = MOUNTED.encode()
        expected[rel] = bytes(data)
        keys[cache_key(entry, relocation).relpath] = bytes(data)
    return {"base": base, "catalog": result.catalog_path, "expected": expected, "keys": keys,
            "mountpoint": base / "space" / MOUNTED}


def _check_cache(cache: Path, keys: dict[str, bytes]) -> int:
    """Every final-named cache file holds exactly its content; returns how many temps there are."""
    temps = 0
    for kind in ("files", "relocated"):
        for p in (cache / kind).rglob("*") if (cache / kind).exists() else ():
            if not p.is_file():
                continue
            if is_part_name(p.name):
                temps += 1
                continue
            rel = p.relative_to(cache).as_posix()
            assert rel in keys, f"unknown cache file {rel}"
            data = p.read_bytes()
            assert len(data) == len(keys[rel]) and hashlib.sha256(data).digest() == hashlib.sha256(
                keys[rel]).digest(), f"partial or wrong content under the final cache name {rel}"
    return temps


def test_mount_killed_mid_fill_at_random_points(world: dict, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("HOLOFS_FAULT_SEED", "4321")))
    expected: dict[str, bytes] = world["expected"]
    names = sorted(expected)
    # How long filling everything takes here (no kill): the kill points are drawn from it.
    with mounted(world["catalog"], world["mountpoint"], cache=tmp_path / "cache-timing") as m:
        started = time.monotonic()
        for rel in ["big-a.bin", "bin/big-reloc.bin", *names]:
            assert (m.mountpoint / rel).read_bytes() == expected[rel], rel
        fill_time = time.monotonic() - started
    cache = tmp_path / "cache-0"
    mid_fill = 0
    for i in range(ITERATIONS):
        if i % 2 == 0:  # a fresh cache; odd iterations reuse what the killed daemon left
            cache = tmp_path / f"cache-{i}"
        verify = rng.choice(["always", "trusted"])
        with mounted(world["catalog"], world["mountpoint"], cache=cache, args=("--verify", verify)) as m:
            wrong: list[str] = []
            stop = threading.Event()

            def reader(seed: int, m=m, wrong=wrong, stop=stop) -> None:
                r = random.Random(seed)
                order = ["big-a.bin", "bin/big-reloc.bin", *r.sample(names, len(names))]
                for rel in order:
                    if stop.is_set():
                        return
                    try:
                        with open(m.mountpoint / rel, "rb") as f:
                            data = f.read()
                    except OSError:
                        return  # the daemon died under us: an error, never wrong bytes
                    if data != expected[rel]:
                        wrong.append(rel)

            threads = [threading.Thread(target=reader, args=(i * 10 + k,), daemon=True) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.01, 0.9) * fill_time)
            os.kill(m.pid, signal.SIGKILL)
            wait_for(lambda m=m: not pid_alive(m.pid), 30, "the daemon to die")
            stop.set()
            for t in threads:
                t.join(60)
            assert not wrong, f"iteration {i}: reads returned wrong bytes for {wrong}"
            mid_fill += _check_cache(cache, world["keys"]) > 0  # temp files left: killed mid-fill
            proc = run_holofs("umount", m.mountpoint, "--cache", cache)
            assert proc.returncode == 0, proc.stderr
            assert not is_mounted(m.mountpoint)
    assert mid_fill > 0, "no kill landed during a fill: the test exercised nothing"
    # The last (reused) cache serves everything exactly after a remount, and gc drops dead temps.
    with mounted(world["catalog"], world["mountpoint"], cache=cache) as m:
        for rel in names:
            assert (m.mountpoint / rel).read_bytes() == expected[rel], rel
    _check_cache(cache, world["keys"])
    gc = json.loads(run_holofs("cache", "gc", "--cache", cache, "--json").stdout)
    assert gc["removed_temp"] >= 0
    assert _check_cache(cache, world["keys"]) == 0
    shutil.rmtree(tmp_path, ignore_errors=True)
