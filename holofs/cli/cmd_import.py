"""``holofs import``: record a directory tree into a hololib (RCC's lift)."""

from __future__ import annotations

import contextlib
from typing import Any

import click


def register(group: click.Group) -> None:
    group.add_command(import_cmd)


@click.command("import")
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--hololib", "hololib", required=True, type=click.Path(path_type=str),
              help="Hololib to record into (created if missing).")
@click.option("--compress", type=click.Choice(["gzip", "zstd", "none"]), default=None,
              help="Blob encoding. 'none' stores raw blobs with SipHash-128 digests and RCC's "
                   "catalog/compress.no marker. Default: follow the hololib (gzip unless it has the marker).")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Parallel file workers.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="Never show a progress bar.")
def import_cmd(directory: str, hololib: str, compress: str | None, workers: int | None, as_json: bool,
               no_progress: bool) -> None:
    """Record DIRECTORY into a hololib and write its catalog.

    The identity is the basename of DIRECTORY and the recorded path its absolute path;
    every occurrence of the identity in file contents is noted for relocation. The catalog
    goes to HOLOLIB/catalog/<blueprint>v12.<platform>."""
    from ..importer import import_tree
    from .output import emit_json, human_bytes, progress

    with contextlib.ExitStack() as stack:
        bar: list[Any] = []

        def hook(n: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress("importing", total, enabled=not no_progress and not as_json)))
            if n:
                bar[0].advance(n)

        result = import_tree(directory, hololib, compress=compress, workers=workers, progress=hook)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"catalog   {result.catalog_path}")
    click.echo(f"identity  {result.catalog.identity}  ({result.catalog.platform}, blueprint {result.catalog.blueprint})")
    click.echo(f"recorded  {result.files} files, {result.dirs} dirs, {result.symlinks} symlinks, {human_bytes(result.bytes)}")
    click.echo(f"blobs     {result.distinct_blobs} distinct, {result.new_blobs} new ({human_bytes(result.new_blob_bytes)} stored, {result.compress})")
    click.echo(f"relocate  {result.relocated_files} files carry the identity")
    if result.skipped:
        click.echo(f"skipped   {len(result.skipped)} special files (fifos, sockets, devices)")
    click.echo(f"took      {result.seconds:.2f} s")
