"""Real FUSE mounts through the ``holofs mount`` CLI: content, errors, concurrency, crashes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.fusemount import (
    diff_snapshots,
    expected_snapshot,
    force_unmount,
    is_mounted,
    mounted,
    pid_alive,
    requires_fuse,
    run_holofs,
    snapshot,
    wait_for,
)
from support.trees import IDENTITY, make_env_tree

from holofs.cache import FileCache
from holofs.catalog import read_catalog
from holofs.importer import import_tree
from holofs.library import Hololib

pytestmark = [requires_fuse, pytest.mark.fuse]

RCC_TARGET = "h59acff1_493f813dad24d3X"
OTHER_ID = IDENTITY[:-1] + ("u" if IDENTITY[-1] != "u" else "v")


@pytest.fixture(scope="module")
def env_catalog(tmp_path_factory: pytest.TempPathFactory):
    """make_env_tree imported with holofs' importer: (catalog path, EnvTree, base dir)."""
    base = tmp_path_factory.mktemp("envbase")
    tree = make_env_tree(base / IDENTITY, big=True)
    result = import_tree(tree.root, base / "hololib")
    return result.catalog_path, tree, base


def test_rcc_fixture_mount_equals_restore(rcc_catalog: Path, tmp_path: Path) -> None:
    target = tmp_path / "base" / RCC_TARGET
    with mounted(rcc_catalog, target, cache=tmp_path / "cache", args=("--relocate-name-only",)) as m:
        actual = snapshot(m.mountpoint)
        st = os.stat(m.mountpoint)
        # A private writable mount's root is 0700 (kernel overlayfs has no allow_other check);
        # everything below it, and a read-only or shared mount's root, is 0750 as RCC makes it.
        assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.getuid()
        expected = expected_snapshot(read_catalog(rcc_catalog), Hololib.of_catalog(rcc_catalog), RCC_TARGET)
        assert diff_snapshots(actual, expected) == []
        restored = tmp_path / "restore" / RCC_TARGET
        restored.parent.mkdir()
        proc = run_holofs("materialize", rcc_catalog, restored, "--relocate-name-only",
                          env={"HOLOFS_CACHE": os.fspath(tmp_path / "mcache")})
        assert proc.returncode == 0, proc.stderr
        assert diff_snapshots(actual, snapshot(restored)) == []
        out = subprocess.run(["grep", "-c", RCC_TARGET, m.mountpoint / "rcc_activate.sh"], capture_output=True,
                             text=True)
        assert out.stdout.strip() == "1"


def test_env_tree_mount_equals_restore(env_catalog, tmp_path: Path) -> None:
    catalog_path, tree, base = env_catalog
    target = base / OTHER_ID
    with mounted(catalog_path, target, cache=tmp_path / "cache") as m:
        actual = snapshot(m.mountpoint)
        catalog = read_catalog(catalog_path)
        expected = expected_snapshot(catalog, Hololib.of_catalog(catalog_path), OTHER_ID)
        assert diff_snapshots(actual, expected) == []
        # cross-check against the source tree itself, relocated by hand
        for rel, data in tree.files.items():
            want = data.replace(tree.identity_bytes, OTHER_ID.encode())
            assert actual[rel][4] == want, rel
        for rel, link in tree.symlinks.items():
            assert actual[rel] == ("link", link)
        for rel in tree.shadow_files:
            assert rel not in actual
        assert not any(name in actual for name in tree.ignored)
        # and byte for byte against holofs materialize
        restored = tmp_path / "restore" / OTHER_ID
        restored.parent.mkdir()
        proc = run_holofs("materialize", catalog_path, restored, "--relocate-name-only",
                          env={"HOLOFS_CACHE": os.fspath(tmp_path / "mcache")})
        assert proc.returncode == 0, proc.stderr
        assert diff_snapshots(actual, snapshot(restored)) == []


