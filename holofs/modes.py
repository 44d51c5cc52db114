"""Go ``fs.FileMode`` <-> POSIX ``st_mode`` conversion.

RCC catalogs store Go file modes: permission bits in the low 9 bits and the file type
and special bits as high bits. They must never be handed to chmod as they are.
"""

from __future__ import annotations

import stat

GO_DIR = 1 << 31
GO_APPEND = 1 << 30
GO_EXCLUSIVE = 1 << 29
GO_TEMPORARY = 1 << 28
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_NAMED_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHAR_DEVICE = 1 << 21
GO_STICKY = 1 << 20
GO_IRREGULAR = 1 << 19

GO_TYPE_MASK = GO_DIR | GO_SYMLINK | GO_NAMED_PIPE | GO_SOCKET | GO_DEVICE | GO_CHAR_DEVICE | GO_IRREGULAR
GO_SPECIAL_TYPES = GO_NAMED_PIPE | GO_SOCKET | GO_DEVICE | GO_CHAR_DEVICE | GO_IRREGULAR
GO_KNOWN_BITS = (
    GO_TYPE_MASK | GO_APPEND | GO_EXCLUSIVE | GO_TEMPORARY | GO_SETUID | GO_SETGID | GO_STICKY | 0o777
)


def go_to_posix(go_mode: int) -> int:
    """Full POSIX st_mode (type and permission bits) for a Go file mode."""
    perm = go_mode & 0o777
    if go_mode & GO_SETUID:
        perm |= stat.S_ISUID
    if go_mode & GO_SETGID:
        perm |= stat.S_ISGID
    if go_mode & GO_STICKY:
        perm |= stat.S_ISVTX
    if go_mode & GO_DIR:
        kind = stat.S_IFDIR
    elif go_mode & GO_SYMLINK:
        kind = stat.S_IFLNK
    elif go_mode & GO_NAMED_PIPE:
        kind = stat.S_IFIFO
    elif go_mode & GO_SOCKET:
        kind = stat.S_IFSOCK
    elif go_mode & GO_DEVICE:
        kind = stat.S_IFCHR if go_mode & GO_CHAR_DEVICE else stat.S_IFBLK
    else:
        kind = stat.S_IFREG
    return kind | perm


def posix_to_go(st_mode: int) -> int:
    """Go file mode for a POSIX st_mode, as Go's ``os.Stat`` reports it."""
    go = st_mode & 0o777
    if st_mode & stat.S_ISUID:
        go |= GO_SETUID
    if st_mode & stat.S_ISGID:
        go |= GO_SETGID
    if st_mode & stat.S_ISVTX:
        go |= GO_STICKY
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        go |= GO_DIR
    elif kind == stat.S_IFLNK:
        go |= GO_SYMLINK
    elif kind == stat.S_IFIFO:
        go |= GO_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        go |= GO_SOCKET
    elif kind == stat.S_IFCHR:
        go |= GO_DEVICE | GO_CHAR_DEVICE
    elif kind == stat.S_IFBLK:
        go |= GO_DEVICE
    return go


def permissions(go_mode: int, *, keep_special: bool = False) -> int:
    """chmod argument for a restored file: 0o777 bits, setuid/setgid/sticky only if asked."""
    posix = go_to_posix(go_mode)
    mask = 0o7777 if keep_special else 0o777
    return posix & mask
