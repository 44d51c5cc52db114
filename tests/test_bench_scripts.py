"""The benchmark scripts: each parses its arguments and prints help (no network, no timing),
and the C floor they time does the same work as holofs."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from holofs.restore_state import live_dirs

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("script", ["build_corpus.py", "bench_materialize.py", "bench_mount.py"])
def test_script_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "--work" in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="clone_floor uses Linux calls (FICLONE)")
@pytest.mark.parametrize("fstype", ["tmp", "xfs"])
def test_clone_floor_makes_what_holofs_makes(tmp_path: Path, fstype: str) -> None:
    """The benchmark's C floor (scripts/clone_floor.c) is a lower bound of the same work: from
    bench_materialize's plan of a raw library it makes every directory and regular file
    holofs makes, with the same content, permissions and times (on XFS, sharing extents).
    The target keeps the recorded identity, so relocation changes nothing either way."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    sys.path.insert(0, str(SCRIPTS))
    try:
        from bench_materialize import FLOOR_SOURCE, write_floor_plan
    finally:
        sys.path.remove(str(SCRIPTS))
    from support.loopfs import loop_filesystem, shared_blocks
    from test_materialize import build_generated, opts, snapshot

    from holofs.materializer import materialize

    with contextlib.ExitStack() as stack:
        root = tmp_path if fstype == "tmp" else stack.enter_context(loop_filesystem(fstype, tmp_path / "img"))
        _tree, catalog, lib = build_generated(root, compress="none")
        assert catalog.path and any(f.rewrite for _r, n in live_dirs(catalog.tree) for f in n.files.values())
        binary, plan = tmp_path / "clone_floor", tmp_path / "plan"
        subprocess.run([cc, "-O2", "-pthread", "-o", binary, FLOOR_SOURCE], check=True)
        nfiles = write_floor_plan(Path(catalog.source), plan)
        by_holofs, by_floor = root / "a" / catalog.identity, root / "b" / catalog.identity
        by_holofs.parent.mkdir()
        by_floor.parent.mkdir()
        materialize(catalog, lib, by_holofs, opts(tmp_path))
        subprocess.run([binary, plan, lib.library_dir, by_floor, "2"], check=True, timeout=60)
        expected = {rel: v for rel, v in snapshot(by_holofs).items() if v[0] != "link"}
        got = snapshot(by_floor)
        assert sum(v[0] == "file" for v in got.values()) == nfiles > 10
        assert got == expected
        if fstype == "xfs":
            big = max((p for p in by_floor.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
            assert shared_blocks(big), f"{big} was copied, not cloned"
        proc = subprocess.run([binary, plan, lib.library_dir, by_floor, "2"], capture_output=True, text=True)
        assert proc.returncode == 1 and "File exists" in proc.stderr  # a target in the way is refused
