"""The click group of the ``holofs`` command line (see :mod:`holofs.cli`)."""

from __future__ import annotations

import click

from .. import __version__, logs
from . import COMMANDS, command_modules, register_module
from .plain import report_errors


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

    def invoke(self, ctx: click.Context) -> None:
        code = report_errors(lambda: super(_Group, self).invoke(ctx))
        if code:
            ctx.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="holofs")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """holofs: RCC holotree environments, instantly (mount) or fast (materialize)."""
    logs.configure(logs.WARNING - 10 * min(verbose, 2))
