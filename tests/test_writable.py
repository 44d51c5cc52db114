"""The writable layer of ``holofs mount`` (issue 5): real venvs, remounts, status, reset, import.

Every mount here is writable (the default): an overlay over the FUSE catalog tree, with the
upper layer under the cache. Python runs with bytecode writing on (``python_env``).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from support.fusemount import (
    diff_snapshots,
    expected_snapshot,
    is_mounted,
    mounted,
    requires_fuse,
    run_holofs,
    snapshot,
)
from support.trees import IDENTITY, make_env_tree
from support.venvs import MOUNT_ID, build_venv_catalog, python_env, write_wheel

from holofs.catalog import iter_files, read_catalog
from holofs.importer import import_tree
from holofs.library import Hololib

pytestmark = [requires_fuse, pytest.mark.fuse]


@pytest.fixture(scope="module")
def venv_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The session's venv with markupsafe, imported: (catalog, base)."""
    return build_venv_catalog(tmp_path_factory)

OTHER_ID = IDENTITY[:-1] + ("u" if IDENTITY[-1] != "u" else "v")


def _status(target: Path, cache: Path) -> dict[str, set[str]]:
    proc = run_holofs("status", target, "--cache", cache, "--json")
    assert proc.returncode == 0, proc.stderr
    out: dict[str, set[str]] = {"added": set(), "modified": set(), "deleted": set()}
    for change in json.loads(proc.stdout)["changes"]:
        out[change["change"]].add(change["path"] + ("/" if change["dir"] else ""))
    return out


def _layer_root(target: Path, cache: Path) -> Path:
    proc = run_holofs("status", target, "--cache", cache, "--json")
    assert proc.returncode == 0, proc.stderr
    return Path(json.loads(proc.stdout)["layer"])


# -- a real venv --------------------------------------------------------------------------


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([os.fspath(python), *args], capture_output=True, text=True, cwd=cwd, env=python_env())


