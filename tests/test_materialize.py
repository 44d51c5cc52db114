"""holofs materialize: byte-exact restores of the RCC fixture and of generated trees,
verification of blobs (corrupt, truncated, wrong size) and the trusted record."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import pytest
from support.trees import IDENTITY, EnvTree, make_env_tree

from holofs.catalog import MOTHER_TIME, Catalog, iter_dirs, read_catalog
from holofs.errors import CorruptBlob
from holofs.importer import import_tree
from holofs.library import Hololib
from holofs.materializer import MaterializeOptions, materialize
from holofs.modes import permissions
from holofs.verification import VerifyPolicy

MOTHER_NS = MOTHER_TIME * 1_000_000_000
TARGET_NAME = "h9876543_fedcba9876543210t"  # same length as IDENTITY, a different name
assert len(TARGET_NAME) == len(IDENTITY)


# --- helpers shared by the other materialize test modules ----------------------------


def build_generated(tmp: Path, compress: str = "gzip", *, lib_dir: Path | None = None, big: bool = False,
                    extra: dict[str, bytes] | None = None) -> tuple[EnvTree, Catalog, Hololib]:
    """A generated environment tree imported into a hololib: (tree, catalog, library)."""
    tree = make_env_tree(tmp / "src" / IDENTITY, big=big)
    for rel, data in (extra or {}).items():
        (tree.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree.root / rel).write_bytes(data)
        tree.files[rel] = data
        start, offs = 0, []
        while (hit := data.find(tree.identity_bytes, start)) >= 0:
            offs.append(hit)
            start = hit + len(tree.identity_bytes)
        tree.offsets[rel] = offs
    result = import_tree(tree.root, lib_dir or tmp / "lib", compress=compress, workers=2)
    return tree, read_catalog(result.catalog_path), Hololib.open(lib_dir or tmp / "lib")


def live_paths(catalog: Catalog) -> dict[str, object]:
    """Every path a restore must create: '' root excluded; dirs end without slash."""
    out: dict[str, object] = {}
    for rel, node in iter_dirs(catalog.tree):
        if node.shadow:
            continue
        if rel:
            out[rel] = node
        if node.symlink:
            continue
        for name, f in node.files.items():
            out[f"{rel}/{name}" if rel else name] = f
    return out


def snapshot(root: Path, atimes: dict[str, int] | None = None) -> dict[str, tuple]:
    """Everything byte-exactness covers: content, permissions, mtime, link targets, types.

    atimes (taken before each read: reading moves them under relatime) go to ``atimes``."""
    out: dict[str, tuple] = {}
    atimes = {} if atimes is None else atimes
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                out[rel] = ("file", Path(p).read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            atimes[rel] = st.st_atime_ns
    return out


def relocate(data: bytes, offsets: list[int], identity: bytes) -> bytes:
    buf = bytearray(data)
    for off in offsets:
        buf[off : off + len(identity)] = identity
    return bytes(buf)


def assert_restored(catalog: Catalog, lib: Hololib, target: Path, *, check_atime: bool = False) -> None:
    """``target`` is exactly what RCC would restore ``catalog`` to (relocated to its name).

    atimes are checked too unless the tree was read since it was restored."""
    ident = target.name.encode()
    expected = live_paths(catalog)
    atimes: dict[str, int] = {}
    snap = snapshot(target, atimes)
    assert set(snap) == set(expected), (set(snap) ^ set(expected))
    root_st = os.lstat(target)
    assert stat.S_IMODE(root_st.st_mode) == 0o750 and root_st.st_mtime_ns == MOTHER_NS
    for rel, entry in expected.items():
        got = snap[rel]
        if getattr(entry, "symlink", ""):
            assert got == ("link", entry.symlink), rel
        elif hasattr(entry, "subdirs"):
            assert got == ("dir", 0o750, MOTHER_NS), rel
            if check_atime:
                assert atimes[rel] == MOTHER_NS, rel
        else:
            original = lib.read_blob(entry.digest, entry.size)
            assert got[0] == "file", rel
            assert got[1] == relocate(original, entry.rewrite, ident), rel
            assert relocate(got[1], entry.rewrite, catalog.identity.encode()) == original, rel
            assert got[2] == permissions(entry.mode), rel
            assert got[3] == MOTHER_NS, rel
            if check_atime:
                assert atimes[rel] == MOTHER_NS, rel


def opts(tmp: Path, **kw) -> MaterializeOptions:
    kw.setdefault("relocate_name_only", True)
    kw.setdefault("cache_dir", str(tmp / "cache"))
    kw.setdefault("workers", 4)
    return MaterializeOptions(**kw)


# --- byte-exact ---------------------------------------------------------------------


def test_rcc_fixture_byte_exact_via_cli(tmp_path, rcc_catalog, holofs_cli):
    catalog = read_catalog(rcc_catalog)
    target = tmp_path / "space" / "h0000000_0000000000aaaat"
    assert len(target.name) == len(catalog.identity)
    target.parent.mkdir()
    proc = holofs_cli("materialize", rcc_catalog, target, "--json", env={"HOLOFS_CACHE": str(tmp_path / "c")})
    assert proc.returncode != 0 and "--relocate-name-only" in proc.stderr and "Traceback" not in proc.stderr
    assert not target.exists()
    proc = holofs_cli("materialize", rcc_catalog, target, "--relocate-name-only", "--json",
                      env={"HOLOFS_CACHE": str(tmp_path / "c")}, check=True)
    report = json.loads(proc.stdout)
    assert report["fresh"] and report["files_written"] == 9 and report["strategies"]["decompress"]["files"] == 9
    lib = Hololib.of_catalog(rcc_catalog)
    assert_restored(catalog, lib, target, check_atime=True)
    # The fixture's rcc_activate.sh has the identity at offset 161: it now names the target.
    script = (target / "rcc_activate.sh").read_bytes()
    assert script[161 : 161 + len(target.name)] == target.name.encode()
    assert catalog.identity.encode() not in script
    assert not list(tmp_path.glob("space/.*staging*"))
    # By name inside the hololib.
    other = tmp_path / "space" / "h0000000_0000000000bbbbt"
    holofs_cli("materialize", "--hololib", lib.root, "c34ed96c", other, "--relocate-name-only",
               env={"HOLOFS_CACHE": str(tmp_path / "c")}, check=True)
    assert_restored(catalog, lib, other)


@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_generated_tree_byte_exact(tmp_path, compress):
    tree, catalog, lib = build_generated(tmp_path, compress, big=compress == "gzip")
    target = tmp_path / "dst" / TARGET_NAME
    target.parent.mkdir()
    report = materialize(catalog, lib, target, opts(tmp_path))
    assert_restored(catalog, lib, target, check_atime=True)
    ident = TARGET_NAME.encode()
    for rel, data in tree.files.items():
        got = (target / rel).read_bytes()
        # Relocated at exactly the places the identity was, and relocating back gives the source.
        assert got == relocate(data, tree.offsets[rel], ident), rel
        assert relocate(got, tree.offsets[rel], tree.identity_bytes) == data, rel
        assert bool(os.stat(target / rel).st_mode & 0o111) == (rel in tree.executables), rel
    for rel, link in tree.symlinks.items():
        assert os.readlink(target / rel) == link, rel
    for rel in tree.ignored:
        assert not os.path.lexists(target / rel), rel
    # shadow files exist only through their restored directory symlink, never as real entries
    real = set(snapshot(target))
    assert tree.shadow_files and not tree.shadow_files & real
    for rel in tree.empty_dirs:
        assert (target / rel).is_dir() and not os.listdir(target / rel)
    assert report.files_written == len(tree.files)
    expected = "decompress" if compress != "none" else None
    if expected:
        assert report.strategies[expected]["files"] >= len(tree.files) - 1  # the empty file may be "copy"


def test_target_rules(tmp_path, rcc_catalog, holofs_cli):
    catalog = read_catalog(rcc_catalog)
    lib = Hololib.of_catalog(rcc_catalog)
    from holofs.errors import RelocationError, UnsafePath

    with pytest.raises(RelocationError, match="length"):
        materialize(catalog, lib, tmp_path / "short", opts(tmp_path))
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / ("l" * len(catalog.identity))
    link.symlink_to(real)
    with pytest.raises(UnsafePath):
        materialize(catalog, lib, link, opts(tmp_path))
    assert not os.listdir(real)


# --- verification ---------------------------------------------------------------------


def _first_blob(catalog: Catalog, lib: Hololib, *, min_size: int = 64) -> tuple[str, object]:
    for rel, entry in live_paths(catalog).items():
        if hasattr(entry, "digest") and not entry.symlink and entry.size >= min_size:
            return rel, entry
    raise AssertionError("no file")


def _fresh_target(tmp_path: Path, n: int = 0) -> Path:
    d = tmp_path / f"dst{n}"
    d.mkdir(exist_ok=True)
    return d / TARGET_NAME


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong-size", "bomb"])
def test_corrupt_blobs_refused(tmp_path, damage, holofs_cli):
    compress = "none" if damage in ("flip", "truncate") else "gzip"
    tree, catalog, lib = build_generated(tmp_path, compress)
    rel, entry = _first_blob(catalog, lib)
    blob = lib.blob_path(entry.digest)
    data = blob.read_bytes()
    if damage == "flip":
        blob.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    elif damage == "truncate":
        blob.write_bytes(data[: len(data) // 2])
    elif damage == "wrong-size":
        blob.write_bytes(gzip.compress(lib_content := b"short"))
        assert len(lib_content) != entry.size
    else:
        blob.write_bytes(gzip.compress(bytes(64 << 20)))  # 64 MiB of zeros for a small file
    target = _fresh_target(tmp_path)
    proc = holofs_cli("materialize", catalog.source, target, "--relocate-name-only", "--verify", "always",
                      env={"HOLOFS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert rel in err and entry.digest in err and "actual" in err, err
    if damage in ("flip", "wrong-size"):
        actual = err.split("actual ")[1].split()[0]
        assert len(actual) == len(entry.digest) and actual != entry.digest, err
    # Nothing under a final name, no staging directory, no temp files.
    assert not target.exists()
    assert os.listdir(target.parent) == [f".{TARGET_NAME}.holofs.lock"]


def test_corruption_never_lands_on_reconcile(tmp_path):
    tree, catalog, lib = build_generated(tmp_path, "none")
    target = _fresh_target(tmp_path)
    materialize(catalog, lib, target, opts(tmp_path))
    rel, entry = _first_blob(catalog, lib)
    good = (target / rel).read_bytes()
    (target / rel).unlink()
    blob = lib.blob_path(entry.digest)
    data = blob.read_bytes()
    blob.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    with pytest.raises(CorruptBlob, match=entry.digest):
        materialize(catalog, lib, target, opts(tmp_path, verify=VerifyPolicy.ALWAYS))
    assert not (target / rel).exists()
    assert not [p for p in target.rglob("*") if ".part" in p.name]
    blob.write_bytes(data)
    materialize(catalog, lib, target, opts(tmp_path))
    assert (target / rel).read_bytes() == good


def test_verify_policies(tmp_path):
    tree, catalog, lib = build_generated(tmp_path, "none")
    files = [e for e in live_paths(catalog).values() if hasattr(e, "digest") and not e.symlink]
    nfiles = len(files)
    distinct = len({e.digest for e in files})
    # trusted: each blob hashed on first use (the native fast path hashes it for each file that
    # uses it; the general path, with workers=1, once) ...
    from holofs import fastclone

    r1 = materialize(catalog, lib, _fresh_target(tmp_path, 1), opts(tmp_path, workers=1))
    assert r1.verified_blobs == (nfiles if fastclone._native is not None else distinct)
    log = tmp_path / "cache" / "verified" / "log"
    assert len(set(log.read_text().splitlines())) == distinct
    assert stat.S_IMODE(os.stat(tmp_path / "cache" / "verified").st_mode) == 0o700
    # ... and never again (a new process reads the record, not just memory)
    r2 = materialize(catalog, lib, _fresh_target(tmp_path, 2), opts(tmp_path, workers=1))
    assert r2.verified_blobs == 0
    # a modified (rewritten) blob file is hashed again
    _rel, entry = _first_blob(catalog, lib)
    blob = lib.blob_path(entry.digest)
    blob.write_bytes(blob.read_bytes())
    r3 = materialize(catalog, lib, _fresh_target(tmp_path, 3), opts(tmp_path, workers=1))
    assert r3.verified_blobs == 1
    # a replaced blob with bad content after being trusted: caught, because the key changed
    data = blob.read_bytes()
    blob.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(CorruptBlob):
        materialize(catalog, lib, _fresh_target(tmp_path, 4), opts(tmp_path, workers=1))
    # skip never hashes (the corrupt blob goes through: that is what skip means)
    r5 = materialize(catalog, lib, _fresh_target(tmp_path, 5), opts(tmp_path, verify=VerifyPolicy.SKIP))
    assert r5.verified_blobs == 0
    blob.write_bytes(data)
    # always hashes every file, every time
    for n in (6, 7):
        r = materialize(catalog, lib, _fresh_target(tmp_path, n), opts(tmp_path, verify=VerifyPolicy.ALWAYS))
        assert r.verified_blobs == nfiles


def test_verified_store_api(tmp_path):
    from holofs.verification import VerifiedStore

    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    digest = "ab" * 32
    store = VerifiedStore(tmp_path / "cache")
    assert store.needs_check(digest, blob, VerifyPolicy.TRUSTED)
    assert store.needs_check(digest, blob, VerifyPolicy.ALWAYS)
    assert not store.needs_check(digest, blob, VerifyPolicy.SKIP)
    store.mark_verified(digest, blob)
    assert not store.needs_check(digest, blob, VerifyPolicy.TRUSTED)
    assert store.needs_check(digest, blob, VerifyPolicy.ALWAYS)
    # another process (fresh store) sees the record; a replaced file is checked again
    assert not VerifiedStore(tmp_path / "cache").needs_check(digest, blob, VerifyPolicy.TRUSTED)
    replacement = tmp_path / "new"
    replacement.write_bytes(b"x")
    os.replace(replacement, blob)
    assert VerifiedStore(tmp_path / "cache").needs_check(digest, blob, VerifyPolicy.TRUSTED)
    assert store.needs_check(digest, blob, VerifyPolicy.TRUSTED)
    log = tmp_path / "cache" / "verified" / "log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert log.read_text().splitlines()[0].startswith(digest + " ")


def test_verified_store_sees_other_writers_and_compacts(tmp_path, monkeypatch):
    from holofs import verification
    from holofs.verification import VerifiedStore

    blobs = []
    for i in range(5):
        p = tmp_path / f"b{i}"
        p.write_bytes(b"%d" % i)
        blobs.append(p)
    reader = VerifiedStore(tmp_path / "cache")
    assert reader.needs_check("00" * 32, blobs[0], VerifyPolicy.TRUSTED)  # loads the (empty) log
    writer = VerifiedStore(tmp_path / "cache", buffered=True)
    for i, p in enumerate(blobs):
        writer.mark_verified(f"{i:064x}", p)
    assert reader.needs_check(f"{0:064x}", blobs[0], VerifyPolicy.TRUSTED)  # buffered: not yet written
    writer.flush()
    assert not any(reader.needs_check(f"{i:064x}", p, VerifyPolicy.TRUSTED) for i, p in enumerate(blobs))
    # duplicates (e.g. from concurrent runs) are squeezed out when a store loads a bloated log
    log = tmp_path / "cache" / "verified" / "log"
    log.write_text(log.read_text() * 40)
    monkeypatch.setattr(verification, "PRUNE_AT_BYTES", 1000)
    store = VerifiedStore(tmp_path / "cache")
    assert not store.needs_check(f"{3:064x}", blobs[3], VerifyPolicy.TRUSTED)
    assert len(log.read_text().splitlines()) == len(blobs)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # a torn last line (a writer mid-append) is not taken as a key
    with open(log, "a") as f:
        f.write(f"{9:064x} 1 2")
    assert VerifiedStore(tmp_path / "cache").needs_check(f"{9:064x}", blobs[4], VerifyPolicy.TRUSTED)


def test_verified_store_prunes_keys_of_gone_filesystems(tmp_path, monkeypatch):
    """A log that grew (keys of loop images long detached, duplicates) is rewritten once it is
    big and has doubled since the last pruning, by the native fast path's read too: keys of
    mounted filesystems and of anonymous devices (btrfs, tmpfs) stay, the newest MAX_KEYS at most."""
    from holofs import verification
    from holofs.verification import VerifiedStore

    blob = tmp_path / "blob"
    blob.write_bytes(b"content")
    live = verification.blob_key("ab" * 32, os.stat(blob))
    mounted = verification.mounted_devices()
    gone = next(os.makedev(7, m) for m in range(200, 4000) if os.makedev(7, m) not in mounted)
    anon = os.makedev(0, 4000)
    stale = [f"{i:064x} {gone} {i} 1 2 3" for i in range(300)]
    kept_anon = f"{'cd' * 32} {anon} 5 1 2 3"
    root = tmp_path / "cache" / "verified"
    root.mkdir(parents=True, mode=0o700)
    log = root / "log"
    log.write_text("".join(f"{k}\n" for k in [*stale, live, kept_anon, live] * 3))
    monkeypatch.setattr(verification, "PRUNE_AT_BYTES", 1000)
    data = VerifiedStore(tmp_path / "cache").log_bytes()
    assert data.decode().splitlines() == [kept_anon, live] == log.read_text().splitlines()
    assert (root / "pruned").read_text() == str(log.stat().st_size)
    # not again until it has doubled since: one more line stays, three more make it prune
    monkeypatch.setattr(verification, "PRUNE_AT_BYTES", 100)
    with open(log, "a") as f:
        f.write(stale[0] + "\n")
    assert len(VerifiedStore(tmp_path / "cache").log_bytes().splitlines()) == 3
    with open(log, "a") as f:
        f.write(stale[1] + "\n" + stale[2] + "\n")
    assert VerifiedStore(tmp_path / "cache").log_bytes().decode().splitlines() == [kept_anon, live]
    # the cap keeps the newest keys
    monkeypatch.setattr(verification, "MAX_KEYS", 1)
    log.write_text("".join(f"{k}\n" for k in [live] * 40 + [kept_anon] * 40))
    store = VerifiedStore(tmp_path / "cache")
    assert not store.is_verified_key(live) and store.is_verified_key(kept_anon)
    assert log.read_text().splitlines() == [kept_anon]


def test_verified_store_answers_a_few_lookups_from_the_bytes_it_read(tmp_path, monkeypatch):
    """After log_bytes (the native fast path), the few files left for the general path are looked
    up in those bytes: the record is not loaded into a set (~150 ms for 200k keys) unless many are."""
    from holofs import verification
    from holofs.verification import VerifiedStore

    keys = [f"{i:064x} 1 {i} 2 3 4" for i in range(50)]
    writer = VerifiedStore(tmp_path / "cache")
    for key in keys:
        writer.mark_verified_key(key)
    store = VerifiedStore(tmp_path / "cache", buffered=True)
    assert store.log_bytes().decode().splitlines() == keys
    monkeypatch.setattr(store, "_read_new", lambda: pytest.fail("the record was loaded"))
    assert store.is_verified_key(keys[0]) and store.is_verified_key(keys[-1]) and store.is_verified_key(keys[7])
    assert not store.is_verified_key(keys[7][:-1])  # a prefix of a recorded key is not one
    assert not store.is_verified_key(f"{99:064x} 1 99 2 3 4")
    store.mark_verified_key(f"{99:064x} 1 99 2 3 4")  # recorded without loading
    assert store.is_verified_key(f"{99:064x} 1 99 2 3 4")
    store.flush()
    monkeypatch.undo()
    for _ in range(verification.SNAPSHOT_LOOKUPS):  # then the set is loaded, as usual
        store.is_verified_key(keys[1])
    assert store.is_verified_key(keys[2]) and store._loaded
    assert VerifiedStore(tmp_path / "cache").is_verified_key(f"{99:064x} 1 99 2 3 4")
    assert len((tmp_path / "cache" / "verified" / "log").read_text().splitlines()) == 51


def test_verified_store_many_processes(tmp_path):
    """Several processes marking and reading the same records at once never corrupt them."""
    import subprocess
    import sys

    blobs = []
    for i in range(50):
        p = tmp_path / f"b{i}"
        p.write_bytes(b"%d" % i)
        blobs.append(p)
    script = (
        "import sys\nfrom holofs.verification import VerifiedStore, VerifyPolicy\n"
        "s = VerifiedStore(sys.argv[1])\n"
        "for r in range(20):\n"
        "    for i, p in enumerate(sys.argv[2:]):\n"
        "        d = '%064x' % i\n"
        "        if s.needs_check(d, p, VerifyPolicy.TRUSTED): s.mark_verified(d, p)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache"), *map(str, blobs)])
             for _ in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    from holofs.verification import VerifiedStore

    store = VerifiedStore(tmp_path / "cache")
    assert not any(store.needs_check(f"{i:064x}", p, VerifyPolicy.TRUSTED) for i, p in enumerate(blobs))
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if ".part" in p.name]
    assert not leftovers


# --- worker processes ---------------------------------------------------------------


def test_forked_workers_on_a_tree_with_many_directories(tmp_path, monkeypatch):
    """Past FORK_MIN_FILES the work runs in forked processes; with > 1024 directories the parent
    holds more fds than select() can take (the pool must not care). Counters come back merged."""
    from holofs import forkpool, materializer

    monkeypatch.setattr(forkpool, "cpu_count", lambda: 2)  # fork even on a one-core runner
    forks: list[int] = []
    real = forkpool.run_forked
    monkeypatch.setattr(forkpool, "run_forked", lambda work, shares, *rest: (
        forks.append(len(shares)), real(work, shares, *rest))[1])

    extra = {f"lib/many/d{i:04d}/m.py": b"# %d\n" % i + os.urandom(i % 700) for i in range(1100)}
    extra.update({f"lib/flat/f{i:04d}.txt": os.urandom(i % 300) for i in range(materializer.FORK_MIN_FILES)})
    tree, catalog, lib = build_generated(tmp_path, "zstd", extra=extra)
    target = _fresh_target(tmp_path)
    ticks: list[int] = []
    # --strategy copy: the native fast path (which would make every file) does not apply
    report = materialize(catalog, lib, target, opts(tmp_path, workers=4, strategy="copy", progress=ticks.append))
    assert_restored(catalog, lib, target)
    nfiles = sum(1 for e in live_paths(catalog).values() if hasattr(e, "digest") and not e.symlink)
    assert sum(int(c["files"]) for name, c in report.strategies.items() if name != "symlink") == nfiles
    assert forks == [2]
    assert report.files_written == nfiles and sum(ticks) >= nfiles  # progress came through the pipes
    assert report.verified_blobs == len({e.digest for e in live_paths(catalog).values()
                                         if hasattr(e, "digest") and not e.symlink})


def test_forked_worker_error_reaches_the_caller(tmp_path, monkeypatch):
    """A corrupt blob found in a worker process fails the run like in a thread: the caller gets
    the CorruptBlob naming the entry, and neither the target nor a staging dir is left."""
    from holofs import forkpool, materializer

    monkeypatch.setattr(materializer, "FORK_MIN_FILES", 1)
    monkeypatch.setattr(forkpool, "cpu_count", lambda: 2)
    tree, catalog, lib = build_generated(tmp_path, "gzip")
    rel, entry = _first_blob(catalog, lib)
    blob = lib.blob_path(entry.digest)
    data = bytearray(gzip.decompress(blob.read_bytes()))
    data[0] ^= 1
    blob.write_bytes(gzip.compress(bytes(data)))
    target = _fresh_target(tmp_path)
    with pytest.raises(CorruptBlob, match=entry.digest):
        materialize(catalog, lib, target, opts(tmp_path, workers=2))
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if "staging" in p.name]


def test_killed_parent_takes_its_worker_processes_along(tmp_path):
    """kill -9 of the materialize process mid-run: its forked workers die with it (none keeps
    writing into a staging dir the next run removes), and the next run completes exactly."""
    import signal
    import subprocess
    import sys
    import time

    from holofs import materializer

    extra = {f"lib/bulk/d{i % 50}/f{i}.txt": os.urandom(4096 + i % 8192) for i in range(materializer.FORK_MIN_FILES + 500)}
    tree, catalog, lib = build_generated(tmp_path, "gzip", extra=extra)
    target = _fresh_target(tmp_path)
    marker = f"HOLOFS_TEST_RUN={tmp_path.name}"
    env = {**os.environ, "HOLOFS_CACHE": str(tmp_path / "cache"), "HOLOFS_TEST_RUN": tmp_path.name}
    cmd = [sys.executable, "-m", "holofs", "materialize", "--relocate-name-only", "--no-progress",
           "--verify", "always", "--strategy", "copy", "--workers", "2", catalog.source, str(target)]

    def ours() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if marker.encode() in f.read().split(b"\0"):
                            pids.append(int(entry))
                except OSError:
                    pass
        return pids

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(ours()) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # until the workers are forked
    assert proc.poll() is None, "materialize finished before its workers could be seen"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 0.5  # SIGKILL on parent death: gone at once, not when done
    while ours() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ours() == [], "worker processes outlived their parent"
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert_restored(catalog, lib, target)
    assert not [p for p in target.parent.iterdir() if "staging" in p.name]
