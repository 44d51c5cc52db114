"""validate_catalog: one test per class of malformed or hostile catalog, plus the valid cases."""

from __future__ import annotations

import pytest
from support.hostile import (
    READER_REJECTS,
    RECORDED,
    VALIDATION_MUTATIONS,
    World,
    make_world,
    symlinked_dir_with_shadow_files,
)

from holofs.catalog import DirEntry, FileEntry, read_catalog
from holofs.errors import CatalogError
from holofs.modes import GO_DIR, GO_SETUID, GO_STICKY, GO_SYMLINK
from holofs.validate import validate_catalog


@pytest.fixture
def world(tmp_path) -> World:
    return make_world(tmp_path / "sandbox")


def _assert_names(exc: CatalogError, entry: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    if entry:
        assert repr(entry) in msg, msg
    else:
        assert msg.startswith("catalog:"), msg


def test_valid_world_passes(world: World) -> None:
    validate_catalog(world.catalog)
    validate_catalog(world.catalog, windows=True, case_insensitive=True)


def test_rcc_fixture_passes(rcc_catalog) -> None:
    validate_catalog(read_catalog(rcc_catalog))


@pytest.mark.parametrize("mutation", sorted(VALIDATION_MUTATIONS))
def test_rejected_in_memory(world: World, mutation: str) -> None:
    entry = VALIDATION_MUTATIONS[mutation](world)
    with pytest.raises(CatalogError) as info:
        validate_catalog(world.catalog)
    _assert_names(info.value, entry)


@pytest.mark.parametrize("mutation", sorted(VALIDATION_MUTATIONS))
def test_rejected_after_round_trip(world: World, mutation: str) -> None:
    """The same attack written to disk and read back is refused by the reader or the validator."""
    entry = VALIDATION_MUTATIONS[mutation](world)
    world.save()
    with pytest.raises(CatalogError) as info:
        validate_catalog(read_catalog(world.catalog_path))
    if mutation not in READER_REJECTS:
        _assert_names(info.value, entry)


def test_symlink_entries_are_data(world: World) -> None:
    """Symlinks pointing anywhere, with digest N/A and odd modes, are allowed."""
    root = world.catalog.tree
    root.files["to-etc"] = FileEntry(name="to-etc", size=0, mode=GO_SYMLINK | 0o777, digest="N/A",
                                     symlink="/etc/passwd")
    root.files["up"] = FileEntry(name="up", size=3, mode=0o644, digest="whatever", rewrite=[99],
                                 symlink="../../../../../../tmp")
    validate_catalog(world.catalog)


def test_symlink_target_with_nul_rejected(world: World) -> None:
    world.catalog.tree.files["bad"] = FileEntry(name="bad", size=0, mode=0o777, digest="N/A", symlink="a\0b")
    with pytest.raises(CatalogError, match="NUL"):
        validate_catalog(world.catalog)


def test_symlinked_dir_with_shadow_children_passes(world: World) -> None:
    symlinked_dir_with_shadow_files(world)
    validate_catalog(world.catalog)


def test_shadow_files_need_no_valid_digest(world: World) -> None:
    lib = world.dir("lib")
    lib.symlink = "/usr/lib"
    lib.files["x"] = FileEntry(name="x", size=1, mode=0o644, digest="N/A", rewrite=[500])
    validate_catalog(world.catalog)


def test_nested_non_shadow_beneath_shadow_rejected(world: World) -> None:
    lib = world.dir("lib")
    lib.symlink = "../sentinel"
    lib.subdirs["a"] = DirEntry(name="a", shadow=True, subdirs={"b": DirEntry(name="b")})
    with pytest.raises(CatalogError) as info:
        validate_catalog(world.catalog)
    _assert_names(info.value, "lib/a/b")


def test_entries_beneath_a_symlinked_dir_are_checked_when_read(world: World) -> None:
    """A read catalog's contents beneath a symlinked directory (never restored or served) are
    decoded and checked only when read; a directory there not marked shadow is refused at once."""
    lib = world.dir("lib")
    lib.symlink = "/usr/lib"
    lib.subdirs["a"] = DirEntry(name="a", shadow=True, files={"..": FileEntry(name="..", size=1, mode=0o644, digest="N/A")})
    world.save()
    catalog = read_catalog(world.catalog_path)
    validate_catalog(catalog)
    with pytest.raises(CatalogError) as info:
        _ = catalog.tree.subdirs["lib"].files
    _assert_names(info.value, "lib/a/..")
    lib.subdirs["a"].files.clear()
    lib.subdirs["a"].subdirs["b"] = DirEntry(name="b", shadow=True, subdirs={"c": DirEntry(name="c")})
    world.save()
    with pytest.raises(CatalogError) as info:
        validate_catalog(read_catalog(world.catalog_path))
    _assert_names(info.value, "lib/a/b/c")


def test_root_symlink_rejected(world: World) -> None:
    world.catalog.tree.symlink = "/etc"
    with pytest.raises(CatalogError, match="root"):
        validate_catalog(world.catalog)


def test_offsets_at_the_edge_and_overlapping_are_fine(world: World) -> None:
    e = world.entry("etc/config")
    last = e.size - len(RECORDED)
    e.rewrite = [last, 0, last, 3]  # unsorted, duplicated, overlapping: all inside the file
    validate_catalog(world.catalog)
    e.rewrite = [last + 1]
    with pytest.raises(CatalogError, match="outside the file"):
        validate_catalog(world.catalog)


def test_offset_into_file_shorter_than_identity(world: World) -> None:
    e = world.entry("README")
    e.rewrite = [0]
    with pytest.raises(CatalogError):
        validate_catalog(world.catalog)


def test_non_integer_offsets_rejected(world: World) -> None:
    world.entry("etc/config").rewrite = [0, "1"]  # type: ignore[list-item]
    with pytest.raises(CatalogError, match="integers"):
        validate_catalog(world.catalog)


def test_siphash_digests_and_special_bits_allowed(world: World) -> None:
    e = world.entry("README")
    e.digest = "0123456789abcdef0123456789abcdef"
    e.mode = GO_SETUID | 0o755
    world.dir("lib").mode = GO_DIR | GO_STICKY | 0o777
    validate_catalog(world.catalog)


def test_windows_separators(world: World) -> None:
    entry = world.entry("README")
    world.catalog.tree.files.pop("README")
    entry.name = "a\\b"
    world.catalog.tree.files["a\\b"] = entry
    validate_catalog(world.catalog, windows=False)  # a legal (if odd) POSIX name
    with pytest.raises(CatalogError) as info:
        validate_catalog(world.catalog, windows=True)
    _assert_names(info.value, "a\\b")


def test_windows_drive_names(world: World) -> None:
    world.catalog.tree.subdirs["C:"] = DirEntry(name="C:")
    with pytest.raises(CatalogError):
        validate_catalog(world.catalog, windows=True)


def test_case_collisions_on_case_insensitive_systems(world: World) -> None:
    root = world.catalog.tree
    root.subdirs["LIB"] = DirEntry(name="LIB", symlink="../sentinel", mode=GO_DIR | 0o755)
    validate_catalog(world.catalog, case_insensitive=False)
    with pytest.raises(CatalogError, match="only in case"):
        validate_catalog(world.catalog, case_insensitive=True)


def test_overlong_and_invalid_unicode_names(world: World) -> None:
    root = world.catalog.tree
    root.files["é" * 127] = FileEntry(name="é" * 127, size=0, mode=0o644, digest="N/A", symlink="x")
    validate_catalog(world.catalog)  # 254 bytes
    root.files["é" * 128] = FileEntry(name="é" * 128, size=0, mode=0o644, digest="N/A", symlink="x")
    with pytest.raises(CatalogError, match="longer than 255"):
        validate_catalog(world.catalog)
    del root.files["é" * 128]
    root.files["\ud800"] = FileEntry(name="\ud800", size=0, mode=0o644, digest="N/A", symlink="x")
    with pytest.raises(CatalogError, match="Unicode"):
        validate_catalog(world.catalog)


def test_windows_style_recorded_path(world: World) -> None:
    world.catalog.path = "C:\\Users\\me\\AppData\\Local\\robocorp\\holotree\\" + RECORDED
    validate_catalog(world.catalog)


def test_large_catalog(world: World) -> None:
    """200k entries validate (speed is measured in the report, not asserted here)."""
    root = world.catalog.tree
    for i in range(200):
        d = DirEntry(name=f"d{i}")
        root.subdirs[d.name] = d
        for j in range(1000):
            d.files[f"f{j}"] = FileEntry(name=f"f{j}", size=100, mode=0o644, digest="ab" * 32)
    validate_catalog(world.catalog)
    d.files["f999"].digest = "AB" * 32
    with pytest.raises(CatalogError) as info:
        validate_catalog(world.catalog)
    _assert_names(info.value, "d199/f999")


@pytest.mark.parametrize("digest", ["AB" * 32, "ab" * 15 + "g" * 2, "é" * 32, "ab" * 16 + " " * 32])
def test_a_bad_digest_is_named_before_a_later_problem(world: World, digest: str) -> None:
    """Digests are checked in one pass after the walk, but the error still names the first bad
    entry in walk order, as if each were checked where it is met."""
    root = world.catalog.tree
    root.files.clear()
    root.files["a"] = FileEntry(name="a", size=1, mode=0o644, digest=digest)
    root.files["b"] = FileEntry(name="b", size=-1, mode=0o644, digest="ab" * 32)
    with pytest.raises(CatalogError, match="digest") as info:
        validate_catalog(world.catalog)
    _assert_names(info.value, "a")
    root.files["a"].digest = "ab" * 32
    with pytest.raises(CatalogError, match="size") as info:
        validate_catalog(world.catalog)
    _assert_names(info.value, "b")
