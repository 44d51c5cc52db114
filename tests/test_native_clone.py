"""The native clone loop (holofs/_native.c) behind fresh reflink restores, on real filesystems.

It is an accelerator: what it does must equal :func:`produce_file`'s result, and whatever it
cannot do (compressed blob, no reflink, a name in the way, a full disk) must be left for the
Python path with nothing half-made.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import sys

import pytest
from support.loopfs import loop_filesystem, shared_blocks
from test_materialize import TARGET_NAME, assert_restored, build_generated, opts

from holofs import strategies
from holofs.catalog import FileEntry
from holofs.errors import CorruptBlob
from holofs.materializer import materialize
from holofs.strategies import Linker, clone_new_files
from holofs.verification import VerifiedStore, VerifyPolicy

MOTHER_NS = 1_610_000_000 * 10**9
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native loop is Linux-only")


def test_native_module_is_built():
    """CI installs with a compiler: the accelerator must be there (a silent fallback would
    leave the fast path untested)."""
    from holofs import _native

    assert callable(_native.clone_files)
    assert Linker("auto").native and Linker("reflink").native
    assert not Linker("copy").native and not Linker("hardlink").native


class Lib:
    """A bare library directory with blobs written raw or gzip'd."""

    def __init__(self, root) -> None:
        self.dir = root / "library"
        self.dir.mkdir(parents=True)
        self.fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        self.dev = os.fstat(self.fd).st_dev

    def put(self, data: bytes, *, compress: bool = False, mode: int = 0o644, digest: str | None = None) -> FileEntry:
        digest = digest or hashlib.sha256(data).hexdigest()
        d = self.dir / digest[0:2] / digest[2:4] / digest[4:6]
        d.mkdir(parents=True, exist_ok=True)
        (d / digest).write_bytes(gzip.compress(data) if compress else data)
        return FileEntry(name="", size=len(data), mode=mode, digest=digest)

    def close(self) -> None:
        os.close(self.fd)


def _items(entries: dict[str, FileEntry]) -> list[tuple[str, FileEntry, str, int]]:
    return [(name, e, f"d/{name}", stat.S_IMODE(e.mode)) for name, e in entries.items()]


def _clone(lib: Lib, out, entries, *, policy=VerifyPolicy.TRUSTED, store=None, linker=None):
    out.mkdir(exist_ok=True)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    linker = linker or Linker("auto")
    try:
        rest, verified = clone_new_files(lib.fd, lib.dev, fd, os.fstat(fd).st_dev, _items(entries), MOTHER_NS,
                                         linker, store, policy)
    finally:
        os.close(fd)
    return rest, verified, linker


@pytest.mark.root
def test_clones_content_mode_and_times(tmp_path):
    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        data = {"big.bin": os.urandom(64 << 10), "small.py": b"print('hi')\n", "empty": b"",
                "tool": os.urandom(8192)}
        modes = {"big.bin": 0o644, "small.py": 0o444, "empty": 0o600, "tool": 0o775}
        entries = {n: lib.put(d, mode=modes[n]) for n, d in data.items()}
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        old = os.umask(0o022)  # 0o775 loses g+w at create: the loop must fchmod it back
        try:
            rest, verified, linker = _clone(lib, mnt / "out", entries, store=store)
        finally:
            os.umask(old)
        assert rest == [] and verified == 4  # trusted, first use: every blob hashed once
        for name, content in data.items():
            st = os.lstat(mnt / "out" / name)
            assert (mnt / "out" / name).read_bytes() == content
            assert stat.S_IMODE(st.st_mode) == modes[name], name
            assert st.st_mtime_ns == st.st_atime_ns == MOTHER_NS
        os.sync()
        assert shared_blocks(mnt / "out" / "big.bin") == set(range(16))
        counters = linker.as_dict()
        assert counters["reflink"]["files"] == 3 and counters["copy"]["files"] == 1
        assert counters["reflink"]["bytes"] == (64 << 10) + 12 + 8192
        # Verified once: the next batch hashes nothing.
        _rest, verified, _ = _clone(lib, mnt / "again", entries, store=store)
        assert verified == 0
        # --verify always hashes every blob again.
        _rest, verified, _ = _clone(lib, mnt / "always", entries, store=store, policy=VerifyPolicy.ALWAYS)
        assert verified == 4
        lib.close()


