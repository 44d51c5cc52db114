"""Default per-user locations (overridable by settings and flags)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Root of holofs' content-addressed cache and verification record (``HOLOFS_CACHE``)."""
    env = os.environ.get("HOLOFS_CACHE")
    if env:
        return Path(env)
    import platformdirs  # only when needed (no HOLOFS_CACHE, no --cache): with its imports ~5 ms

    return Path(platformdirs.user_cache_dir("holofs"))


def default_config_file() -> Path:
    """The settings file (``HOLOFS_CONFIG``), TOML."""
    env = os.environ.get("HOLOFS_CONFIG")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("holofs")) / "settings.toml"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only; return it.

    An existing directory of ours with looser modes is tightened to 0700, but a shared one
    (world-writable, like /tmp, or another user's) is refused, never chmodded."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_mode & 0o002 or (hasattr(os, "geteuid") and st.st_uid != os.geteuid()):
        from .errors import UnsafePath

        raise UnsafePath(f"{path} is a shared directory (world-writable or another user's): "
                         "holofs keeps private files only in a directory of its own (--cache or HOLOFS_CACHE)")
    if st.st_mode & 0o077:
        with contextlib.suppress(PermissionError):
            os.chmod(path, 0o700)
    return path
