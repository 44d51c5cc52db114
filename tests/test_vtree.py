"""The virtual tree without any mount: inode table, attributes, errors, open/read via the cache."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from support.fusemount import expected_snapshot

from holofs.cache import CacheFiller, FileCache
from holofs.catalog import MOTHER_TIME, Catalog, DirEntry, FileEntry, LinkedDir, iter_files, read_catalog, write_catalog
from holofs.errors import HolofsError, NotFound, ReadOnly
from holofs.library import Hololib
from holofs.modes import GO_DIR
from holofs.relocation import plan_relocation
from holofs.verification import VerifyPolicy
from holofs.vtree import ROOT_INO, VirtualTree


def _tree_for(catalog_path: Path, tmp_path: Path, target_identity: str) -> tuple[VirtualTree, dict]:
    catalog = read_catalog(catalog_path)
    lib = Hololib.of_catalog(catalog_path)
    target = tmp_path / "base" / target_identity
    relocation = plan_relocation(catalog, target, allow_name_only=True)
    filler = CacheFiller(FileCache(tmp_path / "cache"), lib, relocation, verify=VerifyPolicy.TRUSTED)
    return VirtualTree(catalog, filler), expected_snapshot(catalog, lib, target_identity)


def _walk(tree: VirtualTree, ino: int = ROOT_INO, prefix: str = "") -> dict[str, tuple]:
    out = {}
    for name, attr, _next in tree.readdir(ino):
        path = f"{prefix}{name}"
        perm = stat.S_IMODE(attr.mode)
        if stat.S_ISLNK(attr.mode):
            out[path] = ("link", tree.readlink(attr.ino))
        elif attr.is_dir:
            out[path] = ("dir", perm, attr.time_ns // 10**9)
            out.update(_walk(tree, attr.ino, path + "/"))
        else:
            handle = tree.open(attr.ino, os.O_RDONLY)
            try:
                data = tree.read(handle, 0, attr.size + 10)
            finally:
                tree.release(handle)
            out[path] = ("file", perm, attr.size, attr.time_ns // 10**9, data)
    return out


def test_rcc_fixture_tree_equals_a_restore(rcc_catalog: Path, tmp_path: Path) -> None:
    tree, expected = _tree_for(rcc_catalog, tmp_path, "h59acff1_493f813dad24d3X")
    assert _walk(tree) == expected
    assert tree.open_handles == 0
    # the relocated identity really is in the activation script
    script = expected["rcc_activate.sh"][4]
    assert b"h59acff1_493f813dad24d3X" in script and b"h59acff1_493f813dad24d3t" not in script


def test_attributes_and_lookup(rcc_catalog: Path, tmp_path: Path) -> None:
    tree, _ = _tree_for(rcc_catalog, tmp_path, "h59acff1_493f813dad24d3t")
    root = tree.getattr(ROOT_INO)
    assert stat.S_ISDIR(root.mode) and stat.S_IMODE(root.mode) == 0o750
    assert root.nlink == 4  # '.', '..' and two subdirectories
    assert root.uid == os.getuid() and root.gid == os.getgid()
    script = tree.lookup_path("rcc_activate.sh")
    assert stat.S_IMODE(script.mode) == 0o755 and script.size == 231 and script.nlink == 1
    assert script.time_ns == MOTHER_TIME * 10**9
    assert tree.lookup(ROOT_INO, ".").ino == ROOT_INO and tree.lookup(ROOT_INO, "..").ino == ROOT_INO
    ssl = tree.lookup_path("ssl")
    assert tree.lookup(ssl.ino, "..").ino == ROOT_INO
    assert tree.statfs().files == len(tree) == 12


def test_readdir_resumes_at_offset(rcc_catalog: Path, tmp_path: Path) -> None:
    tree, _ = _tree_for(rcc_catalog, tmp_path, "h59acff1_493f813dad24d3t")
    full = list(tree.readdir(ROOT_INO))
    names = [name for name, _a, _n in full]
    assert names == sorted(names) and "conda-meta" in names and "rcc_plan.log" in names
    for name, _attr, next_id in full[:-1]:
        resumed = [n for n, _a, _o in tree.readdir(ROOT_INO, next_id)]
        assert resumed == names[names.index(name) + 1:]
    assert list(tree.readdir(ROOT_INO, len(full))) == []


def test_errors_carry_errno(rcc_catalog: Path, tmp_path: Path) -> None:
    tree, _ = _tree_for(rcc_catalog, tmp_path, "h59acff1_493f813dad24d3t")
    with pytest.raises(NotFound) as missing:
        tree.lookup(ROOT_INO, "nope")
    assert missing.value.errno == errno.ENOENT
    script = tree.lookup_path("rcc_activate.sh").ino
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        with pytest.raises(ReadOnly) as ro:
            tree.open(script, flags)
        assert ro.value.errno == errno.EROFS
    with pytest.raises(HolofsError) as isdir:
        tree.open(tree.lookup_path("ssl").ino)
    assert isdir.value.errno == errno.EISDIR
    with pytest.raises(HolofsError) as notdir:
        tree.lookup(script, "x")
    assert notdir.value.errno == errno.ENOTDIR
    with pytest.raises(HolofsError) as notlink:
        tree.readlink(script)
    assert notlink.value.errno == errno.EINVAL
    with pytest.raises(HolofsError) as badino:
        tree.getattr(10**6)
    assert badino.value.errno == errno.ENOENT
    with pytest.raises(HolofsError) as badfh:
        tree.read(12345, 0, 1)
    assert badfh.value.errno == errno.EBADF


def _file(name: str, size: int = 3, mode: int = 0o644, symlink: str = "") -> FileEntry:
    return FileEntry(name=name, size=size, mode=mode, digest="ab" * 32, symlink=symlink)


def test_symlinks_and_shadow_subtrees_as_rcc_restores_them() -> None:
    shadow_dir = DirEntry(name="inner", shadow=True, files={"deep.txt": _file("deep.txt")})
    linked = DirEntry(name="lib64", symlink="lib", mode=GO_DIR | 0o777, subdirs={"inner": shadow_dir},
                      files={"shadowed.so": _file("shadowed.so")})
    real = DirEntry(name="lib", files={"a.so": _file("a.so", mode=0o755), "link.so": _file("link.so", symlink="a.so")})
    root = DirEntry(name="", subdirs={"lib": real, "lib64": linked})
    tree = VirtualTree(Catalog(identity="x", path="/x", tree=root))
    assert [n for n, _a, _o in tree.readdir(ROOT_INO)] == ["lib", "lib64"]
    lib64 = tree.lookup_path("lib64")
    assert stat.S_ISLNK(lib64.mode) and lib64.size == 3 and tree.readlink(lib64.ino) == "lib"
    with pytest.raises(HolofsError):
        tree.lookup(lib64.ino, "shadowed.so")  # a symlink has no children
    link = tree.lookup_path("lib/link.so")
    assert stat.S_ISLNK(link.mode) and tree.readlink(link.ino) == "a.so" and link.size == len("a.so")
    assert stat.S_IMODE(tree.lookup_path("lib/a.so").mode) == 0o755
    assert tree.getattr(ROOT_INO).nlink == 3  # lib only; lib64 is a symlink
    assert len(tree) == 5  # root, lib, lib64, a.so, link.so: nothing of the shadow subtree


def test_serving_a_read_catalog_never_decodes_the_shadow_subtree(tmp_path: Path) -> None:
    """What a parsed catalog keeps undecoded beneath ``lib64 -> lib`` stays so however much of
    the mount is walked: the mount serves the link, never its recorded contents."""
    shadow_dir = DirEntry(name="inner", shadow=True, files={"deep.txt": _file("deep.txt")})
    linked = DirEntry(name="lib64", symlink="lib", mode=GO_DIR | 0o777, subdirs={"inner": shadow_dir})
    real = DirEntry(name="lib", subdirs={"sub": DirEntry(name="sub", files={"b.py": _file("b.py")})},
                    files={"a.so": _file("a.so", mode=0o755)})
    ident = "h0c0ffee_1111111111111111t"
    path = write_catalog(Catalog(identity=ident, path=f"/holotree/{ident}",
                                 tree=DirEntry(name="", subdirs={"lib": real, "lib64": linked})), tmp_path / "catalog")
    catalog = read_catalog(path)
    lazy = catalog.tree.subdirs["lib64"]
    assert type(lazy) is LinkedDir and not lazy.contents_decoded
    tree = VirtualTree(catalog)
    stack, seen = [ROOT_INO], 0
    while stack:
        for _name, attr, _off in tree.readdir(stack.pop()):
            seen += 1
            if stat.S_ISDIR(attr.mode):
                stack.append(attr.ino)
    tree.statfs()
    assert seen == 5 and tree.readlink(tree.lookup_path("lib64").ino) == "lib"
    assert not lazy.contents_decoded
    assert lazy.subdirs == {"inner": shadow_dir} and lazy.contents_decoded  # decoded when read


def test_large_catalog_table_is_consistent() -> None:
    root = DirEntry(name="")
    for d in range(40):
        sub = root.subdirs[f"pkg{d:02d}"] = DirEntry(name=f"pkg{d:02d}")
        for f in range(500):
            sub.files[f"m{f:03d}.py"] = _file(f"m{f:03d}.py", size=f)
    tree = VirtualTree(Catalog(identity="x", path="/x", tree=root))
    assert len(tree) == 1 + 40 + 40 * 500
    attr = tree.lookup_path("pkg17/m321.py")
    assert attr.size == 321 and tree.path_of(attr.ino) == "pkg17/m321.py"
    assert sum(1 for _ in tree.readdir(tree.lookup_path("pkg39").ino)) == 500
    assert tree.statfs().blocks == -(-40 * sum(range(500)) // 4096)


def test_directories_are_numbered_when_first_looked_into() -> None:
    """A mount is ready without walking the catalog: constructing the tree numbers only the
    root; a lookup numbers the directories on its way; inode numbers never change."""
    root = DirEntry(name="")
    for d in range(40):
        sub = root.subdirs[f"pkg{d:02d}"] = DirEntry(name=f"pkg{d:02d}")
        sub.subdirs["sub"] = DirEntry(name="sub", files={"x.py": _file("x.py", size=7)})
        for f in range(50):
            sub.files[f"m{f:02d}.py"] = _file(f"m{f:02d}.py", size=f)
    tree = VirtualTree(Catalog(identity="x", path="/x", tree=root))
    assert len(tree.names) - 1 == 1  # the root only
    deep = tree.lookup_path("pkg17/sub/x.py")
    assert len(tree.names) - 1 == 1 + 40 + 51 + 1  # root, its children, pkg17's, sub's
    assert tree.getattr(tree.lookup_path("pkg17").ino).nlink == 3
    seen: dict[str, int] = {}
    for d in reversed(range(40)):  # another order than numbering
        pkg = tree.lookup_path(f"pkg{d:02d}")
        for name, attr, _next in tree.readdir(pkg.ino):
            seen[f"pkg{d:02d}/{name}"] = attr.ino
            if attr.is_dir:
                for sub_name, sub_attr, _n in tree.readdir(attr.ino):
                    seen[f"pkg{d:02d}/{name}/{sub_name}"] = sub_attr.ino
    assert seen["pkg17/sub/x.py"] == deep.ino == tree.lookup_path("pkg17/sub/x.py").ino
    assert len(set(seen.values())) == len(seen) == 40 * 52
    assert all(tree.path_of(ino) == path for path, ino in seen.items())
    assert len(tree) == tree.statfs().files == 1 + 40 * 53


def test_first_miss_in_a_directory_prefetches_its_small_files(tmp_path: Path) -> None:
    """Read-ahead: opening one file fills its directory's other small modules in the background
    (not big ones, not data or type stubs, not other directories); the files read afterwards are
    exact and cached once."""
    import time

    from support.trees import IDENTITY

    from holofs import vtree as vtree_module
    from holofs.importer import import_tree

    src = tmp_path / "src" / IDENTITY
    (src / "pkg" / "sub").mkdir(parents=True)
    small = {f"pkg/m{i}.py": os.urandom(100 + i) for i in range(17)}
    small |= {"pkg/_ext.cpython-311-x86_64-linux-gnu.so": b"\x7fELF", "pkg/libdep.so.1.2": b"\x7fELF2",
              "pkg/setup.pth": b"import x\n", "pkg/m0.pyi": b"def f() -> int: ...\n", "pkg/data.csv": b"a,b\n"}
    small["pkg/sub/other.py"] = b"other\n"
    big = os.urandom(vtree_module.PREFETCH_MAX_SIZE + 1)
    for rel, data in {**small, "pkg/big.bin": big}.items():
        (src / rel).write_bytes(data)
    result = import_tree(src, tmp_path / "lib")
    catalog = read_catalog(result.catalog_path)
    lib = Hololib.open(tmp_path / "lib")
    for prefetch in (False, True):
        filler = CacheFiller(FileCache(tmp_path / f"cache-{prefetch}"), lib, None, verify=VerifyPolicy.TRUSTED)
        tree = VirtualTree(catalog, filler, prefetch=prefetch)
        pkg = tree.lookup(ROOT_INO, "pkg").ino
        handle = tree.open(tree.lookup(pkg, "m0.py").ino)
        assert tree.read(handle, 0, 1000) == small["pkg/m0.py"]
        tree.release(handle)
        deadline = time.monotonic() + 30
        while prefetch and sum(filler.fills.values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # anything else that would (wrongly) be prefetched gets its chance
        assert sum(filler.fills.values()) == (20 if prefetch else 1)
        for rel in [r for r in small if r.count("/") == 1 and not r.endswith((".pyi", ".csv"))]:
            handle = tree.open(tree.lookup(pkg, rel.split("/")[1]).ino)
            assert tree.read(handle, 0, 1000) == small[rel]
            tree.release(handle)
        assert sum(filler.fills.values()) == 20 and max(filler.fills.values()) == 1  # each filled once
        tree.close()


def test_read_ahead_fills_shared_libraries_and_what_they_load(tmp_path: Path) -> None:
    """A directory's big shared libraries are read ahead too (one by one, on their own thread),
    and so is every library a filled shared library loads from the tree through an
    ``$ORIGIN`` RUNPATH (auditwheel's ``<dist>.libs``), also after a foreground fill; nothing
    outside those."""
    import time

    from support.elf import shared_library
    from support.trees import IDENTITY

    from holofs import vtree as vtree_module
    from holofs.importer import import_tree

    src = tmp_path / "src" / IDENTITY
    libs = src / "pkg.libs"
    base = shared_library(libs / "libbase-9f.so.2", symbol="b")
    dep = shared_library(libs / "libdep-1a.so.1", needs=(base,), runpath="$ORIGIN", symbol="g")
    shared_library(src / "pkg" / "_ext.so", needs=(dep,), runpath="$ORIGIN/../pkg.libs")
    shared_library(src / "other" / "_solo.so", needs=(dep,), runpath="$ORIGIN/../pkg.libs", symbol="s")
    shared_library(libs / "libunused-77.so", symbol="u")
    (src / "pkg" / "__init__.py").write_text("from . import _ext\n")
    big = os.urandom(vtree_module.PREFETCH_MAX_SIZE + 1)
    (src / "pkg" / "_big.so").write_bytes(big)
    (src / "pkg" / "big.bin").write_bytes(big[::-1])
    catalog = read_catalog(import_tree(src, tmp_path / "lib").catalog_path)
    lib = Hololib.open(tmp_path / "lib")

    digests = {path: entry.digest for path, entry, _ in iter_files(catalog.tree)}

    def filled_after(tree: VirtualTree, filler: CacheFiller, path: str, count: int) -> set[str]:
        os.close(tree.fill(tree.lookup_path(path).ino))
        deadline = time.monotonic() + 30
        while sum(filler.fills.values()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # anything else that would (wrongly) be read ahead gets its chance
        assert max(filler.fills.values()) == 1  # each filled once
        filled = {key.rsplit("/", 1)[1] for key in filler.fills}
        return {p for p, digest in digests.items() if digest in filled}

    filler = CacheFiller(FileCache(tmp_path / "cache-a"), lib, None, verify=VerifyPolicy.TRUSTED)
    tree = VirtualTree(catalog, filler, prefetch=True)
    try:
        got = filled_after(tree, filler, "pkg/__init__.py", 5)
        assert got == {"pkg/__init__.py", "pkg/_ext.so", "pkg/_big.so", "pkg.libs/libdep-1a.so.1",
                       "pkg.libs/libbase-9f.so.2"}
    finally:
        tree.close()

    filler = CacheFiller(FileCache(tmp_path / "cache-b"), lib, None, verify=VerifyPolicy.TRUSTED)
    tree = VirtualTree(catalog, filler, prefetch=True)
    try:  # a library opened first (the dynamic linker's open): its needs follow
        assert filled_after(tree, filler, "other/_solo.so", 3) == {
            "other/_solo.so", "pkg.libs/libdep-1a.so.1", "pkg.libs/libbase-9f.so.2"}
    finally:
        tree.close()


def test_reads_by_inode_keep_one_fd_each_and_close_the_oldest(rcc_catalog: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-open read path: read_inode answers None until the file is filled; fill + keep give
    the content; a second fill of the same inode closes its own fd and keeps the first; past
    INODE_FDS_MAX the least recently read inode's fd is closed; close() closes the rest."""
    import holofs.vtree as vtree_mod

    tree, expected = _tree_for(rcc_catalog, tmp_path, "h59acff1_493f813dad24d3X")
    files = sorted((path, entry) for path, entry in expected.items() if entry[0] == "file" and entry[2])[:3]
    assert len(files) == 3
    monkeypatch.setattr(vtree_mod, "INODE_FDS_MAX", 2)
    inos = [tree.lookup_path(path).ino for path, _ in files]
    assert tree.read_inode(inos[0], 0, 1 << 20) is None  # not in the cache yet: no blocking work here
    kept = tree.keep_inode_fd(inos[0], tree.fill(inos[0]))
    spare = tree.fill(inos[0])  # a concurrent fill of the same file
    assert tree.keep_inode_fd(inos[0], spare) == kept
    with pytest.raises(OSError):
        os.fstat(spare)  # closed: the first fd stays the one read from
    assert tree.read_inode(inos[0], 0, 1 << 20) == files[0][1][4]
    tree.keep_inode_fd(inos[1], tree.fill(inos[1]))
    tree.keep_inode_fd(inos[2], tree.fill(inos[2]))  # the third: the oldest (inos[0]) is closed
    assert tree.inode_fds == 2
    with pytest.raises(OSError):
        os.fstat(kept)
    for (path, entry), ino in zip(files, inos, strict=True):
        assert tree.read_inode(ino, 0, 1 << 20) == entry[4], path  # inos[0] reopened from the cache
    assert tree.read_inode(inos[0], 1, 3) == files[0][1][4][1:4]
    fds = list(tree._inode_fds.values())
    tree.close()
    assert tree.inode_fds == 0
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