def test_sigusr1_right_after_ready_does_not_end_the_daemon(rcc_catalog: Path, tmp_path: Path) -> None:
    """Readiness is reported only once the daemon handles SIGUSR1 (whose default action would end
    it): a stats request at once after ``holofs mount`` returns is answered."""
    with mounted(rcc_catalog, tmp_path / "base" / RCC_TARGET, cache=tmp_path / "cache",
                 args=("--relocate-name-only", "--read-only")) as m:
        os.kill(m.pid, signal.SIGUSR1)
        assert m.stats(timeout=10)["seq"] >= 1
        assert pid_alive(m.pid) and (m.mountpoint / "identity.yaml").read_bytes()


def test_read_only_mount_refuses_writes(rcc_catalog: Path, tmp_path: Path) -> None:
    with mounted(rcc_catalog, tmp_path / "base" / RCC_TARGET, cache=tmp_path / "cache",
                 args=("--relocate-name-only", "--read-only")) as m:
        for attempt in (
            lambda: os.open(m.mountpoint / "identity.yaml", os.O_RDWR),
            lambda: os.open(m.mountpoint / "new.txt", os.O_WRONLY | os.O_CREAT, 0o644),
            lambda: os.mkdir(m.mountpoint / "newdir"),
            lambda: os.unlink(m.mountpoint / "identity.yaml"),
            lambda: os.chmod(m.mountpoint / "identity.yaml", 0o600),
        ):
            with pytest.raises(OSError) as exc:
                attempt()
            assert exc.value.errno == errno.EROFS
        assert (m.mountpoint / "identity.yaml").read_bytes()  # reads still work


def test_sixteen_concurrent_readers_fill_each_file_once(env_catalog, tmp_path: Path) -> None:
    catalog_path, tree, base = env_catalog
    rels = sorted(tree.files)
    expected = {rel: tree.files[rel].replace(tree.identity_bytes, OTHER_ID.encode()) for rel in rels}
    with mounted(catalog_path, base / OTHER_ID, cache=tmp_path / "cache") as m:
        errors: list[BaseException] = []
        barrier = threading.Barrier(16)

        def reader(i: int) -> None:
            try:
                barrier.wait()
                order = rels[i % len(rels):] + rels[: i % len(rels)]
                for rel in order:
                    with open(m.mountpoint / rel, "rb") as f:
                        assert f.read() == expected[rel], rel
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        stats = m.stats()
        assert stats["per_key"], "nothing was filled"
        assert set(stats["per_key"].values()) == {1}, stats["per_key"]
        catalog = read_catalog(catalog_path)
        from holofs.cache import cache_key
        from holofs.relocation import plan_relocation

        reloc = plan_relocation(catalog, base / OTHER_ID)
        # Where the kernel keeps opens to itself it never reads an empty file: nothing to fill.
        want_keys = {cache_key(tree_entry, reloc).relpath for rel in rels
                     for tree_entry in [_entry(catalog, rel)] if tree_entry.size or not stats["kernel_opens"]}
        assert set(stats["per_key"]) == want_keys
        # The kernel sends RELEASE asynchronously after close(): wait for the handles to drain.
        deadline = time.monotonic() + 30
        while stats["open_handles"] and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = m.stats()
        assert stats["open_handles"] == 0


@pytest.mark.parametrize("mode", ["--kernel-opens", "--daemon-opens"])
def test_warm_reads_and_listings_cost_the_daemon_nothing(env_catalog, tmp_path: Path, mode: str) -> None:
    """With the shim, once a file was read and a directory listed, opening, reading and listing
    them again sends the daemon no request at all (no OPEN/RELEASE/OPENDIR/RELEASEDIR ever; the
    kernel caches pages and listings). With --daemon-opens every open and listing is a round
    trip again, and the content is the same either way."""
    catalog_path, tree, base = env_catalog
    rels = sorted(rel for rel in tree.files if tree.files[rel])[:20]
    dirs = sorted({os.path.dirname(rel) for rel in rels})
    expected = {rel: tree.files[rel].replace(tree.identity_bytes, OTHER_ID.encode()) for rel in rels}
    with mounted(catalog_path, base / OTHER_ID, cache=tmp_path / "cache", args=("--read-only", mode)) as m:
        def one_pass() -> dict[str, list[str]]:
            for rel in rels:
                assert (m.mountpoint / rel).read_bytes() == expected[rel], rel
            return {d: sorted(os.listdir(m.mountpoint / d)) for d in dirs}

        listings = one_pass()
        assert all(os.path.basename(rel) in listings[os.path.dirname(rel)] for rel in rels)
        before = m.stats()
        assert one_pass() == listings
        after = m.stats()
        assert after["kernel_opens"] is (mode == "--kernel-opens")
        new = {k: n - before["requests"].get(k, 0) for k, n in after["requests"].items()
               if n != before["requests"].get(k, 0)}
        if mode == "--kernel-opens":
            assert new == {}, new
            assert not {"open", "opendir", "release", "releasedir"} & set(after["requests"])
            assert after["open_handles"] == 0 and after["inode_fds"] > 0
        else:
            assert new["open"] == len(rels) and new["opendir"] == len(dirs), new


