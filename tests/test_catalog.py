"""Catalog model, reader and writer against RCC's own catalog, Go JSON, Go modes."""

from __future__ import annotations

import gzip
import json
import stat
from pathlib import Path

import pytest

from holofs.catalog import (
    Catalog,
    DirEntry,
    FileEntry,
    catalog_bytes,
    catalog_name,
    dumps_go,
    gunzip,
    iter_dirs,
    iter_files,
    read_catalog,
    write_catalog,
)
from holofs.errors import CatalogError, NotFound
from holofs.modes import (
    GO_DIR,
    GO_SETGID,
    GO_SETUID,
    GO_STICKY,
    GO_SYMLINK,
    go_to_posix,
    permissions,
    posix_to_go,
)

RCC_FILES = {
    "golden-ee.yaml": (67, 0o644),
    "identity.yaml": (56, 0o644),
    "rcc_activate.json": (78, 0o644),
    "rcc_activate.sh": (231, 0o755),
    "rcc_plan.log": (1891, 0o644),
    "conda-meta/ca-certificates-2021.10.8-ha878542_0.json": (1845, 0o644),
    "conda-meta/history": (457, 0o644),
    "ssl/cacert.pem": (265969, 0o644),
    "ssl/cert.pem": (265969, 0o644),
}


def test_rcc_fixture_top_level(rcc_catalog: Path) -> None:
    cat = read_catalog(rcc_catalog)
    assert cat.identity == "h59acff1_493f813dad24d3t"
    assert cat.path == "/home/user/.robocorp/holotree/h59acff1_493f813dad24d3t"
    assert cat.base_dir == "/home/user/.robocorp/holotree"
    assert cat.platform == "linux_amd64"
    assert cat.blueprint == "c34ed96c2d8a459a"
    assert cat.lifted is True
    assert cat.rcc is None
    assert cat.source == str(rcc_catalog)
    assert catalog_name(cat.blueprint, cat.platform) == rcc_catalog.name


def test_rcc_fixture_exact_tree(rcc_catalog: Path) -> None:
    cat = read_catalog(rcc_catalog)
    files = {path: (f.size, go_to_posix(f.mode) & 0o7777) for path, f, _ in iter_files(cat.tree)}
    assert files == RCC_FILES
    dirs = dict(iter_dirs(cat.tree))
    assert sorted(dirs) == ["", "conda-meta", "ssl"]
    for node in dirs.values():
        assert node.mode == 2147484141
        assert go_to_posix(node.mode) == stat.S_IFDIR | 0o755
        assert not node.is_symlink and not node.shadow
    for _, f, _ in iter_files(cat.tree):
        assert not f.is_symlink and len(f.digest) == 64
        assert stat.S_ISREG(go_to_posix(f.mode))


def test_rcc_fixture_shared_digest_and_rewrites(rcc_catalog: Path) -> None:
    cat = read_catalog(rcc_catalog)
    by_path = {path: f for path, f, _ in iter_files(cat.tree)}
    assert by_path["ssl/cacert.pem"].digest == by_path["ssl/cert.pem"].digest
    assert len({f.digest for f in by_path.values()}) == 8
    assert by_path["rcc_activate.sh"].rewrite == [161]
    assert by_path["conda-meta/history"].rewrite == [278]
    assert by_path["golden-ee.yaml"].rewrite == []


def test_catalog_bytes_reproduce_rccs_json_exactly(rcc_catalog: Path) -> None:
    original = gzip.decompress(rcc_catalog.read_bytes())
    assert catalog_bytes(read_catalog(rcc_catalog)) == original


def test_write_then_read_roundtrip(tmp_path: Path, rcc_catalog: Path) -> None:
    cat = read_catalog(rcc_catalog)
    out = write_catalog(cat, tmp_path / "catalog" / rcc_catalog.name)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(rcc_catalog.read_bytes())
    info = json.loads((out.parent / (out.name + ".info")).read_text())
    assert info == {"identity": cat.identity, "path": cat.path, "controller": "", "space": "",
                    "platform": "linux_amd64", "blueprint": "c34ed96c2d8a459a"}
    assert [p.name for p in out.parent.iterdir() if ".part" in p.name] == []