@pytest.mark.root
def test_leaves_what_it_cannot_do(tmp_path):
    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        a, b, c = (lib.put(os.urandom(5000)) for _ in range(3))
        packed = lib.put(os.urandom(5000), compress=True)
        out = mnt / "out"
        out.mkdir()
        (out / "b").write_bytes(b"someone else's")
        rest, _v, linker = _clone(lib, out, {"a": a, "z": packed, "b": b, "c": c})
        # a cloned; z compressed: left, nothing created; b exists: the loop stops there and
        # leaves b and everything after it (c) to the Python path, which reports the error.
        assert rest == [1, 2, 3]
        assert (out / "a").stat().st_size == 5000
        assert not (out / "z").exists() and not (out / "c").exists()
        assert (out / "b").read_bytes() == b"someone else's"
        assert linker.native  # some blobs were raw: keep using the loop
        # A batch of compressed blobs only: the loop turns itself off for this restore.
        rest, _v, linker = _clone(lib, mnt / "packed", {"z": packed})
        assert rest == [0] and not linker.native and os.listdir(mnt / "packed") == []
        lib.close()


@pytest.mark.root
def test_corrupt_raw_blob_never_stays(tmp_path):
    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        good = os.urandom(4096)
        entry = lib.put(b"X" * 4096, digest=hashlib.sha256(good).hexdigest())  # right size, wrong bytes
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        with pytest.raises(CorruptBlob, match="corrupted hololib blob"):
            _clone(lib, mnt / "out", {"f": entry}, store=store)
        assert os.listdir(mnt / "out") == []
        # --verify skip trusts the library: the bytes are restored as they are.
        rest, verified, _ = _clone(lib, mnt / "skip", {"f": entry}, store=store, policy=VerifyPolicy.SKIP)
        assert rest == [] and verified == 0
        lib.close()


@pytest.mark.root
def test_no_reflink_leaves_everything(tmp_path):
    with loop_filesystem("ext4", tmp_path, size_mib=64) as mnt:
        lib = Lib(mnt)
        entries = {f"f{i}": lib.put(os.urandom(3000)) for i in range(4)}
        rest, _v, linker = _clone(lib, mnt / "out", entries)
        assert rest == [0, 1, 2, 3] and os.listdir(mnt / "out") == []
        assert "reflink" not in linker.as_dict()
        lib.close()


@pytest.mark.root
def test_materialize_same_result_with_and_without_the_loop(tmp_path, monkeypatch):
    """A whole fresh restore on XFS through the native loop and through the Python path."""
    from support.trees import IDENTITY

    with loop_filesystem("xfs", tmp_path) as mnt:
        extra = {f"pkg/mod{i}.py": os.urandom(3000 + i) for i in range(300)}
        extra["lib/reloc.bin"] = b"head " + IDENTITY.encode() + b" tail" * 1000
        _tree, catalog, lib = build_generated(tmp_path, "none", lib_dir=mnt / "hololib", extra=extra)
        (mnt / "space").mkdir()
        native = materialize(catalog, lib, mnt / "space" / TARGET_NAME, opts(tmp_path))
        assert_restored(catalog, lib, mnt / "space" / TARGET_NAME, check_atime=True)
        monkeypatch.setattr(strategies, "_native", None)
        (mnt / "space2").mkdir()
        python = materialize(catalog, lib, mnt / "space2" / TARGET_NAME, opts(tmp_path))
        assert_restored(catalog, lib, mnt / "space2" / TARGET_NAME, check_atime=True)
        def counts(report):
            return {k: (v["files"], v["bytes"]) for k, v in report.strategies.items()}

        assert counts(native) == counts(python)
        assert native.files_written == python.files_written
