"""Several users on one machine: nobody reads or changes another user's holofs files.

Run as root; the "other user" is uid/gid 65534 (nobody) through ``setpriv``, running the
system Python (the venv lives under /root, which nobody cannot enter). Everything lives under
a 0755 directory in /var/tmp, so only holofs' own permissions stand between the users.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.fusemount import force_unmount, mounted, requires_fuse, run_holofs

from holofs.importer import import_tree

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
RECORDED = "multi00000_user"
TARGET = "multi00000_usEr"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root"),
    pytest.mark.skipif(shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON),
                       reason="setpriv (util-linux) and /usr/bin/python3 are needed to run as nobody"),
]


def as_nobody(code: str, *args: str | os.PathLike[str], gid: int = NOBODY) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as uid nobody (with group ``gid``: nobody's own, or e.g. the owner's)."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={gid}", "--clear-groups",
                           SYSTEM_PYTHON, "-c", code, *map(os.fspath, args)],
                          capture_output=True, text=True, timeout=60, cwd="/")


# Prints, per path given, what nobody gets: "ok", or the errno name of the first of
# stat, then listdir (directory) or open+read (file) that fails.
PROBE = """
import errno, os, stat, sys
for p in sys.argv[1:]:
    try:
        if stat.S_ISDIR(os.stat(p).st_mode):
            os.listdir(p)
        else:
            open(p, "rb").read(1)
        print("ok")
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, str(exc.errno)))
"""


@pytest.fixture
def world():
    base = Path(tempfile.mkdtemp(prefix="holofs-multiuser-", dir="/var/tmp"))
    try:
        os.chmod(base, 0o755)
        src = base / "space" / RECORDED
        (src / "bin").mkdir(parents=True)
        (src / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
        os.chmod(src / "bin" / "tool", 0o4755)  # setuid in the source environment
        (src / "bin" / "sgid").write_bytes(b"#!/bin/sh\n")
        os.chmod(src / "bin" / "sgid", 0o2755)
        (src / "public.txt").write_bytes(b"public\n")
        os.chmod(src / "public.txt", 0o644)
        (src / "secret.txt").write_bytes(b"secret\n")
        os.chmod(src / "secret.txt", 0o600)
        os.chmod(src, 0o755)
        os.chmod(base / "space", 0o755)
        result = import_tree(src, base / "hololib")
        yield {"base": base, "catalog": result.catalog_path, "cache": base / "cache",
               "target": base / "space" / TARGET}
    finally:
        for mnt in (base / "space" / TARGET,):
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _kernel_overlay_used() -> bool:
    """Writable mounts made by root use kernel overlayfs (others use fuse-overlayfs)."""
    from holofs.frontends.overlay import KERNEL, available_backend

    return available_backend() == KERNEL


def _materialize(world: dict, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOLOFS_CACHE": os.fspath(world["cache"])}
    return subprocess.run([sys.executable, "-m", "holofs", "materialize", os.fspath(world["catalog"]),
                           os.fspath(world["target"]), "--json", *extra], capture_output=True, text=True, env=env)


def test_setuid_and_setgid_bits_are_dropped_unless_asked(world: dict) -> None:
    proc = _materialize(world)
    assert proc.returncode == 0, proc.stderr
    tool, sgid = world["target"] / "bin" / "tool", world["target"] / "bin" / "sgid"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755 and stat.S_IMODE(sgid.stat().st_mode) == 0o755
    shutil.rmtree(world["target"])
    proc = _materialize(world, "--keep-special-bits")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755 and stat.S_IMODE(sgid.stat().st_mode) == 0o2755


@requires_fuse
def test_mount_drops_special_bits_and_is_private_unless_allow_other(world: dict) -> None:
    target = world["target"]
    with mounted(world["catalog"], target, cache=world["cache"], args=("--read-only",)) as m:
        assert (m.mountpoint / "public.txt").read_bytes() == b"public\n"
        assert stat.S_IMODE((m.mountpoint / "bin" / "tool").stat().st_mode) == 0o755
        assert stat.S_IMODE((m.mountpoint / "bin" / "sgid").stat().st_mode) == 0o755
        # FUSE without allow_other: another user cannot even look at the mount, not even one
        # in the owner's group (directories are 0750 as RCC makes them).
        for gid in (NOBODY, 0):
            out = as_nobody(PROBE, m.mountpoint, m.mountpoint / "public.txt", gid=gid)
            assert out.stdout.split() == ["EACCES", "EACCES"], out
    with mounted(world["catalog"], target, cache=world["cache"], args=("--read-only", "--allow-other")) as m:
        # Shared on request, with the catalog's permissions enforced (default_permissions):
        # others get nothing (0750 directories), the owner's group reads what the modes allow.
        out = as_nobody(PROBE, m.mountpoint, m.mountpoint / "public.txt")
        assert out.stdout.split() == ["EACCES", "EACCES"], out
        out = as_nobody(PROBE, m.mountpoint, m.mountpoint / "public.txt", m.mountpoint / "secret.txt", gid=0)
        assert out.stdout.split() == ["ok", "ok", "EACCES"], out
        written = as_nobody("open(__import__('sys').argv[1], 'w')", m.mountpoint / "new.txt", gid=0)
        assert written.returncode != 0  # read-only for everyone


@requires_fuse
def test_cache_record_and_upper_layer_are_private(world: dict) -> None:
    proc = _materialize(world)  # fills the verification record
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(world["target"])
    target = world["target"]
    with mounted(world["catalog"], target, cache=world["cache"]) as m:  # writable: an upper layer
        assert (m.mountpoint / "public.txt").read_bytes() == b"public\n"  # fills the content cache
        (m.mountpoint / "mine.txt").write_text("private change\n")
        os.chmod(m.mountpoint / "mine.txt", 0o644)
    cache = world["cache"]
    private = [p for p in [cache, *cache.rglob("*")] if p.is_dir() and not p.is_symlink()]
    assert private, "nothing was cached"
    # Every directory holofs made in the cache is closed to group and others ...
    loose = [str(p) for p in private if stat.S_IMODE(p.stat().st_mode) & 0o077
             and not _inside_layer_upper(p, cache)]
    assert not loose, loose
    # ... so nobody reaches the record, cached content or the upper layer's files.
    files = [p for p in cache.rglob("*") if p.is_file()]
    probes = [cache, cache / "verified" / "log", *files[:20]]
    upper = [p for p in cache.rglob("mine.txt")]
    assert upper, "the change did not land in an upper layer under the cache"
    probes += upper
    out = as_nobody(PROBE, *probes)
    results = dict(zip(map(str, probes), out.stdout.split(), strict=True))
    assert set(results.values()) == {"EACCES"}, results
    # Used as the default: holofs status/--json of the layer does not loosen anything either.
    status = run_holofs("status", target, "--cache", cache, "--json")
    assert status.returncode in (0, 1), status.stderr
    json.loads(status.stdout or "{}")


def _inside_layer_upper(path: Path, cache: Path) -> bool:
    """Directories inside an upper layer carry the environment's own modes (0750 etc.); they
    sit below the layer's 0700 root, which is what keeps them private."""
    rel = path.relative_to(cache).parts
    return len(rel) >= 3 and rel[0] == "layers" and rel[2] in ("upper", "work")


