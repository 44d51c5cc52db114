"""The ``holofs`` command line: one click group (:mod:`holofs.cli.app`); each ``cmd_*.py``
module adds commands. Plain command lines of the :data:`PLAIN` commands run without importing
click at all (:mod:`holofs.cli.plain`).

A command's module is imported only when that command runs or help lists it (importing them
all took ~9 ms of ``import holofs.cli``). :data:`COMMANDS` says which module defines which
command; a test checks it against what the ``cmd_*.py`` modules register.

User mistakes and bad input surface as HolofsError and are printed as one line
(``holofs: error: ...``) with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import gc
import sys

from .. import logs
from .plain import parse, report_errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import click

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


def command_module(module: str) -> Any:
    """The ``cmd_*`` module ``module``, imported (by ``__import__``: importlib and warnings
    would add ~0.5 ms to every command's start-up)."""
    name = f"{__name__}.{module}"
    __import__(name)
    return sys.modules[name]


def register_module(group: click.Group, module: str) -> None:
    """Import ``cmd_*`` module ``module`` and let it add its commands to ``group``."""
    command_module(module).register(group)


PLAIN: tuple[str, ...] = ("materialize",)
"""Commands whose plain command lines run without click (:mod:`holofs.cli.plain`): their
modules declare ``ARGUMENTS``, ``OPTIONS`` and ``run``, the command's function."""


def run_plain(args: list[str]) -> int | None:
    """Run ``holofs <args>`` without click if it is a plain command line of a :data:`PLAIN`
    command: the exit code; None if click must read it."""
    if not args or args[0] not in PLAIN:
        return None
    # A short-lived process of acyclic objects (modules, a catalog, the native call's lists):
    # garbage-collection passes over them only cost time (~3 ms of a restore).
    gc.disable()
    module = command_module(COMMANDS[args[0]])
    kwargs = parse(args[1:], module.ARGUMENTS, module.OPTIONS)
    if kwargs is None:
        gc.enable()
        return None
    logs.configure(logs.WARNING)  # as the group does without -v
    return report_errors(lambda: module.run(**kwargs))


def main() -> None:
    code = run_plain(sys.argv[1:])
    if code is not None:
        raise SystemExit(code)
    from .app import cli

    cli(prog_name="holofs")