def test_symlinks_shadow_and_rcc_field_roundtrip(tmp_path: Path) -> None:
    tree = DirEntry(name="")
    link = DirEntry(name="lib64", symlink="lib")
    link.subdirs["x"] = DirEntry(name="x", shadow=True)
    link.files["f"] = FileEntry(name="f", size=1, mode=0o644, digest="N/A")
    tree.subdirs["lib64"] = link
    tree.files["py"] = FileEntry(name="py", size=3, mode=0o755, digest="ab" * 32, symlink="python3.11")
    cat = Catalog(identity="id", path="/b/id", tree=tree, platform="linux_amd64", blueprint="b", lifted=True,
                  rcc="holofs-9")
    text = catalog_bytes(cat).decode()
    assert text.startswith('{\n  "rcc": "holofs-9",\n  "identity": "id",')
    assert '"symlink": "lib",\n' in text and '"shadow": true' in text
    back = read_catalog(write_catalog(cat, tmp_path / "c"))
    assert back.rcc == "holofs-9"
    assert back.tree.subdirs["lib64"].symlink == "lib"
    assert back.tree.subdirs["lib64"].subdirs["x"].shadow is True
    assert back.tree.files["py"].symlink == "python3.11"
    assert catalog_bytes(back) == catalog_bytes(cat)


def test_go_json_escaping() -> None:
    value = {"k<>&": "a<b>c&d", "ctl": "\x00\x01\x1f\t\n\r\"\\", "uni": "ünï\u2028\u2029", "n": [1, True, None], "e": {},
             "l": []}
    text = dumps_go(value).decode()
    assert '"k\\u003c\\u003e\\u0026": "a\\u003cb\\u003ec\\u0026d"' in text
    assert '"ctl": "\\u0000\\u0001\\u001f\\t\\n\\r\\"\\\\"' in text
    assert '"uni": "ünï\\u2028\\u2029"' in text
    assert '"e": {}' in text and '"l": []' in text
    assert text.startswith('{\n  "k')
    assert json.loads(text) == value


@pytest.mark.parametrize(
    ("posix", "go"),
    [
        (stat.S_IFREG | 0o644, 0o644),
        (stat.S_IFREG | 0o755, 0o755),
        (stat.S_IFDIR | 0o755, GO_DIR | 0o755),
        (stat.S_IFLNK | 0o777, GO_SYMLINK | 0o777),
        (stat.S_IFREG | stat.S_ISUID | 0o755, GO_SETUID | 0o755),
        (stat.S_IFREG | stat.S_ISGID | 0o750, GO_SETGID | 0o750),
        (stat.S_IFDIR | stat.S_ISVTX | 0o777, GO_DIR | GO_STICKY | 0o777),
    ],
)
def test_mode_conversion_both_ways(posix: int, go: int) -> None:
    assert posix_to_go(posix) == go
    assert go_to_posix(go) == posix


def test_permissions_drop_special_bits_unless_asked() -> None:
    go = GO_SETUID | GO_STICKY | 0o755
    assert permissions(go) == 0o755
    assert permissions(go, keep_special=True) == stat.S_ISUID | stat.S_ISVTX | 0o755
    assert permissions(2147484141) == 0o755


