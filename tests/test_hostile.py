"""Hostile catalogs and libraries through the real CLI (``materialize`` and ``mount``).

Every attack must end with a non-zero exit and ONE line ``holofs: error: ...`` naming the
entry (no traceback), and nothing outside the target may be created or changed: the
sandbox (with a ``sentinel/`` directory beside the target) is listed before and after
(paths, types, sizes, modes, mtimes, content hashes) and compared. Validation errors write
nothing at all; corrupt blobs never show up under a final name.
"""

from __future__ import annotations

import errno
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.fusemount import is_mounted, mounted, requires_fuse
from support.hostile import (
    CORRUPTIONS,
    RECORDED,
    SENTINEL_FILES,
    TARGET,
    VALIDATION_MUTATIONS,
    World,
    make_world,
    regular_files,
    snapshot,
    symlinked_dir_with_shadow_files,
)

OTHER_TARGET = "h3333333_3333333333333333t"


@pytest.fixture
def world(tmp_path) -> World:
    return make_world(tmp_path / "sandbox")


def holofs(world: World, *args: str | os.PathLike[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **world.env)
    proc = subprocess.run([sys.executable, "-m", "holofs", *map(os.fspath, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def materialize(world: World, *args: str, target: Path | None = None) -> subprocess.CompletedProcess[str]:
    return holofs(world, "materialize", world.catalog_path, target or world.target, "--no-progress", *args)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("holofs: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def entry_needle(entry: str) -> str:
    return repr(entry) if entry else "catalog"


def holofs_siblings(target: Path) -> set[Path]:
    """Bookkeeping materialize keeps beside the target (lock and state files)."""
    return {p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.holofs")
            and "staging" not in p.name}


def outside(world: World, *targets: Path) -> dict[str, tuple]:
    exclude = {world.hololib, world.cache}
    targets = targets or (world.target,)
    for t in targets:
        exclude |= {t, *holofs_siblings(t)}
    listing = snapshot(world.sandbox, exclude)
    for t in targets:  # creating the target changes its parent's mtime, nothing else may change
        parent = os.path.relpath(t.parent, world.sandbox)
        listing[parent] = listing[parent][:2]
    return listing


def assert_restored(world: World, target: Path | None = None) -> None:
    target = target or world.target
    for path in regular_files(world):
        assert (target / path).read_bytes() == world.restored(path), path
    assert os.readlink(target / "link-out") == "../sentinel/victim.txt"
    assert os.readlink(target / "link-abs") == str(world.sentinel / "victim.txt")


def assert_sentinel_intact(world: World) -> None:
    for rel, data in SENTINEL_FILES.items():
        assert (world.sentinel / rel).read_bytes() == data


# --- baseline: the valid world restores (so the attacks below are not vacuous) -----------


def test_valid_world_materializes(world: World) -> None:
    before = outside(world)
    proc = materialize(world)
    assert proc.returncode == 0, proc.stderr
    assert_restored(world)
    assert outside(world) == before


# --- catalog attacks: refused before anything is written ---------------------------------


@pytest.mark.parametrize("mutation", sorted(VALIDATION_MUTATIONS))
def test_materialize_refuses_malformed_catalog(world: World, mutation: str) -> None:
    entry = VALIDATION_MUTATIONS[mutation](world)
    world.save()
    before = snapshot(world.sandbox, {world.hololib, world.cache})
    proc = materialize(world)
    one_line_error(proc, entry_needle(entry))
    assert not os.path.lexists(world.target)
    assert snapshot(world.sandbox, {world.hololib, world.cache}) == before


def test_materialize_refuses_deeply_nested_catalog(world: World) -> None:
    """A catalog nested deeper than Python's recursion limit: a clear error, not a crash."""
    depth = 20000
    inner = '{"name": "d", "mode": 2147484141, "subdirs": {}, "files": {}}'
    text = ('{"name": "d", "mode": 2147484141, "files": {}, "subdirs": {"d": ' * depth) + inner + "}}" * depth
    doc = (f'{{"identity": "{RECORDED}", "path": "{world.holotree / RECORDED}", "lifted": true, '
           f'"tree": {{"name": "", "mode": 2147484141, "files": {{}}, "subdirs": {{"d": {text}}}}}}}')
    world.catalog_path.write_bytes(gzip.compress(doc.encode()))
    before = snapshot(world.sandbox, {world.hololib, world.cache})
    one_line_error(materialize(world), "catalog")
    assert not os.path.lexists(world.target)
    assert snapshot(world.sandbox, {world.hololib, world.cache}) == before


def test_materialize_refuses_symlinked_target(world: World) -> None:
    os.symlink(world.sentinel, world.target)
    before = outside(world)
    one_line_error(materialize(world), str(world.target))
    assert os.readlink(world.target) == str(world.sentinel)
    assert outside(world) == before
    assert_sentinel_intact(world)


# --- legitimate but tricky catalogs: restored without writing outside --------------------


def test_symlinked_dir_children_are_never_written(world: World) -> None:
    symlinked_dir_with_shadow_files(world)
    world.save()
    before = outside(world)
    proc = materialize(world)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(world.target / "lib") == "../sentinel"
    assert outside(world) == before
    assert_sentinel_intact(world)


def test_planted_symlinks_in_existing_target_are_replaced_not_followed(world: World) -> None:
    """Someone swaps files and directories of a restored target for symlinks into sentinel/."""
    assert materialize(world).returncode == 0
    (world.target / "lib" / "data.txt").unlink()
    os.symlink(world.sentinel / "victim.txt", world.target / "lib" / "data.txt")
    for f in (world.target / "etc").iterdir():
        f.unlink()
    (world.target / "etc").rmdir()
    os.symlink(world.sentinel / "sub", world.target / "etc")
    (world.target / "README").unlink()
    os.symlink("../sentinel/victim.txt", world.target / "README")
    before = outside(world)
    proc = materialize(world)
    assert proc.returncode == 0, proc.stderr
    assert not (world.target / "etc").is_symlink() and not (world.target / "lib" / "data.txt").is_symlink()
    assert not (world.target / "README").is_symlink()
    assert_restored(world)
    assert outside(world) == before
    assert_sentinel_intact(world)


# --- library attacks: corrupt blobs never become files ------------------------------------


def _corrupt_run(world: World, corruption: str, *args: str) -> tuple[str, str]:
    entry, digest = CORRUPTIONS[corruption](world)
    before = outside(world)
    line = one_line_error(materialize(world, *args), entry, digest)
    final = world.target / entry
    if os.path.lexists(final):
        assert final.read_bytes() == world.restored(entry), f"corrupt content under {final}"
    assert outside(world) == before, "files outside the target changed (or a staging dir was left)"
    assert_sentinel_intact(world)
    return entry, line


@pytest.mark.parametrize("policy", ["trusted", "always"])
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_materialize_refuses_corrupt_blob(world: World, corruption: str, policy: str) -> None:
    _corrupt_run(world, corruption, "--verify", policy)


@pytest.mark.parametrize("corruption", ["gzip_bomb", "truncated_gzip", "missing_blob"])
def test_decoded_size_and_stream_checked_even_without_hashing(world: World, corruption: str) -> None:
    """--verify skip trusts digests, never sizes: a bomb or a truncated stream still fails."""
    _corrupt_run(world, corruption, "--verify", "skip")


@pytest.mark.parametrize("corruption", ["swapped_blobs", "truncated_gzip", "gzip_bomb"])
def test_reconcile_never_installs_corrupt_blob(world: World, corruption: str) -> None:
    assert materialize(world).returncode == 0
    entry = {"swapped_blobs": "lib/pair-a.bin", "truncated_gzip": "lib/data.txt", "gzip_bomb": "README"}[corruption]
    (world.target / entry).unlink()
    _corrupt_run(world, corruption)


@pytest.mark.parametrize("how", ["replaced", "rewritten-in-place"])
def test_trusted_rechecks_a_blob_changed_after_verification(world: World, how: str) -> None:
    """``trusted`` remembers verified blob *files*; a new or modified file is hashed again."""
    assert materialize(world, "--verify", "trusted").returncode == 0
    entry = "lib/pair-a.bin"
    digest = world.entry(entry).digest
    blob = world.lib.blob_path(digest)
    evil = world.lib.blob_path(world.entry("lib/pair-b.bin").digest).read_bytes()
    if how == "replaced":
        tmp = blob.with_name("evil")
        tmp.write_bytes(evil)
        os.utime(tmp, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns))
        os.replace(tmp, blob)
    else:
        st = blob.stat()
        with open(blob, "r+b") as f:
            f.truncate(0)
            f.write(evil)
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored; ctime cannot be
    other = world.holotree / OTHER_TARGET
    before = outside(world, world.target, other)
    proc = materialize(world, "--verify", "trusted", target=other)
    one_line_error(proc, entry, digest)
    if os.path.lexists(other / entry):
        assert (other / entry).read_bytes() == world.restored(entry)
    assert outside(world, world.target, other) == before


# --- mount ------------------------------------------------------------------------------------


@requires_fuse
@pytest.mark.fuse
@pytest.mark.parametrize("mutation", sorted(VALIDATION_MUTATIONS))
def test_mount_refuses_malformed_catalog(world: World, mutation: str) -> None:
    entry = VALIDATION_MUTATIONS[mutation](world)
    world.save()
    before = snapshot(world.sandbox, {world.hololib, world.cache})
    proc = holofs(world, "mount", world.catalog_path, world.target, "--cache", world.cache, timeout=60)
    try:
        one_line_error(proc, entry_needle(entry))
    finally:
        if is_mounted(world.target):
            subprocess.run(["fusermount3", "-u", "-z", os.fspath(world.target)], capture_output=True)
    assert not is_mounted(world.target)
    assert not os.path.lexists(world.target)
    assert snapshot(world.sandbox, {world.hololib, world.cache}) == before


@requires_fuse
@pytest.mark.fuse
def test_mount_corrupt_blobs_read_as_eio(world: World) -> None:
    """Every corruption at once: each damaged file fails to read (EIO), never shows bad bytes."""
    damaged = {}
    for corruption in ("gzip_bomb", "truncated_gzip", "swapped_blobs", "missing_blob"):
        entry, _digest = CORRUPTIONS[corruption](world)
        damaged[entry] = corruption
    damaged["lib/pair-b.bin"] = "swapped_blobs"  # the other half of the swap
    before = outside(world)
    with mounted(world.catalog_path, world.target, cache=world.cache) as m:
        for path in regular_files(world):
            if path in damaged:
                with pytest.raises(OSError) as info:
                    (m.mountpoint / path).read_bytes()
                ok = (errno.EIO, errno.ENOENT) if damaged[path] == "missing_blob" else (errno.EIO,)
                assert info.value.errno in ok, (path, info.value)
            else:
                assert (m.mountpoint / path).read_bytes() == world.restored(path), path
        assert os.readlink(m.mountpoint / "link-out") == "../sentinel/victim.txt"
    assert outside(world) == before
    assert_sentinel_intact(world)


@requires_fuse
@pytest.mark.fuse
def test_mount_symlinked_dir_is_a_link(world: World) -> None:
    symlinked_dir_with_shadow_files(world)
    world.save()
    before = outside(world)
    with mounted(world.catalog_path, world.target, cache=world.cache) as m:
        assert os.readlink(m.mountpoint / "lib") == "../sentinel"
        assert (m.mountpoint / "README").read_bytes() == world.restored("README")
    assert outside(world) == before
    assert_sentinel_intact(world)


def test_identity_constants_match_world() -> None:
    assert len(RECORDED) == len(TARGET) == len(OTHER_TARGET)
