"""Resource limits: a full disk during a repair or a cache fill, and very large catalogs.

(A full disk during a fresh materialize is tested in test_strategies.py::test_no_space_is_clean.)
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.fusemount import mounted, requires_fuse
from support.loopfs import loop_filesystem
from test_materialize import TARGET_NAME, assert_restored, build_generated

from holofs.catalog import Catalog, DirEntry, FileEntry, read_catalog, write_catalog
from holofs.modes import GO_DIR


def _fill_up(mnt: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``mnt``."""
    ballast = mnt / "ballast"
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    with open(ballast, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        todo = max(0, free - leave)
        while todo > 0:
            try:
                todo -= f.write(chunk[: min(len(chunk), todo)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return ballast


@pytest.mark.root
def test_disk_full_during_a_repair_then_the_next_run_repairs(tmp_path: Path, holofs_cli) -> None:
    extra = {f"lib/blob{i}.bin": os.urandom(1 << 20) for i in range(6)}
    tree, catalog, lib = build_generated(tmp_path, "gzip", extra=extra)
    env = {"HOLOFS_CACHE": str(tmp_path / "cache")}
    with loop_filesystem("ext4", tmp_path, size_mib=24) as mnt:
        target = mnt / TARGET_NAME
        args = ("materialize", "--relocate-name-only", catalog.source, target)
        holofs_cli(*args, env=env, check=True)
        for i in range(6):
            (target / f"lib/blob{i}.bin").unlink()
        ballast = _fill_up(mnt, 2 << 20)  # room for about two of the six
        proc = holofs_cli(*args, env=env)
        assert proc.returncode != 0
        assert "no space left" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        check = holofs_cli("materialize", "--check", "--relocate-name-only", catalog.source, target, env=env)
        assert check.returncode != 0 and check.stdout.startswith("incomplete"), check.stdout
        assert not [p for p in target.rglob("*") if ".part" in p.name]  # no temp file left behind
        ballast.unlink()
        holofs_cli(*args, env=env, check=True)
        assert_restored(catalog, lib, target)


@pytest.mark.root
@requires_fuse
def test_disk_full_during_a_cache_fill(tmp_path: Path) -> None:
    """A cache on a full filesystem: the read fails (EIO/ENOSPC), the mount keeps serving,
    no partial file gets a final name, and once there is room the same read works."""
    extra = {"lib/big.bin": os.urandom(6 << 20), "lib/small.txt": b"small\n"}
    tree, catalog, lib = build_generated(tmp_path, "gzip", extra=extra)
    with loop_filesystem("ext4", tmp_path, size_mib=16) as mnt:
        cache = mnt / "cache"
        mountpoint = tmp_path / "dst" / TARGET_NAME
        mountpoint.parent.mkdir()
        ballast = _fill_up(mnt, 1 << 20)
        with mounted(catalog.source, mountpoint, cache=cache, args=("--relocate-name-only", "--read-only")) as m:
            assert (m.mountpoint / "lib/small.txt").read_bytes() == b"small\n"
            with pytest.raises(OSError) as info:
                (m.mountpoint / "lib/big.bin").read_bytes()
            assert info.value.errno in (errno.EIO, errno.ENOSPC)
            finals = [p for p in (cache / "files").rglob("*") if p.is_file() and ".part" not in p.name]
            assert all(p.stat().st_size < (1 << 20) for p in finals)  # only small ones, complete
            assert not [p for p in cache.rglob("*") if ".part" in p.name]  # temp removed on error
            ballast.unlink()
            assert (m.mountpoint / "lib/big.bin").read_bytes() == extra["lib/big.bin"]
            assert "no space" in m.log_text().lower() or "No space" in m.log_text()


def test_catalog_with_200k_entries_loads_in_bounded_memory(tmp_path: Path) -> None:
    """A 200k-entry catalog file is written, read back and listed; the reader's peak memory
    (measured in a child process) stays bounded. Time is printed, not asserted."""
    root = DirEntry(name=".", mode=GO_DIR | 0o755)
    for i in range(200):
        d = DirEntry(name=f"d{i:03d}", mode=GO_DIR | 0o755)
        root.subdirs[d.name] = d
        for j in range(1000):
            d.files[f"f{j:04d}.py"] = FileEntry(name=f"f{j:04d}.py", size=100 + j, mode=0o644,
                                                 digest=f"{i:032x}{j:032x}")
    catalog = Catalog(identity="big0000000_catalog", path="/tmp/holotree/big0000000_catalog", tree=root,
                      blueprint="ab" * 8)
    path = write_catalog(catalog, tmp_path / "big.catalog")
    code = ("import resource, sys, time\nfrom holofs.catalog import read_catalog, iter_files\n"
            "t = time.perf_counter(); c = read_catalog(sys.argv[1]); n = sum(1 for _ in iter_files(c.tree))\n"
            "print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    n, seconds, max_rss_kib = out.stdout.split()
    print(f"200k-entry catalog: read in {float(seconds):.2f} s, peak RSS {int(max_rss_kib) // 1024} MiB")
    assert int(n) == 200_000
    # Measured here: 460-700 MiB peak (the JSON text and its decoded tree at once), i.e. linear
    # in the entries; the bound is about 5 KiB per entry including the interpreter.
    assert int(max_rss_kib) < 1024 * 1024
    assert read_catalog(path).tree.subdirs["d199"].files["f0999.py"].size == 1099
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads FDSize from /proc/self/status")
@pytest.mark.parametrize("limits", [None, (1024, 20000), (2048, 2048)])
def test_reserve_fds_grows_the_table_at_once(limits: tuple[int, int] | None) -> None:
    """reserve_fds raises the soft limit (never past the hard one) and grows the descriptor
    table to it in one step, closing nothing and leaving no descriptor open. In a fresh
    process, as the table only ever grows."""
    script = f"""
import os, resource
from holofs.fsutil import reserve_fds
limits = {limits!r}
if limits:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)
def fdsize():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("FDSize:")).split()[1])
keep = os.dup2(os.open("/", os.O_RDONLY), 300)  # a descriptor in use high up
before, open_before = fdsize(), sorted(os.listdir("/proc/self/fd"))
assert before < 1024, before
reserve_fds(5000)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
expect = min(5000, hard)
assert soft >= expect, (soft, hard)
assert fdsize() >= expect, (fdsize(), expect)
assert sorted(os.listdir("/proc/self/fd")) == open_before
assert os.path.samestat(os.fstat(keep), os.stat("/"))
print("ok", before, fdsize())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sets RLIMIT_NOFILE in the child")
def test_open_files_limit_too_low_for_the_tree(tmp_path: Path) -> None:
    """A restore keeps every directory open: a hard limit below the tree's directory count is
    refused at once with what to do, before anything is written; with room it restores."""
    extra = {f"d{i:03}/f.txt": f"{i}\n".encode() for i in range(300)}
    _tree, catalog, lib = build_generated(tmp_path, "none", extra=extra)
    target = tmp_path / "out" / TARGET_NAME
    target.parent.mkdir()
    cmd = [sys.executable, "-m", "holofs", "materialize", "--relocate-name-only", str(catalog.source), str(target)]
    env = dict(os.environ, HOLOFS_CACHE=str(tmp_path / "cache"))

    def low_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=low_limit, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "open-files limit is 200" in proc.stderr and "ulimit -n" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{TARGET_NAME}.holofs.lock"]
    subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=120)
    assert_restored(catalog, lib, target)
