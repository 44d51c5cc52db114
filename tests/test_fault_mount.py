"""Fault injection for a mount's cache fill: the mount process killed with SIGKILL at random points.

Each iteration mounts one catalog, as a daemon or in the foreground (``-f``), on a fresh
cache or on the cache the previous killed mount left behind, reads files from four threads,
kills the mount process at a random moment (drawn from a measured fill time, so usually
while fills are under way, big files included), cleans the stale mount with
``holofs umount`` and checks the invariants:

* every file under a final name in the cache holds exactly its content (the blob, relocated
  for this mount's identity where it has rewrites), hashed file by file: a fill never leaves
  a partial file under its final name;
* every read that completed returned exactly the right bytes (an interrupted one fails);
* temp files are never picked up: after each kill, a decoy temp file with wrong bytes of the
  right size (as a writer killed just before its rename would leave) is planted beside every
  final name that is still missing; the next mount's readers and a full remount must still
  serve every file byte-exactly, and no decoy ever becomes a final name;
* ``holofs cache gc`` then removes every temp file of dead writers, decoys included.

Six iterations by default (every combination of daemon/foreground and fresh/reused cache);
``HOLOFS_SOAK=1`` runs 50. ``HOLOFS_FAULT_SEED`` changes the random kill points.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fusemount import force_unmount, is_mounted, mounted, pid_alive, requires_fuse, run_holofs, wait_for

from holofs.cache import cache_key
from holofs.catalog import iter_files, read_catalog
from holofs.fsutil import is_part_name
from holofs.importer import import_tree
from holofs.relocation import Relocation

pytestmark = requires_fuse

ITERATIONS = 50 if os.environ.get("HOLOFS_SOAK") == "1" else 6
RECORDED = "fault00000_mount"
MOUNTED = "fault00000_mounT"  # same length, same base directory
BIG = ("big-a.bin", "bin/big-reloc.bin")


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
    assert any(k.startswith("relocated/") for k in keys) and any(k.startswith("files/") for k in keys)
    return {"base": base, "catalog": result.catalog_path, "expected": expected, "keys": keys,
            "mountpoint": base / "space" / MOUNTED}


@contextlib.contextmanager
def _foreground(catalog: Path, mountpoint: Path, cache: Path, args: tuple[str, ...]) -> Iterator[int]:
    """``holofs mount -f`` in a subprocess; yields its pid once mounted; always cleans up."""
    proc = subprocess.Popen([sys.executable, "-m", "holofs", "mount", "-f", os.fspath(catalog),
                             os.fspath(mountpoint), "--cache", os.fspath(cache), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: is_mounted(mountpoint) or proc.poll() is not None, 60, "the foreground mount")
        assert proc.poll() is None, f"holofs mount -f failed: {proc.communicate()[1]}"
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        if is_mounted(mountpoint):
            run_holofs("umount", mountpoint, "--cache", cache)
            force_unmount(mountpoint)


@contextlib.contextmanager
def _mount(mode: str, world: dict, cache: Path, *args: str) -> Iterator[int]:
    """A mount of the world's catalog in ``mode`` ("daemon" or "foreground"); yields its pid."""
    if mode == "daemon":
        with mounted(world["catalog"], world["mountpoint"], cache=cache, args=args) as m:
            yield m.pid
    else:
        with _foreground(world["catalog"], world["mountpoint"], cache, args) as pid:
            yield pid


def _check_cache(cache: Path, keys: dict[str, bytes]) -> list[Path]:
    """Assert every final-named cache file holds exactly its content; return the temp files."""
    temps = []
    for kind in ("files", "relocated"):
        for p in (cache / kind).rglob("*") if (cache / kind).exists() else ():
            if not p.is_file():
                continue
            if is_part_name(p.name):
                temps.append(p)
                continue
            rel = p.relative_to(cache).as_posix()
            assert rel in keys, f"unknown cache file {rel}"
            data = p.read_bytes()
            assert len(data) == len(keys[rel]) and hashlib.sha256(data).digest() == hashlib.sha256(
                keys[rel]).digest(), f"partial or wrong content under the final cache name {rel}"
    return temps


