"""The ``holofs`` command line: one click group; each ``cmd_*.py`` module adds commands.

User mistakes and bad input surface as HolofsError and are printed as one line
(``holofs: error: ...``) with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from .. import __version__
from ..errors import HolofsError


class _Group(click.Group):
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
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="holofs: %(levelname)s: %(message)s", stream=sys.stderr)


for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")):
    importlib.import_module(f"{__name__}.{_mod}").register(cli)


def main() -> None:
    cli(prog_name="holofs")