def test_venv_bytecode_pip_and_compileall(venv_catalog: tuple[Path, Path], tmp_path: Path) -> None:
    catalog, base = venv_catalog
    target, cache = base / MOUNT_ID, tmp_path / "cache"
    with mounted(catalog, target, cache=cache) as m:
        python = m.mountpoint / "bin" / "python"
        site = next((m.mountpoint / "lib").glob("python3*/site-packages"))
        pycache = site / "markupsafe" / "__pycache__"
        assert not pycache.exists()  # the catalog has no bytecode (RCC never records it)

        first = _run(python, "-v", "-c", "import markupsafe", cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        pyc = next(pycache.glob("__init__.*.pyc"))
        assert f"# created '{pyc}'" in first.stderr
        mtimes = {p.name: p.stat().st_mtime_ns for p in pycache.iterdir()}
        # the bytecode went to the upper layer, not to the cache's catalog files
        upper = _layer_root(target, cache) / "upper"
        assert (upper / pyc.relative_to(m.mountpoint)).is_file()

        second = _run(python, "-v", "-c", "import markupsafe", cwd=tmp_path)
        assert second.returncode == 0, second.stderr[-2000:]
        assert f"# code object from '{pyc}'" in second.stderr
        assert "# created '" + os.fspath(pycache) not in second.stderr
        assert {p.name: p.stat().st_mtime_ns for p in pycache.iterdir()} == mtimes

        # pip install / uninstall of a local wheel (no network)
        wheel = write_wheel(tmp_path)
        pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        inst = subprocess.run([*pip, "install", "--no-index", "--no-deps", wheel], capture_output=True, text=True,
                              cwd=tmp_path, env=python_env())
        assert inst.returncode == 0, inst.stderr[-2000:]
        run = _run(python, "-c", "import holotiny; print(holotiny.VALUE, holotiny.__file__)", cwd=tmp_path)
        assert run.returncode == 0 and run.stdout.split() == ["42", os.fspath(site / "holotiny" / "__init__.py")]
        added = _status(target, cache)["added"]
        assert os.fspath((site / "holotiny" / "__init__.py").relative_to(m.mountpoint)) in added, added
        rm = subprocess.run([*pip, "uninstall", "-y", "holotiny"], capture_output=True, text=True, cwd=tmp_path,
                            env=python_env())
        assert rm.returncode == 0, rm.stderr[-2000:]
        assert not (site / "holotiny").exists()
        assert _run(python, "-c", "import holotiny", cwd=tmp_path).returncode != 0

        # compileall over a catalog package (its .py files live in the lower layer)
        comp = _run(python, "-m", "compileall", "-q", os.fspath(site / "markupsafe"), cwd=tmp_path)
        assert comp.returncode == 0, comp.stdout + comp.stderr
        assert {p.name for p in pycache.iterdir()} >= {f"{py.stem}.{pyc.name.split('.')[1]}.pyc"
                                                        for py in (site / "markupsafe").glob("*.py")}

        # uninstalling a catalog package deletes lower files: whiteouts, reported as deleted
        rm = subprocess.run([*pip, "uninstall", "-y", "markupsafe"], capture_output=True, text=True, cwd=tmp_path,
                            env=python_env())
        assert rm.returncode == 0, rm.stderr[-2000:]
        assert not (site / "markupsafe").exists()
        deleted = _status(target, cache)["deleted"]
        assert any(p.endswith("site-packages/markupsafe/") or p.endswith("site-packages/markupsafe/__init__.py")
                   for p in deleted), deleted


# -- changes: persistence, status, reset, import ------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """make_env_tree imported: (catalog path, base dir, three distinct top-level-ish catalog files)."""
    base = tmp_path_factory.mktemp("wenv")
    tree = make_env_tree(base / IDENTITY, big=False)
    result = import_tree(tree.root, base / "hololib")
    catalog = read_catalog(result.catalog_path)
    expected = expected_snapshot(catalog, Hololib.open(base / "hololib"), OTHER_ID)
    files = sorted(p for p, v in expected.items() if v[0] == "file" and v[2] > 0)
    return result.catalog_path, base, files[:3]


def _make_changes(root: Path, modify: str, delete: str, chmod: str) -> None:
    (root / "added.txt").write_bytes(b"new file\n")
    with open(root / modify, "r+b") as f:  # modify in place: copy-up, then write
        f.write(b"MODIFIED")
    (root / delete).unlink()
    os.chmod(root / chmod, 0o600)
    (root / "newdir").mkdir()
    (root / "newdir" / "inner.txt").write_text("inner\n")
    os.symlink("newdir/inner.txt", root / "newlink")


def _check_changes(root: Path, modify: str, delete: str, chmod: str, original_modify: bytes) -> None:
    assert (root / "added.txt").read_bytes() == b"new file\n"
    assert (root / modify).read_bytes() == b"MODIFIED" + original_modify[len(b"MODIFIED"):]
    assert not os.path.lexists(root / delete)
    assert stat.S_IMODE(os.stat(root / chmod).st_mode) == 0o600
    assert (root / "newdir").is_dir() and (root / "newdir" / "inner.txt").read_text() == "inner\n"
    assert os.readlink(root / "newlink") == "newdir/inner.txt"
    assert (root / "newlink").read_text() == "inner\n"


def test_changes_survive_remount_status_and_reset(env, tmp_path: Path) -> None:
    catalog_path, base, (modify, delete, chmod) = env
    target, cache = base / OTHER_ID, tmp_path / "cache"
    expected = expected_snapshot(read_catalog(catalog_path), Hololib.open(base / "hololib"), OTHER_ID)
    expected_status = {"added": {"added.txt", "newdir/", "newdir/inner.txt", "newlink"},
                       "modified": {modify, chmod}, "deleted": {delete}}
    with mounted(catalog_path, target, cache=cache) as m:
        assert diff_snapshots(snapshot(m.mountpoint), expected) == []  # a fresh layer changes nothing
        assert _status(target, cache) == {"added": set(), "modified": set(), "deleted": set()}
        original = (m.mountpoint / modify).read_bytes()
        _make_changes(m.mountpoint, modify, delete, chmod)
        _check_changes(m.mountpoint, modify, delete, chmod, original)
        assert _status(target, cache) == expected_status
    assert not is_mounted(target)
    assert _status(target, cache) == expected_status  # read from the layer while unmounted
    with mounted(catalog_path, target, cache=cache) as m:
        _check_changes(m.mountpoint, modify, delete, chmod, original)
        listing = set(os.listdir(m.mountpoint))
        assert "added.txt" in listing and not any(n.startswith(".wh.") for n in listing)
        proc = run_holofs("reset", target, "--cache", cache, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"target": os.fspath(target), "dropped": True, "remounted": True}
        try:
            assert is_mounted(target)
            assert diff_snapshots(snapshot(target), expected) == []
            assert _status(target, cache) == {"added": set(), "modified": set(), "deleted": set()}
        finally:
            run_holofs("umount", target, "--cache", cache)
    # reset of an unmounted target drops the layer without mounting
    with mounted(catalog_path, target, cache=cache) as m:
        (m.mountpoint / "added.txt").write_text("x")
    proc = run_holofs("reset", target, "--cache", cache, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["remounted"] is False and not is_mounted(target)
    with mounted(catalog_path, target, cache=cache, args=("--read-only",)) as m:
        assert diff_snapshots(snapshot(m.mountpoint), expected) == []


def test_import_of_a_mounted_environment_includes_its_changes(env, tmp_path: Path) -> None:
    catalog_path, base, (modify, delete, chmod) = env
    target, cache = base / OTHER_ID, tmp_path / "cache"
    with mounted(catalog_path, target, cache=cache) as m:
        original = (m.mountpoint / modify).read_bytes()
        _make_changes(m.mountpoint, modify, delete, chmod)
        proc = run_holofs("import", m.mountpoint, "--hololib", tmp_path / "newlib", "--json", "--no-progress")
        assert proc.returncode == 0, proc.stderr
    lib = Hololib.open(tmp_path / "newlib")
    (new_catalog,) = lib.catalog_paths()
    catalog = read_catalog(new_catalog)
    assert catalog.identity == OTHER_ID
    files = {path: entry for path, entry, _ in iter_files(catalog.tree, include_shadow=False)}
    assert lib.read_blob(files["added.txt"].digest, files["added.txt"].size) == b"new file\n"
    assert lib.read_blob(files["newdir/inner.txt"].digest, files["newdir/inner.txt"].size) == b"inner\n"
    assert delete not in files
    assert lib.read_blob(files[modify].digest, files[modify].size) == b"MODIFIED" + original[len(b"MODIFIED"):]
    assert files["newlink"].symlink == "newdir/inner.txt"
    assert files[chmod].mode & 0o777 == 0o600
