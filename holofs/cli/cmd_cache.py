"""``holofs cache stats`` / ``holofs cache gc``: inspect and trim the materialized-file cache."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    group.add_command(cache_group)


@click.group("cache")
def cache_group() -> None:
    """The content-addressed cache that mounts materialize files into."""


_cache_option = click.option("--cache", "cache", type=click.Path(path_type=str), default=None,
                              help="Cache directory (default: holofs' user cache).")


@cache_group.command("stats")
@_cache_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats_cmd(cache: str | None, as_json: bool) -> None:
    """Files and bytes in the cache, by kind."""
    from ..cache import FileCache
    from .output import emit_json, human_bytes

    stats = FileCache(cache).stats()
    if as_json:
        emit_json(stats)
        return
    click.echo(f"cache: {stats['cache']}")
    click.echo(f"total: {stats['files']} files, {human_bytes(stats['bytes'])}")
    for kind, v in stats["by_kind"].items():
        click.echo(f"  {kind:<10} {v['files']:>8} files  {human_bytes(v['bytes']):>10}")


@cache_group.command("gc")
@_cache_option
@click.option("--max-size", default=None, help="Evict least recently used files down to this size (e.g. 2G).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def gc_cmd(cache: str | None, max_size: str | None, as_json: bool) -> None:
    """Remove leftovers of interrupted fills; with --max-size, evict least recently used files.

    Files held open by any live process (e.g. a mount) are never removed."""
    from ..cache import FileCache, parse_size
    from .output import emit_json, human_bytes

    limit = parse_size(max_size) if max_size is not None else None
    result = FileCache(cache).gc(limit)
    if as_json:
        emit_json(result)
        return
    click.echo(f"removed {result['removed_temp']} temp files, evicted {result['evicted']} files, "
               f"freed {human_bytes(result['freed_bytes'])}; {human_bytes(result['remaining_bytes'])} remain")
