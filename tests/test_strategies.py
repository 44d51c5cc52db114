"""The strategy matrix on real loop-mounted filesystems (xfs reflink=1, btrfs, ext4).

What is checked for reflink: the Linker's counters *and* the extents of the result
(FIEMAP_EXTENT_SHARED via ``filefrag -v``). Files with rewrites are cloned too; then only
the blocks holding a rewrite offset are rewritten, so exactly those blocks are unshared.
"""

from __future__ import annotations

import gzip
import os
import stat

import pytest
import zstandard
from support.loopfs import loop_filesystem, shared_blocks, shared_extents
from test_materialize import TARGET_NAME, assert_restored, build_generated, opts

from holofs.catalog import FileEntry
from holofs.errors import CorruptBlob
from holofs.library import Hololib
from holofs.materializer import materialize
from holofs.relocation import Relocation
from holofs.strategies import Linker, produce_file

PLAIN = "lib/plain-256k.bin"
RELOC = "lib/reloc-256k.bin"
RELOC_AT = 100_000  # in 4 KiB block 24


def _extra(identity: bytes) -> dict[str, bytes]:
    rnd = os.urandom(256 << 10)
    reloc = bytearray(os.urandom(256 << 10))
    reloc[RELOC_AT : RELOC_AT + len(identity)] = identity
    return {PLAIN: rnd, RELOC: bytes(reloc), "data/copied.dat": os.urandom(64 << 10)}


def _restore_on(fs_root, tmp_path, **kw):
    from support.trees import IDENTITY

    lib_dir = fs_root / "hololib"
    tree, catalog, lib = build_generated(tmp_path, "none", lib_dir=lib_dir, extra=_extra(IDENTITY.encode()))
    target = fs_root / "space" / TARGET_NAME
    target.parent.mkdir()
    report = materialize(catalog, lib, target, opts(tmp_path, **kw))
    assert_restored(catalog, lib, target, check_atime=True)
    return tree, catalog, lib, target, report