@requires_fuse
def test_writable_mount_is_private_unless_allow_other(world: dict) -> None:
    """The default (writable) mount: no other user gets in, not even one in the owner's group,
    unless --allow-other is given. (Made by root it is a kernel overlayfs mount, which has no
    allow_other check of its own: its root is 0700 then.)"""
    target = world["target"]
    with mounted(world["catalog"], target, cache=world["cache"]) as m:
        assert (m.mountpoint / "public.txt").read_bytes() == b"public\n"
        for gid in (NOBODY, 0):
            out = as_nobody(PROBE, m.mountpoint, m.mountpoint / "public.txt", gid=gid)
            assert out.stdout.split() == ["EACCES", "EACCES"], (gid, out)


@requires_fuse
def test_writable_mount_with_allow_other_enforces_modes(world: dict) -> None:
    target = world["target"]
    with mounted(world["catalog"], target, cache=world["cache"], args=("--allow-other",)) as m:
        for name in ("tool", "sgid"):  # no setuid/setgid through the writable layer either
            assert stat.S_IMODE((m.mountpoint / "bin" / name).stat().st_mode) == 0o755, name
        (m.mountpoint / "mine.txt").write_text("owner's change\n")
        os.chmod(m.mountpoint / "mine.txt", 0o600)
        out = as_nobody(PROBE, m.mountpoint, m.mountpoint / "public.txt")
        assert out.stdout.split() == ["EACCES", "EACCES"], out  # others: 0750 directories
        out = as_nobody(PROBE, m.mountpoint / "public.txt", m.mountpoint / "secret.txt", m.mountpoint / "mine.txt",
                        gid=0)
        assert out.stdout.split() == ["ok", "EACCES", "EACCES"], out
        # The group cannot write into the 0750 root, nor change the owner's files.
        out = as_nobody("open(__import__('sys').argv[1], 'w')", m.mountpoint / "new.txt", gid=0)
        assert out.returncode != 0 and "Permission denied" in out.stderr, out
        out = as_nobody("open(__import__('sys').argv[1], 'a').write('x')", m.mountpoint / "public.txt", gid=0)
        assert out.returncode != 0 and "Permission denied" in out.stderr, out
    assert not list(world["cache"].rglob("new.txt"))
    assert (world["cache"] / "layers").is_dir() and [p.read_bytes() for p in world["cache"].rglob("mine.txt")] == [
        b"owner's change\n"]


@requires_fuse
def test_cache_directory_of_another_user_is_refused(world: dict) -> None:
    """A cache directory that another user made (e.g. in a shared /tmp) is refused: that user
    could have planted content under a final cache name, which a mount would serve."""
    shared = world["base"] / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    cache = shared / "cache"
    data = b"public\n"
    digest = hashlib.sha256(data).hexdigest()
    planted = cache / "files" / digest[:2] / digest
    out = as_nobody("import os, sys; p = sys.argv[1]; os.makedirs(os.path.dirname(p)); "
                    "open(p, 'wb').write(b'EVIL!!\\n')", planted)
    assert out.returncode == 0 and planted.read_bytes() == b"EVIL!!\n", out
    proc = run_holofs("mount", world["catalog"], world["target"], "--cache", cache, "--read-only")
    try:
        assert proc.returncode != 0, "a cache directory owned by another user was used"
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "belongs to uid 65534" in lines[0] and os.fspath(cache) in lines[0], proc.stderr
    finally:
        force_unmount(world["target"])
    assert planted.read_bytes() == b"EVIL!!\n" and stat.S_IMODE(cache.stat().st_mode) == 0o755  # left alone


def test_shared_cache_directory_is_refused_not_chmodded(world: dict, tmp_path: Path) -> None:
    """HOLOFS_CACHE pointing at a world-writable directory (like /tmp): one-line refusal, and
    its mode is left alone (holofs must never chmod a shared directory to 0700)."""
    shared = world["base"] / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    env = {**os.environ, "HOLOFS_CACHE": os.fspath(shared)}
    proc = subprocess.run([sys.executable, "-m", "holofs", "materialize", os.fspath(world["catalog"]),
                           os.fspath(world["target"])], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "shared directory" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert not world["target"].exists()
