"""The writable upper layer of a mount, in the overlay-filesystem format.

A mount is the read-only catalog tree (lower) plus an upper directory that holds every
change: new and modified files (modified catalog files are copied up whole), and deletions
recorded as *whiteouts*. holofs keeps the upper directory in the format Linux overlayfs
and fuse-overlayfs use, so either can serve it and it survives remounts:

- a whiteout is a character device 0/0 (or, where device nodes cannot be made, an empty
  ``.wh.<name>`` file, fuse-overlayfs' unprivileged form);
- a directory that replaces a catalog directory (rather than merging with it) is *opaque*:
  xattr ``trusted.overlay.opaque``/``user.overlay.opaque`` = ``y`` (or a ``.wh..wh..opq`` file).

This module only reads and drops such directories; it never mounts anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from .catalog import Catalog, DirEntry
from .paths import private_dir

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque")

ADDED = "added"
MODIFIED = "modified"
DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class LayerDirs:
    """Where one mount keeps its upper layer and overlayfs' work directory."""

    root: Path

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def create(self) -> LayerDirs:
        if not self.root.parent.exists():  # e.g. <cache>/layers: private too, not umask's mode
            private_dir(self.root.parent)
        private_dir(self.root)
        self.upper.mkdir(exist_ok=True)
        self.work.mkdir(exist_ok=True)
        return self


def layer_dirs_for(target: str | os.PathLike[str], cache_dir: Path) -> LayerDirs:
    """The default upper layer of a mount target: keyed by its absolute path."""
    absolute = os.path.abspath(os.fspath(target))
    key = hashlib.sha256(absolute.encode()).hexdigest()[:16]
    return LayerDirs(cache_dir / "layers" / f"{os.path.basename(absolute) or 'root'}-{key}")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the mounted tree and its catalog."""

    path: str
    kind: str  # ADDED, MODIFIED or DELETED
    is_dir: bool = False


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str, names: list[str]) -> bool:
    if OPAQUE_MARKER in names:
        return True
    for attr in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _catalog_children(node: DirEntry | None) -> dict[str, bool]:
    """name -> is_dir for what a catalog directory shows (symlinked dirs count as entries)."""
    if node is None or node.is_symlink or node.shadow:
        return {}
    children = {name: not sub.is_symlink for name, sub in node.subdirs.items()}
    children.update({name: False for name in node.files})
    return children


def scan_changes(upper: str | os.PathLike[str], catalog: Catalog) -> list[Change]:
    """Every change the upper layer makes relative to the catalog, sorted by path."""
    changes: list[Change] = []

    def walk(rel: str, node: DirEntry | None) -> None:
        here = os.path.join(os.fspath(upper), rel) if rel else os.fspath(upper)
        try:
            names = sorted(os.listdir(here))
        except FileNotFoundError:
            return
        lower = _catalog_children(node)
        if rel and node is not None and _is_opaque(here, names):
            # The directory was removed and made anew: everything below it in the catalog is gone.
            changes.extend(Change(_join(rel, n), DELETED, d) for n, d in lower.items() if n not in names)
            node = None
            lower = {}
        for name in names:
            if name == OPAQUE_MARKER:
                continue
            child_rel = _join(rel, name)
            if name.startswith(WHITEOUT_PREFIX):
                gone = name[len(WHITEOUT_PREFIX):]
                if gone in lower:
                    changes.append(Change(_join(rel, gone), DELETED, lower[gone]))
                continue
            st = os.lstat(os.path.join(here, name))
            if _is_whiteout(st):
                if name in lower:
                    changes.append(Change(child_rel, DELETED, lower[name]))
                continue
            in_lower = name in lower
            if stat.S_ISDIR(st.st_mode):
                sub = node.subdirs.get(name) if (node is not None and in_lower) else None
                if not in_lower or sub is None or sub.is_symlink:
                    changes.append(Change(child_rel, MODIFIED if in_lower else ADDED, True))
                    walk(child_rel, None)
                else:
                    walk(child_rel, sub)
            else:
                changes.append(Change(child_rel, MODIFIED if in_lower else ADDED, False))

    walk("", catalog.tree)
    return sorted(changes, key=lambda c: c.path)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def drop_layer(dirs: LayerDirs) -> bool:
    """Remove an upper layer (the mount must not be active). True if there was one."""
    if not dirs.root.exists():
        return False
    shutil.rmtree(dirs.root)
    return True


LAYER_RECORD = "layer.json"


def write_layer_record(dirs: LayerDirs, catalog: Catalog, target: str) -> None:
    """Remember which catalog and target a layer belongs to (for status/reset when unmounted)."""
    import json

    from .fsutil import atomic_write_bytes

    record = {"catalog": os.fspath(catalog.source) if catalog.source else None, "target": target,
              "identity": catalog.identity}
    atomic_write_bytes(dirs.root / LAYER_RECORD, json.dumps(record, indent=2).encode(), mode=0o600)


def read_layer_record(dirs: LayerDirs) -> dict[str, str] | None:
    import json

    try:
        return json.loads((dirs.root / LAYER_RECORD).read_text())
    except (OSError, ValueError):
        return None
