"""What the kernel caches of a mount, observed through the daemon's request counters
(``stats.json`` ``requests``): missing names, xattr refusals, long directory listings."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from support.fusemount import mounted, requires_fuse
from support.trees import IDENTITY

from holofs.importer import import_tree

pytestmark = [requires_fuse, pytest.mark.fuse]

RCC_TARGET = "h59acff1_493f813dad24d3X"
OTHER_ID = IDENTITY[:-1] + "X"
BIG_DIR_FILES = 3000


def _requests(m, kind: str) -> int:
    return m.stats()["requests"].get(kind, 0)


def test_missing_names_are_asked_once(rcc_catalog: Path, tmp_path: Path) -> None:
    with mounted(rcc_catalog, tmp_path / "base" / RCC_TARGET, cache=tmp_path / "cache",
                 args=("--relocate-name-only", "--read-only")) as m:
        missing = [m.mountpoint / "no-such-file", m.mountpoint / "identity.yaml.pyc",
                   m.mountpoint / "conda-meta" / "__pycache__"]
        before = _requests(m, "lookup")
        for path in missing:
            assert not path.exists()
        first = _requests(m, "lookup")
        assert first > before
        for _ in range(3):
            for path in missing:
                with pytest.raises(FileNotFoundError):
                    os.stat(path)
        assert _requests(m, "lookup") == first  # answered from the kernel's negative entries
        assert (m.mountpoint / "identity.yaml").is_file()


def test_xattrs_are_refused_once(rcc_catalog: Path, tmp_path: Path) -> None:
    with mounted(rcc_catalog, tmp_path / "base" / RCC_TARGET, cache=tmp_path / "cache",
                 args=("--relocate-name-only", "--read-only")) as m:
        paths = [m.mountpoint / "identity.yaml", m.mountpoint / "conda-meta", m.mountpoint / "conda-meta" / "history"]
        for path in paths * 2:
            with pytest.raises(OSError) as exc:
                os.getxattr(path, "user.holofs")
            assert exc.value.errno == errno.EOPNOTSUPP
            with pytest.raises(OSError) as exc:
                os.listxattr(path)
            assert exc.value.errno == errno.EOPNOTSUPP
        stats = m.stats()["requests"]
        assert stats.get("getxattr", 0) <= 1 and stats.get("listxattr", 0) <= 1, stats


def test_long_listing_is_complete_every_time(tmp_path: Path) -> None:
    src = tmp_path / "base" / IDENTITY
    names = sorted(f"module_with_a_long_name_{i:05d}.py" for i in range(BIG_DIR_FILES))
    (src / "pkg").mkdir(parents=True)
    for name in names:
        (src / "pkg" / name).write_bytes(name.encode())
    catalog = import_tree(src, tmp_path / "hololib").catalog_path
    with mounted(catalog, tmp_path / "base" / OTHER_ID, cache=tmp_path / "cache", args=("--read-only",)) as m:
        pkg = m.mountpoint / "pkg"
        before = _requests(m, "readdir")
        assert sorted(os.listdir(pkg)) == names
        per_listing = _requests(m, "readdir") - before
        assert per_listing > 2  # several chunks: offsets beyond the first one are served too
        for _ in range(2):
            with os.scandir(pkg) as it:
                assert sorted(e.name for e in it if e.is_file(follow_symlinks=False)) == names
        assert (pkg / names[-1]).read_bytes() == names[-1].encode()