def _entry(catalog, rel: str):
    node = catalog.tree
    parts = rel.split("/")
    for part in parts[:-1]:
        node = node.subdirs[part]
    return node.files[parts[-1]]


def test_kill_minus_nine_mid_fill_leaves_no_partial_file(tmp_path: Path) -> None:
    ident = "big0000000_kill"
    src = tmp_path / "src" / ident
    src.mkdir(parents=True)
    block = os.urandom(1 << 20)
    with open(src / "big.bin", "wb") as f:
        for i in range(96):
            f.write(block[i:] + block[:i])
    (src / "small.txt").write_text("small\n")
    result = import_tree(src, tmp_path / "hololib")
    cache = tmp_path / "cache"
    with mounted(result.catalog_path, tmp_path / "src" / ident.replace("kill", "kilL"), cache=cache,
                 args=("--verify", "always")) as m:
        assert (m.mountpoint / "small.txt").read_text() == "small\n"
        failures: list[BaseException] = []

        def reader() -> None:
            try:
                with open(m.mountpoint / "big.bin", "rb") as f:
                    f.read()
            except OSError as exc:
                failures.append(exc)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        wait_for(lambda: any(".part" in p.name for p in (cache / "files").rglob("*")) or not thread.is_alive(),
                 60, "a fill to start")
        os.kill(m.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(m.pid), 30, "the daemon to die")
        thread.join(30)
        finals = [p for p in (cache / "files").rglob("*") if p.is_file() and ".part" not in p.name]
        for p in finals:  # whatever has a final name is complete
            assert p.stat().st_size in (6, 96 << 20), p
        # the stale mount: 'Transport endpoint is not connected', and holofs umount cleans it
        with pytest.raises(OSError) as stale:
            os.listdir(m.mountpoint)
        assert stale.value.errno == errno.ENOTCONN
        proc = run_holofs("umount", m.mountpoint, "--cache", cache)
        assert proc.returncode == 0, proc.stderr
        assert not is_mounted(m.mountpoint)
    temps = FileCache(cache).stats()["by_kind"]["temp"]["files"]
    gc = json.loads(run_holofs("cache", "gc", "--cache", cache, "--json").stdout)
    assert gc["removed_temp"] == temps
    assert FileCache(cache).stats()["by_kind"]["temp"]["files"] == 0
    if temps:  # killed mid-fill (the usual case): the reader saw an error, not wrong bytes
        assert failures


def test_umount_with_another_cache_still_ends_the_hidden_fuse_mount(rcc_catalog: Path, tmp_path: Path) -> None:
    """A writable mount is an overlay over a FUSE mount under the cache's runtime directory.
    ``holofs umount`` given a cache without its record finds that lower mount from the
    overlay's own options, so neither the FUSE mount nor its daemon is left behind."""
    cache = tmp_path / "cache"
    with mounted(rcc_catalog, tmp_path / "base" / RCC_TARGET, cache=cache, args=("--relocate-name-only",)) as m:
        lower = m.runtime_dir / "lower"
        assert is_mounted(lower)
        proc = run_holofs("umount", m.mountpoint, "--cache", tmp_path / "other-cache")
        assert proc.returncode == 0, proc.stderr
        assert not is_mounted(m.mountpoint) and not is_mounted(lower)
        wait_for(lambda: not pid_alive(m.pid), 30, "the daemon to exit")


