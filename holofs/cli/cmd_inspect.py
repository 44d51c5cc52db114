"""``holofs ls`` and ``holofs info``: look inside a catalog (and its hololib)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..library import Hololib


def register(group: click.Group) -> None:
    group.add_command(ls_cmd)
    group.add_command(info_cmd)


_CATALOG_HELP = "Look CATALOG up by file name or blueprint (prefix) in this hololib."


def _load(ref: str, hololib: str | None, *, need_library: bool) -> tuple[Catalog, Hololib | None]:
    """A catalog named by path, or by name/blueprint with --hololib."""
    from pathlib import Path

    from ..catalog import read_catalog
    from ..errors import LibraryError, UsageError
    from ..library import resolve_catalog

    if hololib is not None or need_library:
        return resolve_catalog(ref, hololib)
    path = Path(ref)
    if path.is_dir():
        raise UsageError(f"{ref} is a directory: name a catalog file, or pass --hololib with a catalog name")
    catalog = read_catalog(path)
    try:
        from ..library import Hololib

        return catalog, Hololib.of_catalog(path)
    except LibraryError:
        return catalog, None


def _mode_string(go_mode: int, *, symlink: bool) -> str:
    import stat

    from ..modes import go_to_posix

    posix = go_to_posix(go_mode)
    if symlink:
        posix = stat.S_IFLNK | (posix & 0o7777)
    return stat.filemode(posix)


def _rows(catalog: Catalog) -> list[dict[str, Any]]:
    from ..catalog import iter_dirs

    rows: list[dict[str, Any]] = []
    for path, node in iter_dirs(catalog.tree):
        if path:
            rows.append({
                "path": path, "type": "symlink-dir" if node.is_symlink else "dir", "mode": node.mode,
                "size": None, "digest": None, "rewrite": [], "symlink": node.symlink or None, "shadow": node.shadow,
            })
        shadow = node.shadow or node.is_symlink
        for name in sorted(node.files):
            f = node.files[name]
            rows.append({
                "path": f"{path}/{name}" if path else name, "type": "symlink" if f.symlink else "file",
                "mode": f.mode, "size": f.size, "digest": f.digest, "rewrite": list(f.rewrite),
                "symlink": f.symlink or None, "shadow": shadow,
            })
    return rows


@click.command("ls")
@click.argument("catalog")
@click.option("--hololib", type=click.Path(path_type=str), default=None, help=_CATALOG_HELP)
@click.option("-l", "--long", "long_", is_flag=True, help="Add digest and rewrite offsets.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list of entries.")
def ls_cmd(catalog: str, hololib: str | None, long_: bool, as_json: bool) -> None:
    """List the tree recorded in CATALOG.

    Each line: mode, size, indented name ('/' after directories), '-> target' for
    symlinks. Marks: [R<n>] the file carries the identity at n offsets (rewritten on
    restore); [shadow] recorded beneath a symlinked directory, never restored."""
    from .output import emit_json

    cat, _lib = _load(catalog, hololib, need_library=False)
    rows = _rows(cat)
    if as_json:
        emit_json(rows)
        return
    lines = []
    for row in rows:
        depth = row["path"].count("/")
        name = row["path"].rsplit("/", 1)[-1]
        is_dir = row["type"] in ("dir", "symlink-dir")
        size = "-" if row["size"] is None else str(row["size"])
        text = f"{_mode_string(row['mode'], symlink=bool(row['symlink']))} {size:>10}  {'  ' * depth}{name}"
        if is_dir and not row["symlink"]:
            text += "/"
        if row["symlink"]:
            text += f" -> {row['symlink']}"
        marks = []
        if row["rewrite"] and not row["symlink"]:  # a symlink is restored as a link, never rewritten
            marks.append(f"[R{len(row['rewrite'])}]")
        if row["shadow"]:
            marks.append("[shadow]")
        if marks:
            text += "  " + " ".join(marks)
        if long_ and not is_dir:
            text += f"  {row['digest']}"
            if row["rewrite"]:
                text += " @" + ",".join(map(str, row["rewrite"]))
        lines.append(text)
    if lines:
        click.echo("\n".join(lines))


@click.command("info")
@click.argument("catalog")
@click.option("--hololib", type=click.Path(path_type=str), default=None, help=_CATALOG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info_cmd(catalog: str, hololib: str | None, as_json: bool) -> None:
    """Summarise CATALOG: identity, path, counts, and how its blobs are stored.

    The library breakdown reads each needed blob's magic bytes (gzip, zstd, raw) and
    counts missing blobs."""
    from ..stats import full_stats
    from .output import emit_json, human_bytes

    cat, lib = _load(catalog, hololib, need_library=False)
    if lib is None:
        click.echo(f"holofs: note: {catalog} is not inside a hololib (no ../../library/): blobs not inspected", err=True)
    s = full_stats(cat, lib)
    if as_json:
        out = s.as_dict()
        out["catalog"] = str(cat.source) if cat.source else None
        out["hololib"] = str(lib.root) if lib else None
        emit_json(out)
        return
    rows = [
        ("catalog", str(cat.source)),
        ("hololib", str(lib.root) if lib else "-"),
        ("identity", s.identity),
        ("path", s.path),
        ("platform", s.platform),
        ("blueprint", s.blueprint),
        ("written by", s.rcc or "-"),
        ("entries", f"{s.entries} ({s.dirs} dirs, {s.files} files, {s.symlinks} symlinks, {s.shadow} shadow)"),
        ("bytes", f"{s.bytes} ({human_bytes(s.bytes)})"),
        ("blobs", f"{s.distinct_blobs} distinct"),
        ("relocations", f"{s.relocated_files} files, {s.rewrite_offsets} offsets"),
    ]
    if s.library is not None:
        lib_text = ", ".join(f"{k} {v}" for k, v in s.library.items())
        rows.append(("library", lib_text))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    if s.library and s.library.get("missing"):
        click.echo(f"warning: {s.library['missing']} blobs are missing from the hololib", err=True)
