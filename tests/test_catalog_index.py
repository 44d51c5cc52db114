"""The parsed-catalog index: same catalog as a fresh parse, only for unchanged files, private."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
from pathlib import Path

import pytest

from holofs.catalog import DirEntry, FileEntry, catalog_bytes, read_catalog, write_catalog
from holofs.catalog_index import index_path, load_catalog
from holofs.errors import CatalogError


def test_the_index_is_named_by_the_sha256_of_the_catalog_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same name whether the accelerator or hashlib computes it: caches stay valid across builds.
    monkeypatch.chdir(tmp_path)
    for name in ("c.linux_amd64", "sub/\udcff-undecodable"):
        expected = hashlib.sha256(os.path.abspath(name).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        assert os.path.basename(index_path(tmp_path / "cache", name)) == expected


def test_second_load_comes_from_the_index(rcc_catalog: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, save = load_catalog(rcc_catalog, cache)
    assert first.validated and save is not None
    save()
    index = Path(index_path(cache, rcc_catalog))
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert stat.S_IMODE(index.parent.stat().st_mode) == 0o700
    second, save2 = load_catalog(rcc_catalog, cache)
    assert save2 is None and second.validated
    assert catalog_bytes(second) == catalog_bytes(read_catalog(rcc_catalog))
    assert second.source == str(rcc_catalog) and second.identity == first.identity
    # The file's SHA-256 comes with it (a restore's fingerprint of the catalog, not hashed again).
    assert first.fingerprint == second.fingerprint == hashlib.sha256(Path(rcc_catalog).read_bytes()).hexdigest()


def test_changed_catalog_file_is_parsed_again(rcc_catalog: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_catalog(rcc_catalog, cache)[1]()
    catalog = read_catalog(rcc_catalog)
    name = next(iter(catalog.tree.files))
    catalog.tree.files[name].size += 1  # a different catalog at the same path
    data = catalog_bytes(catalog)
    os.utime(rcc_catalog, ns=(0, 0))
    with open(rcc_catalog, "r+b") as f:  # rewritten in place, mtime put back: the ctime moves
        st = os.fstat(f.fileno())
        f.write(gzip.compress(data))
        f.truncate()
    os.utime(rcc_catalog, ns=(st.st_atime_ns, st.st_mtime_ns))
    again, save = load_catalog(rcc_catalog, cache)
    assert save is not None and again.tree.files[name].size == catalog.tree.files[name].size
    assert again.fingerprint == hashlib.sha256(Path(rcc_catalog).read_bytes()).hexdigest()


def test_damaged_index_is_ignored(rcc_catalog: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_catalog(rcc_catalog, cache)[1]()
    index = Path(index_path(cache, rcc_catalog))
    for junk in (b"", b"\x00garbage", index.read_bytes()[:100]):
        index.write_bytes(junk)
        catalog, save = load_catalog(rcc_catalog, cache)
        assert save is not None and catalog.validated
        assert catalog_bytes(catalog) == catalog_bytes(read_catalog(rcc_catalog))


def test_invalid_catalog_is_refused_and_not_indexed(rcc_catalog: Path, tmp_path: Path) -> None:
    catalog = read_catalog(rcc_catalog)
    entry = next(iter(catalog.tree.files.values()))
    entry.digest = "not-hex"
    bad = write_catalog(catalog, tmp_path / "bad.catalog")
    with pytest.raises(CatalogError, match="digest"):
        load_catalog(bad, tmp_path / "cache")
    assert not os.path.exists(index_path(tmp_path / "cache", bad))


def test_materialize_uses_the_index(rcc_catalog: Path, tmp_path: Path, holofs_cli) -> None:
    cache = tmp_path / "cache"
    env = {"HOLOFS_CACHE": str(cache)}
    catalog = read_catalog(rcc_catalog)
    targets = [tmp_path / f"t{i}" / catalog.identity for i in range(2)]
    for target in targets:
        target.parent.mkdir()
        holofs_cli("materialize", "--relocate-name-only", rcc_catalog, target, env=env, check=True)
    assert os.path.isfile(index_path(cache, rcc_catalog))
    assert sorted(os.listdir(targets[0])) == sorted(os.listdir(targets[1]))


def test_shadow_subtrees_stay_packed_until_read(tmp_path: Path) -> None:
    from support.trees import IDENTITY, make_env_tree

    from holofs.catalog import LinkedDir, RowsDir, iter_dirs
    from holofs.importer import import_tree
    from holofs.library import Hololib
    from holofs.materializer import MaterializeOptions, materialize
    from holofs.restore_state import live_dirs

    env = make_env_tree(tmp_path / "src" / IDENTITY, big=False)
    assert env.dir_symlinks and env.shadow_files
    path = import_tree(env.root, tmp_path / "lib", compress="gzip", workers=2).catalog_path
    cache = tmp_path / "cache"
    parsed, save = load_catalog(path, cache)
    save()
    indexed, _ = load_catalog(path, cache)
    linked = {f"{rel}/{name}" if rel else name: sub for rel, d in live_dirs(indexed.tree)
              for name, sub in d.subdirs.items() if sub.symlink}  # (iter_dirs would look beneath)
    assert set(linked) == env.dir_symlinks
    assert all(type(d) is LinkedDir and d._packed is not None for d in linked.values())
    target = tmp_path / "out" / IDENTITY
    target.parent.mkdir()
    materialize(indexed, Hololib.open(tmp_path / "lib"), target,
                MaterializeOptions(relocate_name_only=True, cache_dir=os.fspath(cache)))
    assert all(d._packed is not None for d in linked.values())  # a restore never looks beneath
    # Nor makes FileEntry objects, but for directories it leaves to Python (symlinks in them).
    with_links = {rel for rel, d in live_dirs(parsed.tree)
                  if any(f.symlink for f in d.files.values()) or any(s.symlink for s in d.subdirs.values())}
    rows = dict(live_dirs(indexed.tree))
    assert all(type(d) is RowsDir for d in rows.values()) and len(rows) > len(with_links) + 3
    assert all(d._rows is not None for rel, d in rows.items() if rel not in with_links)
    assert indexed.tree == parsed.tree and parsed.tree == indexed.tree  # unpacked on demand, both ways
    assert all(d._packed is None for d in linked.values()) and all(d._rows is None for d in rows.values())
    seen = {f"{rel}/{name}" for rel, d in iter_dirs(indexed.tree) for name in d.files}
    assert env.shadow_files <= seen
    assert catalog_bytes(indexed) == catalog_bytes(parsed)


def test_linked_contents_read_by_many_threads_at_once_or_changed(tmp_path: Path) -> None:
    import threading

    from holofs.catalog import Catalog, LinkedDir

    link = DirEntry(name="lib64", mode=0o20000000755, symlink="lib")
    for i in range(20000):  # decoding takes longer than a GIL switch interval
        sub = link.subdirs[f"d{i}"] = DirEntry(name=f"d{i}", shadow=True)
        sub.files["f"] = FileEntry("f", i, 0o644, "ab" * 16, [], "")
    ident = "h0c0ffee_1111111111111111t"
    tree = DirEntry(name="", subdirs={"lib": DirEntry(name="lib"), "lib64": link})
    path = write_catalog(Catalog(identity=ident, path=f"/holotree/{ident}", tree=tree), tmp_path / "catalog")
    cache = tmp_path / "cache"
    load_catalog(path, cache)[1]()
    indexed, save = load_catalog(path, cache)
    lazy = indexed.tree.subdirs["lib64"]
    assert save is None and type(lazy) is LinkedDir and not lazy.contents_decoded
    start, seen = threading.Barrier(8), []

    def read() -> None:
        start.wait()
        seen.append(len(lazy.subdirs))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [20000] * 8 and lazy == link and lazy.contents_decoded
    again = load_catalog(path, cache)[0].tree.subdirs["lib64"]
    os.utime(path)  # the catalog file is no longer the one indexed (a new ctime)
    with pytest.raises(CatalogError, match="changed while in use .beneath 'lib64'"):
        _ = again.files