def test_a_plain_umount_of_a_writable_mount_ends_its_daemon(rcc_catalog: Path, tmp_path: Path) -> None:
    """umount(8) (or systemd) removes only the overlay of a writable mount; the daemon notices,
    unmounts the hidden FUSE tree beneath it and exits, so nothing is left behind."""
    with mounted(rcc_catalog, tmp_path / "base" / RCC_TARGET, cache=tmp_path / "cache",
                 args=("--relocate-name-only",)) as m:
        lower = m.runtime_dir / "lower"
        assert is_mounted(lower)
        subprocess.run(["umount", os.fspath(m.mountpoint)], check=True)
        wait_for(lambda: not pid_alive(m.pid), 30, "the daemon to exit")
        assert not is_mounted(lower) and not is_mounted(m.mountpoint)


def test_mount_errors_are_one_line(rcc_catalog: Path, tmp_path: Path) -> None:
    wrong_len = tmp_path / "base" / "short"
    proc = run_holofs("mount", rcc_catalog, wrong_len, "--cache", tmp_path / "cache")
    assert proc.returncode != 0 and "length mismatch" in proc.stderr
    assert "Traceback" not in proc.stderr and not is_mounted(wrong_len)
    other_base = tmp_path / "base" / RCC_TARGET  # recorded base is /home/user/.robocorp/holotree
    proc = run_holofs("mount", rcc_catalog, other_base, "--cache", tmp_path / "cache")
    assert proc.returncode != 0 and "--relocate-name-only" in proc.stderr and not is_mounted(other_base)
    proc = run_holofs("mount", tmp_path / "nope.catalog", "--cache", tmp_path / "cache")
    assert proc.returncode != 0 and "not found" in proc.stderr
    proc = run_holofs("umount", tmp_path)
    assert proc.returncode != 0 and "not mounted" in proc.stderr
    with mounted(rcc_catalog, other_base, cache=tmp_path / "cache", args=("--relocate-name-only",)) as m:
        again = run_holofs("mount", rcc_catalog, m.mountpoint, "--cache", tmp_path / "cache",
                           "--relocate-name-only")
        assert again.returncode != 0 and "already a mount point" in again.stderr


def test_default_mountpoint_is_the_recorded_path(tmp_path: Path) -> None:
    src = tmp_path / "holotree" / "henv_default01"
    src.mkdir(parents=True)
    (src / "hello.sh").write_text(f"echo {src}\n")
    result = import_tree(src, tmp_path / "hololib")
    src.rename(tmp_path / "holotree" / "moved-away")
    with mounted(result.catalog_path, None, cache=tmp_path / "cache") as m:
        assert m.mountpoint == src
        assert (src / "hello.sh").read_text() == f"echo {src}\n"
    proc = run_holofs("umount", src)
    assert proc.returncode != 0  # already unmounted by the helper


