"""SipHash-2-4-128 against the reference vectors, streaming hashers, RCC digests."""

from __future__ import annotations

import hashlib
import os

import pytest

from holofs.digest import (
    SHA256,
    SIPHASH128,
    SipHash128,
    algorithm_of,
    hash_file,
    hasher_for,
    is_valid_digest,
    new_hasher,
    siphash128,
)

# vectors_sip128 from the SipHash reference implementation (veorq/SipHash vectors.h):
# key = 00 01 .. 0f, message = 00 01 .. (n-1).
REFERENCE_KEY = bytes(range(16))
VECTORS_SIP128 = {
    0: "a3817f04ba25a8e66df67214c7550293",
    1: "da87c1d86b99af44347659119b22fc45",
    2: "8177228da4a45dc7fca38bdef60affe4",
    3: "9c70b60c5267a94e5f33b6b02985ed51",
    7: "a1f1ebbed8dbc153c0b84aa61ff08239",
    8: "3b62a9ba6258f5610f83e264f31497b4",
    9: "264499060ad9baabc47f8b02bb6d71ed",
    15: "5493e99933b0a8117e08ec0f97cfc3d9",
    16: "6ee2a4ca67b054bbfd3315bf85230577",
    17: "473d06e8738db89854c066c47ae47740",
}


@pytest.mark.parametrize("n", sorted(VECTORS_SIP128))
def test_siphash128_reference_vectors(n: int) -> None:
    assert siphash128(bytes(range(n)), REFERENCE_KEY).hex() == VECTORS_SIP128[n]


def test_siphash128_default_key_is_rccs() -> None:
    data = b"holotree content"
    assert siphash128(data) == siphash128(data, b"Very_Random-Seed")
    assert siphash128(data) != siphash128(data, REFERENCE_KEY)
    with pytest.raises(ValueError):
        siphash128(data, b"short")


def test_streaming_siphash_matches_one_shot_over_chunks() -> None:
    data = bytes(range(256)) * 4099  # ~1 MiB, not a multiple of anything nice
    h = SipHash128()
    for start in range(0, len(data), 7919):
        h.update(data[start : start + 7919])
    assert h.hexdigest() == siphash128(data).hex()
    assert len(h.hexdigest()) == 32


def test_streaming_siphash_spills_to_disk_and_stays_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SipHash128, "_SPILL", 1000)  # force the temp-file path with small data
    data = b"0123456789abcdef" * 5000
    h = SipHash128()
    for start in range(0, len(data), 333):
        h.update(memoryview(data)[start : start + 333])
    assert h._file is not None  # it really spilled
    assert h.hexdigest() == siphash128(data).hex()


def test_sha256_hasher_is_hashlib() -> None:
    h = new_hasher(SHA256)
    h.update(b"abc")
    assert h.hexdigest() == hashlib.sha256(b"abc").hexdigest()


def test_algorithm_of_and_hasher_for() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    sip = siphash128(b"x").hex()
    assert algorithm_of(sha) == SHA256
    assert algorithm_of(sip) == SIPHASH128
    for bad in ("N/A", "", sha.upper(), sha[:-1], "g" * 64):
        assert algorithm_of(bad) is None
        assert not is_valid_digest(bad)
    h = hasher_for(sip)
    h.update(b"x")
    assert h.hexdigest() == sip
    with pytest.raises(ValueError):
        hasher_for("N/A")


@pytest.mark.parametrize("algorithm", [SHA256, SIPHASH128])
def test_hash_file(tmp_path, algorithm: str) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    full = tmp_path / "full"
    data = b"\x00\xff" * 70000
    full.write_bytes(data)

    def ref(d: bytes) -> str:
        return hashlib.sha256(d).hexdigest() if algorithm == SHA256 else siphash128(d).hex()

    assert hash_file(full, algorithm) == ref(data)
    assert hash_file(empty, algorithm) == ref(b"")


@pytest.mark.parametrize("algorithm", ["sha256", "siphash128"])
def test_hash_fd_reuses_its_buffer_without_mixing_files(tmp_path, algorithm: str) -> None:
    """Buffered hashing (a per-thread buffer up to HASH_BUFFER_MAX, mmap past it) gives each
    file's own digest, also a small file after a bigger one; a file shorter than the recorded
    size gives the digest of what it holds (no error, no stale buffer bytes)."""
    from holofs.strategies import HASH_BUFFER_MAX, _hash_fd

    def reference(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest() if algorithm == "sha256" else siphash128(data).hex()

    like = reference(b"")  # a digest of the algorithm: only its length and form matter
    sizes = [0, 1, 4096, 3 << 20, 5, HASH_BUFFER_MAX + 12345, 77]
    for i, size in enumerate(sizes):
        data = os.urandom(size)
        path = tmp_path / f"blob{i}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert _hash_fd(fd, size, like) == reference(data), size
            if size <= HASH_BUFFER_MAX:  # (mmap refuses a length past the end)
                assert _hash_fd(fd, size + 1, like) == reference(data)
        finally:
            os.close(fd)
