#!/usr/bin/env python3
"""Benchmark ``holofs mount``: time to a ready mount, and a real interpreter running from it.

1. Mount-ready time: from starting ``holofs mount <catalog> <dir> --cache <fresh>`` until
   ``<dir>`` is a mount point (and the command returned), and again for a repeat mount with the
   same --cache (the parsed catalog kept by the first mount), for the corpus catalog and for a
   generated catalog of exactly --subset-files files (a prefix of the corpus tree, or copies
   of it under ``dupN/`` when the corpus is smaller). Median of --runs.
2. Running the environment's interpreter (``<env>/bin/python``) on two real workloads:
   ``import``  python -c "import numpy, pandas, scipy, matplotlib, requests, robot" (those installed)
   ``task``    python -m robot on a tiny suite evaluating numpy/pandas/matplotlib code
   each COLD (fresh mount with an empty --cache dir; on the native trees: no __pycache__) and
   then WARM (the same command again, --warm-runs times), on: the mount (writable, the default:
   bytecode goes to its upper layer; also measured with PYTHONPYCACHEPREFIX pointing at a
   directory outside, as a --read-only mount needs, with --no-prefetch for an A/B of the
   read-ahead and with --daemon-opens for an A/B of leaving opens to the kernel), a
   ``holofs materialize``d tree (if that command exists) and the original corpus venv ("native", also with the prefix:
   the baseline of the mount's prefix variant, as Python is slower with a prefix). Each of the --runs
   rounds measures every variant once, so that the machine's drift spreads over all of them.
   The page cache is not dropped (unless --drop-caches): hololib blobs and native files are
   equally warm in memory, so "cold" means holofs' own cache is empty and no bytecode exists.
   ``sync`` runs (untimed) before every mount-ready sample, before every cold run and between a
   cold run and its warm runs, so that no sample pays for writing back what an earlier one left
   dirty (a cold import through the mount leaves ~140 MB of cache files and upper layer).
3. WARM, ALTERNATING: one mount, warmed up once per variant (untimed), then --alternating-runs
   rounds that each run the workload once on the mount and on the native tree, with and without
   the prefix, in alternating order. The warm runs of 2. come in blocks right after a cold run
   of the same variant, so seconds-long drift of the machine lands in one variant's samples;
   here it spreads over all four.

Where the files live (--fs): ``ext4`` (the default) formats a journaled ext4 loop image, copies
the corpus venv into it and mounts it over ``<work>/<profile>/space``, so that every tree the
interpreter runs from (native, materialized, the mount point) and everything written (holofs'
caches and upper layers, bytecode) is on one ordinary filesystem with the paths unchanged;
the image is deleted at the end. ``root`` uses the work directory's own filesystem as it is.
On this project's CI/VM that is a journal-less ext4, where creating a file right after many
were deleted scans past the freed inodes (ext4's ``recently_deleted``): 20-110 µs per create
by hand, against 14-23 µs on the image, and every cold run creates ~2,000 files right after
the previous run's were removed.

The mount point is a same-length name next to the recorded corpus path (RCC's relocation
rule), so no --relocate-name-only is needed. Run scripts/build_corpus.py first.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_materialize import prepare_libs  # noqa: E402
from benchlib import (  # noqa: E402
    DEFAULT_WORK,
    Timing,
    drop_caches,
    du_bytes,
    fmt_ratio,
    fmt_s,
    holofs_commands,
    identity_like,
    install_cleanup_handlers,
    load_corpus,
    log,
    loop_fs,
    machine_info,
    precompile_holofs,
    rmtree,
    run,
    sync,
    table,
    tool,
    write_json,
)

MOUNT_ID = identity_like("mount")
MATERIALIZED_ID = identity_like("native")
READY_GOAL_S = 0.3
COLD_GOAL = 1.5
GOAL_VARIANTS = ("mount", "mount + PYTHONPYCACHEPREFIX")  # the targets; other variants are info
WARM_GOAL = 1.05
NATIVE_PREFIX = "native + PYTHONPYCACHEPREFIX"
"""The baseline of the mount's PYTHONPYCACHEPREFIX variant: the original venv, same setting."""
TIMEOUT = 600

