"""Default per-user locations (overridable by settings and flags)."""

from __future__ import annotations

import contextlib
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    P = TypeVar("P", bound="str | os.PathLike[str]")

# Paths here are strings: a restore imports no pathlib (with urllib.parse and ipaddress, ~6 ms).


def default_cache_dir() -> str:
    """Root of holofs' content-addressed cache and verification record (``HOLOFS_CACHE``)."""
    env = os.environ.get("HOLOFS_CACHE")
    if env:
        return env
    return _user_dir("XDG_CACHE_HOME", "~/.cache", "user_cache_dir")


def default_config_file() -> str:
    """The settings file (``HOLOFS_CONFIG``), TOML."""
    env = os.environ.get("HOLOFS_CONFIG")
    if env:
        return env
    return os.path.join(_user_dir("XDG_CONFIG_HOME", "~/.config", "user_config_dir"), "settings.toml")


def _user_dir(xdg_variable: str, xdg_default: str, platformdirs_function: str) -> str:
    """holofs' per-user directory of one kind: on Linux by the XDG base-directory rule (the
    variable if it holds an absolute path, else the default under ``~``), as platformdirs
    computes it; elsewhere platformdirs' (importing it costs ~4 ms, paid only off Linux)."""
    if sys.platform.startswith("linux"):
        base = os.environ.get(xdg_variable, "")
        return os.path.join(base if os.path.isabs(base) else os.path.expanduser(xdg_default), "holofs")
    import platformdirs

    return str(getattr(platformdirs, platformdirs_function)("holofs"))


def path_key(path: str | os.PathLike[str]) -> str:
    """The name of a per-catalog cache file (index, manifest): 32 hex digits of the SHA-256
    of ``path`` made absolute."""
    from .digest import sha256_hex

    return sha256_hex(os.path.abspath(os.fspath(path)).encode("utf-8", "surrogateescape"))[:32]


def private_dir(path: P) -> P:
    """Create ``path`` (and parents) readable by the owner only; return it.

    An existing directory of ours with looser modes is tightened to 0700, but a shared one
    (world-writable, like /tmp, or another user's) is refused, never chmodded."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_mode & 0o002 or (hasattr(os, "geteuid") and st.st_uid != os.geteuid()):
        from .errors import UnsafePath

        raise UnsafePath(f"{path} is a shared directory (world-writable or another user's): "
                         "holofs keeps private files only in a directory of its own (--cache or HOLOFS_CACHE)")
    if st.st_mode & 0o077:
        with contextlib.suppress(PermissionError):
            os.chmod(path, 0o700)
    return path
