"""One compressed blob decoded, hashed and relocated in C: ``holofs._native.decode_file``, as
the general per-file path (materialize of unverified blobs) uses it, and ``fill_file``, a mount's
whole cache fill in one call.

It is an accelerator: for every blob it must give the Python path's bytes and errors, and
for a blob it does not decode it must write nothing and say so (None), so that the Python
path decodes it or names the problem.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import stat
import sys

import pytest
import zstandard

from holofs import strategies
from holofs.catalog import FileEntry
from holofs.errors import CorruptBlob
from holofs.library import Hololib, blob_relpath
from holofs.relocation import Relocation
from holofs.strategies import Linker, produce_file
from holofs.verification import VerifiedStore, VerifyPolicy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the accelerator is Linux-only")
IDENT = b"h0c0ffee_target00000000t"
RECORDED = b"h0c0ffee_bench000000000t"


def _native():
    from holofs import _native

    return _native


def _zstd(data: bytes, *, with_size: bool = True) -> bytes:
    if with_size:
        return zstandard.ZstdCompressor().compress(data)
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


def _decode(tmp_path, blob: bytes, size: int, *, sha256: bool = True, ident: bytes = b"", offsets=()):
    src = tmp_path / "blob"
    src.write_bytes(blob)
    dst = tmp_path / "out"
    dst.unlink(missing_ok=True)
    s = os.open(src, os.O_RDONLY)
    d = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        result = _native().decode_file(s, len(blob), d, size, sha256, ident, tuple(offsets))
    finally:
        os.close(s)
        os.close(d)
    return result, dst.read_bytes()


def test_built_with_every_codec_and_sha256():
    """CI builds the accelerator with libdeflate/zlib, libzstd and libcrypto (dev.sh installs the
    headers): without them this path would silently fall back and stay untested."""
    native = _native()
    assert native.HAS_SHA256 == 1
    assert strategies._decodes_natively(FileEntry("x", 10, 0o644, "0" * 64), 20, True)


@pytest.mark.parametrize("encode", [gzip.compress, _zstd, lambda d: _zstd(d, with_size=False),
                                    lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:])],
                         ids=["gzip", "zstd", "zstd-no-size", "gzip-two-members"])
def test_decodes_hashes_and_relocates(tmp_path, encode):
    data = bytearray(os.urandom(5000) + RECORDED + os.urandom(3000))
    data[10:10 + len(RECORDED)] = RECORDED
    original = bytes(data)
    offsets = (10, 5000)
    digest, out = _decode(tmp_path, encode(original), len(original), ident=IDENT, offsets=offsets)
    assert digest == hashlib.sha256(original).digest()  # of the content as recorded
    expected = bytearray(original)
    for off in offsets:
        expected[off : off + len(IDENT)] = IDENT
    assert out == bytes(expected)


def test_no_hash_when_not_asked(tmp_path):
    data = os.urandom(4096)
    digest, out = _decode(tmp_path, gzip.compress(data), len(data), sha256=False)
    assert digest == b"" and out == data


def test_empty_content(tmp_path):
    assert _decode(tmp_path, gzip.compress(b""), 0) == (hashlib.sha256(b"").digest(), b"")


@pytest.mark.parametrize("case", ["truncated", "corrupt", "too-long", "too-short", "trailing-garbage", "raw",
                                  "zstd-corrupt"])
def test_what_it_cannot_decode_writes_nothing(tmp_path, case):
    data = os.urandom(20000)
    packed = gzip.compress(data)
    blob, size = {
        "truncated": (packed[:-100], len(data)),
        "corrupt": (packed[:50] + bytes(100) + packed[150:], len(data)),
        "too-long": (packed, len(data) - 1),
        "too-short": (packed, len(data) + 1),
        "trailing-garbage": (packed + b"garbage", len(data)),
        "raw": (data, len(data) + 5),
        "zstd-corrupt": (_zstd(data)[:-10], len(data)),
    }[case]
    assert _decode(tmp_path, blob, size) == (None, b"")


def test_offsets_outside_the_file_are_refused(tmp_path):
    with pytest.raises(ValueError):
        _decode(tmp_path, gzip.compress(b"x" * 100), 100, ident=IDENT, offsets=(90,))


def test_write_error_is_an_oserror(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(b"x" * 100))
    s = os.open(blob, os.O_RDONLY)
    d = os.open(blob, os.O_RDONLY)  # not writable
    try:
        with pytest.raises(OSError):
            _native().decode_file(s, blob.stat().st_size, d, 100, True, b"", ())
    finally:
        os.close(s)
        os.close(d)


# -- through produce_file: the same result as the Python path ------------------------------


def _library(tmp_path, blobs: dict[str, bytes]) -> Hololib:
    lib = Hololib.create(tmp_path / "hololib")
    for digest, blob in blobs.items():
        path = lib.library_dir / blob_relpath(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return lib


def _produce(lib, entry, dest, *, native: bool, monkeypatch, relocation=None, store=None):
    with monkeypatch.context() as m:
        if not native:
            m.setattr(strategies, "_native", None)
        return produce_file(lib, entry, dest, relocation=relocation, verify=store is None, linker=Linker(),
                            perm=0o644, verified_store=store, policy=VerifyPolicy.TRUSTED if store else None)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_produce_file_same_bytes_both_ways(tmp_path, monkeypatch, encoding):
    data = bytearray(os.urandom(300_000))
    data[70_000 : 70_000 + len(RECORDED)] = RECORDED
    data = bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    lib = _library(tmp_path, {digest: gzip.compress(data) if encoding == "gzip" else _zstd(data)})
    entry = FileEntry("f", len(data), 0o644, digest, [70_000])
    relocation = Relocation(recorded=RECORDED, target=IDENT, target_path="/x/" + IDENT.decode())
    store = VerifiedStore(tmp_path / "cache")
    outs = []
    for native in (True, False):
        dest = tmp_path / f"out-{native}"
        result = _produce(lib, entry, dest, native=native, monkeypatch=monkeypatch, relocation=relocation)
        assert result.strategy == "decompress" and result.verified
        outs.append(dest.read_bytes())
    assert outs[0] == outs[1] and outs[0][70_000 : 70_000 + len(IDENT)] == IDENT
    # with the record: hashed (and recorded) the first time only, natively
    _produce(lib, entry, tmp_path / "t1", native=True, monkeypatch=monkeypatch, relocation=relocation, store=store)
    assert not store.needs_check(digest, lib.library_dir / blob_relpath(digest), VerifyPolicy.TRUSTED)


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_produce_file_corrupt_blob_same_error_nothing_left(tmp_path, monkeypatch, native):
    data = os.urandom(50_000)
    wrong = os.urandom(50_000)  # decodes fine, to other content
    digest = hashlib.sha256(data).hexdigest()
    lib = _library(tmp_path, {digest: gzip.compress(wrong)})
    dest = tmp_path / "out"
    with pytest.raises(CorruptBlob) as err:
        _produce(lib, FileEntry("f", len(data), 0o644, digest), dest, native=native, monkeypatch=monkeypatch)
    assert digest in str(err.value) and hashlib.sha256(wrong).hexdigest() in str(err.value)
    assert not dest.exists()


def test_produce_file_undecodable_falls_back_to_the_python_message(tmp_path, monkeypatch):
    data = os.urandom(50_000)
    digest = hashlib.sha256(data).hexdigest()
    lib = _library(tmp_path, {digest: gzip.compress(data)[:-200]})
    messages = []
    for native in (True, False):
        dest = tmp_path / f"out-{native}"
        with pytest.raises(CorruptBlob) as err:
            _produce(lib, FileEntry("f", len(data), 0o644, digest), dest, native=native, monkeypatch=monkeypatch)
        messages.append(str(err.value))
        assert not dest.exists()
    assert messages[0] == messages[1]


def test_produce_file_streams_what_is_too_big_for_memory(tmp_path, monkeypatch):
    """Above NATIVE_DECODE_MAX the blob is streamed in chunks (bounded memory), not decoded whole."""
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    lib = _library(tmp_path, {digest: gzip.compress(data)})
    calls = []
    real = _native().decode_file
    monkeypatch.setattr(strategies, "NATIVE_DECODE_MAX", 100_000)
    monkeypatch.setattr(strategies, "_native", type("N", (), {"HAS_SHA256": 1, "decode_file": staticmethod(
        lambda *a: calls.append(a) or real(*a))}))
    produce_file(lib, FileEntry("f", len(data), 0o644, digest), tmp_path / "out", relocation=None, verify=True,
                 linker=Linker(), perm=0o644)
    assert (tmp_path / "out").read_bytes() == data and calls == []


# -- a mount's cache fill in one call: fill_file and strategies.fill_natively ---------------------


def _fill(tmp_path, blob: bytes, size: int, *, expect: bytes = b"", same=None, ident: bytes = b"", offsets=()):
    (tmp_path / "blob").write_bytes(blob)
    final = tmp_path / "final"
    made = _native().fill_file(os.fsencode(tmp_path / "blob"), os.fsencode(tmp_path / "tmp"), os.fsencode(final),
                               size, 0o644, expect, same, ident, tuple(offsets))
    return made, final


def _ident(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@pytest.mark.parametrize("encode", [gzip.compress, _zstd], ids=["gzip", "zstd"])
def test_fill_file_decodes_hashes_relocates_and_renames(tmp_path, encode):
    data = bytearray(os.urandom(100_000))
    data[5_000 : 5_000 + len(RECORDED)] = RECORDED
    data = bytes(data)
    old = os.umask(0o077)  # the cache's mode does not depend on the umask
    try:
        made, final = _fill(tmp_path, encode(data), len(data), expect=hashlib.sha256(data).digest(), ident=IDENT,
                            offsets=[5_000])
    finally:
        os.umask(old)
    fd, blob_ident = made
    try:
        content = os.pread(fd, len(data) + 1, 0)
        assert os.fstat(fd).st_ino == os.stat(final).st_ino
    finally:
        os.close(fd)
    assert content == data[:5_000] + IDENT + data[5_000 + len(IDENT):]
    assert blob_ident == _ident(tmp_path / "blob")
    assert stat.S_IMODE(os.stat(final).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "final"]  # the temporary name is gone


@pytest.mark.parametrize("case", ["wrong digest", "raw", "changed blob", "corrupt", "missing"])
def test_fill_file_leaves_what_it_does_not_take_untouched(tmp_path, case):
    data = os.urandom(20_000)
    blob, size, expect, same = gzip.compress(data), len(data), hashlib.sha256(data).digest(), None
    if case == "wrong digest":
        expect = hashlib.sha256(b"other").digest()
    elif case == "raw":
        blob = data  # the caller may reflink it
    elif case == "changed blob":  # verified as another file: hash it again on the general path
        expect, same = b"", (1, 2, len(blob), 3, 4)
    elif case == "corrupt":
        blob = blob[:-100]
    (tmp_path / "blob").write_bytes(blob)
    if case == "missing":
        (tmp_path / "blob").unlink()
    made, final = _fill(tmp_path, blob, size, expect=expect, same=same) if case != "missing" else (
        _native().fill_file(os.fsencode(tmp_path / "blob"), os.fsencode(tmp_path / "tmp"),
                            os.fsencode(tmp_path / "final"), size, 0o644, expect, None, b"", ()),
        tmp_path / "final")
    assert made is None
    assert not final.exists() and not (tmp_path / "tmp").exists()


def test_fill_file_skips_the_hash_only_for_the_same_blob_file(tmp_path):
    data = os.urandom(20_000)
    (tmp_path / "blob").write_bytes(gzip.compress(data))
    blob, final, ident = os.fsencode(tmp_path / "blob"), tmp_path / "final", _ident(tmp_path / "blob")
    for i in range(5):  # any field of the identity differs: not the file that was verified
        other = tuple(v + (k == i) for k, v in enumerate(ident))
        assert _native().fill_file(blob, os.fsencode(tmp_path / "tmp"), os.fsencode(final), len(data), 0o644, b"",
                                   other, b"", ()) is None
    assert not final.exists()
    made = _native().fill_file(blob, os.fsencode(tmp_path / "tmp"), os.fsencode(final), len(data), 0o644, b"",
                               ident, b"", ())
    assert made is not None
    os.close(made[0])
    assert final.read_bytes() == data


def test_fill_file_create_error_is_an_oserror_and_leaves_nothing(tmp_path):
    data = os.urandom(1_000)
    (tmp_path / "blob").write_bytes(gzip.compress(data))
    with pytest.raises(OSError) as err:  # the temporary's directory does not exist
        _native().fill_file(os.fsencode(tmp_path / "blob"), os.fsencode(tmp_path / "no" / "tmp"),
                            os.fsencode(tmp_path / "final"), len(data), 0o644, b"", None, b"", ())
    assert err.value.errno == errno.ENOENT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob"]


def test_fill_natively_records_trust_and_falls_back_for_a_replaced_blob(tmp_path):
    data = os.urandom(30_000)
    digest = hashlib.sha256(data).hexdigest()
    lib = _library(tmp_path, {digest: gzip.compress(data)})
    entry = FileEntry("f", len(data), 0o644, digest)
    store, linker = VerifiedStore(tmp_path / "cache"), Linker()
    blob = lib.library_dir / blob_relpath(digest)

    def fill(name):
        return strategies.fill_natively(lib, entry, str(tmp_path / f"{name}.tmp"), str(tmp_path / name),
                                        relocation=None, linker=linker, label=name, perm=0o644,
                                        verified_store=store, policy=VerifyPolicy.TRUSTED)

    fd = fill("a")
    assert fd is not None
    os.close(fd)
    assert not store.needs_check(digest, blob, VerifyPolicy.TRUSTED)  # hashed on first use, and recorded
    assert linker.counters["decompress"].files == 1
    fd = fill("b")  # trusted now: decoded without hashing
    assert fd is not None
    os.close(fd)
    wrong = bytearray(data)
    wrong[0] ^= 1
    blob.write_bytes(gzip.compress(bytes(wrong)))  # replaced: another file, so hashed again, and refused
    assert fill("c") is None and not (tmp_path / "c").exists() and not (tmp_path / "c.tmp").exists()
    with pytest.raises(CorruptBlob):
        produce_file(lib, entry, tmp_path / "c", relocation=None, verify=False, linker=linker, perm=0o644,
                     verified_store=store, policy=VerifyPolicy.TRUSTED)