SUITE = """*** Test Cases ***
Numpy Works
    ${x}=    Evaluate    numpy.linalg.inv(numpy.eye(60) * 2).trace()    modules=numpy
    Should Be Equal As Numbers    ${x}    30
"""
SUITE_FULL = SUITE + """
Pandas Works
    ${n}=    Evaluate    len(pandas.DataFrame({'a': list(range(1000))}).describe())    modules=pandas
    Should Be Equal As Integers    ${n}    8

Matplotlib And Scipy Work
    ${ok}=    Evaluate    __import__('matplotlib.pyplot').pyplot.plot([1, 2])[0] is not None and scipy.optimize.minimize_scalar(lambda v: (v - 2) ** 2).success    modules=scipy.optimize,matplotlib
    Should Be True    ${ok}
"""


def subset_catalog(corpus_catalog: Path, out_lib: Path, lib: Path, files: int) -> Path:
    """A catalog of exactly ``files`` (non-shadow) files built from the corpus catalog, in a
    hololib at ``out_lib`` that shares ``lib``'s blobs through a ``library`` symlink."""
    from holofs.catalog import DirEntry, catalog_name, iter_files, read_catalog, write_catalog

    cat = read_catalog(corpus_catalog)
    budget = [files]

    def take(d: DirEntry) -> DirEntry:
        new = DirEntry(d.name, d.mode, {}, {}, d.symlink, d.shadow)
        if d.symlink or d.shadow:
            return new  # symlinked dirs kept as links, their shadow listing dropped
        for name, f in d.files.items():
            if budget[0] <= 0:
                break
            new.files[name] = copy.copy(f)
            if not f.symlink:
                budget[0] -= 1
        for name, sub in d.subdirs.items():
            if budget[0] <= 0:
                break
            new.subdirs[name] = take(sub)
        return new

    tree = take(cat.tree)
    k = 1
    while budget[0] > 0:  # corpus smaller than requested: add copies under dupN/
        dup = take(cat.tree)
        dup.name = f"dup{k}"
        dup.mode = cat.tree.mode
        tree.subdirs[dup.name] = dup
        k += 1
    cat.tree = tree
    cat.blueprint = f"{files:016x}"
    n = sum(1 for _p, f, _d in iter_files(tree, include_shadow=False) if not f.symlink)
    assert n == files, (n, files)
    rmtree(out_lib)
    (out_lib / "catalog").mkdir(parents=True)
    (out_lib / "library").symlink_to(lib / "library")
    return write_catalog(cat, out_lib / "catalog" / catalog_name(cat.blueprint, cat.platform))


