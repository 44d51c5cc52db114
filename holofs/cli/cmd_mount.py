"""``holofs mount`` / ``holofs umount``: serve a catalog lazily over FUSE."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    group.add_command(mount_cmd)
    group.add_command(umount_cmd)


@click.command("mount")
@click.argument("catalog", type=click.Path(path_type=str))
@click.argument("directory", required=False, type=click.Path(path_type=str))
@click.option("--hololib", type=click.Path(path_type=str), default=None,
              help="Hololib holding the catalog (then CATALOG may be a catalog name or blueprint).")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground (Ctrl-C unmounts).")
@click.option("--cache", "cache", type=click.Path(path_type=str), default=None,
              help="Cache directory for materialized files (default: holofs' user cache).")
@click.option("--verify", type=click.Choice(["trusted", "always", "skip"]), default="trusted", show_default=True,
              help="Hash blobs before use: once per blob file (trusted), every fill (always) or never (skip).")
@click.option("--allow-other", is_flag=True, help="Let other users access the mount (needs user_allow_other).")
@click.option("--relocate-name-only", is_flag=True,
              help="Allow a mount point outside the recorded base directory (only the name is rewritten).")
@click.option("--read-only", is_flag=True, help="No writable layer: every write fails with EROFS.")
@click.option("--upper", type=click.Path(path_type=str), default=None,
              help="Directory of the writable layer (default: under the cache, keyed by the mount point).")
@click.option("--prefetch/--no-prefetch", default=True, show_default=True,
              help="On the first miss in a directory, fill its other small files in the background.")
@click.option("--kernel-opens/--daemon-opens", default=True, show_default=True,
              help="Leave opens, closes and directory listings the kernel has seen to the kernel; "
                   "--daemon-opens sends each one to the daemon (slower; for comparison).")
@click.option("--json", "as_json", is_flag=True, help="Print the mount's details as JSON once ready.")
def mount_cmd(catalog: str, directory: str | None, hololib: str | None, foreground: bool, cache: str | None,
              verify: str, allow_other: bool, relocate_name_only: bool, read_only: bool, upper: str | None,
              prefetch: bool, kernel_opens: bool, as_json: bool) -> None:
    """Mount CATALOG at DIRECTORY (default: the path it was recorded at).

    Files are materialized into the cache on first open, with relocation applied, and
    served from there. Changes (bytecode, pip installs, edits, deletions) go to a writable
    layer that survives remounts (`holofs status`, `holofs reset`); --read-only turns it off.
    Without -f the command returns once the mount is ready and a daemon keeps serving it;
    `holofs umount DIRECTORY` ends it."""
    from ..mounts import MountOptions, mount_daemon, serve_foreground
    from .output import emit_json

    opts = MountOptions(catalog=catalog, mountpoint=directory, hololib=hololib, cache=cache, verify=verify,
                        allow_other=allow_other, relocate_name_only=relocate_name_only,
                        read_only=read_only, upper=upper, prefetch=prefetch, kernel_opens=kernel_opens)
    if foreground:
        def on_ready(mountpoint: str, rundir: object) -> None:
            if as_json:
                import os

                emit_json({"mountpoint": mountpoint, "pid": os.getpid(), "runtime_dir": str(rundir)})
            else:
                click.echo(f"holofs: mounted at {mountpoint} (Ctrl-C to unmount)", err=True)

        serve_foreground(opts, on_ready=on_ready)
        return
    info = mount_daemon(opts)
    if as_json:
        emit_json(info)
    else:
        click.echo(f"mounted at {info['mountpoint']} (pid {info['pid']}, log {info['log']})")


@click.command("umount")
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--cache", "cache", type=click.Path(path_type=str), default=None,
              help="Cache directory the mount was started with (to find its daemon).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def umount_cmd(directory: str, cache: str | None, as_json: bool) -> None:
    """Unmount a holofs mount, also one whose daemon died ("Transport endpoint is not connected")."""
    from ..mounts import unmount
    from .output import emit_json

    result = unmount(directory, cache=cache)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"unmounted {result['mountpoint']}" + (" (lazily)" if result["lazy"] else ""))
