"""Hololib blob store: RCC's layout, encodings, atomic writes, catalog lookup."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import shutil
from pathlib import Path

import pytest

from holofs.catalog import iter_files, read_catalog
from holofs.digest import hasher_for, siphash128
from holofs.errors import CorruptBlob, LibraryError, MissingBlob, NotFound, UsageError
from holofs.library import GZIP, RAW, ZSTD, Hololib, blob_relpath, detect_encoding, resolve_catalog


def test_rcc_blobs_decode_and_hash_to_their_digests(rcc_hololib: Path, rcc_catalog: Path) -> None:
    lib = Hololib.open(rcc_hololib)
    cat = read_catalog(rcc_catalog)
    seen = set()
    for path, f, _ in iter_files(cat.tree):
        assert lib.blob_path(f.digest) == rcc_hololib / "library" / f.digest[:2] / f.digest[2:4] / f.digest[4:6] / f.digest
        stream, encoding = lib.open_blob(f.digest, f.size)
        with stream:
            data = stream.read()
        assert encoding == GZIP, path
        assert len(data) == f.size, path
        h = hasher_for(f.digest)
        h.update(data)
        assert h.hexdigest() == f.digest, path
        seen.add(f.digest)
    assert set(lib.iter_digests()) == seen
    text = lib.read_blob(next(f.digest for p, f, _ in iter_files(cat.tree) if p == "rcc_activate.sh"))
    assert text[161 : 161 + len(cat.identity)] == cat.identity.encode()


@pytest.mark.parametrize("encoding", [GZIP, ZSTD, RAW])
def test_write_blob_roundtrip(tmp_path: Path, encoding: str) -> None:
    lib = Hololib.create(tmp_path / "lib")
    data = b"hello blob\n" * 10000
    digest = hashlib.sha256(data).hexdigest()
    final = lib.write_blob_from(digest, io.BytesIO(data), encoding)
    assert final == lib.blob_path(digest) and lib.has(digest)
    assert lib.encoding(digest, len(data)) == encoding
    stream, got = lib.open_blob(digest, len(data))
    with stream:
        assert stream.read() == data
    assert got == encoding
    leftovers = [p for p in lib.library_dir.rglob("*") if ".part" in p.name]
    assert leftovers == []
    with pytest.raises(UsageError):
        lib.write_blob_from(digest, io.BytesIO(data), "lzma")


def test_raw_library_keeps_a_gz_file_raw(tmp_path: Path) -> None:
    """A raw library storing a .gz file: stored size == catalog size means raw, not gzip."""
    lib = Hololib.create(tmp_path / "lib")
    lib.set_compress_no(True)
    content = gzip.compress(b"this file is itself gzip data\n" * 100)
    digest = siphash128(content).hex()
    lib.write_blob_from(digest, io.BytesIO(content), RAW)
    assert lib.blob_path(digest).read_bytes() == content
    assert lib.encoding(digest, len(content)) == RAW
    assert lib.read_blob(digest, len(content)) == content
    # Without the size the magic alone would (wrongly) say gzip: the size rule is what makes it right.
    assert lib.encoding(digest) == GZIP
    assert detect_encoding(content[:4], len(content), len(content)) == RAW


def test_detect_encoding_by_magic() -> None:
    assert detect_encoding(b"\x1f\x8b\x08\x00") == GZIP
    assert detect_encoding(b"\x28\xb5\x2f\xfd") == ZSTD
    assert detect_encoding(b"#!/b") == RAW
    assert detect_encoding(b"") == RAW
    assert blob_relpath("abcdef0123") == "ab/cd/ef/abcdef0123"


def test_corrupt_and_missing_blobs(tmp_path: Path) -> None:
    lib = Hololib.create(tmp_path / "lib")
    digest = "ab" * 32
    with pytest.raises(MissingBlob) as missing:
        lib.read_blob(digest)
    assert missing.value.errno == errno.EIO  # a broken library, not a missing path
    with pytest.raises(MissingBlob):
        lib.encoding(digest)
    path = lib.blob_path(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(b"x" * 100000)[:50])
    with pytest.raises(CorruptBlob):
        lib.read_blob(digest)


def test_compress_no_marker(tmp_path: Path) -> None:
    lib = Hololib.create(tmp_path / "lib")
    assert not lib.compress_no
    lib.set_compress_no(True)
    assert (lib.catalog_dir / "compress.no").is_file() and lib.compress_no
    lib.set_compress_no(False)
    assert not lib.compress_no


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        Hololib.open(tmp_path / "nope")
    (tmp_path / "empty" / "catalog").mkdir(parents=True)
    with pytest.raises(LibraryError, match="no library/"):
        Hololib.open(tmp_path / "empty")


def test_catalog_lookup(rcc_hololib: Path, rcc_catalog: Path) -> None:
    lib = Hololib.open(rcc_hololib)
    # Clutter that must never be taken for a catalog.
    (lib.catalog_dir / (rcc_catalog.name + ".info")).write_text("{}")
    (lib.catalog_dir / "compress.no").touch()
    (lib.catalog_dir / (rcc_catalog.name + ".part12x34")).write_text("")
    assert lib.catalog_paths() == [rcc_catalog]
    assert lib.find_catalog(rcc_catalog.name) == rcc_catalog
    assert lib.find_catalog("c34ed96c2d8a459a") == rcc_catalog
    assert lib.find_catalog("c34e") == rcc_catalog
    with pytest.raises(NotFound, match="no catalog"):
        lib.find_catalog("ffff")
    shutil.copy(rcc_catalog, lib.catalog_dir / "c34ed96c00000000v12.linux_amd64")
    with pytest.raises(UsageError, match="several"):
        lib.find_catalog("c34ed96c")
    cat, found = resolve_catalog("c34ed96c2d8a459a", rcc_hololib)
    assert cat.blueprint == "c34ed96c2d8a459a" and found.root == rcc_hololib
    cat, found = resolve_catalog(str(rcc_catalog))
    assert found.root == rcc_hololib and cat.source == str(rcc_catalog)
    with pytest.raises(UsageError, match="is a directory"):
        resolve_catalog(str(rcc_hololib))


def test_compressed_blob_as_long_as_its_content_is_stored_raw(tmp_path: Path) -> None:
    """detect_encoding reads 'stored size == content size' as raw; write_blob_from must keep that true."""
    import zstandard

    lib = Hololib.create(tmp_path / "lib")
    rng = __import__("random").Random(7)
    for n in range(2, 400):
        data = bytes(rng.randrange(256) for _ in range(n // 2)) * 2
        if len(zstandard.ZstdCompressor(level=3).compress(data)) == len(data):
            break
    else:  # pragma: no cover - the search above always finds one
        pytest.fail("no equal-size zstd case found")
    digest = hashlib.sha256(data).hexdigest()
    lib.write_blob_from(digest, io.BytesIO(data), ZSTD)
    assert lib.encoding(digest, len(data)) == RAW
    assert lib.read_blob(digest, len(data)) == data
