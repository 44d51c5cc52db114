#!/usr/bin/env python3
"""Build the benchmark corpus: a real venv of PyPI packages in an RCC-like space directory.

Layout under the work dir (default /var/tmp/holofs-bench), per profile (``full``/``small``):

    <work>/<profile>/space/h0c0ffee_bench000000000t/   the corpus venv (24-char identity)
    <work>/<profile>/corpus.tar.gz                      tarball of it (the tar peer)
    <work>/<profile>/requirements.txt                   exact pins (for offline uv installs)
    <work>/<profile>/corpus.json                        packages, versions, file counts
    <work>/uv-cache/                                    warm uv cache (``uv pip install --offline`` works)

Idempotent: an existing complete corpus (corpus.json present and matching) is reused.
Needs the package index once; afterwards everything is offline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402
    CORPUS_IDENTITY,
    DEFAULT_WORK,
    count_tree,
    log,
    rmtree,
    run,
    tool,
    write_json,
)

FULL_PACKAGES = ["numpy", "pandas", "scipy", "matplotlib", "robotframework", "rpaframework", "requests",
                 "boto3", "sympy", "pip", "setuptools"]
"""The issue's packages plus boto3/sympy/pip/setuptools: the first seven alone give only ~12.8k files,
and real RCC environments (conda + pip) are larger still; these bring the corpus past the 16k-file mark."""
SMALL_PACKAGES = ["numpy", "requests", "robotframework"]

MODULE_OF = {
    "numpy": "numpy", "pandas": "pandas", "scipy": "scipy", "matplotlib": "matplotlib",
    "robotframework": "robot", "rpaframework": "RPA", "requests": "requests",
}
"""Import name of each requested distribution (bench_mount imports these)."""


def base_python() -> str:
    """The real interpreter behind the running venv (so the corpus venv does not chain venvs)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def uv_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(UV_CACHE_DIR=os.fspath(cache), UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1")
    env.pop("VIRTUAL_ENV", None)
    return env


def corpus_is_complete(meta_path: Path, packages: list[str], venv: Path, tarball: Path) -> bool:
    if not (meta_path.exists() and venv.is_dir() and tarball.exists()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return False
    return meta.get("packages") == packages and meta.get("path") == os.fspath(venv)


def build(work: Path, profile: str, packages: list[str], *, force: bool) -> dict:
    root = work / profile
    venv = root / "space" / CORPUS_IDENTITY
    tarball = root / "corpus.tar.gz"
    meta_path = root / "corpus.json"
    reqs = root / "requirements.txt"
    cache = work / "uv-cache"
    if not force and corpus_is_complete(meta_path, packages, venv, tarball):
        log(f"reusing corpus {venv} (delete {meta_path} or pass --force to rebuild)")
        return json.loads(meta_path.read_text())

    uv = tool("uv")
    env = uv_env(cache)
    meta_path.unlink(missing_ok=True)
    rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"creating venv {venv} ({base_python()})")
    run([uv, "venv", "--python", base_python(), "--python-preference", "only-system", venv], env=env)
    py = venv / "bin" / "python"
    log(f"installing {' '.join(packages)} (uv cache {cache})")
    run([uv, "pip", "install", "--python", py, "--link-mode", "copy", *packages], env=env, capture=False)
    freeze = run([uv, "pip", "freeze", "--python", py], env=env).stdout
    reqs.write_text(freeze)
    installed = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    build_s = time.perf_counter() - t0

    # Prove the cache is warm: an offline install of the exact pins into a throwaway venv.
    scratch = root / "offline-check"
    rmtree(scratch)
    log("checking that an offline install from the uv cache works")
    run([uv, "venv", "--python", base_python(), "--python-preference", "only-system", scratch], env=env)
    run([uv, "pip", "install", "--offline", "--python", scratch / "bin" / "python", "--link-mode", "hardlink",
         "-r", reqs], env=env)
    rmtree(scratch)

    log(f"writing {tarball}")
    tmp_tar = tarball.with_suffix(".part")
    run(["tar", "-C", venv.parent, "-czf", tmp_tar, venv.name])
    os.replace(tmp_tar, tarball)

    counts = count_tree(venv)
    meta = {
        "profile": profile,
        "packages": packages,
        "modules": [MODULE_OF[p] for p in packages if p in MODULE_OF],
        "installed": installed,
        "python": run([py, "-c", "import platform; print(platform.python_version())"]).stdout.strip(),
        "identity": CORPUS_IDENTITY,
        "path": os.fspath(venv),
        "tarball": os.fspath(tarball),
        "tarball_bytes": tarball.stat().st_size,
        "requirements": os.fspath(reqs),
        "uv_cache": os.fspath(cache),
        **counts,
        "build_seconds": round(build_s, 1),
        "built": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    write_json(meta_path, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work directory (default %(default)s)")
    ap.add_argument("--small", action="store_true", help=f"quick profile: {' '.join(SMALL_PACKAGES)}")
    ap.add_argument("--packages", nargs="+", help="override the package list (profile name stays)")
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete corpus exists")
    args = ap.parse_args(argv)
    profile = "small" if args.small else "full"
    packages = args.packages or (SMALL_PACKAGES if args.small else FULL_PACKAGES)
    meta = build(args.work.resolve(), profile, packages, force=args.force)
    print(json.dumps({k: meta[k] for k in ("profile", "path", "files", "symlinks", "dirs", "bytes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
