"""``holofs library``: maintenance of a hololib (``convert``)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    group.add_command(library_group)


@click.group("library")
def library_group() -> None:
    """Maintain a hololib."""


@library_group.command("convert")
@click.argument("hololib", type=click.Path(path_type=str))
@click.option("--to", "to", required=True, type=click.Choice(["none", "gzip", "zstd"]), help="Target encoding.")
@click.option("--level", type=click.IntRange(1, 22), default=None, help="Compression level (gzip 1-9, zstd 1-22).")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Parallel workers.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def convert_cmd(hololib: str, to: str, level: int | None, workers: int | None, as_json: bool) -> None:
    """Re-encode every blob of HOLOLIB in place (verified against its digest, atomic).

    Digests never change: a SHA-256 library converted to raw keeps SHA-256 names. RCC's
    compress.no marker is set/cleared only when every digest already uses the marker's
    algorithm (SipHash-128 for raw, SHA-256 otherwise)."""
    from ..errors import CorruptBlob, UsageError
    from ..library import GZIP
    from .output import emit_json, human_bytes

    if level is not None and to == GZIP and level > 9:
        raise UsageError("--level for gzip must be between 1 and 9")
    from ..convert import convert_library

    result = convert_library(hololib, to, level=level, workers=workers)
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(f"converted {result.converted} blobs to {to}, {result.unchanged} already {to}; "
                   f"{human_bytes(result.bytes_before)} -> {human_bytes(result.bytes_after)}; "
                   f"compress.no marker {result.marker}; {result.seconds:.2f} s")
    if result.corrupt:
        raise CorruptBlob(f"{len(result.corrupt)} corrupt blob(s) left unconverted: {result.corrupt[0]}")