def test_foreground_mount_unmounts_on_sigterm(rcc_catalog: Path, tmp_path: Path) -> None:
    target = tmp_path / "base" / RCC_TARGET
    proc = subprocess.Popen([sys.executable, "-m", "holofs", "mount", "-f", os.fspath(rcc_catalog),
                             os.fspath(target), "--cache", os.fspath(tmp_path / "cache"), "--relocate-name-only"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: is_mounted(target) or proc.poll() is not None, 30, "foreground mount")
        assert proc.poll() is None, proc.communicate()
        assert (target / "identity.yaml").stat().st_size == 56
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not is_mounted(target)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        force_unmount(target)


def _processes_naming(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def test_daemon_start_parses_the_catalog_in_the_parent(rcc_catalog: Path, tmp_path: Path) -> None:
    """The CLI parent parses the catalog while the forked daemon imports the FUSE stack: a bad
    catalog is a one-line error with no daemon, log or mount left; a good one is in the catalog
    index by the time the command returns, and the daemon serves it from there."""
    from holofs.catalog_index import index_path, load_catalog

    cache, mp = tmp_path / "cache", tmp_path / "base" / RCC_TARGET
    bad = tmp_path / "bad" / rcc_catalog.name
    bad.parent.mkdir()
    bad.write_bytes(rcc_catalog.read_bytes()[:200])  # truncated gzip
    proc = run_holofs("mount", bad, mp, "--cache", cache, "--relocate-name-only")
    assert proc.returncode != 0 and "truncated or corrupt gzip" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not is_mounted(mp) and _processes_naming(os.fspath(bad)) == []
    assert not list((cache / "mounts").glob("daemon-*.log"))
    assert not os.path.exists(index_path(cache, bad))

    with mounted(rcc_catalog, mp, cache=cache, args=("--relocate-name-only",)) as m:
        index = Path(index_path(cache, rcc_catalog))
        assert index.is_file() and index.stat().st_mode & 0o777 == 0o600
        catalog, save = load_catalog(rcc_catalog, cache)
        assert save is None and catalog.validated  # served from the index the parent wrote
        assert sorted(os.listdir(m.mountpoint)) == sorted([*catalog.tree.subdirs, *catalog.tree.files])


def test_early_daemon_only_for_background_mounts() -> None:
    from holofs.entry import wants_early_daemon

    assert wants_early_daemon(["mount", "cat", "dir"]) and wants_early_daemon(["-v", "mount", "cat", "--json"])
    for args in (["mount", "-f", "cat"], ["mount", "--foreground", "cat"], ["mount", "--help"], ["--version"],
                 ["materialize", "mount", "dir"], ["umount", "dir"], []):
        assert not wants_early_daemon(args), args


def test_early_daemon_leaves_with_the_cli(rcc_catalog: Path, tmp_path: Path) -> None:
    """``holofs mount`` forks its daemon before parsing anything: when the command then fails
    (usage error, missing catalog, bad mount point) that daemon exits with it, mounting nothing."""
    cache = tmp_path / "cache"
    missing = tmp_path / "missing-early" / "nope.catalog"
    cases = [
        (("mount", missing, "--cache", cache), "not found"),
        (("mount", rcc_catalog, tmp_path / "early-mp", "--cache", cache, "--no-such-option"), "no such option"),
        (("mount", rcc_catalog, tmp_path / "base" / "short", "--cache", cache), "length mismatch"),
    ]
    for args, message in cases:
        proc = run_holofs(*args)
        assert proc.returncode != 0 and message in proc.stderr.lower(), proc.stderr
        assert "Traceback" not in proc.stderr
    marker = os.fspath(tmp_path)
    wait_for(lambda: _processes_naming(marker) == [], 30, "early daemons to exit")
    assert not is_mounted(tmp_path / "early-mp") and not is_mounted(tmp_path / "base" / "short")


def test_daemon_without_an_index_loads_the_catalog_itself(rcc_catalog: Path, tmp_path: Path) -> None:
    """A parent that sent ``go`` and closed the pipe without writing the catalog index (e.g. a
    read-only cache) leaves the load to the daemon."""
    from holofs.mounts import MountOptions, _daemon_catalog

    opts = MountOptions(catalog=os.fspath(rcc_catalog), cache=os.fspath(tmp_path / "cache"))
    r, w = os.pipe()
    timer = threading.Timer(0.05, lambda: (os.write(w, b"go\n"), os.close(w)))
    timer.start()
    catalog, how = _daemon_catalog(opts, r)
    timer.join()
    assert catalog is None and how == "loaded after the parent's go"  # serve_foreground loads and validates it


def test_daemon_waits_for_the_index(rcc_catalog: Path, tmp_path: Path) -> None:
    """After the parent's ``go`` the daemon waits for it to close the pipe (it writes the
    catalog index first) and loads the index instead of parsing again."""
    from holofs.catalog_index import load_catalog
    from holofs.mounts import MountOptions, _daemon_catalog

    opts = MountOptions(catalog=os.fspath(rcc_catalog), cache=os.fspath(tmp_path / "cache"))
    _catalog, save_index = load_catalog(rcc_catalog, tmp_path / "cache")
    assert save_index is not None
    r, w = os.pipe()
    os.write(w, b"go\n")
    timer = threading.Timer(0.1, lambda: (save_index(), os.close(w)))
    timer.start()
    catalog, how = _daemon_catalog(opts, r)
    timer.join()
    assert how == "the catalog index" and catalog is not None and catalog.validated
