"""Options declared once, for click and for plain command lines run without it.

Importing click (and the modules it pulls in: typing, inspect, enum, gettext, ...) costs a
start-up ~25 ms, a tenth of a whole restore. A command whose options are declared here as
:class:`Option` rows is still a click command (help, and every error message, are click's),
but :func:`parse` reads a *plain* command line of it (no help, nothing unknown or invalid:
what scripts and CI run) without importing click. Anything else it leaves to click, so that
the two can never disagree on what a command line means: :func:`parse` returns exactly the
keyword arguments click would pass, or None (a test compares the two).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import click

VALUE, FLAG, MULTIPLE, INT_RANGE = "value", "flag", "multiple", "int-range"


class Option:
    """One ``--flag`` of a command: ``kind`` VALUE (a string), FLAG (True when given, else
    ``default``), MULTIPLE (repeatable: a tuple of strings) or INT_RANGE (a whole number
    from ``low`` to ``high``); VALUE may be limited to ``choices``."""

    __slots__ = ("flag", "dest", "kind", "help", "choices", "low", "high", "default")

    def __init__(self, flag: str, dest: str, kind: str = VALUE, help: str = "", *, choices: tuple[str, ...] = (),
                 low: int = 0, high: int = 0, default: bool | None = False) -> None:
        self.flag, self.dest, self.kind, self.help = flag, dest, kind, help
        self.choices, self.low, self.high, self.default = choices, low, high, default

    def unset(self) -> Any:
        """The value click passes when the option is not given."""
        return {FLAG: self.default, MULTIPLE: ()}.get(self.kind)

    def click_option(self) -> Callable[[Any], Any]:
        """This option as a click decorator."""
        import click

        if self.kind == FLAG:
            return click.option(self.flag, self.dest, is_flag=True, default=self.default, help=self.help)
        if self.kind == MULTIPLE:
            return click.option(self.flag, self.dest, multiple=True, help=self.help)
        if self.kind == INT_RANGE:
            kind: Any = click.IntRange(self.low, self.high)
        else:
            kind = click.Choice(self.choices) if self.choices else click.STRING
        return click.option(self.flag, self.dest, type=kind, default=None, help=self.help)


def click_command(name: str, callback: Callable[..., None], arguments: tuple[str, ...],
                  options: tuple[Option, ...]) -> click.Command:
    """The click command ``name`` taking ``arguments`` then ``options``; help from the docstring."""
    import click

    for option in reversed(options):
        callback = option.click_option()(callback)
    for argument in reversed(arguments):
        callback = click.argument(argument)(callback)
    return click.command(name)(callback)


def parse(args: list[str], arguments: tuple[str, ...], options: tuple[Option, ...]) -> dict[str, Any] | None:
    """The keyword arguments click would pass for ``args`` (the words after the command's
    name), or None unless every word is plainly valid: then click reads them, and reports."""
    by_flag = {o.flag: o for o in options}
    values: dict[str, Any] = {o.dest: o.unset() for o in options}
    given: list[str] = []
    words = iter(args)
    for word in words:
        if not word.startswith("-"):
            given.append(word)
            continue
        flag, eq, inline = word.partition("=")
        option = by_flag.get(flag)
        if option is None:  # "--", "-h", a short or unknown option
            return None
        if option.kind == FLAG:
            if eq:
                return None
            values[option.dest] = True
            continue
        value = inline if eq else next(words, None)
        if value is None or (not eq and value.startswith("-")):
            return None
        if option.kind == MULTIPLE:
            values[option.dest] += (value,)
        elif option.kind == INT_RANGE:
            if not (value.isascii() and value.isdigit() and option.low <= int(value) <= option.high):
                return None
            values[option.dest] = int(value)
        elif option.choices and value not in option.choices:
            return None
        else:
            values[option.dest] = value
    if len(given) != len(arguments):
        return None
    values.update(zip(arguments, given, strict=True))
    return values


def report_errors(run: Callable[[], object]) -> int:
    """Call ``run``; the exit code, a HolofsError printed as one line (never a traceback)."""
    from ..errors import HolofsError

    try:
        run()
    except HolofsError as exc:
        print(f"holofs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("holofs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0
