"""The ``holofs`` command line: one click group; each ``cmd_*.py`` module adds commands.

A command's module is imported only when that command runs or help lists it (importing them
all took ~9 ms of ``import holofs.cli``). :data:`COMMANDS` says which module defines which
command; a test checks it against what the ``cmd_*.py`` modules register.

User mistakes and bad input surface as HolofsError and are printed as one line
(``holofs: error: ...``) with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__, logs
from ..errors import HolofsError

COMMANDS: dict[str, str] = {
    "cache": "cmd_cache",
    "config": "cmd_config",
    "import": "cmd_import",
    "info": "cmd_inspect",
    "library": "cmd_library",
    "ls": "cmd_inspect",
    "materialize": "cmd_materialize",
    "mount": "cmd_mount",
    "reset": "cmd_layer",
    "status": "cmd_layer",
    "umount": "cmd_mount",
    "verify": "cmd_verify",
}
"""Top-level command name -> the ``cmd_*`` module whose ``register(group)`` adds it."""


def command_modules() -> list[str]:
    """The names of every ``cmd_*`` module in this package, sorted."""
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_"))


def register_module(group: click.Group, module: str) -> None:
    """Import ``cmd_*`` module ``module`` and let it add its commands to ``group``."""
    importlib.import_module(f"{__name__}.{module}").register(group)


class _Group(click.Group):
    """The top-level group: loads a command's module on first use (every module for a name
    :data:`COMMANDS` does not know, so that click can suggest close matches), and prints a
    HolofsError as one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS.keys() | self.commands.keys())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            module = COMMANDS.get(cmd_name)
            for each in [module] if module else command_modules():
                register_module(self, each)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except HolofsError as exc:
            click.echo(f"holofs: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("holofs: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="holofs")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """holofs: RCC holotree environments, instantly (mount) or fast (materialize)."""
    logs.configure(logs.WARNING - 10 * min(verbose, 2))


def main() -> None:
    cli(prog_name="holofs")
