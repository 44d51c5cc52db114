"""The content-addressed cache: keys, single fills under concurrency, atomicity, stats and gc."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from holofs import cache as cache_mod
from holofs.cache import PLAIN, RELOCATED, CacheFiller, FileCache, cache_key, parse_size
from holofs.catalog import iter_files, read_catalog
from holofs.errors import CorruptBlob, UsageError
from holofs.library import Hololib
from holofs.relocation import plan_relocation
from holofs.verification import VerifyPolicy

TARGET = "h59acff1_493f813dad24d3X"


def _setup(rcc_catalog: Path, tmp_path: Path, target: str = TARGET, policy=VerifyPolicy.TRUSTED):
    catalog = read_catalog(rcc_catalog)
    lib = Hololib.of_catalog(rcc_catalog)
    relocation = plan_relocation(catalog, tmp_path / "base" / target, allow_name_only=True)
    cache = FileCache(tmp_path / "cache")
    files = {path: entry for path, entry, _ in iter_files(catalog.tree)}
    return catalog, lib, relocation, cache, CacheFiller(cache, lib, relocation, verify=policy), files


def _read_fd(fd: int) -> bytes:
    try:
        return os.pread(fd, 1 << 22, 0)
    finally:
        os.close(fd)


def test_keys_share_plain_files_and_separate_relocations(rcc_catalog: Path, tmp_path: Path) -> None:
    catalog, _lib, relocation, _cache, _filler, files = _setup(rcc_catalog, tmp_path)
    same = plan_relocation(catalog, tmp_path / "b" / catalog.identity, allow_name_only=True)
    other = plan_relocation(catalog, tmp_path / "b" / "h59acff1_493f813dad24d3Y", allow_name_only=True)
    plain, script = files["ssl/cert.pem"], files["rcc_activate.sh"]
    assert cache_key(plain, relocation) == cache_key(plain, other) == cache_key(plain, None)
    assert cache_key(plain, relocation).relpath == f"files/{plain.digest[:2]}/{plain.digest}"
    assert cache_key(files["ssl/cacert.pem"], relocation) == cache_key(plain, relocation)  # same digest, one file
    assert cache_key(script, same).kind == PLAIN  # mounted at the recorded identity: the blob as is
    k1, k2 = cache_key(script, relocation), cache_key(script, other)
    assert k1.kind == k2.kind == RELOCATED and k1 != k2
    assert TARGET in k1.name and script.digest in k1.name


def test_concurrent_opens_fill_each_key_once(rcc_catalog: Path, tmp_path: Path) -> None:
    _catalog, lib, relocation, cache, filler, files = _setup(rcc_catalog, tmp_path)
    expected = {}
    for path, entry in files.items():
        data = bytearray(lib.read_blob(entry.digest, entry.size))
        for off in entry.rewrite:
            data[off:off + len(TARGET)] = TARGET.encode()
        expected[path] = bytes(data)
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def reader(i: int) -> None:
        try:
            barrier.wait()
            for path in sorted(files, key=lambda p: (hash(p) + i) % 7):
                assert _read_fd(filler.open(files[path])) == expected[path], path
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    keys = {cache_key(e, filler.relocation).relpath for e in files.values()}
    assert len(keys) == len(files) - 1  # cert.pem and cacert.pem share a blob
    assert dict(filler.fills) == dict.fromkeys(keys, 1)
    # the first fills raced for the lazily made linker and verification record: one of each
    # (a second store would keep records of its own, flushed by nobody)
    assert sum(c["files"] for c in filler._linker.as_dict().values()) == len(keys)
    # a second filler (another mount) reuses everything
    again = CacheFiller(cache, lib, relocation, verify=VerifyPolicy.TRUSTED)
    for entry in files.values():
        os.close(again.open(entry))
    assert sum(again.fills.values()) == 0


def test_a_reader_raises_a_starved_read_ahead_fill_or_takes_it_over(rcc_catalog: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-ahead threads run at idle CPU priority, so a busy machine may starve one in the middle
    of a fill. A reader of that file raises the thread to normal priority and waits for it; where
    that is refused, it fills the file itself after TAKEOVER_SECONDS. A reader of a file another
    reader is filling waits for it, however long."""
    _catalog, lib, _reloc, cache, filler, files = _setup(rcc_catalog, tmp_path)
    entry = files["rcc_activate.sh"]
    key = cache_key(entry, filler.relocation)
    expected = _read_fd(CacheFiller(FileCache(tmp_path / "other"), lib, filler.relocation).open(entry))
    lock = filler._lock_for(key)
    holding, done = threading.Event(), threading.Event()
    policies: list[int] = []

    def starved_read_ahead() -> None:  # holds the key as a read-ahead fill would, at SCHED_IDLE
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        with lock:
            filler._read_ahead[key] = threading.get_native_id()
            holding.set()
            done.wait(30)
            policies.append(os.sched_getscheduler(0))
            del filler._read_ahead[key]

    holder = threading.Thread(target=starved_read_ahead, daemon=True)
    holder.start()
    assert holding.wait(30)
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(filler.open(entry)), daemon=True)
    reader.start()
    reader.join(timeout=20 * cache_mod.TAKEOVER_SECONDS)
    assert reader.is_alive() and not got, "the reader waits for the raised read-ahead thread"
    done.set()
    reader.join(timeout=30)
    holder.join(timeout=30)
    assert policies == [os.SCHED_OTHER]  # raised by the reader
    assert got and _read_fd(got[0]) == expected  # the holder filled nothing: the reader did, once
    assert filler.fills[key.relpath] == 1

    entry = next(e for p, e in sorted(files.items())
                 if p not in ("rcc_activate.sh", "identity.yaml") and not e.symlink and e.size and e.digest != entry.digest)
    key = cache_key(entry, filler.relocation)
    monkeypatch.setattr(cache_mod, "_normal_priority", lambda thread: False)  # e.g. RLIMIT_NICE says no
    lock = filler._lock_for(key)
    lock.acquire()  # a read-ahead fill of this key that does not get the CPU
    filler._read_ahead[key] = threading.get_native_id()
    got = []
    reader = threading.Thread(target=lambda: got.append(filler.open(entry)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    try:
        assert got, "the reader took over the starved read-ahead fill"
        assert _read_fd(got[0]) == _read_fd(CacheFiller(FileCache(tmp_path / "other2"), lib,
                                                        filler.relocation).open(entry))
        assert filler.fills[key.relpath] == 1
    finally:
        del filler._read_ahead[key]
        lock.release()

    entry = files["identity.yaml"]
    key = cache_key(entry, filler.relocation)
    lock = filler._lock_for(key)
    lock.acquire()  # another reader's fill, at normal priority: wait for it
    got = []
    reader = threading.Thread(target=lambda: got.append(filler.open(entry)))
    reader.start()
    reader.join(timeout=20 * cache_mod.TAKEOVER_SECONDS)
    assert reader.is_alive() and not got
    lock.release()
    reader.join()
    assert _read_fd(got[0]) == _read_fd(CacheFiller(FileCache(tmp_path / "other"), lib, filler.relocation).open(entry))
    assert filler.fills[key.relpath] == 1


def test_prepare_does_the_first_fills_one_time_work(rcc_catalog: Path, tmp_path: Path) -> None:
    _catalog, _lib, _relocation, _cache, filler, files = _setup(rcc_catalog, tmp_path)
    filler.prepare()
    linker, store = filler._linker, filler._verified
    assert linker is not None and store is not None
    os.close(filler.open(next(iter(files.values()))))
    assert filler._linker is linker and filler._verified is store  # used, not made again


def test_cache_permissions_and_no_temp_left(rcc_catalog: Path, tmp_path: Path) -> None:
    _catalog, _lib, _reloc, cache, filler, files = _setup(rcc_catalog, tmp_path)
    for entry in files.values():
        os.close(filler.open(entry))
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    for dirpath, _dirnames, filenames in os.walk(cache.root / PLAIN):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700
        for name in filenames:
            assert ".part" not in name
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode) == 0o644
    stats = cache.stats()
    assert stats["files"] == 8 and stats["by_kind"]["relocated"]["files"] == 3
    assert stats["by_kind"]["temp"]["files"] == 0


def test_corrupt_blob_is_refused_and_leaves_nothing(rcc_catalog: Path, tmp_path: Path) -> None:
    _catalog, lib, _reloc, cache, filler, files = _setup(rcc_catalog, tmp_path)
    entry = files["identity.yaml"]
    blob = lib.blob_path(entry.digest)
    raw = lib.read_blob(entry.digest, entry.size)
    blob.chmod(0o644)
    blob.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # raw, same size, wrong content
    with pytest.raises(CorruptBlob):
        filler.open(entry)
    assert cache.stats()["files"] == 0 and cache.stats()["by_kind"]["temp"]["files"] == 0
    skip = CacheFiller(cache, lib, None, verify=VerifyPolicy.SKIP)  # the user asked for no hashing
    os.close(skip.open(entry))


def test_wrong_size_cache_file_is_refilled(rcc_catalog: Path, tmp_path: Path) -> None:
    _catalog, _lib, _reloc, cache, filler, files = _setup(rcc_catalog, tmp_path)
    entry = files["golden-ee.yaml"]
    good = _read_fd(filler.open(entry))
    path = cache.path(cache_key(entry, filler.relocation))
    path.write_bytes(b"truncated")
    assert _read_fd(filler.open(entry)) == good
    assert filler.fills[cache_key(entry, filler.relocation).relpath] == 2


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_gc_removes_dead_temps_and_evicts_lru_but_not_open_files(rcc_catalog: Path, tmp_path: Path) -> None:
    _catalog, _lib, _reloc, cache, filler, files = _setup(rcc_catalog, tmp_path)
    for entry in files.values():
        os.close(filler.open(entry))
    fan = cache.root / PLAIN / "ab"
    fan.mkdir(mode=0o700)
    dead = fan / f"{'ab' * 32}.part{_dead_pid()}x0badcafe"
    live = fan / f"{'ab' * 32}.part{os.getppid()}x0badcafe"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    paths = sorted((cache.path(cache_key(e, filler.relocation)) for e in files.values()), key=os.fspath)
    paths = list(dict.fromkeys(paths))
    for age, path in enumerate(paths):  # oldest first
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    oldest_open = os.open(paths[0], os.O_RDONLY)
    try:
        total = sum(p.stat().st_size for p in paths)
        keep_bytes = paths[-1].stat().st_size + paths[0].stat().st_size
        result = cache.gc(max_size=keep_bytes)
    finally:
        os.close(oldest_open)
    assert not dead.exists() and live.exists()
    assert result["removed_temp"] == 1
    assert paths[0].exists(), "a file held open must never be evicted"
    assert paths[-1].exists(), "the most recently used file must survive"
    assert all(not p.exists() for p in paths[1:-1])
    assert result["remaining_bytes"] == keep_bytes <= total


def test_cache_cli_stats_and_gc(rcc_catalog: Path, tmp_path: Path, holofs_cli) -> None:
    _catalog, _lib, _reloc, cache, filler, files = _setup(rcc_catalog, tmp_path)
    for entry in files.values():
        os.close(filler.open(entry))
    stats = json.loads(holofs_cli("cache", "stats", "--cache", cache.root, "--json", check=True).stdout)
    assert stats["files"] == 8 and stats["bytes"] == sum({e.digest: e.size for e in files.values()}.values())
    human = holofs_cli("cache", "stats", "--cache", cache.root, check=True).stdout
    assert "relocated" in human and "8 files" in human
    gc = json.loads(holofs_cli("cache", "gc", "--cache", cache.root, "--max-size", "0", "--json", check=True).stdout)
    assert gc["evicted"] == 8 and gc["remaining_bytes"] == 0
    bad = holofs_cli("cache", "gc", "--cache", cache.root, "--max-size", "lots")
    assert bad.returncode != 0 and "invalid size" in bad.stderr and "Traceback" not in bad.stderr


def test_parse_size() -> None:
    assert parse_size("123") == 123
    assert parse_size("2K") == 2048
    assert parse_size("1.5G") == 3 * 1024**3 // 2
    assert parse_size("10 MiB") == 10 * 1024**2
    with pytest.raises(UsageError):
        parse_size("-1")