def _gz(tmp_path: Path, name: str, payload: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(gzip.compress(payload))
    return p


def test_read_errors_are_one_line_catalog_errors(tmp_path: Path, rcc_catalog: Path) -> None:
    with pytest.raises(NotFound):
        read_catalog(tmp_path / "missing")
    (tmp_path / "plain").write_text("not gzip")
    with pytest.raises(CatalogError, match="not a gzip stream"):
        read_catalog(tmp_path / "plain")
    (tmp_path / "trunc").write_bytes(rcc_catalog.read_bytes()[:200])
    with pytest.raises(CatalogError, match="truncated or corrupt"):
        read_catalog(tmp_path / "trunc")
    with pytest.raises(CatalogError, match="invalid JSON"):
        read_catalog(_gz(tmp_path, "badjson", b"{nope"))
    with pytest.raises(CatalogError, match="no 'tree'"):
        read_catalog(_gz(tmp_path, "notree", b'{"identity": "x"}'))
    with pytest.raises(CatalogError, match="is a directory"):
        read_catalog(tmp_path)


def _outcome(fn, data: bytes) -> object:
    try:
        return fn(data)
    except Exception as exc:  # the type and the message are what must agree
        return f"{type(exc).__name__}: {exc}"


def test_gunzip_is_gzip_decompress() -> None:
    """zlib-ng inflates the usual stream; every other case gives gzip.decompress's own result or error."""
    good = gzip.compress(b'{"tree": {}}' * 500)
    tiny = gzip.compress(b"x")
    cases = {
        "good": good, "empty": b"", "magic only": good[:2], "header only": good[:10],
        "truncated": good[: len(good) // 2], "no trailer": good[:-8],
        "corrupt": good[:12] + bytes(b ^ 0xFF for b in good[12:40]) + good[40:],
        "bad crc": good[:-8] + bytes(4) + good[-4:], "bad length": good[:-4] + b"\1\0\0\0",
        "bad method": good[:2] + b"\x07" + good[3:], "two members": good + gzip.compress(b"more"),
        "zero padding": good + bytes(8), "trailing garbage": good + b"garbage",
        "wrong header crc": tiny[:3] + b"\x02" + tiny[4:10] + b"\0\0" + tiny[10:],  # zlib checks it, gzip does not
    }
    for name, data in cases.items():
        assert _outcome(gunzip, data) == _outcome(gzip.decompress, data), name


def test_malformed_entries_name_the_entry(tmp_path: Path) -> None:
    def cat_with(files: dict) -> bytes:
        return json.dumps({"identity": "i", "path": "/p/i", "tree": {"name": "", "mode": GO_DIR | 0o755,
                           "subdirs": {"d": {"name": "d", "mode": GO_DIR | 0o755, "subdirs": {}, "files": files}},
                           "files": {}}}).encode()

    good = {"name": "f", "size": 1, "mode": 420, "digest": "x", "rewrite": None}
    assert read_catalog(_gz(tmp_path, "ok", cat_with({"f": good}))).tree.subdirs["d"].files["f"].rewrite == []
    cases = {
        "keymismatch": ({"g": good}, "d/g"),
        "nosize": ({"f": {k: v for k, v in good.items() if k != "size"}}, "missing field 'size'"),
        "boolsize": ({"f": {**good, "size": True}}, "must be a number"),
        "badrewrite": ({"f": {**good, "rewrite": ["1"]}}, "rewrite offsets must be integers"),
        "notobj": ({"f": [1]}, "expected an object"),
    }
    for name, (files, message) in cases.items():
        with pytest.raises(CatalogError, match=message):
            read_catalog(_gz(tmp_path, name, cat_with(files)))


@pytest.mark.parametrize("oddity", ["big-number", "lone-surrogate", "bom", "nan"])
def test_fast_json_decoding_reads_what_json_reads(tmp_path: Path, oddity: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalogs are decoded by orjson when it takes them, else by json: a catalog that orjson
    refuses or reads differently (a number past 64 bits becomes a float) comes out as json
    reads it, or fails with json's error."""
    import holofs.catalog as catalog_module
    from holofs.catalog import catalog_to_json

    assert catalog_module._fast_json() is not None  # a declared dependency: the fast path is what runs
    files = {"a": {"name": "a", "size": 3, "mode": 420, "digest": "ab" * 32, "rewrite": []}}
    text = json.dumps({"identity": "h0c0ffee_x", "path": "/h/h0c0ffee_x", "tree": {"name": "", "mode": 2147484141,
                                                                                  "subdirs": {}, "files": files}})
    if oddity == "big-number":
        text = text.replace('"size": 3', '"size": 123456789012345678901234567890')
    elif oddity == "lone-surrogate":
        text = text.replace('"path": "/h/h0c0ffee_x"', '"path": "/h/h0c0ffee_x", "controller": "\\ud800"')
    elif oddity == "bom":
        text = "\ufeff" + text
    else:
        text = text.replace('"size": 3', '"size": NaN')
    path = tmp_path / "catalog"
    path.write_bytes(gzip.compress(text.encode("utf-8", "surrogatepass")))

    def outcome() -> object:
        try:
            return catalog_to_json(read_catalog(path))
        except CatalogError as exc:
            return str(exc)

    fast = outcome()
    monkeypatch.setattr(catalog_module, "_fast_json", lambda: None)
    assert fast == outcome()
    if oddity == "big-number":
        assert read_catalog(path).tree.files["a"].size == 123456789012345678901234567890
    elif oddity == "nan":
        assert "wrong type" in str(fast)
