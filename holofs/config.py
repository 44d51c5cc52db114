"""Effective settings, with one precedence order for every command.

CLI flags > ``HOLOFS_*`` environment variables > settings file (TOML at
``holofs.paths.default_config_file()``) > built-in defaults. ``load_settings`` returns the
values and, in ``Settings.source[name]``, where each one came from.
"""

from __future__ import annotations

import os

from .errors import UsageError
from .paths import default_cache_dir, default_config_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STRATEGY_CHOICES = ("auto", "reflink", "copy", "hardlink")
VERIFY_CHOICES = ("always", "trusted", "skip")
COMPRESSION_CHOICES = ("gzip", "zstd", "none")


def default_workers() -> int:
    return min(32, 2 * (os.cpu_count() or 1))


class Settings:
    """Effective settings; ``source[name]`` is "cli", "env HOLOFS_X", "file <path>", or "default"."""

    def __init__(self) -> None:
        self.strategy = "auto"
        self.verify = "trusted"
        self.compression = "gzip"
        self.copy_patterns: tuple[str, ...] = ()
        self.workers = default_workers()
        self.cache_dir = os.fspath(default_cache_dir())
        self.fast = False
        self.source: dict[str, str] = {}

    def as_dict(self) -> dict[str, Any]:
        return {
            name: {"value": list(v) if isinstance(v := getattr(self, name), tuple) else v,
                   "source": self.source.get(name, "default")}
            for name in NAMES
        }


NAMES = ("strategy", "verify", "compression", "copy_patterns", "workers", "cache_dir", "fast")
ENV = {name: f"HOLOFS_{name.upper()}" for name in NAMES}


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check and convert one setting's value; errors name the setting and its source."""
    def bad(why: str) -> UsageError:
        return UsageError(f"setting {name!r} from {where}: {why}")

    if name in ("strategy", "verify", "compression"):
        choices = {"strategy": STRATEGY_CHOICES, "verify": VERIFY_CHOICES, "compression": COMPRESSION_CHOICES}[name]
        if not isinstance(value, str) or value.lower() not in choices:
            raise bad(f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()
    if name == "copy_patterns":
        if isinstance(value, str):
            value = [p.strip() for p in value.replace(":", ",").split(",")]
        if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
            raise bad("expected a list of glob patterns")
        return tuple(p for p in value if p)
    if name == "workers":
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise bad(f"{value!r} is not a whole number") from None
        if isinstance(value, bool) or not 1 <= n <= 256:
            raise bad(f"{value!r} must be between 1 and 256")
        return n
    if name == "cache_dir":
        if not isinstance(value, str) or not value:
            raise bad("expected a directory path")
        return os.path.abspath(os.path.expanduser(value))
    if name == "fast":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            return value.lower() in ("1", "true", "yes", "on")
        raise bad(f"{value!r} is not a boolean")
    raise bad("unknown setting")  # pragma: no cover


def read_settings_file(path: str | os.PathLike[str] | None = None) -> tuple[dict[str, Any], str]:
    """The settings file's table (empty if absent) and its path."""
    path = os.fspath(path or default_config_file())
    try:
        with open(path, "rb") as f:
            import tomllib  # only when there is a settings file: it costs each start-up ~2 ms

            data = tomllib.load(f)
    except FileNotFoundError:
        return {}, path
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise UsageError(f"settings file {path} is unreadable: {exc}") from None
    if isinstance(data.get("holofs"), dict):  # accept an optional [holofs] table
        data = data["holofs"]
    unknown = sorted(k for k in data if k.replace("-", "_") not in NAMES)
    if unknown:
        raise UsageError(f"settings file {path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(NAMES)})")
    return {k.replace("-", "_"): v for k, v in data.items()}, path


def load_settings(cli_overrides: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None,
                  config_file: str | os.PathLike[str] | None = None) -> Settings:
    """Effective settings: ``cli_overrides`` (None values ignored) > env > file > defaults.

    ``fast`` means strategy=reflink and verify=trusted, unless those were given at a higher
    or equal precedence level than ``fast`` itself."""
    env = os.environ if environ is None else environ
    cli = {k: v for k, v in (cli_overrides or {}).items() if v is not None and v != ()}
    unknown = sorted(set(cli) - set(NAMES))
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(unknown)}")
    file_values, file_path = read_settings_file(config_file)
    settings = Settings()
    source = {name: "default" for name in NAMES}
    rank = {name: 0 for name in NAMES}
    for name in NAMES:
        if name in cli:
            value, where, level = cli[name], "cli", 3
        elif env.get(ENV[name], "") != "":
            value, where, level = env[ENV[name]], f"env {ENV[name]}", 2
        elif name == "cache_dir" and env.get("HOLOFS_CACHE"):
            value, where, level = env["HOLOFS_CACHE"], "env HOLOFS_CACHE", 2
        elif name in file_values:
            value, where, level = file_values[name], f"file {file_path}", 1
        else:
            continue
        setattr(settings, name, _coerce(name, value, where))
        source[name] = where
        rank[name] = level
    if settings.fast:
        for name, value in (("strategy", "reflink"), ("verify", "trusted")):
            if rank[name] < rank["fast"]:
                setattr(settings, name, value)
                source[name] = f"fast ({source['fast']})"
    settings.source = source
    return settings
