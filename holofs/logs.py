"""holofs' logging set-up, applied once logging is in use.

Importing :mod:`logging` costs ~6 ms, which a command that logs nothing (a materialize) need
not pay. The CLI says how to log (:func:`configure`); modules get their loggers from
:func:`logger`, which imports logging and applies that set-up then.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

WARNING = 30  # logging.WARNING, without importing logging
FORMAT = "holofs: %(levelname)s: %(message)s"
_level: int | None = None  # the CLI's level; None: leave logging as the embedding program set it


def configure(level: int) -> None:
    """Log records of ``level`` and above to stderr as ``holofs: LEVEL: message``: now if
    logging is already imported, else when :func:`logger` is first called."""
    global _level
    _level = level
    if "logging" in sys.modules:
        _apply()


def logger(name: str) -> logging.Logger:
    """The logger ``name``, with the CLI's set-up applied."""
    import logging

    _apply()
    return logging.getLogger(name)


def _apply() -> None:
    if _level is not None:
        import logging

        logging.basicConfig(level=_level, format=FORMAT, stream=sys.stderr)