@pytest.mark.root
@pytest.mark.parametrize("fstype", ["xfs", "btrfs"])
def test_reflink_on_cow_filesystems(tmp_path, fstype):
    with loop_filesystem(fstype, tmp_path) as mnt:
        tree, catalog, lib, target, report = _restore_on(mnt, tmp_path, copy_patterns=("data/*",))
        nonempty = sum(1 for d in tree.files.values() if d)
        assert report.strategies["reflink"]["files"] == nonempty - 1  # all but the copy-pattern file
        assert report.strategies["copy"]["files"] == 2  # the empty file and data/copied.dat
        assert "copy_file_range" not in report.strategies and "decompress" not in report.strategies
        os.sync()
        blocks = (256 << 10) // 4096
        assert shared_blocks(target / PLAIN) == set(range(blocks))
        # Rewritten file: cloned, then only the block holding the rewrite is unshared.
        assert shared_blocks(target / RELOC) == set(range(blocks)) - {RELOC_AT // 4096}
        assert not shared_extents(target / "data/copied.dat")


@pytest.mark.root
def test_ext4_falls_back_and_stays_exact(tmp_path):
    with loop_filesystem("ext4", tmp_path, size_mib=64) as mnt:
        _tree, _catalog, _lib, _target, report = _restore_on(mnt, tmp_path, strategy="reflink")
        assert "reflink" not in report.strategies
        # first use: each raw blob is hashed into memory and written from there
        assert report.strategies["copy"]["bytes"] > 0
        assert len(report.warnings) == 1  # reflink asked for, impossible: warned once


@pytest.mark.root
def test_copy_mode_and_cross_filesystem(tmp_path):
    with loop_filesystem("xfs", tmp_path) as mnt:
        # copy mode on a CoW filesystem: no extent is shared
        _tree, _catalog, _lib, target, report = _restore_on(mnt, tmp_path, strategy="copy")
        assert set(report.strategies) == {"copy", "symlink"}
        os.sync()
        assert not shared_extents(target / PLAIN)
    with loop_filesystem("xfs", tmp_path) as mnt:
        # library on another filesystem than the target: reflink impossible; copy_file_range where
        # the kernel allows it across filesystems (it refuses ext4 -> xfs with EXDEV), else copy
        from support.trees import IDENTITY

        tree, catalog, lib = build_generated(tmp_path / "x", "none", extra=_extra(IDENTITY.encode()))
        target = mnt / "space" / TARGET_NAME
        target.parent.mkdir()
        report = materialize(catalog, lib, target, opts(tmp_path))
        assert "reflink" not in report.strategies
        nonempty = sum(1 for d in tree.files.values() if d)
        used = {k: v["files"] for k, v in report.strategies.items() if k in ("copy_file_range", "copy")}
        assert sum(used.values()) == len(tree.files), used
        assert report.strategies.get("copy_file_range", {}).get("files", 0) in (0, nonempty)  # decided once per pair
        assert_restored(catalog, lib, target)


@pytest.mark.root
def test_hardlink_mode(tmp_path):
    with loop_filesystem("xfs", tmp_path) as mnt:
        from support.trees import IDENTITY

        tree, catalog, lib = build_generated(tmp_path, "none", lib_dir=mnt / "hololib", extra=_extra(IDENTITY.encode()))
        target = mnt / "space" / TARGET_NAME
        target.parent.mkdir()
        report = materialize(catalog, lib, target, opts(tmp_path, strategy="hardlink"))
        assert report.strategies["hardlink"]["files"] > 0
        plain = catalog.tree.subdirs["lib"].files["plain-256k.bin"]
        reloc = catalog.tree.subdirs["lib"].files["reloc-256k.bin"]
        assert os.stat(target / PLAIN).st_ino == os.stat(lib.blob_path(plain.digest)).st_ino
        # never for rewritten files
        assert os.stat(target / RELOC).st_ino != os.stat(lib.blob_path(reloc.digest)).st_ino
        assert (target / RELOC).read_bytes()[RELOC_AT : RELOC_AT + len(TARGET_NAME)] == TARGET_NAME.encode()
        # executables whose blob is 0644 are not linked (the mode would change the library)
        assert os.stat(target / "bin/python-launcher").st_mode & 0o111
        assert os.stat(target / "bin/python-launcher").st_nlink == 1
        # A rerun leaves the shared inodes (and so the library blobs) alone.
        blob_st = os.stat(lib.blob_path(plain.digest))
        again = materialize(catalog, lib, target, opts(tmp_path, strategy="hardlink"))
        assert again.files_written == 0 and again.times_fixed == 0
        after = os.stat(lib.blob_path(plain.digest))
        assert (after.st_mtime_ns, after.st_ctime_ns) == (blob_st.st_mtime_ns, blob_st.st_ctime_ns)


# --- produce_file on any filesystem --------------------------------------------------


def _lib_with(tmp_path, digest: str, blob: bytes) -> Hololib:
    lib = Hololib.create(tmp_path / "lib")
    p = lib.blob_path(digest)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(blob)
    return lib


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_decompression_bomb_stops_early(tmp_path, codec):
    import hashlib

    small = b"hello\n"
    digest = hashlib.sha256(small).hexdigest()
    huge = bytes(256 << 20)
    blob = gzip.compress(huge, 1) if codec == "gzip" else zstandard.ZstdCompressor().compress(huge)
    lib = _lib_with(tmp_path, digest, blob)
    entry = FileEntry(name="f", size=len(small), mode=0o644, digest=digest)
    linker = Linker()
    for verify in (True, False):
        with pytest.raises(CorruptBlob, match="more than the recorded 6 bytes"):
            produce_file(lib, entry, tmp_path / "out", relocation=None, verify=verify, linker=linker, label="x/f")
        assert not (tmp_path / "out").exists()


def _zstd_streamed(data: bytes) -> bytes:
    """A zstd frame without a content size in its header, as streaming compressors write."""
    import io

    out = io.BytesIO()
    zstandard.ZstdCompressor().copy_stream(io.BytesIO(data), out)
    assert zstandard.frame_content_size(out.getvalue()) == -1
    return out.getvalue()


@pytest.mark.parametrize(("content", "message"), [
    (bytes(64 << 20), "more than the recorded"),    # bomb: 64 MiB from a few KiB
    (b"hel", "decodes to 3 bytes"),                  # short
    (b"hello!", None),                               # right: decoded in one call
])
def test_zstd_frames_without_content_size(tmp_path, content, message):
    import hashlib

    good = b"hello!"
    digest = hashlib.sha256(good).hexdigest()
    lib = _lib_with(tmp_path, digest, _zstd_streamed(content))
    entry = FileEntry(name="f", size=len(good), mode=0o644, digest=digest)
    out = tmp_path / "out"
    if message is None:
        produce_file(lib, entry, out, relocation=None, verify=True, linker=Linker(), label="x/f")
        assert out.read_bytes() == good
        return
    with pytest.raises(CorruptBlob, match=message):
        produce_file(lib, entry, out, relocation=None, verify=False, linker=Linker(), label="x/f")
    assert not out.exists()


def test_rewrites_across_chunks_and_no_follow(tmp_path):
    import hashlib

    ident = b"h0123456_0123456789abcdeft"
    target = b"h9876543_fedcba9876543210t"
    data = bytearray(os.urandom(3 << 20))
    offsets = [0, (1 << 20) - 5, (2 << 20) - 1 - len(ident) + 3, len(data) - len(ident)]
    for off in offsets:
        data[off : off + len(ident)] = ident
    data = bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    entry = FileEntry(name="big", size=len(data), mode=0o755, digest=digest, rewrite=offsets)
    reloc = Relocation(ident, target, "/x")
    expected = bytearray(data)
    for off in offsets:
        expected[off : off + len(target)] = target
    for n, blob in enumerate((data, gzip.compress(data, 1), zstandard.ZstdCompressor().compress(data))):
        lib = _lib_with(tmp_path / str(n), digest, blob)
        out = tmp_path / f"out{n}"
        r = produce_file(lib, entry, out, relocation=reloc, verify=True, linker=Linker(), perm=0o755,
                         times_ns=1610000000 * 10**9)
        assert r.verified and out.read_bytes() == bytes(expected)
        assert stat.S_IMODE(out.stat().st_mode) == 0o755 and out.stat().st_mtime == 1610000000
    # dest exists / is a symlink: refused (O_EXCL | O_NOFOLLOW), nothing written through it
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(OSError):
        produce_file(lib, entry, tmp_path / "link", relocation=reloc, verify=False, linker=Linker())
    assert victim.read_bytes() == b"keep"


@pytest.mark.root
def test_no_space_is_clean(tmp_path, holofs_cli):
    """A target filesystem that fills up: one-line NoSpace error, nothing left behind."""
    extra = {f"lib/blob{i}.bin": os.urandom(1 << 20) for i in range(12)}
    tree, catalog, lib = build_generated(tmp_path, "gzip", extra=extra)
    with loop_filesystem("ext4", tmp_path, size_mib=8) as mnt:
        target = mnt / TARGET_NAME
        proc = holofs_cli("materialize", "--relocate-name-only", catalog.source, target,
                          env={"HOLOFS_CACHE": str(tmp_path / "cache")})
        assert proc.returncode != 0
        assert "no space left" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not target.exists()
        assert sorted(os.listdir(mnt)) == sorted(["lost+found", f".{TARGET_NAME}.holofs.lock"])
