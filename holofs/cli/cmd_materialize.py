"""``holofs materialize``: eager, byte-exact restore of a catalog into a directory."""

from __future__ import annotations

import contextlib
import sys

from .plain import FLAG, INT_RANGE, MULTIPLE, Option, click_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import click

ARGUMENTS = ("catalog", "directory")
_kept: object = None
"""The catalog the command loaded last, kept until the process ends: the console command ends
with ``os._exit`` (:func:`holofs.entry.exit_without_teardown`), which skips freeing its tens
of thousands of objects one by one (~3 ms for the corpus)."""
OPTIONS = (
    Option("--hololib", "hololib",
           help="Hololib holding CATALOG (then CATALOG may be a catalog name or blueprint prefix)."),
    Option("--strategy", "strategy", choices=("auto", "reflink", "copy", "hardlink"),
           help="auto: reflink where the filesystem allows, else copy_file_range/copy. hardlink shares "
                "the library's inodes (unrewritten raw blobs only; never write to such files)."),
    Option("--verify", "verify", choices=("always", "trusted", "skip"),
           help="Hash blobs: always, once per blob file (trusted, default), or never."),
    Option("--workers", "workers", INT_RANGE, "Parallel workers.", low=1, high=256),
    Option("--fast", "fast", FLAG, "Same as --verify trusted --strategy reflink.", default=None),
    Option("--copy-pattern", "copy_patterns", MULTIPLE,
           "Glob on the entry path; matching files are always copied, never shared (repeatable)."),
    Option("--relocate-name-only", "relocate_name_only", FLAG,
           "Allow a target in another base directory (only the identity name is rewritten)."),
    Option("--keep-special-bits", "keep_special_bits", FLAG, "Keep setuid/setgid/sticky bits from the catalog."),
    Option("--check", "check_only", FLAG,
           "Only report whether DIRECTORY is complete, incomplete or modified (exit 0 if complete)."),
    Option("--no-wait", "no_wait", FLAG,
           "Fail at once if another holofs process is materializing DIRECTORY (default: wait)."),
    Option("--json", "as_json", FLAG, "Print the result as JSON."),
    Option("--no-progress", "no_progress", FLAG, "Never show a progress bar."),
)


def register(group: click.Group) -> None:
    group.add_command(click_command("materialize", run, ARGUMENTS, OPTIONS))


def run(catalog: str, directory: str, hololib: str | None, strategy: str | None, verify: str | None,
        workers: int | None, fast: bool | None, copy_patterns: tuple[str, ...], relocate_name_only: bool,
        keep_special_bits: bool, check_only: bool, no_wait: bool, as_json: bool, no_progress: bool) -> None:
    """Restore CATALOG into DIRECTORY, byte-exactly as RCC would.

    The target identity is DIRECTORY's basename; it must have the recorded identity's length
    and (unless --relocate-name-only) live in the recorded base directory. An existing
    DIRECTORY is reconciled: extras removed, wrong files replaced, correct files untouched."""
    from ..catalog import gc_paused

    # Tens of thousands of acyclic objects (the catalog, the native call's lists, the
    # manifest): garbage-collection passes over them only cost time (~35 ms per restore).
    with gc_paused():
        from ..config import load_settings
        from ..library import catalog_file
        from ..restore_state import reconcile_if_intact

        settings = load_settings({"strategy": strategy, "verify": verify, "workers": workers,
                                  "fast": True if fast else None, "copy_patterns": copy_patterns or None})
        path, lib = catalog_file(catalog, hololib)

        def wait_hook(message: str) -> None:
            print(f"holofs: {message}", file=sys.stderr)

        if not check_only:
            # A rerun on an intact tree is confirmed from the last restore's manifest: no catalog
            # parse, no heavy imports, nothing written.
            report = reconcile_if_intact(path, directory, verify=settings.verify, keep_special=keep_special_bits,
                                         name_only_allowed=relocate_name_only, wait=not no_wait, wait_hook=wait_hook)
            if report is not None:
                _print_report(report, as_json)
                return

        from ..catalog_index import load_catalog
        from ..library import Hololib
        from ..materializer import MaterializeOptions, check, materialize
        from ..paths import default_cache_dir
        from ..verification import VerifyPolicy
        from .output import progress

        save_index: list[Any] = []

        def load() -> tuple[Any, Any]:
            global _kept
            cat, save = load_catalog(path, settings.cache_dir or default_cache_dir())
            save_index.append(save)
            _kept = cat
            return cat, lib if lib is not None else Hololib.of_catalog(path)

        def meanwhile() -> None:
            if save_index and save_index[0] is not None:
                save_index[0]()

        if check_only:
            report = check(*load(), directory, relocate_name_only=relocate_name_only,
                           verify=VerifyPolicy(settings.verify), keep_special_bits=keep_special_bits,
                           workers=settings.workers)
            if as_json:
                from .output import emit_json

                emit_json(report.as_dict())
            else:
                print(f"{report.status}: {report.target}")
                for line in report.problems[:50]:
                    print(f"  {line}")
                if len(report.problems) > 50:
                    print(f"  ... and {len(report.problems) - 50} more")
            raise SystemExit(0 if report.status == "complete" else 1)

        options = MaterializeOptions(
            strategy=settings.strategy, verify=VerifyPolicy(settings.verify), workers=settings.workers,
            keep_special_bits=keep_special_bits, relocate_name_only=relocate_name_only,
            copy_patterns=settings.copy_patterns, cache_dir=settings.cache_dir, wait=not no_wait, wait_hook=wait_hook,
            meanwhile=meanwhile,
        )
        with contextlib.ExitStack() as stack:
            bar: list[Any] = []

            def total_hook(total: int) -> None:
                bar.append(stack.enter_context(progress("materializing", total,
                                                        enabled=not no_progress and not as_json)))

            def advance(n: int) -> None:
                if bar:
                    bar[0].advance(n)

            options.progress, options.total_hook = advance, total_hook
            report = materialize(*load(), directory, options)
        _print_report(report, as_json)


def _print_report(report: Any, as_json: bool) -> None:
    from .output import emit_json, human_bytes

    if as_json:
        emit_json(report.as_dict())
        return
    print(f"materialized {report.target} ({'fresh' if report.fresh else 'reconciled'})")
    native = f" ({report.native_files} by the native fast path)" if report.native_files else ""
    print(f"  {report.files_written} files written{native}, {report.files_intact} intact, {report.symlinks} "
               f"symlinks, {report.removed_extras} extras removed, {report.dirs} dirs")
    for name, c in report.strategies.items():
        print(f"  {name:<16} {int(c['files']):>8} files {human_bytes(c['bytes']):>12} {c['seconds']:.2f} s")
    print(f"  took {report.seconds:.2f} s")
