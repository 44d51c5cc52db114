"""Integrity check of a hololib: every blob decoded, hashed and compared with its name.

A blob is good when its name is a digest, it sits at RCC's fan-out location, it is a regular
file, it decodes cleanly and its content hashes (with the algorithm the digest's length
implies) to its name. Temporary ``*.part*`` files left by a crash are reported too, except
those of a holofs process that is still running on this machine. Checked against a catalog,
every blob the catalog needs must exist, be good and decode to the size the catalog records.

Blobs are checked in parallel threads. A good blob of up to 64 MiB is decoded and hashed in
one native call without the GIL (``_native.verify_blob``); any other, and a bad one, goes
through the Python check, which streams it in :data:`CHUNK` pieces (zlib, zstd and hashlib
release the GIL on large buffers) and names the problem. Nothing is deleted unless
:func:`delete_bad` is called, and it deletes only the files it found bad, re-checking that
each is still the very file (device, inode) that was found bad.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, iter_files
from .digest import algorithm_of, new_hasher
from .errors import HolofsError
from .fsutil import is_part_name
from .library import RAW, Hololib, blob_relpath, decoded_stream, detect_encoding

try:  # the optional C accelerator (holofs/_native.c, Linux): a good blob checked without the GIL
    from . import _native
except ImportError:  # pragma: no cover - exercised where no compiler built it
    _native = None

CHUNK = 1 << 20
SHARE = 64
"""Blobs a worker takes at a time: a task per blob cost ~50 µs of hand-offs, as much as
checking a small blob."""

# Problem kinds.
CORRUPT = "corrupt"  # the stream does not decode
MISMATCH = "digest-mismatch"  # decodes, but hashes to something else
UNKNOWN = "unknown-name"  # not a digest: not a blob
MISPLACED = "misplaced"  # a digest, but not at its fan-out location
NOT_REGULAR = "not-a-file"  # symlink, fifo, device... in library/
TEMP = "temp-leftover"  # a *.part* file nobody is writing
MISSING = "missing"  # a catalog needs it, the library has none
SIZE = "size-mismatch"  # a catalog records another size than the blob decodes to
UNREADABLE = "unreadable"  # permission or I/O error

DELETABLE = frozenset({CORRUPT, MISMATCH, NOT_REGULAR, TEMP})
"""Kinds ``--delete-bad`` removes; the rest are reported only (they may be someone's data,
or the catalog may be the one at fault)."""


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    path: str
    """Path relative to the hololib root (``library/ab/cd/ef/<digest>``)."""
    detail: str
    digest: str = ""
    entries: tuple[str, ...] = ()
    """Catalog entries that use this blob (when checking against a catalog)."""
    ident: tuple[int, int] = (0, 0)
    """(st_dev, st_ino) of the file found bad, so deletion hits exactly it."""

    def line(self) -> str:
        used = f" (used by {', '.join(self.entries[:3])}{', ...' if len(self.entries) > 3 else ''})" if self.entries else ""
        return f"{self.kind}: {self.path}: {self.detail}{used}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "digest": self.digest, "detail": self.detail,
                "entries": list(self.entries)}


@dataclass
class CheckReport:
    hololib: str
    checked: int = 0
    good: int = 0
    bytes_decoded: int = 0
    problems: list[Problem] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    catalogs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"hololib": self.hololib, "ok": self.ok, "checked": self.checked, "good": self.good,
                "bytes_decoded": self.bytes_decoded, "catalogs": self.catalogs,
                "problems": [p.as_dict() for p in self.problems], "deleted": self.deleted}


@dataclass(frozen=True, slots=True)
class _Job:
    rel: str
    digest: str
    expected_size: int | None = None
    entries: tuple[str, ...] = ()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _in_progress(name: str) -> bool:
    """A holofs temp name whose writer (same machine, pid in the name) is still running."""
    if not is_part_name(name):
        return False
    tail = name.rpartition(".part")[2]
    return _pid_alive(int(tail.split("x", 1)[0]))


def _native_check(path: str, digest: str, expected_size: int | None) -> int | None:
    """The decoded size of a good blob by the native check, or None: bad, not checkable there,
    or no accelerator (then :func:`check_blob` decides and names the problem)."""
    if _native is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _native.verify_blob(fd, digest, -1 if expected_size is None else expected_size)
    except OSError:
        return None
    finally:
        os.close(fd)


def check_blob(path: str | os.PathLike[str], digest: str, expected_size: int | None = None) -> tuple[str, str, int]:
    """Check one blob file: ``(kind, detail, decoded_bytes)``, kind '' when good.

    The encoding comes from the magic bytes; a blob that fails that way but has a magic
    prefix is retried as raw (a raw library may hold gzip files verbatim)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return MISSING, "blob is missing", 0
    except OSError as exc:
        return UNREADABLE, exc.strerror or str(exc), 0
    with raw:
        head = raw.read(4)
        stored = os.fstat(raw.fileno()).st_size
        encoding = detect_encoding(head, stored, expected_size)
        raw.seek(0)
        kind, detail, size = _hash_stream(raw, encoding, digest, expected_size)
        if kind and encoding != RAW:
            raw.seek(0)
            raw_kind, raw_detail, raw_size = _hash_stream(raw, RAW, digest, expected_size)
            if not raw_kind:
                return raw_kind, raw_detail, raw_size
        return kind, detail, size


