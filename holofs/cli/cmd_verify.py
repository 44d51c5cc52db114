"""``holofs verify``: check every blob of a hololib (or those a catalog needs)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click


def register(group: click.Group) -> None:
    group.add_command(verify_cmd)


@click.command("verify")
@click.argument("hololib", type=click.Path(path_type=str))
@click.option("--catalog", "catalog_refs", multiple=True, metavar="CATALOG",
              help="Check only the blobs this catalog needs (path, name or blueprint; repeatable): "
                   "each must exist, hash to its digest and decode to the recorded size.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Parallel checks (default: CPUs).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--delete-bad", is_flag=True,
              help="Delete corrupt blobs, digest mismatches and leftover temporary files (nothing else).")
@click.option("--no-progress", is_flag=True, help="Never show a progress bar.")
def verify_cmd(hololib: str, catalog_refs: tuple[str, ...], workers: int | None, as_json: bool, delete_bad: bool,
               no_progress: bool) -> None:
    """Check the integrity of every blob in HOLOLIB.

    Each blob is decoded (gzip, zstd or raw, by its magic bytes) and hashed with the algorithm
    its name implies (64 hex: SHA-256, 32 hex: SipHash-128). Reports corrupt streams, digest
    mismatches, misplaced or unknown files and leftover temporary files. Exit status 0 if all
    is well, 1 if anything bad was found. Nothing is deleted without --delete-bad."""
    from ..libcheck import check_library
    from ..libcheck import delete_bad as delete_bad_files
    from ..library import Hololib, resolve_catalog
    from ..validate import validate_catalog
    from .output import emit_json, human_bytes, progress

    lib = Hololib.open(hololib)
    catalogs = []
    for ref in catalog_refs:
        catalog, _ = resolve_catalog(ref, lib.root)
        validate_catalog(catalog)
        catalogs.append(catalog)
    with contextlib.ExitStack() as stack:
        bar: list[Any] = []

        def hook(n: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress("verifying", total, enabled=not no_progress and not as_json)))
            if n:
                bar[0].advance(n)

        report = check_library(lib, catalogs=catalogs, workers=workers, progress=hook)
    if delete_bad:
        delete_bad_files(lib, report)
    if as_json:
        emit_json(report.as_dict())
    else:
        for problem in report.problems:
            click.echo(problem.line())
        for path in report.deleted:
            click.echo(f"deleted: {path}")
        what = f"{len(catalogs)} catalog(s) in " if catalogs else ""
        verdict = "all good" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(f"verified {what}{lib.root}: {report.checked} blobs, {human_bytes(report.bytes_decoded)} decoded, "
                   f"{report.good} good, {verdict}")
    if not report.ok:
        sys.exit(1)
