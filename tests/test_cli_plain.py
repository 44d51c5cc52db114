"""Plain command lines run without click, and mean exactly what they mean to click."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from holofs.cli import cmd_materialize
from holofs.cli.plain import click_command, parse

READ = [
    ["cat", "dir"],
    ["cat", "dir", "--json", "--relocate-name-only"],
    ["--strategy", "reflink", "cat", "dir"],
    ["--strategy=copy", "--verify", "skip", "--workers", "8", "cat", "dir"],
    ["--copy-pattern", "*.so", "--copy-pattern=*.py", "cat", "dir"],
    ["--fast", "--check", "--no-wait", "--no-progress", "--keep-special-bits", "--hololib", "lib", "cat", "dir"],
    ["--workers", "007", "--workers=256", "cat", "dir"],
    ["--hololib=-odd", "cat", "--json", "dir"],
    ["", "dir"],
]
LEFT_TO_CLICK = [
    ["cat"],
    ["cat", "dir", "extra"],
    ["--help"],
    ["-h", "cat", "dir"],
    ["--workers", "0", "cat", "dir"],
    ["--workers", " 5", "cat", "dir"],
    ["--workers", "x", "cat", "dir"],
    ["cat", "dir", "--workers"],
    ["--strategy", "bogus", "cat", "dir"],
    ["--json=1", "cat", "dir"],
    ["--", "cat", "dir"],
    ["--hololib", "--json", "cat", "dir"],
    ["--bogus", "cat", "dir"],
    ["-", "dir"],
]


def _click_reads(args: list[str]) -> dict:
    seen: list[dict] = []

    def capture(**kwargs: object) -> None:
        seen.append(kwargs)

    command = click_command("materialize", capture, cmd_materialize.ARGUMENTS, cmd_materialize.OPTIONS)
    command.main(args, prog_name="holofs materialize", standalone_mode=False)
    return seen[0]


@pytest.mark.parametrize("args", READ, ids=" ".join)
def test_a_plain_command_line_reads_as_click_reads_it(args: list[str]) -> None:
    assert parse(args, cmd_materialize.ARGUMENTS, cmd_materialize.OPTIONS) == _click_reads(args)


@pytest.mark.parametrize("args", LEFT_TO_CLICK, ids=" ".join)
def test_anything_else_is_left_to_click(args: list[str]) -> None:
    assert parse(args, cmd_materialize.ARGUMENTS, cmd_materialize.OPTIONS) is None


def test_a_plain_materialize_runs_without_click(tmp_path: Path, rcc_catalog: Path) -> None:
    code = ("import sys\nfrom holofs.cli import main\nsys.argv = ['holofs', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'dataclasses', 'typing', 'gzip', 'zlib_ng', 'zstandard', 'shutil', 'orjson', 'pathlib', 'hashlib')), code)\n"
            "sys.exit(code)\n")
    env = {**os.environ, "HOLOFS_CACHE": str(tmp_path / "c")}

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)

    for n in range(2):
        (tmp_path / f"{n}").mkdir()  # the first run parses the catalog (orjson imports dataclasses); the second reads the index
        proc = run("materialize", rcc_catalog, tmp_path / f"{n}" / "h59acff1_493f813dad24d3t", "--relocate-name-only",
                   "--json")
        assert proc.returncode == 0, proc.stderr
    report, last = proc.stdout.rsplit("\n", 2)[0], proc.stdout.splitlines()[-1]
    assert json.loads(report)["files_written"] == 9
    assert last == "[] 0", "a plain materialize imported modules it does not need"
    # Not plain: click reads it and says what is wrong, as before.
    proc = run("materialize", "--workers", "0", rcc_catalog, tmp_path / "x")
    assert proc.returncode == 2 and "Invalid value for '--workers'" in proc.stderr