def _hash_stream(raw: Any, encoding: str, digest: str, expected_size: int | None) -> tuple[str, str, int]:
    algorithm = algorithm_of(digest)
    assert algorithm is not None
    hasher = new_hasher(algorithm)
    stream = decoded_stream(raw, encoding)
    size = 0
    limit = None if expected_size is None else expected_size + 1
    try:
        while True:
            want = CHUNK if limit is None else min(CHUNK, limit - size)
            if want <= 0:
                return SIZE, f"{encoding} blob decodes to more than the {expected_size} bytes the catalog records", size
            chunk = stream.read(want)
            if not chunk:
                break
            hasher.update(chunk)
            size += len(chunk)
    except HolofsError as exc:
        return CORRUPT, f"{encoding} stream does not decode: {exc}", size
    except OSError as exc:
        return UNREADABLE, exc.strerror or str(exc), size
    actual = hasher.hexdigest()
    if actual != digest:
        return MISMATCH, f"content hashes to {actual} ({algorithm}), not {digest}", size
    if expected_size is not None and size != expected_size:
        return SIZE, f"blob decodes to {size} bytes, the catalog records {expected_size}", size
    return "", "", size


def _scan(lib: Hololib) -> Iterator[tuple[str, bool, tuple[int, int]]]:
    """Every non-directory under ``library/``: (path relative to the hololib root, whether it is
    a regular file, (st_dev, st_ino)). Symlinks are not followed. Types and inodes come from
    the directory listings, the device from ``library/`` (no stat per file or directory where
    the filesystem reports types in listings: the fan-out makes a directory per few blobs). A
    filesystem mounted inside ``library/`` gets the wrong device, so :func:`delete_bad`, which
    compares it with a fresh lstat, would refuse to delete there."""
    try:
        dev = os.stat(lib.library_dir).st_dev
    except OSError:
        return
    stack = [(os.fspath(lib.library_dir), os.path.relpath(lib.library_dir, lib.root) + "/")]
    while stack:
        here, prefix = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                    continue
                regular = entry.is_file(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            yield prefix + entry.name, regular, (dev, entry.inode())


def _ident(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def check_library(lib: Hololib, *, catalogs: Iterable[Catalog] = (), workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Check every blob of ``lib`` (or, given catalogs, exactly the blobs they need).

    ``progress(done, total)`` is called as blobs finish (``done`` = how many just finished)."""
    report = CheckReport(hololib=str(lib.root))
    jobs: list[_Job] = []
    idents: dict[str, tuple[int, int]] = {}
    catalogs = list(catalogs)
    if catalogs:
        needs: dict[str, dict[int, list[str]]] = {}
        for catalog in catalogs:
            report.catalogs.append(str(catalog.source or catalog.identity))
            for path, entry, _ in iter_files(catalog.tree, include_shadow=False):
                if entry.symlink:
                    continue
                needs.setdefault(entry.digest, {}).setdefault(entry.size, []).append(path)
        for digest, sizes in sorted(needs.items()):
            rel = f"library/{blob_relpath(digest)}"
            users = tuple(p for ps in sizes.values() for p in ps)
            if algorithm_of(digest) is None:
                report.problems.append(Problem(UNKNOWN, rel, f"catalog digest {digest!r} is not a digest",
                                               digest, users))
                continue
            if len(sizes) > 1:
                report.problems.append(Problem(SIZE, rel, f"catalog records several sizes for one digest: "
                                               f"{sorted(sizes)}", digest, users))
            try:
                st = os.lstat(lib.root / rel)
            except FileNotFoundError:
                report.problems.append(Problem(MISSING, rel, "blob is missing", digest, users))
                continue
            except OSError as exc:
                report.problems.append(Problem(UNREADABLE, rel, exc.strerror or str(exc), digest, users))
                continue
            if not stat.S_ISREG(st.st_mode):
                report.problems.append(Problem(NOT_REGULAR, rel, "not a regular file", digest, users, _ident(st)))
                continue
            idents[rel] = _ident(st)
            jobs.append(_Job(rel, digest, next(iter(sizes)) if len(sizes) == 1 else None, users))
    else:
        for rel, regular, ident in _scan(lib):
            name = os.path.basename(rel)
            if ".part" in name:
                if not _in_progress(name):
                    report.problems.append(Problem(TEMP, rel, "temporary file left behind", ident=ident))
                continue
            if not regular:
                report.problems.append(Problem(NOT_REGULAR, rel, "not a regular file", name, ident=ident))
                continue
            if algorithm_of(name) is None:
                report.problems.append(Problem(UNKNOWN, rel, "file name is not a digest", ident=ident))
                continue
            if rel != f"library/{blob_relpath(name)}":
                report.problems.append(Problem(MISPLACED, rel, f"belongs at library/{blob_relpath(name)}", name,
                                               ident=ident))
                continue
            idents[rel] = ident
            jobs.append(_Job(rel, name))

    def run(share: list[_Job]) -> list[tuple[_Job, str, str, int]]:
        out = []
        for job in share:
            path = os.fspath(lib.root / job.rel)
            size = _native_check(path, job.digest, job.expected_size)
            out.append((job, "", "", size) if size is not None else (job, *check_blob(path, job.digest, job.expected_size)))
        return out

    total = len(jobs)
    if progress:
        progress(0, total)
    workers = max(1, workers or min(32, os.cpu_count() or 1))
    shares = [jobs[i : i + SHARE] for i in range(0, len(jobs), SHARE)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="holofs-verify") as pool:
        for results in pool.map(run, shares):
            for job, kind, detail, size in results:
                report.checked += 1
                report.bytes_decoded += size
                if kind:
                    report.problems.append(Problem(kind, job.rel, detail, job.digest, job.entries, idents[job.rel]))
                else:
                    report.good += 1
            if progress:
                progress(len(results), total)
    report.problems.sort(key=lambda p: (p.path, p.kind))
    return report


def delete_bad(lib: Hololib, report: CheckReport) -> list[str]:
    """Delete the files ``report`` found bad (kinds in :data:`DELETABLE`), nothing else.

    A file is removed only if it is still the same file (device, inode) that was checked."""
    deleted: list[str] = []
    for problem in report.problems:
        if problem.kind not in DELETABLE or problem.ident == (0, 0):
            continue
        path = lib.root / problem.path
        try:
            if _ident(os.lstat(path)) != problem.ident:
                continue
            os.unlink(path)
        except OSError:
            continue
        deleted.append(problem.path)
    report.deleted.extend(deleted)
    return deleted
