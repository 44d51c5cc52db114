"""The native fast path of fresh reflink restores (holofs/_native.c, holofs/fastclone.py), on
real filesystems.

It is an accelerator: what it does must equal the general path's result, and whatever it
cannot do (a bad or undecodable blob, no reflink, a name in the way, a full disk) must be left for the
Python path with nothing half-made.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import resource
import stat
import sys

import pytest
from support.loopfs import loop_filesystem, shared_blocks
from test_materialize import TARGET_NAME, assert_restored, build_generated, opts

from holofs import fastclone
from holofs.catalog import DirEntry, FileEntry
from holofs.digest import siphash128
from holofs.errors import CorruptBlob
from holofs.materializer import materialize
from holofs.strategies import Linker
from holofs.verification import VerifiedStore, VerifyPolicy

MOTHER_NS = 1_610_000_000 * 10**9
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native loop is Linux-only")


def test_native_module_is_built():
    """CI installs with a compiler: the accelerator must be there (a silent fallback would
    leave the fast path untested)."""
    from holofs import _native

    assert callable(_native.build_tree)
    assert fastclone.available(Linker("auto")) and fastclone.available(Linker("reflink"))
    assert not fastclone.available(Linker("copy")) and not fastclone.available(Linker("hardlink"))


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


def _tree(files: dict[str, FileEntry]) -> list[tuple[str, DirEntry]]:
    """``live_dirs`` order (parents first) for a tree of ``{"a/b/name": entry}``."""
    root = DirEntry(name="")
    nodes = {"": root}
    for path, entry in files.items():
        parent = ""
        for part in path.split("/")[:-1]:
            rel = f"{parent}/{part}" if parent else part
            if rel not in nodes:
                nodes[rel] = nodes[parent].subdirs[part] = DirEntry(name=part)
            parent = rel
        nodes[parent].files[path.rsplit("/", 1)[-1]] = entry
    return sorted(nodes.items(), key=lambda item: (item[0].count("/") if item[0] else -1, item[0]))


def _clone(lib: Lib, out, files, *, policy=VerifyPolicy.TRUSTED, store=None, linker=None, threads=4, progress=None,
           ident=b""):
    """clone_tree into a fresh directory ``out``: (result, linker, the directory fds it left open)."""
    out.mkdir(exist_ok=True)
    fds = {"": os.open(out, os.O_RDONLY | os.O_DIRECTORY)}
    linker = linker or Linker("auto")
    store = store or VerifiedStore(out.parent / "cache-default", buffered=True)
    try:
        result = fastclone.clone_tree(lib.fd, lib.dev, fds, os.fstat(fds[""]).st_dev, _tree(files),
                                      perm=lambda mode: stat.S_IMODE(mode), ident=ident, linker=linker,
                                      store=store, policy=policy, times_ns=MOTHER_NS, dir_mode=0o750,
                                      threads=threads, progress=progress)
    finally:
        for fd in fds.values():
            os.close(fd)
    return result, linker


@pytest.mark.parametrize("digest", ["../../../etc/passwd", "ABCDEF0123", "abc", "ab/cd/ef/abcdef", "abcdef\u00e9", 7])
def test_blob_paths_come_only_from_hex_digests(tmp_path, digest):
    """The native call builds each blob's path from its digest: anything but lowercase hex is
    refused before a file is made, so no path can lead outside the library."""
    lib = Lib(tmp_path)
    (tmp_path / "out").mkdir()
    root = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises((ValueError, TypeError)):
            fastclone._native.build_tree(lib.fd, root, [-1], [""], [0], [digest], ["x"], [0o644], [0], [()], b"", b"",
                                         0, 0o755, MOTHER_NS, 2, 1, 1, None)
    finally:
        os.close(root)
        lib.close()
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.root
def test_clones_content_mode_and_times(tmp_path):
    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        data = {"big.bin": os.urandom(64 << 10), "a/small.py": b"print('hi')\n", "a/b/c/empty": b"",
                "a/b/c/d/tool": os.urandom(8192)}
        data.update({f"pkg/m{i}.py": os.urandom(100 + i) for i in range(200)})  # several units per directory
        modes = {"big.bin": 0o644, "a/small.py": 0o444, "a/b/c/empty": 0o600, "a/b/c/d/tool": 0o775}
        entries = {n: lib.put(d, mode=modes.get(n, 0o644)) for n, d in data.items()}
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        done: list[int] = []
        old = os.umask(0o022)  # 0o775 loses g+w at create: the loop must fchmod it back
        try:
            result, linker = _clone(lib, mnt / "out", entries, store=store, progress=done.append)
        finally:
            os.umask(old)
        assert result.left == {} and result.written == len(data)
        assert result.verified == len(data)  # trusted, first use: every blob hashed once
        assert sum(done) == len(data)
        for name, content in data.items():
            st = os.lstat(mnt / "out" / name)
            assert (mnt / "out" / name).read_bytes() == content
            assert stat.S_IMODE(st.st_mode) == modes.get(name, 0o644), name
            assert st.st_mtime_ns == st.st_atime_ns == MOTHER_NS
        for d in ("a", "a/b", "a/b/c", "a/b/c/d", "pkg"):
            assert stat.S_IMODE(os.lstat(mnt / "out" / d).st_mode) == 0o750 & ~0o022
        os.sync()
        assert shared_blocks(mnt / "out" / "big.bin") == set(range(16))
        counters = linker.as_dict()
        assert counters["reflink"]["files"] == len(data) - 1 and counters["copy"]["files"] == 1
        assert counters["reflink"]["bytes"] == sum(len(d) for d in data.values())
        # Verified once: the next tree hashes nothing; --verify always hashes every blob again.
        assert _clone(lib, mnt / "again", entries, store=store)[0].verified == 0
        assert _clone(lib, mnt / "always", entries, store=store, policy=VerifyPolicy.ALWAYS)[0].verified == len(data)
        lib.close()


@pytest.mark.root
def test_relocates_on_top_of_the_clone(tmp_path):
    """Rewrite offsets get the target's identity by pwrite on the clone (raw blob) or in the
    decoded buffer (gzip blob): only the rewritten blocks stop being shared; an offset range
    outside the file is left to the general path (which reports it)."""
    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        old, new = b"h0123456_0123456789abcdeft", b"h9876543_fedcba9876543210t"
        raw = bytearray(os.urandom(64 << 10))
        raw[100:100 + len(old)] = old
        raw[40000:40000 + len(old)] = old
        small = b"#!" + old + b"/bin/python\n" * 20
        entries = {"bin/tool": lib.put(bytes(raw)), "bin/script": lib.put(small, compress=True),
                   "bin/bad": lib.put(b"x" * 100)}
        entries["bin/tool"].rewrite = [100, 40000]
        entries["bin/script"].rewrite = [2]
        entries["bin/bad"].rewrite = [90]  # 90 + 26 > 100
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        store.mark_verified_stat(entries["bin/script"].digest, os.stat(_blob_path(lib, entries["bin/script"])))
        result, _ = _clone(lib, mnt / "out", entries, store=store, ident=new)
        assert result.left == {"bin": ["bad"]}
        want = bytearray(raw)
        want[100:100 + len(new)] = new
        want[40000:40000 + len(new)] = new
        assert (mnt / "out" / "bin" / "tool").read_bytes() == bytes(want)
        assert (mnt / "out" / "bin" / "script").read_bytes() == small.replace(old, new)
        os.sync()
        assert shared_blocks(mnt / "out" / "bin" / "tool") == set(range(16)) - {0, 9}
        lib.close()


@pytest.mark.root
def test_leaves_what_it_cannot_do(tmp_path):
    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        entries = {f"d/f{i}": lib.put(os.urandom(5000)) for i in range(100)}
        entries["d/packed"] = lib.put(os.urandom(5000), compress=True)
        entries["x/link"] = FileEntry(name="", size=0, mode=0o777 | stat.S_IFLNK, digest="", symlink="../d/f1")
        result, _ = _clone(lib, mnt / "out", entries)
        # A symlink is left, nothing made for it; a compressed blob (mixed library) is decoded,
        # hashed as it is used first.
        assert result.left == {"x": ["link"]} and result.written == 101 and result.verified == 101
        assert not (mnt / "out" / "x" / "link").exists()
        assert (mnt / "out" / "d" / "packed").stat().st_size == 5000
        # A name in the way (EEXIST) stops every thread: what was not made is left, the file in
        # the way is untouched, nothing is half-made.
        flat = {f"r{i}": lib.put(os.urandom(3000 + i)) for i in range(100)}
        (mnt / "busy").mkdir()
        (mnt / "busy" / "r50").write_bytes(b"someone else's")
        result, _ = _clone(lib, mnt / "busy", flat)
        left = result.left[""]
        assert "r50" in left and result.written + len(left) == 100
        assert (mnt / "busy" / "r50").read_bytes() == b"someone else's"
        assert sorted(os.listdir(mnt / "busy")) == sorted(set(flat) - set(left) | {"r50"})
        # A directory that cannot be made (a file in its place): its files are all left.
        (mnt / "blocked").mkdir()
        (mnt / "blocked" / "d").write_bytes(b"a file where a directory belongs")
        result, _ = _clone(lib, mnt / "blocked", entries)
        assert len(result.left["d"]) == 101 and result.written == 0
        assert (mnt / "blocked" / "d").read_bytes() == b"a file where a directory belongs"
        lib.close()


def _blob_path(lib: Lib, entry: FileEntry):
    d = entry.digest
    return lib.dir / d[0:2] / d[2:4] / d[4:6] / d


@pytest.mark.root
def test_decodes_compressed_blobs_and_hashes_them_first_time(tmp_path):
    """gzip (several members too) and zstd blobs are decoded natively. Under --verify trusted
    one the record does not cover yet (first use, a replaced blob file) is hashed as it is
    decoded and then recorded; a blob covered by the record is not hashed again. A blob whose
    content is not what its digest says, or that does not decode, is left to the Python path
    (which reports it), nothing made for it."""
    import zstandard

    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        data = {f"pkg/g{i}.py": os.urandom(50) * (i + 1) for i in range(40)}
        data["pkg/empty"] = b""
        data["z/big.bin"] = os.urandom(1 << 20) + bytes(1 << 20)
        entries = {name: lib.put(content, compress=True, mode=0o755 if name.endswith("0.py") else 0o644)
                   for name, content in data.items()}
        _blob_path(lib, entries["z/big.bin"]).write_bytes(zstandard.ZstdCompressor().compress(data["z/big.bin"]))
        two = b"first member " * 50 + b"second member " * 50
        entries["pkg/members"] = e = lib.put(two, compress=True)
        _blob_path(lib, e).write_bytes(gzip.compress(two[:650]) + gzip.compress(two[650:]))
        data["pkg/members"] = two
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        # First use, trusted: every blob hashed while decoded, and recorded.
        result, linker = _clone(lib, mnt / "first", entries, store=store)
        assert result.left == {} and result.written == len(data) and result.verified == len(data)
        for name, content in data.items():
            st = os.lstat(mnt / "first" / name)
            assert (mnt / "first" / name).read_bytes() == content, name
            assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(entries[name].mode)
            assert st.st_mtime_ns == MOTHER_NS
        assert linker.as_dict()["decompress"]["files"] == len(data)
        store.flush()
        reread = VerifiedStore(tmp_path / "cache")
        assert all(reread.is_verified_stat(entry.digest, os.stat(_blob_path(lib, entry))) for entry in entries.values())
        # Recorded: decoded again without hashing.
        result, _ = _clone(lib, mnt / "out", entries, store=store)
        assert result.left == {} and result.written == len(data) and result.verified == 0
        assert (mnt / "out" / "z" / "big.bin").read_bytes() == data["z/big.bin"]
        # A blob file replaced after it was verified (new inode) is hashed again (and is right);
        # a corrupt one whose identity still matches fails to decode: left, nothing made.
        victim, corrupt = entries["pkg/g3.py"], entries["pkg/g5.py"]
        path = _blob_path(lib, victim)
        path.with_suffix(".new").write_bytes(path.read_bytes())
        os.replace(path.with_suffix(".new"), path)
        with open(_blob_path(lib, corrupt), "r+b") as f:
            f.seek(12)
            f.write(b"\xff" * 8)
        store2 = VerifiedStore(tmp_path / "cache2", buffered=True)
        for name, entry in entries.items():
            if name != "pkg/g3.py":
                store2.mark_verified_stat(entry.digest, os.stat(_blob_path(lib, entry)))
        result, _ = _clone(lib, mnt / "again", entries, store=store2)
        assert result.left == {"pkg": ["g5.py"]} and result.verified == 1
        assert not (mnt / "again" / "pkg" / "g5.py").exists()
        assert (mnt / "again" / "pkg" / "g3.py").read_bytes() == data["pkg/g3.py"]
        # Right size, decodes, but not the content its digest names: left when hashed (trusted
        # first use, always), made as it is with --verify skip.
        liar = lib.put(b"A" * 300, compress=True, digest=hashlib.sha256(b"B" * 300).hexdigest())
        for policy in (VerifyPolicy.TRUSTED, VerifyPolicy.ALWAYS):
            result, _ = _clone(lib, mnt / f"liar-{policy}", {"pkg/liar": liar}, policy=policy)
            assert result.left == {"pkg": ["liar"]} and os.listdir(mnt / f"liar-{policy}" / "pkg") == []
        result, _ = _clone(lib, mnt / "liar-skip", {"pkg/liar": liar}, policy=VerifyPolicy.SKIP)
        assert result.left == {} and (mnt / "liar-skip" / "pkg" / "liar").read_bytes() == b"A" * 300
        # --verify always hashes a recorded blob again.
        result, _ = _clone(lib, mnt / "always", {"pkg/g1.py": entries["pkg/g1.py"]}, store=store,
                           policy=VerifyPolicy.ALWAYS)
        assert result.left == {} and result.verified == 1
        assert (mnt / "always" / "pkg" / "g1.py").read_bytes() == data["pkg/g1.py"]
        lib.close()


@pytest.mark.root
def test_hashes_raw_blobs_natively_as_rcc_does(tmp_path):
    """First use under --verify trusted: raw blobs named by SHA-256 or by RCC's SipHash-2-4-128
    (every tail length, empty too) are hashed in C, found right, cloned and recorded."""
    with loop_filesystem("xfs", tmp_path) as mnt:
        lib = Lib(mnt)
        data = {f"s/{n}": os.urandom(n) for n in [*range(18), 1000, 65537]}
        entries = {name: lib.put(content, digest=siphash128(content).hex()) for name, content in data.items()}
        data["h/sha"] = os.urandom(5000)
        entries["h/sha"] = lib.put(data["h/sha"])
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        result, _ = _clone(lib, mnt / "out", entries, store=store)
        assert result.left == {} and result.written == len(data) and result.verified == len(data)
        assert all((mnt / "out" / name).read_bytes() == content for name, content in data.items())
        assert _clone(lib, mnt / "again", entries, store=store)[0].verified == 0
        lib.close()


@pytest.mark.root
def test_corrupt_raw_blob_never_stays(tmp_path):
    """A raw blob hashed natively is hashed before its clone: a bad one is left (the general
    path names it), nothing made. One too big to hash natively is cloned, hashed afterwards,
    and on a mismatch removed again with CorruptBlob."""
    with loop_filesystem("xfs", tmp_path, size_mib=512) as mnt:
        lib = Lib(mnt)
        good = os.urandom(4096)
        entry = lib.put(b"X" * 4096, digest=hashlib.sha256(good).hexdigest())  # right size, wrong bytes
        sip = lib.put(b"Y" * 100, digest="0" * 32)  # a SipHash-named raw blob (RCC's compress.no)
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        for policy in (VerifyPolicy.TRUSTED, VerifyPolicy.ALWAYS):
            result, _ = _clone(lib, mnt / f"out-{policy}", {"sub/f": entry, "sub/s": sip}, store=store, policy=policy)
            assert sorted(result.left["sub"]) == ["f", "s"] and result.written == 0
            assert os.listdir(mnt / f"out-{policy}" / "sub") == []
        # --verify skip trusts the library: the bytes are restored as they are.
        result, _ = _clone(lib, mnt / "skip", {"sub/f": entry}, store=store, policy=VerifyPolicy.SKIP)
        assert result.left == {} and result.verified == 0
        big = lib.put(bytes(fastclone._native.HASH_MAX + 1), digest=hashlib.sha256(b"other").hexdigest())
        with pytest.raises(CorruptBlob, match="sub/big: corrupted hololib blob"):
            _clone(lib, mnt / "big", {"sub/big": big}, store=store)
        assert os.listdir(mnt / "big" / "sub") == []
        lib.close()


@pytest.mark.root
def test_copies_raw_files_where_reflink_is_impossible(tmp_path):
    """ext4 cannot share extents: raw files are copied natively instead (written from memory
    when the blob was just hashed, else by copy_file_range), relocated on top, with modes and
    times; compressed ones are still decoded; --strategy reflink warns once."""
    with loop_filesystem("ext4", tmp_path, size_mib=64) as mnt:
        lib = Lib(mnt)
        old, new = b"h0123456_0123456789abcdeft", b"h9876543_fedcba9876543210t"
        data = {f"f{i}": os.urandom(3000 + i) for i in range(4)}
        data["big"] = os.urandom(3 << 20)
        data["tool"] = b"#!" + old + b"/bin/python\n" + os.urandom(5000)
        entries = {name: lib.put(content, mode=0o755 if name == "tool" else 0o644) for name, content in data.items()}
        entries["tool"].rewrite = [2]
        packed = os.urandom(100) * 30
        entries["packed"] = lib.put(packed, compress=True)
        data["packed"] = packed
        want = dict(data, tool=data["tool"].replace(old, new))
        store = VerifiedStore(tmp_path / "cache", buffered=True)
        for run, counted in (("first", "copy"), ("again", "copy_file_range")):  # hashed first, then trusted
            result, linker = _clone(lib, mnt / run, entries, store=store, ident=new, linker=Linker("reflink"))
            assert result.left == {} and result.written == len(want)
            for name, content in want.items():
                st = os.lstat(mnt / run / name)
                assert (mnt / run / name).read_bytes() == content, (run, name)
                assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(entries[name].mode)
                assert st.st_mtime_ns == MOTHER_NS
            counters = linker.as_dict()
            assert "reflink" not in counters and counters["decompress"]["files"] == 1
            assert counters[counted]["files"] == 6, (run, counters)
            assert linker.reflink_known((lib.dev, lib.dev)) is False
            assert any("reflink is impossible" in w for w in linker.warnings)
            store.flush()
        lib.close()


def test_raises_a_low_open_file_limit(tmp_path):
    """Every directory stays open during a restore: more than a soft limit of 1024 is common;
    materialize raises the soft limit (up to the hard one) instead of failing with EMFILE."""
    extra = {f"pkgs/p{i}/__init__.py": b"x = %d\n" % i for i in range(400)}
    _tree, catalog, lib = build_generated(tmp_path, "none", extra=extra)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    try:
        (tmp_path / "space").mkdir()
        materialize(catalog, lib, tmp_path / "space" / TARGET_NAME, opts(tmp_path))
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 400
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert_restored(catalog, lib, tmp_path / "space" / TARGET_NAME, check_atime=True)


@pytest.mark.root
@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_materialize_same_result_with_and_without_the_loop(tmp_path, monkeypatch, compress):
    """Whole fresh restores on XFS through the native path and through the Python path (for a
    compressed library, after a first restore has verified its blobs)."""
    from support.trees import IDENTITY

    with loop_filesystem("xfs", tmp_path) as mnt:
        extra = {f"pkg/mod{i}.py": os.urandom(3000 + i) for i in range(300)}
        extra["lib/reloc.bin"] = b"head " + IDENTITY.encode() + b" tail" * 1000
        _tree, catalog, lib = build_generated(tmp_path, compress, lib_dir=mnt / "hololib", extra=extra)
        if compress != "none":
            (mnt / "first").mkdir()
            materialize(catalog, lib, mnt / "first" / TARGET_NAME, opts(tmp_path))
        (mnt / "space").mkdir()
        fast: list[fastclone.ClonedTree] = []
        real = fastclone.clone_tree
        monkeypatch.setattr(fastclone, "clone_tree", lambda *a, **kw: fast.append(real(*a, **kw)) or fast[-1])
        native = materialize(catalog, lib, mnt / "space" / TARGET_NAME, opts(tmp_path))
        assert_restored(catalog, lib, mnt / "space" / TARGET_NAME, check_atime=True)
        assert fast[-1].written > 300  # the native path made them (the rewritten file was left)
        monkeypatch.setattr(fastclone, "_native", None)
        (mnt / "space2").mkdir()
        python = materialize(catalog, lib, mnt / "space2" / TARGET_NAME, opts(tmp_path))
        assert_restored(catalog, lib, mnt / "space2" / TARGET_NAME, check_atime=True)

        def counts(report):
            return {k: (v["files"], v["bytes"]) for k, v in report.strategies.items()}

        assert counts(native) == counts(python)
        assert native.files_written == python.files_written
        assert native.native_files == fast[-1].written and python.native_files == 0  # reported in --json


def test_flatten_rows_gives_build_tree_its_lists() -> None:
    """Each directory's rows become build_tree's lists; symlinks and rewrite ranges outside
    their file are left (as (directory, name)); rewrites are kept only with an identity to
    write; each mode is mapped once through perm."""
    rows = [
        [("a", 10, 0o644, "aa" * 32, (), ""), ("link", 0, 0o777, "", (), "a")],
        [],
        [("b", 12, 0o755, "bb" * 32, (2,), ""), ("far", 4, 0o644, "cc" * 32, (1,), ""), ("c", 5, 0o644, "dd" * 32, (), "")],
    ]
    calls: list[int] = []

    def perm(mode: int) -> int:
        calls.append(mode)
        return mode | 0o1000

    for ident_len, kept_rewrites, left in [(4, [(), (2,), ()], [(0, "link"), (2, "far")]),
                                           (0, [(), (), (), ()], [(0, "link")])]:
        calls.clear()
        perms: dict[int, int] = {}
        got = fastclone._native.flatten_rows(rows, perms, perm, ident_len)
        file_dirs, digests, names, modes, sizes, rewrites, leave = got
        expected_names = ["a", "b", "c"] if ident_len else ["a", "b", "far", "c"]
        assert names == expected_names and leave == left
        assert file_dirs == ([0, 2, 2] if ident_len else [0, 2, 2, 2])
        assert digests == [{"a": "aa", "b": "bb", "far": "cc", "c": "dd"}[n] * 32 for n in names]
        assert sizes == [{"a": 10, "b": 12, "far": 4, "c": 5}[n] for n in names]
        assert modes == [{"a": 0o1644, "b": 0o1755, "far": 0o1644, "c": 0o1644}[n] for n in names]
        assert rewrites == kept_rewrites and sorted(calls) == [0o644, 0o755] and perms == {0o644: 0o1644, 0o755: 0o1755}
    with pytest.raises(TypeError):
        fastclone._native.flatten_rows([[("a", 1, 0o644, "aa" * 32)]], {}, perm, 0)
