"""``holofs verify``: good libraries pass, every corruption is reported, deletion only on request."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from support.hostile import CORRUPTIONS, World, make_world, name_traversal, sha256, snapshot

from holofs.digest import siphash128
from holofs.library import ZSTD


@pytest.fixture
def world(tmp_path) -> World:
    return make_world(tmp_path / "sandbox")


def verify(world_or_lib, *args: str) -> subprocess.CompletedProcess[str]:
    lib = world_or_lib.hololib if isinstance(world_or_lib, World) else world_or_lib
    proc = subprocess.run([sys.executable, "-m", "holofs", "verify", str(lib), "--no-progress", *args],
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def problems(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    return json.loads(proc.stdout)["problems"]


def test_good_library_passes(world: World) -> None:
    proc = verify(world)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all good" in proc.stdout
    assert f"{len(world.contents)} blobs" in proc.stdout


def test_good_library_passes_against_catalog(world: World) -> None:
    proc = verify(world, "--catalog", str(world.catalog_path), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["checked"] == len(world.contents) and report["good"] == report["checked"]


def test_rcc_fixture_passes(rcc_hololib) -> None:
    proc = verify(rcc_hololib, "--workers", "3", "--catalog", "c34ed96c2d8a459a")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = verify(rcc_hololib)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_other_encodings_and_siphash_pass(world: World) -> None:
    data = b"zstd content\n" * 100
    world.put_blob(sha256(data), data, encoding=ZSTD)
    gz_file = b"\x1f\x8b\x08\x00 a raw .gz file stored verbatim, as compress.no libraries do"
    world.put_blob(siphash128(gz_file).hex(), gz_file, encoding="none")
    proc = verify(world)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# kind reported when scanning the whole library / when checking against the catalog
EXPECTED = {
    "gzip_bomb": ("digest-mismatch", "size-mismatch"),
    "truncated_gzip": ("corrupt", "corrupt"),
    "swapped_blobs": ("digest-mismatch", "digest-mismatch"),
    "flipped_byte": ("digest-mismatch", "digest-mismatch"),
    "missing_blob": (None, "missing"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_each_corruption_is_reported(world: World, corruption: str) -> None:
    entry, digest = CORRUPTIONS[corruption](world)
    whole, per_catalog = EXPECTED[corruption]
    proc = verify(world, "--json")
    found = {(p["kind"], p["digest"]) for p in problems(proc)}
    if whole is None:
        assert proc.returncode == 0
    else:
        assert proc.returncode == 1
        assert (whole, digest) in found, found
    proc = verify(world, "--json", "--catalog", str(world.catalog_path))
    assert proc.returncode == 1
    hits = [p for p in problems(proc) if p["digest"] == digest]
    assert hits and hits[0]["kind"] == per_catalog, problems(proc)
    assert entry in hits[0]["entries"]
    text = verify(world, "--catalog", str(world.catalog_path)).stdout
    assert digest in text and entry in text


def test_library_litter_is_reported(world: World) -> None:
    lib = world.lib.library_dir
    good = world.entry("README").digest
    (lib / "ab" / "cd" / "ef").mkdir(parents=True)
    (lib / "ab" / "cd" / "ef" / "notes.txt").write_text("not a blob")
    misplaced = lib / "00" / "00" / "00" / good
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(world.lib.blob_path(good).read_bytes())
    leftover = world.lib.blob_path(good).with_name(good + ".part4194303x0badf00d")  # pid that cannot exist
    leftover.write_bytes(b"half a blob")
    alive = world.lib.blob_path(good).with_name(f"{good}.part{os.getpid()}x1234abcd")
    alive.write_bytes(b"being written by a live process")
    os.symlink("/etc/passwd", lib / "ab" / "cd" / "ef" / ("e" * 64))
    kinds = {(p["kind"], os.path.basename(p["path"])) for p in problems(verify(world, "--json"))}
    assert kinds == {
        ("unknown-name", "notes.txt"),
        ("misplaced", good),
        ("temp-leftover", leftover.name),
        ("not-a-file", "e" * 64),
    }


def test_nothing_deleted_without_delete_bad(world: World) -> None:
    for corrupt in ("gzip_bomb", "truncated_gzip", "swapped_blobs"):
        CORRUPTIONS[corrupt](world)
    (world.lib.library_dir / "stray.part4194303x1").write_bytes(b"")
    before = snapshot(world.hololib)
    assert verify(world).returncode == 1
    assert verify(world, "--catalog", str(world.catalog_path), "--json").returncode == 1
    assert snapshot(world.hololib) == before


def test_delete_bad_deletes_only_bad(world: World) -> None:
    bad = {CORRUPTIONS[c](world)[1] for c in ("truncated_gzip", "swapped_blobs")}
    bad.add(world.entry("lib/pair-b.bin").digest)  # the other half of the swap
    stray = world.lib.library_dir / "stray.part4194303x1"
    stray.write_bytes(b"")
    unknown = world.lib.library_dir / "keep-me.txt"
    unknown.write_text("somebody's file: reported, never deleted")
    proc = verify(world, "--delete-bad")
    assert proc.returncode == 1
    assert proc.stdout.count("deleted: ") == len(bad) + 1
    assert not stray.exists() and unknown.exists()
    for digest in {world.entry(p).digest for p in world.contents}:
        assert world.lib.blob_path(digest).exists() == (digest not in bad), digest
    after = problems(verify(world, "--json"))
    assert [p["kind"] for p in after] == ["unknown-name"]


def test_catalog_mode_validates_catalog(world: World) -> None:
    name_traversal(world)
    world.save()
    proc = verify(world, "--catalog", str(world.catalog_path))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("holofs: error:") and "sentinel/victim.txt" in lines[0]


def test_missing_hololib_is_one_line_error(tmp_path) -> None:
    proc = verify(tmp_path / "nope")
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and "not found" in proc.stderr


def test_corrupt_zstd_blob_reported(world: World) -> None:
    data = b"some zstd data " * 1000
    digest = sha256(data)
    path = world.put_blob(digest, data, encoding=ZSTD)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    found = {(p["kind"], p["digest"]) for p in problems(verify(world, "--json"))}
    assert ("corrupt", digest) in found or ("digest-mismatch", digest) in found


def test_big_blob_streams(world: World) -> None:
    """A 12 MB blob is checked without trouble (streamed, not loaded whole)."""
    data = os.urandom(1 << 20) * 12
    world.lib.write_blob_from(sha256(data), io.BytesIO(data), "gzip")
    proc = verify(world, "--json", "--workers", "2")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["bytes_decoded"] >= len(data)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native accelerator is Linux-only")
def test_native_check_agrees_with_the_python_check(tmp_path) -> None:
    """``_native.verify_blob`` vouches only for good blobs, and check_blob (which names problems)
    says the same of every one: raw (SHA-256, SipHash), gzip (one member, several), zstd, a raw
    .gz file, corrupt, wrong digest, wrong recorded size."""
    import gzip as gz
    import hashlib

    import zstandard

    from holofs import libcheck

    native = libcheck._native
    assert native is not None, "the native extension must be built on Linux"
    body = os.urandom(3000) + b"text " * 500
    sha = hashlib.sha256(body).hexdigest()
    two = gz.compress(body[:1000]) + gz.compress(body[1000:])
    bad_stream = bytearray(gz.compress(body))
    bad_stream[20] ^= 0xFF
    cases = {  # name: (stored bytes, digest, expected size or None, good)
        "raw": (body, sha, None, True),
        "raw sized": (body, sha, len(body), True),
        "raw siphash": (body, siphash128(body).hex(), None, True),
        "gzip": (gz.compress(body), sha, None, True),
        "gzip sized": (gz.compress(body), sha, len(body), True),
        "gzip members": (two, sha, len(body), True),
        "gzip members unsized": (two, sha, None, True),  # ISIZE is the last member's: Python's path
        "zstd": (zstandard.ZstdCompressor().compress(body), sha, None, True),
        "raw .gz file": (gz.compress(b"data"), hashlib.sha256(gz.compress(b"data")).hexdigest(), None, True),
        "corrupt": (bytes(bad_stream), sha, None, False),
        "wrong digest": (body, hashlib.sha256(b"other").hexdigest(), None, False),
        "wrong size": (gz.compress(body), sha, len(body) - 1, False),
        "empty": (b"", hashlib.sha256(b"").hexdigest(), 0, True),
    }
    for name, (stored, digest, expected, good) in cases.items():
        path = tmp_path / name.replace(" ", "_")
        path.write_bytes(stored)
        kind, detail, size = libcheck.check_blob(path, digest, expected)
        assert (kind == "") == good, (name, kind, detail)
        fd = os.open(path, os.O_RDONLY)
        try:
            vouched = native.verify_blob(fd, digest, -1 if expected is None else expected)
        finally:
            os.close(fd)
        assert vouched is None or (good and vouched == size), (name, vouched, size)
        if name not in ("gzip members unsized",):
            assert (vouched is not None) == good, name