def _plant_decoys(cache: Path, keys: dict[str, bytes], dead_pid: int) -> int:
    """Beside every missing final name, a temp file of a dead writer: right size, wrong bytes."""
    planted = 0
    for rel, data in keys.items():
        final = cache / rel
        if final.exists():
            continue
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        decoy = final.with_name(f"{final.name}.part{dead_pid}x{secrets.token_hex(4)}")
        assert is_part_name(decoy.name)
        decoy.write_bytes(bytes(b ^ 0x5A for b in data[:4096]) + b"\0" * max(0, len(data) - 4096))
        planted += 1
    return planted


def _read_all(mountpoint: Path, expected: dict[str, bytes], order: list[str]) -> None:
    for rel in order:
        assert (mountpoint / rel).read_bytes() == expected[rel], f"{rel} read wrong bytes"


def test_mount_killed_mid_fill_at_random_points(world: dict, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("HOLOFS_FAULT_SEED", "4321")))
    expected: dict[str, bytes] = world["expected"]
    keys: dict[str, bytes] = world["keys"]
    names = sorted(expected)
    # How long filling everything takes here (no kill): the kill points are drawn from it.
    with mounted(world["catalog"], world["mountpoint"], cache=tmp_path / "cache-timing") as m:
        started = time.monotonic()
        _read_all(m.mountpoint, expected, [*BIG, *names])
        fill_time = time.monotonic() - started
    shutil.rmtree(tmp_path / "cache-timing")
    mountpoint: Path = world["mountpoint"]
    cache = tmp_path / "cache-0"
    mid_fill = planted = checked_remounts = 0
    for i in range(ITERATIONS):
        reuse = i % 2 == 1  # odd iterations mount on what the killed mount (and the decoys) left
        if not reuse:
            cache = tmp_path / f"cache-{i}"
        mode = ("daemon", "foreground")[(i // 2) % 2]
        verify = rng.choice(["always", "trusted"])
        wrong: list[str] = []
        stop = threading.Event()

        def reader(seed: int, wrong=wrong, stop=stop) -> None:
            r = random.Random(seed)
            for rel in [*BIG, *r.sample(names, len(names))]:
                if stop.is_set():
                    return
                try:
                    with open(mountpoint / rel, "rb") as f:
                        data = f.read()
                except OSError:
                    return  # the mount died under us: an error, never wrong bytes
                if data != expected[rel]:
                    wrong.append(rel)

        with _mount(mode, world, cache, "--verify", verify) as pid:
            threads = [threading.Thread(target=reader, args=(i * 10 + k,), daemon=True) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.01, 0.9) * fill_time)  # a random kill point, not a synchronisation
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda pid=pid: not pid_alive(pid), 30, "the mount process to die")
            stop.set()
            for t in threads:
                t.join(60)
            assert not [t for t in threads if t.is_alive()], f"iteration {i}: a reader hangs on the dead mount"
            assert not wrong, f"iteration {i} ({mode}): reads returned wrong bytes for {wrong}"
            temps = _check_cache(cache, keys)
            mid_fill += bool(temps)  # temp files left: killed in the middle of a fill
            proc = run_holofs("umount", mountpoint, "--cache", cache)
            assert proc.returncode == 0, proc.stderr
            assert not is_mounted(mountpoint) and not is_mounted(mountpoint.parent)
        planted += _plant_decoys(cache, keys, pid)
        if reuse or i == ITERATIONS - 1:
            # A full remount (the other mode) on this cache serves everything exactly; no temp
            # file (a killed fill's or a decoy) ever became a final name; gc clears them all.
            other = "foreground" if mode == "daemon" else "daemon"
            with _mount(other, world, cache, "--read-only", "--verify", verify):
                _read_all(mountpoint, expected, rng.sample(names, len(names)))
            temps = _check_cache(cache, keys)
            assert len(keys) == sum(1 for k in keys if (cache / k).is_file()), "remount left keys unfilled"
            gc = json.loads(run_holofs("cache", "gc", "--cache", cache, "--json").stdout)
            assert gc["removed_temp"] == len(temps), (gc, temps)
            assert _check_cache(cache, keys) == []
            checked_remounts += 1
            shutil.rmtree(cache)
    print(f"{mid_fill} of {ITERATIONS} kills left a fill half-done; {planted} decoys planted; "
          f"{checked_remounts} full remounts checked; fill time {fill_time:.2f}s")
    assert mid_fill > 0, "no kill landed during a fill: the test exercised nothing"
    assert planted > 0, "every kill came after all fills: the decoy check exercised nothing"
