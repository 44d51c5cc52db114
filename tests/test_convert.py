"""holofs library convert: in-place, verified re-encoding; materialize stays byte-identical."""

from __future__ import annotations

import json

from test_materialize import TARGET_NAME, build_generated, snapshot

from holofs.library import GZIP_MAGIC, ZSTD_MAGIC, Hololib


def _encodings(lib: Hololib, sizes: dict[str, int]) -> set[str]:
    out = set()
    for digest in lib.iter_digests():
        head = lib.blob_path(digest).read_bytes()
        if lib.blob_path(digest).stat().st_size == sizes[digest]:
            out.add("none")
        elif head.startswith(GZIP_MAGIC):
            out.add("gzip")
        elif head.startswith(ZSTD_MAGIC):
            out.add("zstd")
        else:
            out.add("?")
    return out


def test_round_trip_gzip_zstd_none_gzip(tmp_path, holofs_cli):
    tree, catalog, lib = build_generated(tmp_path, "gzip")
    sizes = {}
    from holofs.catalog import iter_files

    for _rel, entry, _p in iter_files(catalog.tree, include_shadow=False):
        if not entry.symlink:
            sizes[entry.digest] = entry.size
    env = {"HOLOFS_CACHE": str(tmp_path / "cache")}
    (tmp_path / "ref").mkdir()
    holofs_cli("materialize", "--relocate-name-only", catalog.source, tmp_path / "ref" / TARGET_NAME, env=env,
               check=True)
    reference = snapshot(tmp_path / "ref" / TARGET_NAME)
    assert reference
    for n, to in enumerate(["zstd", "none", "gzip"]):
        proc = holofs_cli("library", "convert", lib.root, "--to", to, "--json", check=True)
        result = json.loads(proc.stdout)
        assert result["converted"] == len(sizes) and not result["corrupt"]
        assert result["compress_no_marker"] != "set"  # SHA-256 digests: the marker stays off
        assert _encodings(lib, sizes) == {to}
        assert not lib.compress_no
        assert not [p for p in lib.library_dir.rglob("*") if ".part" in p.name]
        out = tmp_path / f"out{n}"
        out.mkdir()
        proc = holofs_cli("materialize", "--json", "--verify", "always", "--relocate-name-only", catalog.source,
                          out / TARGET_NAME, env=env, check=True)
        assert snapshot(out / TARGET_NAME) == reference, to
        if to == "none":
            assert json.loads(proc.stdout)["strategies"].get("decompress") is None
    # Converting to what it already is changes nothing.
    result = json.loads(holofs_cli("library", "convert", lib.root, "--to", "gzip", "--json", check=True).stdout)
    assert result["converted"] == 0 and result["unchanged"] == len(sizes)


def test_marker_only_for_matching_digests(tmp_path, holofs_cli):
    tree, catalog, lib = build_generated(tmp_path, "none")  # SipHash digests + compress.no
    assert lib.compress_no
    result = json.loads(holofs_cli("library", "convert", lib.root, "--to", "zstd", "--json", check=True).stdout)
    assert lib.compress_no and result["compress_no_marker"].startswith("unchanged")  # still SipHash names
    lib.set_compress_no(False)
    result = json.loads(holofs_cli("library", "convert", lib.root, "--to", "none", "--json", check=True).stdout)
    assert lib.compress_no and result["compress_no_marker"] == "set"


def test_corrupt_blob_left_alone(tmp_path, holofs_cli):
    tree, catalog, lib = build_generated(tmp_path, "none")
    digest = next(d for d in lib.iter_digests() if lib.blob_path(d).stat().st_size > 100)
    blob = lib.blob_path(digest)
    bad = bytearray(blob.read_bytes())
    bad[50] ^= 0xFF
    blob.write_bytes(bytes(bad))
    proc = holofs_cli("library", "convert", lib.root, "--to", "gzip")
    assert proc.returncode != 0 and digest in proc.stderr and "Traceback" not in proc.stderr
    assert blob.read_bytes() == bytes(bad)  # untouched, still raw
    assert not [p for p in lib.library_dir.rglob("*") if ".part" in p.name]
