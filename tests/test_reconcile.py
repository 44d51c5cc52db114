"""Reconciling an existing target like RCC: extras removed, wrong files replaced, correct
files untouched, a journal that knows whether the tree is complete, and ``--check``.

Rule (documented in docs/materialize.md): a file is kept when its type, size and permission
bits match and the digest the previous restore recorded for that path equals the catalog's.
Content changed in place with the same size and mode is therefore *not* detected by default
(as in RCC); ``--verify always`` hashes existing files too and replaces them."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from test_materialize import TARGET_NAME, assert_restored, build_generated, opts, snapshot

from holofs.catalog import read_catalog
from holofs.importer import import_tree
from holofs.materializer import check, materialize, state_path
from holofs.verification import VerifyPolicy


@pytest.fixture
def restored(tmp_path):
    tree, catalog, lib = build_generated(tmp_path, "gzip")
    target = tmp_path / "dst" / TARGET_NAME
    target.parent.mkdir()
    materialize(catalog, lib, target, opts(tmp_path))
    return tree, catalog, lib, target


def _identities(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_ino, st.st_ctime_ns, st.st_mtime_ns)
    return out


def test_intact_tree_left_alone(restored, tmp_path):
    tree, catalog, lib, target = restored
    before = _identities(target)
    report = materialize(catalog, lib, target, opts(tmp_path))
    assert report.files_written == 0 and report.removed_extras == 0 and report.times_fixed == 0
    assert report.files_intact == len(tree.files) + len(tree.symlinks)
    assert _identities(target) == before  # same inodes, ctimes untouched: nothing rewritten
    assert check(catalog, lib, target, relocate_name_only=True).status == "complete"


def test_repairs_everything(restored, tmp_path):
    tree, catalog, lib, target = restored
    good = snapshot(target)
    core = "lib/python3.11/site-packages/demo/core.py"
    launcher = "bin/python-launcher"
    (target / "extra.txt").write_text("extra")
    (target / "share/extra-dir/sub").mkdir(parents=True)
    (target / "share/extra-dir/sub/f").write_text("x")
    (target / "lib/python3.11/site-packages/demo/__pycache__").mkdir()
    (target / "lib/python3.11/site-packages/demo/__pycache__/core.cpython-311.pyc").write_bytes(b"\0")
    (target / "etc/left.part123x0badf00d").write_text("crashed temp")
    (target / "empty.txt").unlink()                      # missing
    os.chmod(target / launcher, 0o600)                   # wrong mode
    (target / core).write_text("short")                  # wrong size
    os.unlink(target / "bin/python3")                    # symlink retargeted
    os.symlink("elsewhere", target / "bin/python3")
    shutil.rmtree(target / "share/deep")                 # a dir replaced by a file
    (target / "share/deep").write_text("not a dir")
    os.unlink(target / "etc/only-identity")              # a file replaced by a dir
    (target / "etc/only-identity").mkdir()
    os.utime(target / "etc/starts-with-identity", (1, 1))  # wrong mtime only
    status = check(catalog, lib, target, relocate_name_only=True)
    assert status.status == "modified"
    for needle in ("extra.txt: extra", "empty.txt: missing", f"{launcher}: mode", f"{core}: size", "share/deep/"):
        assert any(needle in p for p in status.problems), (needle, status.problems)
    untouched = tree.duplicates[0]
    ino = os.stat(target / untouched).st_ino
    report = materialize(catalog, lib, target, opts(tmp_path))
    assert snapshot(target) == good
    assert_restored(catalog, lib, target)
    assert report.removed_extras == 4 and report.times_fixed == 1
    assert os.stat(target / untouched).st_ino == ino
    assert check(catalog, lib, target, relocate_name_only=True).status == "complete"


def test_same_size_modification_rule(restored, tmp_path, holofs_cli):
    tree, catalog, lib, target = restored
    rel = tree.duplicates[0]
    original = (target / rel).read_bytes()
    st = os.stat(target / rel)
    (target / rel).write_bytes(b"X" * len(original))
    os.utime(target / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
    # Default (trusted): same name, size, mode and recorded digest -> kept, as RCC does.
    assert check(catalog, lib, target, relocate_name_only=True).status == "complete"
    materialize(catalog, lib, target, opts(tmp_path))
    assert (target / rel).read_bytes() == b"X" * len(original)
    # --verify always hashes existing files (identity put back at the offsets) and repairs.
    proc = holofs_cli("materialize", "--check", "--verify", "always", "--relocate-name-only", catalog.source, target)
    assert proc.returncode == 1 and "modified" in proc.stdout and rel in proc.stdout
    report = materialize(catalog, lib, target, opts(tmp_path, verify=VerifyPolicy.ALWAYS))
    assert report.files_written == 1
    assert (target / rel).read_bytes() == original
    # Files carrying rewrites are recognised as intact under --verify always too.
    assert materialize(catalog, lib, target, opts(tmp_path, verify=VerifyPolicy.ALWAYS)).files_written == 0


def test_changed_digest_replaced(restored, tmp_path):
    """A new catalog whose file has the same size and mode but another digest: replaced."""
    tree, catalog, lib, target = restored
    rel = "lib/python3.11/site-packages/demo/__init__.py"
    src = tree.root / rel
    data = src.read_bytes()
    src.write_bytes(data.replace(b"1.0", b"2.0"))
    new_catalog = read_catalog(import_tree(tree.root, lib.root, workers=2).catalog_path)
    assert new_catalog.blueprint != catalog.blueprint
    ino = os.stat(target / tree.duplicates[0]).st_ino
    report = materialize(new_catalog, lib, target, opts(tmp_path))
    assert report.files_written == 1
    assert (target / rel).read_bytes() == data.replace(b"1.0", b"2.0")
    assert os.stat(target / tree.duplicates[0]).st_ino == ino
    assert_restored(new_catalog, lib, target)
    # And back again.
    assert materialize(catalog, lib, target, opts(tmp_path)).files_written == 1
    assert (target / rel).read_bytes() == data


def test_journal_and_check_cli(restored, tmp_path, holofs_cli):
    tree, catalog, lib, target = restored
    args = ("materialize", "--check", "--relocate-name-only", catalog.source, target)
    proc = holofs_cli(*args, "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "complete"
    # An interrupted restore (a corrupt blob half way) leaves the journal incomplete.
    rel = "lib/python3.11/site-packages/demo/core.py"
    os.unlink(target / rel)
    entry = catalog.tree.subdirs["lib"].subdirs["python3.11"].subdirs["site-packages"].subdirs["demo"].files["core.py"]
    blob = lib.blob_path(entry.digest)
    good_blob = blob.read_bytes()
    blob.write_bytes(good_blob[:20])
    assert holofs_cli("materialize", "--relocate-name-only", catalog.source, target).returncode != 0
    with open(state_path(str(target)), "rb") as f:
        header = json.loads(f.readline())
    assert header["complete"] is False
    proc = holofs_cli(*args)
    assert proc.returncode == 1 and proc.stdout.startswith("incomplete")
    blob.write_bytes(good_blob)
    holofs_cli("materialize", "--relocate-name-only", catalog.source, target, check=True)
    assert holofs_cli(*args).returncode == 0
    assert_restored(catalog, lib, target)
    # Missing target and missing state.
    os.unlink(state_path(str(target)))
    assert holofs_cli(*args).stdout.startswith("incomplete")
    proc = holofs_cli("materialize", "--check", "--relocate-name-only", catalog.source, target.parent / ("z" * len(TARGET_NAME)))
    assert proc.returncode == 1 and proc.stdout.startswith("incomplete")


def test_unknown_existing_tree_is_rewritten(tmp_path):
    """No state file (a tree holofs did not make): digests unknown, so every file is replaced."""
    tree, catalog, lib = build_generated(tmp_path, "gzip")
    target = tmp_path / "dst" / TARGET_NAME
    shutil.copytree(tree.root, target, symlinks=True)
    report = materialize(catalog, lib, target, opts(tmp_path))
    assert report.files_written == len(tree.files) and report.removed_extras > 0
    assert_restored(catalog, lib, target)


def test_interrupted_switch_between_catalogs(restored, tmp_path):
    """A run to catalog B that fails half way forgets the digests it may have changed, so a
    later run (to A or B) rewrites exactly those paths instead of trusting them."""
    tree, catalog_a, lib, target = restored
    rel = "lib/python3.11/site-packages/demo/__init__.py"
    data = (tree.root / rel).read_bytes()
    (tree.root / rel).write_bytes(data.replace(b"1.0", b"2.0"))
    catalog_b = read_catalog(import_tree(tree.root, lib.root, workers=2).catalog_path)
    entry_b = catalog_b.tree.subdirs["lib"].subdirs["python3.11"].subdirs["site-packages"].subdirs["demo"].files["__init__.py"]
    blob = lib.blob_path(entry_b.digest)
    good = blob.read_bytes()
    blob.write_bytes(good[:-3])
    with pytest.raises(Exception, match="__init__.py"):
        materialize(catalog_b, lib, target, opts(tmp_path))
    assert check(catalog_a, lib, target, relocate_name_only=True).status == "incomplete"
    report = materialize(catalog_a, lib, target, opts(tmp_path))
    assert report.files_written == 1 and (target / rel).read_bytes() == data
    blob.write_bytes(good)
    assert materialize(catalog_b, lib, target, opts(tmp_path)).files_written == 1
    assert_restored(catalog_b, lib, target)


def test_busy_target_waits_or_fails_with_no_wait(restored, tmp_path, holofs_cli):
    import fcntl
    import select
    import subprocess
    import sys

    tree, catalog, lib, target = restored
    with open(target.parent / f".{target.name}.holofs.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)  # as a holder does: only its own pid in the file
        f.write("4242\n")
        f.flush()
        proc = holofs_cli("materialize", "--no-wait", "--relocate-name-only", catalog.source, target)
        assert proc.returncode != 0 and "pid 4242" in proc.stderr and "--no-wait" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        waiter = subprocess.Popen([sys.executable, "-m", "holofs", "materialize", "--relocate-name-only",
                                   "--json", catalog.source, target],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while "waiting for" not in line:  # the waiter says so on stderr, then blocks
                ready, _, _ = select.select([waiter.stderr], [], [], 60)
                assert ready, "no 'waiting' message within 60 s"
                line = waiter.stderr.readline()
                assert line or waiter.poll() is None, waiter.communicate()
            assert "pid 4242" in line
            assert waiter.poll() is None  # still blocked while we hold the lock
        except BaseException:
            waiter.kill()
            raise
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert '"fresh": false' in out


def test_directory_replaced_by_symlink_is_never_written_through(restored, tmp_path):
    """A directory of the tree swapped for a symlink to elsewhere: the link is replaced by a
    real directory and nothing is written where it pointed (every path component is opened
    relative to its parent with O_NOFOLLOW)."""
    tree, catalog, lib, target = restored
    good = snapshot(target)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("keep")
    sub = target / "lib/python3.11/site-packages/demo"
    shutil.rmtree(sub)
    os.symlink(outside, sub)
    materialize(catalog, lib, target, opts(tmp_path))
    assert sorted(p.name for p in outside.iterdir()) == ["sentinel"]
    assert (outside / "sentinel").read_text() == "keep"
    assert not sub.is_symlink() and snapshot(target) == good


@pytest.mark.parametrize("umask", [0o077, 0o000, 0o027])
def test_modes_exact_whatever_the_umask(tmp_path, umask):
    """Files are created with their final mode and chmodded only where the umask took bits."""
    import subprocess
    import sys

    tree, catalog, lib = build_generated(tmp_path, "none")
    reference = tmp_path / "ref" / TARGET_NAME
    reference.parent.mkdir()
    materialize(catalog, lib, reference, opts(tmp_path))
    target = tmp_path / "dst" / TARGET_NAME
    target.parent.mkdir()
    code = ("import os, sys\nos.umask(int(sys.argv[1], 8))\nfrom holofs.cli import main\n"
            "sys.argv = ['holofs', 'materialize', '--relocate-name-only', '--no-progress', *sys.argv[2:]]\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code, f"{umask:o}", catalog.source, target],
                          capture_output=True, text=True, env={**os.environ, "HOLOFS_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    assert snapshot(target) == snapshot(reference)


def test_rerun_on_intact_tree_reads_no_catalog_and_writes_nothing(restored, tmp_path, holofs_cli):
    """The quick path: the state file's manifest confirms an intact tree and nothing at all is
    written; every kind of damage still takes the full path and is repaired."""
    tree, catalog, lib, target = restored
    args = ("materialize", "--relocate-name-only", "--json", catalog.source, target)
    holofs_cli(*args, check=True)  # the CLI's own complete restore: state has a manifest
    spath = state_path(str(target))
    before = (_identities(target), os.stat(spath).st_ino, os.stat(spath).st_mtime_ns)
    out = json.loads(holofs_cli(*args, check=True).stdout)
    assert out["files_written"] == 0 and out["files_intact"] == len(tree.files) + len(tree.symlinks)
    assert (_identities(target), os.stat(spath).st_ino, os.stat(spath).st_mtime_ns) == before
    good = snapshot(target)
    core = target / "lib/python3.11/site-packages/demo/core.py"
    damages = [
        lambda: os.chmod(core, 0o600),                                   # mode
        lambda: os.utime(core, (1, 1)),                                  # mtime
        lambda: (target / "lib/extra").write_text("x"),                  # extra file
        lambda: os.unlink(target / "bin/python3"),                       # missing symlink
        lambda: (os.unlink(target / "bin/python3"), os.symlink("elsewhere", target / "bin/python3")),
        lambda: (target / "share/new-dir").mkdir(),                      # extra directory
        lambda: os.chmod(target / "lib", 0o755),                         # directory mode
        lambda: core.write_bytes(core.read_bytes() + b"#"),              # size
    ]
    for damage in damages:
        damage()
        holofs_cli(*args, check=True)
        assert snapshot(target) == good
    # Options that change the result never take the quick path.
    proc = holofs_cli("materialize", "--json", catalog.source, target)
    assert proc.returncode != 0 and "--relocate-name-only" in proc.stderr  # base dir rule still enforced
    # Same size, mode and mtime, other bytes: only --verify always (which hashes existing files
    # in the full reconcile) can see it, so it never takes the quick path.
    data = core.read_bytes()
    core.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.utime(core, ns=(1610000000 * 10**9, 1610000000 * 10**9))
    assert json.loads(holofs_cli(*args, check=True).stdout)["files_written"] == 0
    out = json.loads(holofs_cli(*args, "--verify", "always", check=True).stdout)
    assert out["files_written"] == 1 and snapshot(target) == good


def test_state_file_of_an_older_holofs_is_understood(restored, tmp_path):
    """A version-1 state (gzip'd {path: digest}) still tells which files are known."""
    import gzip

    tree, catalog, lib, target = restored
    spath = state_path(str(target))
    with open(spath, "rb") as f:
        header = json.loads(f.readline())
    from holofs.restore_state import State, catalog_digests

    digests = catalog_digests(catalog)
    with open(spath, "wb") as f:
        f.write(json.dumps({"version": 1, "complete": True, "catalog": header["catalog"]}).encode() + b"\n")
        f.write(gzip.compress(json.dumps(digests).encode()))
    assert State.read(spath).digests() == digests
    before = _identities(target)
    report = materialize(catalog, lib, target, opts(tmp_path))
    assert report.files_written == 0 and _identities(target) == before


def test_quick_intact_check_of_a_big_tree_is_split_and_still_exact(tmp_path):
    """Past INTACT_SPLIT directories the quick check runs half the tree in a forked child:
    both halves must count, and a change in either half must be seen."""
    from holofs.restore_state import INTACT_SPLIT, State, tree_is_intact

    extra = {f"pkgs/p{i:03d}/m.py": f"# {i}\n".encode() for i in range(INTACT_SPLIT + 20)}
    _tree, catalog, lib = build_generated(tmp_path, "gzip", extra=extra)
    target = tmp_path / "space" / TARGET_NAME
    target.parent.mkdir()
    report = materialize(catalog, lib, target, opts(tmp_path))
    manifest = State.read(state_path(os.fspath(target))).manifest()
    assert len(manifest) >= INTACT_SPLIT
    assert tree_is_intact(os.fspath(target), manifest) == report.files_written + report.symlinks
    for index in (0, 1):  # a directory the parent checks, then one the child checks
        rel, files = manifest[index][0], manifest[index][1]
        name = next(iter(files))
        path = target / rel / name if rel else target / name
        os.chmod(path, 0o600 if files[name][1] != 0o600 else 0o644)
        assert tree_is_intact(os.fspath(target), manifest) is None, rel
        os.chmod(path, files[name][1])
    assert tree_is_intact(os.fspath(target), manifest) == report.files_written + report.symlinks


def test_kept_manifest_is_reused_only_for_the_same_catalog_and_rule(restored, tmp_path):
    """The encoded manifest kept per catalog path is read back only for the same catalog
    content and the same keep-special rule; anything else builds it again and replaces it."""
    import marshal

    from holofs.modes import permissions
    from holofs.restore_state import MANIFESTS, State, catalog_fingerprint, manifest_body

    tree, catalog, lib, target = restored
    cache = str(tmp_path / "cache")
    kept = list((tmp_path / "cache" / MANIFESTS).iterdir())
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600
    state = State.read(state_path(str(target)))
    assert state is not None and kept[0].read_bytes().endswith(b"\n" + state.blob)  # the restore's own body

    def perm(mode: int) -> int:
        return permissions(mode, keep_special=False)

    fingerprint = catalog_fingerprint(catalog)
    built = manifest_body(catalog, perm, fingerprint, False, cache)
    tag = kept[0].read_bytes()[: -len(built)]
    kept[0].write_bytes(tag + marshal.dumps({"manifest": "kept"}))
    assert marshal.loads(manifest_body(catalog, perm, fingerprint, False, cache)) == {"manifest": "kept"}
    for other in [("0" * 64, False), (fingerprint, True)]:  # another catalog content; another rule
        kept[0].write_bytes(tag + marshal.dumps({"manifest": "kept"}))
        assert marshal.loads(manifest_body(catalog, perm, other[0], other[1], cache)) == marshal.loads(built)
        assert not kept[0].read_bytes().startswith(tag)
    # A new catalog at a path already kept: the state describes the new tree.
    (tree.root / "lib/new.txt").write_text("new\n")
    catalog_b = read_catalog(import_tree(tree.root, lib.root, workers=2).catalog_path)
    materialize(catalog_b, lib, target, opts(tmp_path))
    state = State.read(state_path(str(target)))
    assert "new.txt" in next(files for rel, files, *_ in state.manifest() if rel == "lib")
    assert materialize(catalog_b, lib, target, opts(tmp_path)).files_intact == len(tree.files) + len(tree.symlinks) + 1
