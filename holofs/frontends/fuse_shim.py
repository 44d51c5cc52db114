"""Loads :mod:`holofs._fuseshim` (see ``holofs/_fuseshim.c``) where pyfuse3 will bind to it.

The shim only takes effect if it is in the process's global symbol scope before pyfuse3's
extension is loaded: :func:`load` must run before the first ``import pyfuse3`` (the FUSE
frontend imports this module first). Whether a mount's session was set up by it is known
after ``pyfuse3.init`` (:func:`installed`), whether the kernel lets it leave opens to the
kernel once the session has served the kernel's INIT (:func:`active`).
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

NO_OPEN_FH = 1 << 63
"""Set in the file handle of a read or readdir the kernel sent without an open: the rest is the inode."""
INODE_MASK = NO_OPEN_FH - 1

_shim: ModuleType | None = None


def load() -> ModuleType | None:
    """The shim module, loaded RTLD_GLOBAL; None if it is not built or pyfuse3 was loaded first."""
    global _shim
    if _shim is not None or "pyfuse3" in sys.modules:
        return _shim
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL)
    try:
        from .. import _fuseshim
    except ImportError:
        return None
    finally:
        sys.setdlopenflags(flags)
    assert _fuseshim.NO_OPEN_FH == NO_OPEN_FH
    _shim = _fuseshim
    return _shim


def configure(enabled: bool) -> None:
    """Whether the next session leaves opens to the kernel (if the shim is loaded)."""
    if _shim is not None:
        _shim.configure(enabled)


def installed() -> bool:
    """True if the last FUSE session of this process was set up by the shim."""
    return _shim is not None and bool(_shim.installed())


def active() -> bool:
    """True once that session leaves opens to the kernel: set up by the shim, and the kernel's
    INIT (the first request a session serves) offered it."""
    return _shim is not None and bool(_shim.active())
