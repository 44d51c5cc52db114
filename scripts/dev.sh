#!/usr/bin/env bash
# holofs developer entry point: idempotent bootstrap, then `demo` or `test`.
#
#   bash scripts/dev.sh demo            build, import and show a demo environment (./demo)
#   bash scripts/dev.sh test [ARGS...]  run pytest (ARGS passed through) and ruff
#
# Bootstrap (every run, cheap when done): system packages via apt-get (as root, or via sudo),
# a .venv with Python >= 3.11, and `pip install -e '.[test]'`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
VENV="$REPO/.venv"
APT_PACKAGES=(fuse3 libfuse3-dev btrfs-progs xfsprogs pkg-config gcc python3-venv zlib1g-dev libzstd-dev libssl-dev libdeflate-dev)

say() { printf 'dev.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" 2>/dev/null || sudo "$@"
    else
        return 1
    fi
}

ensure_apt_packages() {
    command -v dpkg-query >/dev/null 2>&1 || { say "no dpkg/apt here: install ${APT_PACKAGES[*]} yourself"; return 0; }
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing system packages: ${missing[*]}"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
        die "cannot run apt-get as root (no root, no sudo): install ${missing[*]} and re-run"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
        :
    else
        local py
        py="$(find_python)" || die "Python >= 3.11 not found (set PYTHON=/path/to/python3.11)"
        say "creating $VENV with $py"
        rm -rf "$VENV"
        "$py" -m venv "$VENV" || die "python -m venv failed (is python3-venv installed?)"
    fi
    # Reinstall only when the build inputs changed since the last successful install (the
    # editable install compiles holofs/_native.c once; it is not rebuilt on its own). The
    # "compat" editable mode puts the checkout on sys.path with a plain .pth line: the default
    # mode's import hook costs every holofs start ~12 ms that an installed holofs does not pay.
    local stamp="$VENV/.holofs-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
        || [ holofs/_native.c -nt "$stamp" ] \
        || ! grep -qsx "$REPO" "$VENV"/lib/python3*/site-packages/__editable__.holofs-*.pth \
        || ! "$VENV/bin/python" -c 'import sys, holofs, pytest; sys.platform != "linux" or __import__("holofs._native")' 2>/dev/null; then
        say "installing holofs into $VENV (pip install -e '.[test]')"
        "$VENV/bin/python" -m pip install -q -e '.[test]' --config-settings editable_mode=compat \
            || die "pip install -e '.[test]' failed"
        touch "$stamp"
    fi
}

locate_shared() {
    # Tests read RCC's fixture from shared/ beside the checkout (or $HOLOFS_SHARED). A local
    # clone (git clone /path/to/main elsewhere) finds it beside the repository it came from.
    [ -n "${HOLOFS_SHARED:-}" ] && return 0
    [ -d "$REPO/../shared/fixtures" ] && return 0
    local origin
    origin="$(git -C "$REPO" config --get remote.origin.url 2>/dev/null || true)"
    if [ -n "$origin" ] && [ -d "$origin" ] && [ -d "$origin/../shared/fixtures" ]; then
        HOLOFS_SHARED="$(cd "$origin/../shared" && pwd)"
        export HOLOFS_SHARED
        say "using fixtures from $HOLOFS_SHARED (beside the origin checkout)"
    fi
}

bootstrap() {
    ensure_apt_packages
    ensure_venv
    locate_shared
}

cmd_demo() {
    bootstrap
    "$VENV/bin/python" scripts/make_demo.py "$@"
}

cmd_test() {
    bootstrap
    local rc=0
    "$VENV/bin/python" -m pytest -q "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        say "pytest collected no tests: treating as failure"
    fi
    local lint=0
    "$VENV/bin/ruff" check holofs tests scripts || lint=$?
    [ "$rc" -eq 0 ] || die "pytest failed (exit $rc)"
    [ "$lint" -eq 0 ] || die "ruff check failed"
    say "all good"
}

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    demo) shift; cmd_demo "$@" ;;
    test) shift; cmd_test "$@" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
esac