class Mounter:
    """Mount/unmount with fresh cache dirs; remembers what to clean up."""

    def __init__(self, mountpoint: Path, caches: Path) -> None:
        self.mountpoint, self.caches = mountpoint, caches
        self.cache: Path | None = None
        self.n = 0

    def mount(self, catalog: Path, *, fresh: bool = True, args: tuple[str, ...] = ()) -> tuple[float, float]:
        """Mount with a fresh cache (or, ``fresh=False``, the one the last mount used and left in place);
        return (seconds until visible, seconds until the command returned)."""
        self.umount(keep_cache=not fresh)
        if fresh or self.cache is None:
            self.n += 1
            self.cache = self.caches / f"c{self.n}"
            rmtree(self.cache)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen([tool("holofs"), "mount", os.fspath(catalog), os.fspath(self.mountpoint),
                                 "--cache", os.fspath(self.cache), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        visible = None
        while True:
            if visible is None and os.path.ismount(self.mountpoint):
                visible = time.perf_counter() - t0
            rc = proc.poll()
            if rc is not None and (visible is not None or rc != 0):
                break
            if time.perf_counter() - t0 > 120:
                proc.kill()
                raise RuntimeError("holofs mount did not become ready within 120 s")
            time.sleep(0.002)  # finer polling would take CPU from the two-process start-up
        returned = time.perf_counter() - t0
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"holofs mount exited {proc.returncode}: {err.strip()[-800:]}")
        if visible is None:
            visible = returned
            if not os.path.ismount(self.mountpoint):
                raise RuntimeError(f"holofs mount returned but {self.mountpoint} is not a mount point")
        return visible, returned

    def umount(self, keep_cache: bool = False) -> None:
        if os.path.ismount(self.mountpoint):
            cmd = [tool("holofs"), "umount", os.fspath(self.mountpoint)]
            if self.cache:
                cmd += ["--cache", os.fspath(self.cache)]
            if run(cmd, check=False, timeout=120).returncode != 0:
                run(["umount", "-l", os.fspath(self.mountpoint)], check=False)
        if self.cache and not keep_cache:
            rmtree(self.cache)
            self.cache = None


def wait_for_index(cache: Path | None, timeout: float = 30.0) -> None:
    """Wait until the mounted daemon has written its parsed-catalog index (it does so after ready)."""
    deadline = time.perf_counter() + timeout
    while cache is not None and time.perf_counter() < deadline:
        d = cache / "catalogs"
        if d.is_dir() and any(not p.name.startswith(".") and ".part" not in p.name for p in d.iterdir()):
            return
        time.sleep(0.02)


REQUEST_FILE = "lib/python3.11/site-packages/numpy/__init__.py"
REQUEST_LOOPS = 5000


def request_costs(mounter: Mounter, catalog: Path, native: Path, results: list[Timing]) -> None:
    """Wall time per open+close of one cached file and per ``os.listdir`` of its directory, through
    a ``--read-only`` mount (no overlay; the default, where the kernel keeps opens and listings to
    itself, and ``--daemon-opens``, where each is a round trip) and on the native tree, and the
    daemon's CPU time per operation (from /proc/<pid>/stat): what a warm access costs."""
    rel = next((p for p in (REQUEST_FILE,) if (native / p).is_file()), None)
    if rel is None:
        rel = next(str(p.relative_to(native)) for p in native.rglob("__init__.py"))
    for where, args in (("mount", ("--read-only",)), ("mount --daemon-opens", ("--read-only", "--daemon-opens")),
                        ("native", None)):
        if args is not None:
            mounter.mount(catalog, args=args)
        try:
            _request_loop(mounter, native, rel, where, results)
        finally:
            mounter.umount()


def _request_loop(mounter: Mounter, native: Path, rel: str, where: str, results: list[Timing]) -> None:
    pid = None
    if where != "native":
        pid = int(json.loads(next((mounter.cache / "mounts").glob("*/mount.json")).read_text())["pid"])

    def cpu() -> float:
        if pid is None:
            return 0.0
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    path = (native if pid is None else mounter.mountpoint) / rel
    for label, op, n in (("open+close", lambda p=path: os.close(os.open(p, os.O_RDONLY)), REQUEST_LOOPS),
                         ("listdir", lambda d=path.parent: os.listdir(d), REQUEST_LOOPS // 10)):
        op()
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(n):
            op()
        t = Timing(f"request {label}, {where}: µs per operation")
        t.samples.append((time.perf_counter() - t0) / n * 1e6)
        if pid is not None:
            t.extra["daemon_cpu_us"] = (cpu() - c0) / n * 1e6
        results.append(t)
        log(f"  {t.name}: {t.samples[0]:.1f}" + (f" (daemon CPU {t.extra['daemon_cpu_us']:.1f})"
                                                  if pid is not None else ""))


@contextlib.contextmanager
def ext4_space(work: Path, space: Path, corpus_venv: Path) -> Iterator[Path]:
    """A journaled ext4 loop image holding a copy of ``corpus_venv``, bind-mounted over
    ``space`` for the duration (the same paths, another filesystem); yields a scratch directory
    on it. The original ``space`` is untouched and visible again afterwards."""
    if os.path.ismount(space):
        run(["umount", os.fspath(space)], check=False)  # left behind by an interrupted run
    size = 4 * du_bytes(corpus_venv) + (4 << 30)
    with loop_fs("ext4", work, size) as lfs:
        log(f"copying the corpus venv onto a fresh ext4 image ({lfs.image})")
        run(["cp", "-a", os.fspath(corpus_venv), os.fspath(lfs.mountpoint / corpus_venv.name)])
        run(["mount", "--bind", os.fspath(lfs.mountpoint), os.fspath(space)])
        try:
            scratch = space / ".bench"
            scratch.mkdir()
            yield scratch
        finally:
            if run(["umount", os.fspath(space)], check=False).returncode != 0:
                run(["umount", "-l", os.fspath(space)], check=False)


def remove_pycache(root: Path) -> None:
    run(["find", os.fspath(root), "-xdev", "-name", "__pycache__", "-type", "d", "-prune", "-exec", "rm", "-rf",
         "{}", "+"])


def py_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(MPLBACKEND="Agg", MPLCONFIGDIR=os.fspath(work / "mplconfig"), HOME=os.fspath(work / "home"))
    (work / "home").mkdir(exist_ok=True)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work directory (default %(default)s)")
    ap.add_argument("--small", action="store_true", help="use the --small corpus (quick run)")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is reported")
    ap.add_argument("--lib", default="gzip", choices=["gzip", "zstd", "none"], help="hololib encoding to mount")
    ap.add_argument("--ready-runs", type=int, default=0, help="mount-ready rounds (default: --runs)")
    ap.add_argument("--no-requests", dest="requests", action="store_false",
                    help="skip the per-request cost loop (open+close, listdir through the mount)")
    ap.add_argument("--no-interpreter", dest="interpreter", action="store_false",
                    help="skip the interpreter workloads (mount-ready and request costs only)")
    ap.add_argument("--warm-runs", type=int, default=3, help="warm runs after each cold run (all are samples)")
    ap.add_argument("--alternating-runs", type=int, default=8,
                    help="warm runs of each of mount, native (with and without a pycache prefix), taken in turn on "
                         "one mount after the cold/warm rounds (0: skip)")
    ap.add_argument("--subset-files", type=int, default=16000, help="files in the generated catalog")
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache before every cold run")
    ap.add_argument("--fs", choices=["ext4", "root"], default="ext4",
                    help="ext4: run everything on a journaled ext4 loop image mounted over the corpus' space dir "
                         "(needs root); root: on the work directory's own filesystem (default %(default)s)")
    ap.add_argument("--json", dest="json_out", type=Path, help="write all results to this JSON file")
    args = ap.parse_args(argv)
    precompile_holofs()
    work = args.work.resolve()
    profile = "small" if args.small else "full"
    pwork = work / profile
    corpus = load_corpus(work, profile)
    commands = holofs_commands()
    if not {"import", "mount", "umount"} <= commands:
        raise SystemExit(f"bench: holofs import/mount/umount needed; available: {sorted(commands)}")
    libs = prepare_libs(work, profile, corpus, commands)
    lib = pwork / "libs" / args.lib
    catalog = lib / "catalog" / libs["libs"][args.lib]["catalog"]
    space = Path(corpus["path"]).parent
    mountpoint = space / MOUNT_ID
    native = Path(corpus["path"])
    materialized = space / MATERIALIZED_ID
    stack = contextlib.ExitStack()
    scratch = pwork
    if args.fs == "ext4":
        install_cleanup_handlers()
        scratch = stack.enter_context(ext4_space(work, space, native))
    mounter = Mounter(mountpoint, scratch / "mount-caches")
    env = py_env(pwork)
    suite = pwork / "bench_suite.robot"
    suite.write_text(SUITE_FULL if "pandas" in corpus["modules"] else SUITE)
    modules = [m for m in corpus["modules"] if m != "RPA"]
    workloads = {
        "import": ["-c", f"import {', '.join(modules)}"],
        "task": ["-m", "robot", "--output", "NONE", "--report", "NONE", "--log", "NONE", "--console", "quiet",
                 os.fspath(suite)],
    }
    results: list[Timing] = []
    notes: list[str] = []
    info: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        # -- 1. mount-ready time
        sub = subset_catalog(catalog, pwork / f"lib-subset{args.subset_files}", lib, args.subset_files)
        for label, cat in ((f"corpus catalog ({corpus['files']} files)", catalog),
                           (f"generated catalog ({args.subset_files} files)", sub)):
            # first mount: a fresh --cache, so the catalog is parsed and validated; repeat mount: the same
            # cache again, where the first mount left the parsed catalog (holofs/catalog_index.py)
            vis, ret = Timing(f"mount visible: {label}"), Timing(f"mount command returned: {label}")
            rvis = Timing(f"mount visible, repeat mount (same --cache): {label}")
            for _ in range(args.ready_runs or args.runs):
                sync()
                v, r = mounter.mount(cat)
                vis.samples.append(v)
                ret.samples.append(r)
                wait_for_index(mounter.cache)
                rvis.samples.append(mounter.mount(cat, fresh=False)[0])
                mounter.umount()
            log(f"  {vis.name}: median {fmt_s(vis.median)} s; returned {fmt_s(ret.median)} s; "
                f"repeat mount {fmt_s(rvis.median)} s")
            results += [vis, ret, rvis]

        # -- 1b. the daemon's cost per request: open+close of one cached file, a listing of its directory
        if args.requests:
            request_costs(mounter, catalog, native, results)

        if args.interpreter:
            # -- 2. interpreter on mount / materialized tree / original venv
            log("warming the matplotlib font cache (shared by all variants)")
            run([native / "bin" / "python", "-c", "import matplotlib.pyplot"] if "matplotlib" in modules
                else [native / "bin" / "python", "-c", "pass"], env=env)
            variants: dict[str, Path] = {"mount": mountpoint, "mount + PYTHONPYCACHEPREFIX": mountpoint,
                                         "mount --no-prefetch": mountpoint, "mount --daemon-opens": mountpoint,
                                         "native (original venv)": native, NATIVE_PREFIX: native}
            pycache_prefix = scratch / "pycache-prefix"
            if "materialize" in commands:
                rmtree(materialized)
                t0 = time.perf_counter()
                run([tool("holofs"), "materialize", catalog, materialized])
                info["materialize_s"] = time.perf_counter() - t0
                variants["materialized tree"] = materialized
            else:
                notes.append("holofs materialize not available: the materialized-tree variant was skipped")

            def prepare(variant: str) -> None:
                rmtree(pycache_prefix)
                if variant.startswith("mount"):
                    mounter.mount(catalog, args=tuple(a for a in ("--no-prefetch", "--daemon-opens") if a in variant))
                else:
                    remove_pycache(variants[variant])
                if args.drop_caches and not drop_caches():
                    notes.append("page cache could not be dropped (not permitted here)")
                sync()  # what earlier runs left dirty is written back now, not during this run

            def one(variant: str, wl: str) -> float:
                py = variants[variant] / "bin" / "python"
                venv = dict(env, PYTHONPYCACHEPREFIX=os.fspath(pycache_prefix)) if "PYCACHEPREFIX" in variant else env
                t0 = time.perf_counter()
                run([py, *workloads[wl]], env=venv, timeout=TIMEOUT, cwd=pwork)
                return time.perf_counter() - t0

            # Rounds interleave the variants (the machine's speed drifts over minutes: a variant
            # measured all at once would carry that drift into its ratio); each cold run is
            # followed by --warm-runs warm ones.
            for wl in workloads:
                timings = {}
                for variant in variants:
                    cold, warm = Timing(f"{wl} cold: {variant}"), Timing(f"{wl} warm: {variant}")
                    cold.extra.update(workload=wl, variant=variant, state="cold")
                    warm.extra.update(workload=wl, variant=variant, state="warm")
                    timings[variant] = (cold, warm)
                for _ in range(args.runs):
                    for variant, (cold, warm) in timings.items():
                        if cold.error:
                            continue
                        try:
                            prepare(variant)
                            cold.samples.append(one(variant, wl))
                            sync()  # the cold run's fills and bytecode: written back before the warm runs
                            warm.samples.extend(one(variant, wl) for _ in range(args.warm_runs))
                        except Exception as exc:
                            cold.error = str(exc)[:600]
                            log(f"  FAILED {wl} {variant}: {cold.error}")
                        finally:
                            if variant.startswith("mount"):
                                mounter.umount()
                for variant, (cold, warm) in timings.items():
                    log(f"  {wl} {variant}: cold {fmt_s(cold.median)} s, warm {fmt_s(warm.median)} s")
                    results += [cold, warm]

            # -- 3. warm, alternating: one mount, its warm runs taken in turn with the native tree's.
            # The warm runs above come in blocks right after a cold run of the same variant, so the
            # machine's drift over seconds (and a cold run's after-effects) lands in one variant's
            # block; here every round runs each variant once, in alternating order.
            alternating = ("mount", "mount + PYTHONPYCACHEPREFIX", "native (original venv)", NATIVE_PREFIX)
            for wl in workloads if args.alternating_runs > 0 else ():
                turns = {variant: Timing(f"{wl} warm, alternating: {variant}") for variant in alternating}
                try:
                    rmtree(pycache_prefix)
                    remove_pycache(native)
                    mounter.mount(catalog)
                    for variant in alternating:  # untimed: fills the cache, writes the bytecode
                        one(variant, wl)
                    sync()
                    for i in range(args.alternating_runs):
                        for variant in alternating if i % 2 == 0 else alternating[::-1]:
                            turns[variant].samples.append(one(variant, wl))
                except Exception as exc:
                    for t in turns.values():
                        t.error = str(exc)[:600]
                    log(f"  FAILED {wl} warm, alternating: {exc}")
                finally:
                    mounter.umount()
                for variant, t in turns.items():
                    log(f"  {wl} warm, alternating: {variant}: {fmt_s(t.median)} s")
                results += turns.values()
            remove_pycache(native)
    finally:
        mounter.umount()
        rmtree(materialized)
        rmtree(scratch / "pycache-prefix")
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
        stack.close()
    elapsed = time.perf_counter() - started

    def med(name: str) -> float | None:
        return next((t.median for t in results if t.name == name), None)

    print(f"\nCorpus: {profile}, {corpus['files']} files; hololib {args.lib}; filesystem {args.fs}; median of "
          f"{args.runs} rounds (warm: {args.warm_runs} runs after each cold one); page cache "
          f"{'dropped before cold runs' if args.drop_caches else 'not dropped'}; total {elapsed:.0f} s\n")
    print(table(["measurement", "median s", "samples s", "error"],
                [[t.name, fmt_s(t.median), " ".join(f"{s:.3f}" for s in t.samples), t.error[:80]] for t in results]))
    rows, goals = [], []
    for t in results:
        if t.name.startswith("mount visible"):
            ok = None if t.median is None else t.median <= READY_GOAL_S
            rows.append([t.name, fmt_s(t.median), "—", "—", f"≤ {READY_GOAL_S} s", "—" if ok is None else
                         ("met" if ok else "MISSED")])
            goals.append({"check": t.name, "seconds": t.median, "goal_s": READY_GOAL_S, "met": ok})
    for wl in workloads:
        for state, goal in (("cold", COLD_GOAL), ("warm", WARM_GOAL), ("warm, alternating", WARM_GOAL)):
            for variant in ("mount", "mount + PYTHONPYCACHEPREFIX", "mount --no-prefetch", "mount --daemon-opens",
                            "materialized tree"):
                # Python itself is slower with a pycache prefix (~0.8 s more CPU for a cold import
                # of the corpus on the native tree): compare like with like.
                baseline = NATIVE_PREFIX if "PYCACHEPREFIX" in variant else "native (original venv)"
                base = med(f"{wl} {state}: {baseline}")
                a = med(f"{wl} {state}: {variant}")
                if a is None:
                    continue
                ok = None if base is None else a / base <= goal
                rows.append([f"{wl} {state}: {variant} vs {baseline}", fmt_s(a), fmt_s(base), fmt_ratio(a, base),
                             f"≤ {goal}×" if variant in GOAL_VARIANTS else "(info)",
                             "—" if ok is None or variant not in GOAL_VARIANTS else ("met" if ok else "MISSED")])
                goals.append({"check": f"{wl} {state}: {variant} vs {baseline}", "seconds": a, "native_s": base,
                              "goal_ratio": goal if variant in GOAL_VARIANTS else None,
                              "met": ok if variant in GOAL_VARIANTS else None})
    print("\n### Issue targets\n")
    print(table(["check", "holofs s", "native s", "ratio", "goal", "result"], rows))
    for n in sorted(set(notes)):
        print(f"NOTE: {n}")
    if args.json_out:
        write_json(args.json_out, {"machine": machine_info(), "corpus": corpus, "lib": args.lib, "fs": args.fs,
                                   "runs": args.runs,
                                   "elapsed_s": elapsed, "info": info, "notes": sorted(set(notes)),
                                   "results": [t.to_json() for t in results], "goals": goals})
    return 0


if __name__ == "__main__":
    sys.exit(main())
