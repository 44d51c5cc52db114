"""The CLI as a user meets it: import/ls/info output, and one-line errors without tracebacks."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from support.trees import IDENTITY, make_env_tree


def _assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _all_commands() -> list[list[str]]:
    from holofs.cli.app import cli

    out: list[list[str]] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None, name
            out.append([*prefix, name])
            if isinstance(cmd, click.Group):
                walk(cmd, [*prefix, name])

    walk(cli, [])
    return out


def test_command_map_matches_the_cmd_modules() -> None:
    from holofs.cli import COMMANDS, command_modules, register_module

    found: dict[str, str] = {}
    for module in command_modules():
        group = click.Group()
        register_module(group, module)
        assert group.commands, f"{module} registers no command"
        for name in group.commands:
            assert name not in found, f"{name} is registered by {found[name]} and {module}"
            found[name] = module
    assert found == COMMANDS, "holofs.cli.COMMANDS must list every command of the cmd_*.py modules"


@pytest.mark.parametrize("command", ["materialize", "mount"])
def test_a_command_imports_only_its_module(command: str) -> None:
    code = ("import sys\nfrom holofs.cli.app import cli\n"
            f"cli(['{command}', '--help'], standalone_mode=False)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('holofs.cli.cmd_'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == f"holofs.cli.cmd_{command}"


def test_unknown_command_suggests_close_names(holofs_cli) -> None:
    proc = holofs_cli("umoun", "x")
    assert proc.returncode == 2 and "No such command 'umoun'" in proc.stderr
    assert "'mount'" in proc.stderr and "'umount'" in proc.stderr


def test_help_works_for_every_command(holofs_cli) -> None:
    commands = _all_commands()
    assert ["import"] in commands and ["ls"] in commands and ["info"] in commands
    top = holofs_cli("--help")
    assert top.returncode == 0 and "Usage" in top.stdout
    for cmd in commands:
        proc = holofs_cli(*cmd, "--help")
        assert proc.returncode == 0, (cmd, proc.stderr)
        assert "Usage" in proc.stdout and "Traceback" not in proc.stderr, cmd


def test_info_on_rcc_fixture(holofs_cli, rcc_catalog: Path, rcc_hololib: Path) -> None:
    proc = holofs_cli("info", "--json", rcc_catalog, check=True)
    info = json.loads(proc.stdout)
    assert info["identity"] == "h59acff1_493f813dad24d3t"
    assert info["platform"] == "linux_amd64" and info["blueprint"] == "c34ed96c2d8a459a"
    assert (info["entries"], info["dirs"], info["files"], info["symlinks"], info["shadow"]) == (11, 2, 9, 0, 0)
    assert info["bytes"] == 536563 and info["distinct_blobs"] == 8 and info["relocated_files"] == 3
    assert info["library"] == {"gzip": 8, "zstd": 0, "raw": 0, "missing": 0}
    # Same catalog by blueprint prefix inside --hololib; human output names the fields.
    text = holofs_cli("info", "--hololib", rcc_hololib, "c34ed", check=True).stdout
    assert "h59acff1_493f813dad24d3t" in text and "gzip 8" in text and "missing 0" in text
    # A missing blob is counted, not fatal.
    next((rcc_hololib / "library").rglob("fa883829*")).unlink()
    info = json.loads(holofs_cli("info", "--json", rcc_catalog, check=True).stdout)
    assert info["library"]["missing"] == 1 and info["library"]["gzip"] == 7


def test_ls_on_rcc_fixture(holofs_cli, rcc_catalog: Path, rcc_hololib: Path) -> None:
    out = holofs_cli("ls", rcc_catalog, check=True).stdout.splitlines()
    assert len(out) == 11
    sh = next(line for line in out if line.endswith("rcc_activate.sh  [R1]"))
    assert sh.startswith("-rwxr-xr-x") and " 231 " in sh
    assert any(line.startswith("drwxr-xr-x") and line.endswith("ssl/") for line in out)
    long_ = holofs_cli("ls", "--long", "--hololib", rcc_hololib, "c34ed96c2d8a459a", check=True).stdout
    assert "fb8d785a7cd4932893a8b00e7746c6aa593e45ca7f66041648b5195af59e1931 @161" in long_
    rows = json.loads(holofs_cli("ls", "--json", rcc_catalog, check=True).stdout)
    by_path = {r["path"]: r for r in rows}
    assert by_path["ssl/cert.pem"]["size"] == 265969 and by_path["ssl"]["type"] == "dir"
    assert by_path["rcc_activate.sh"]["rewrite"] == [161]


def test_import_ls_info_on_generated_tree(holofs_cli, tmp_path: Path) -> None:
    env = make_env_tree(tmp_path / IDENTITY, big=False)
    lib = tmp_path / "hololib"
    result = json.loads(holofs_cli("import", env.root, "--hololib", lib, "--compress", "zstd", "--json", check=True).stdout)
    assert result["identity"] == IDENTITY and result["path"] == str(env.root)
    assert result["files"] == len(env.files) and result["new_blobs"] == result["distinct_blobs"]
    assert Path(result["catalog"]).is_file() and result["seconds"] >= 0
    assert set(result) >= {"catalog", "files", "dirs", "symlinks", "bytes", "new_blobs", "new_blob_bytes", "seconds"}

    listing = holofs_cli("ls", result["catalog"], check=True).stdout
    assert "python3 -> python-launcher" in listing
    assert "dangling -> does-not-exist" in listing
    assert "[shadow]" in listing and "[R" in listing
    assert "ünïcødé-файл-名前.txt" in listing
    assert "__pycache__" not in listing and ".git" not in listing

    info = json.loads(holofs_cli("info", "--json", result["catalog"], check=True).stdout)
    assert info["files"] == len(env.files)
    assert info["library"]["zstd"] + info["library"]["raw"] == info["distinct_blobs"]
    assert info["library"]["missing"] == 0
    assert info["entries"] == info["dirs"] + info["files"] + info["symlinks"] + info["shadow"]
    assert info["symlinks"] == len(env.symlinks)

    human = holofs_cli("import", env.root, "--hololib", lib, check=True)
    assert "0 new" in human.stdout and "Traceback" not in human.stderr


def test_one_line_errors(holofs_cli, tmp_path: Path, rcc_catalog: Path) -> None:
    _assert_one_line_error(holofs_cli("info", tmp_path / "nope"), "holofs: error:", "not found")
    _assert_one_line_error(holofs_cli("ls", tmp_path / "nope"), "not found")

    plain = tmp_path / "plain"
    plain.write_text("hello")
    _assert_one_line_error(holofs_cli("ls", plain), "not a gzip stream")

    truncated = tmp_path / "truncated"
    truncated.write_bytes(rcc_catalog.read_bytes()[:300])
    _assert_one_line_error(holofs_cli("info", truncated), "truncated or corrupt")

    badjson = tmp_path / "badjson"
    badjson.write_bytes(gzip.compress(b"{this is not json"))
    _assert_one_line_error(holofs_cli("ls", badjson), "invalid JSON")

    nolib = tmp_path / "nolib"
    (nolib / "catalog").mkdir(parents=True)
    _assert_one_line_error(holofs_cli("info", "--hololib", nolib, "x"), "no library/")
    _assert_one_line_error(holofs_cli("ls", "--hololib", nolib, "x"), "no library/")
    _assert_one_line_error(holofs_cli("ls", tmp_path), "is a directory")

    _assert_one_line_error(holofs_cli("import", tmp_path / "missing-dir", "--hololib", tmp_path / "lib"),
                           "no such directory")
    assert not (tmp_path / "lib").exists()
    _assert_one_line_error(holofs_cli("import", plain, "--hololib", tmp_path / "lib"), "not a directory")


@pytest.mark.parametrize("args", [["import"], ["ls"], ["info"], ["import", "x"]])
def test_usage_errors_exit_2(holofs_cli, args: list[str]) -> None:
    proc = holofs_cli(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("code", "stdout", "stderr", "rc"), [
    ("exit_without_teardown(3)", "out", "", 3),
    ("exit_without_teardown(None)", "out", "", 0),
    ("exit_without_teardown('bad thing')", "out", "bad thing", 1),
    # a thread still running: the normal exit, which waits for it
    ("threading.Thread(target=lambda: (time.sleep(0.2), print('late', flush=True))).start();"
     "exit_without_teardown(4)", "out\nlate", "", 4),
])
def test_exit_without_teardown_flushes_and_keeps_the_code(code: str, stdout: str, stderr: str, rc: int) -> None:
    """The console command ends with os._exit (no 25-35 ms teardown of a big catalog's objects):
    piped output still arrives, the exit code is the one sys.exit would give."""
    proc = subprocess.run([sys.executable, "-c", "import sys, threading, time\n"
                           "from holofs.entry import exit_without_teardown\n"
                           f"sys.stdout.write('out'); sys.stdout.write('\\n' if 'late' in {stdout!r} else ''); {code}"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert (proc.returncode, proc.stdout.strip(), proc.stderr.strip()) == (rc, stdout, stderr)


def test_warnings_are_printed_as_holofs_lines(tmp_path, rcc_catalog, holofs_cli) -> None:
    """Logging is set up only once something logs (holofs.logs): a warning still reaches stderr
    in holofs' format, with --json too."""
    proc = holofs_cli("materialize", rcc_catalog, tmp_path / "h0000000_0000000000aaaat", "--strategy", "reflink",
                      "--relocate-name-only", "--json", env={"HOLOFS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("holofs: WARNING: ")]
    assert len(warnings) == 1 and "reflink" in warnings[0], proc.stderr
    assert json.loads(proc.stdout)["warnings"]
