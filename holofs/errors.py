"""Error hierarchy: every user-facing failure is a HolofsError carrying an errno.

The CLI prints ``str(error)`` on one line and exits non-zero; the FUSE adapter maps
``error.errno`` to a ``FUSEError``. Anything that is not a HolofsError is a bug.
"""

from __future__ import annotations

import errno as _errno


class HolofsError(Exception):
    """Base of all expected failures (bad input, missing files, corrupt data)."""

    errno: int = _errno.EIO
    exit_code: int = 1


class UsageError(HolofsError):
    """The user asked for something that cannot be done as asked."""

    errno = _errno.EINVAL
    exit_code = 2


class NotFound(HolofsError):
    """A catalog, blob, hololib or path does not exist."""

    errno = _errno.ENOENT


class CatalogError(HolofsError):
    """A catalog cannot be read or is malformed (names the entry where possible)."""

    errno = _errno.EINVAL


class LibraryError(HolofsError):
    """A hololib is missing, unreadable or has the wrong layout."""

    errno = _errno.EIO


class MissingBlob(LibraryError):
    """A blob the catalog needs is not in the library (a broken hololib: EIO, not ENOENT)."""

    errno = _errno.EIO


class CorruptBlob(LibraryError):
    """A blob's content does not hash to its digest, or decodes to the wrong size."""

    errno = _errno.EIO


class RelocationError(HolofsError):
    """The target cannot take the recorded identity (length or base directory mismatch)."""

    errno = _errno.EINVAL


class UnsafePath(HolofsError):
    """A write would leave the target or go through a symlink."""

    errno = _errno.EPERM


class ReadOnly(HolofsError):
    """A write was attempted on something read-only."""

    errno = _errno.EROFS


class Busy(HolofsError):
    """Another holofs process holds the lock on the same target."""

    errno = _errno.EBUSY


class NoSpace(HolofsError):
    """The disk filled up (ENOSPC/EDQUOT)."""

    errno = _errno.ENOSPC
