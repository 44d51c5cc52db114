"""``holofs status`` / ``holofs reset``: the writable layer of a mount."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click


def register(group: click.Group) -> None:
    group.add_command(status_cmd)
    group.add_command(reset_cmd)


def _locate(directory: str, cache: str | None, upper: str | None) -> tuple[Any, dict[str, Any] | None, Path]:
    """(layer dirs, live mount record or None, cache root) for a mount target."""
    from ..mounts import read_record
    from ..paths import default_cache_dir
    from ..upper import LayerDirs, layer_dirs_for

    target = os.path.abspath(directory)
    cache_root = Path(cache or default_cache_dir()).absolute()
    record = read_record(cache_root, target)
    if upper:
        dirs = LayerDirs(Path(upper).absolute())
    elif record and record.get("upper"):
        dirs = LayerDirs(Path(record["upper"]))
    else:
        dirs = layer_dirs_for(target, cache_root)
    return dirs, record, cache_root


@click.command("status")
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--cache", type=click.Path(path_type=str), default=None, help="Cache directory the mount uses.")
@click.option("--upper", type=click.Path(path_type=str), default=None, help="Writable layer directory, if not the default.")
@click.option("--catalog", "catalog_ref", type=click.Path(path_type=str), default=None,
              help="Catalog to compare with (default: the one the layer was mounted with).")
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
def status_cmd(directory: str, cache: str | None, upper: str | None, catalog_ref: str | None, as_json: bool) -> None:
    """List what the writable layer of DIRECTORY changed: added (A), modified (M), deleted (D)."""
    from ..catalog import read_catalog
    from ..errors import NotFound
    from ..upper import read_layer_record, scan_changes
    from .output import emit_json

    dirs, _record, _ = _locate(directory, cache, upper)
    layer = read_layer_record(dirs)
    ref = catalog_ref or (layer or {}).get("catalog")
    if not dirs.upper.is_dir():
        changes = []
        if ref is None:
            raise NotFound(f"no writable layer for {os.path.abspath(directory)} (was it mounted with this --cache?)")
    else:
        if ref is None:
            raise NotFound(f"the layer at {dirs.root} does not say which catalog it belongs to: pass --catalog")
        changes = scan_changes(dirs.upper, read_catalog(ref))
    if as_json:
        emit_json({"target": os.path.abspath(directory), "layer": os.fspath(dirs.root),
                   "changes": [{"path": c.path, "change": c.kind, "dir": c.is_dir} for c in changes]})
        return
    letters = {"added": "A", "modified": "M", "deleted": "D"}
    for change in changes:
        click.echo(f"{letters[change.kind]} {change.path}{'/' if change.is_dir else ''}")


@click.command("reset")
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--cache", type=click.Path(path_type=str), default=None, help="Cache directory the mount uses.")
@click.option("--upper", type=click.Path(path_type=str), default=None, help="Writable layer directory, if not the default.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def reset_cmd(directory: str, cache: str | None, upper: str | None, as_json: bool) -> None:
    """Drop the writable layer of DIRECTORY: the environment is the catalog again.

    A live mount is unmounted, its layer dropped, and mounted again with the same options."""
    from ..mounts import MountOptions, is_holofs_mount, mount_daemon, unmount
    from ..upper import drop_layer
    from .output import emit_json

    dirs, record, cache_root = _locate(directory, cache, upper)
    target = os.path.abspath(directory)
    remount = None
    if is_holofs_mount(target):
        if not record:
            from ..errors import Busy

            raise Busy(f"{target} is mounted but its daemon record is not in {cache_root}: pass --cache, or unmount first")
        remount = MountOptions(catalog=record["catalog"], mountpoint=target, hololib=record.get("hololib"),
                               cache=os.fspath(cache_root), verify=record.get("verify", "trusted"),
                               allow_other=bool(record.get("allow_other")),
                               relocate_name_only=bool(record.get("relocate_name_only")),
                               read_only=not record.get("writable", True), upper=upper,
                               prefetch=bool(record.get("prefetch", True)),
                               kernel_opens=bool(record.get("kernel_opens", True)))
        unmount(target, cache=cache_root)
    dropped = drop_layer(dirs)
    info = mount_daemon(remount) if remount is not None else None
    if as_json:
        emit_json({"target": target, "dropped": dropped, "remounted": info is not None})
    else:
        click.echo(f"reset {target}: " + ("layer dropped" if dropped else "no changes to drop")
                   + (", remounted" if info else ""))
