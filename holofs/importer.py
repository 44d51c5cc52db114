"""Record a directory tree into a hololib and catalog, the way RCC's ``lift`` does.

The tree is scanned like RCC's ``htfs.Dir.Lift`` (kill list, symlinks followed for
stat, symlinked directories recursed with their contents marked ``shadow``), then every
file is processed by a worker thread. Files up to one chunk (1 MiB) are read once: hash,
identity offsets and compressed blob come from that one buffer. Larger files are mapped and
hashed first, then compressed into a temporary file only if the library lacks the blob, and
renamed to the digest path: re-imports never pay for compression, and no file is held in
memory beyond one chunk.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import platform as _platform
import shutil
import stat
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from . import __version__
from .catalog import Catalog, DirEntry, FileEntry, iter_dirs, write_catalog
from .digest import SHA256, SIPHASH128, hash_file, siphash128
from .errors import HolofsError, NotFound, UsageError
from .fsutil import part_name, raise_for_disk
from .library import CHUNK, ENCODINGS, GZIP, RAW, ZSTD, Hololib
from .logs import logger
from .modes import posix_to_go
from .relocation import OffsetFinder

log = logger(__name__)

KILL_LIST = frozenset({"__MACOSX", "__pycache__", ".pyc", ".git", ".hg", ".svn", ".gitignore"})
"""Names (or Go ``filepath.Ext`` extensions) RCC never records."""

NO_DIGEST = "N/A"
"""Digest RCC leaves on entries it cannot hash (broken symlinks, special files)."""

ProgressHook = Callable[[int, int], None]
"""Called from the importing thread as ``hook(files_done_now, total_files)``."""


@dataclass
class ImportResult:
    """What one import did."""

    catalog: Catalog
    catalog_path: Path
    compress: str
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    shadow_files: int = 0
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0
    distinct_blobs: int = 0
    new_blobs: int = 0
    new_blob_bytes: int = 0
    relocated_files: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "catalog": str(self.catalog_path),
            "identity": self.catalog.identity,
            "path": self.catalog.path,
            "platform": self.catalog.platform,
            "blueprint": self.catalog.blueprint,
            "compress": self.compress,
            "files": self.files,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "shadow_files": self.shadow_files,
            "skipped": list(self.skipped),
            "bytes": self.bytes,
            "distinct_blobs": self.distinct_blobs,
            "new_blobs": self.new_blobs,
            "new_blob_bytes": self.new_blob_bytes,
            "relocated_files": self.relocated_files,
            "seconds": round(self.seconds, 3),
        }


# --- naming ----------------------------------------------------------------------------


def go_ext(name: str) -> str:
    """Go's ``filepath.Ext``: from the last dot to the end ('' if none)."""
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 else ""


def is_ignored(name: str) -> bool:
    """True for names RCC's lift skips (by name or by extension)."""
    return name in KILL_LIST or go_ext(name) in KILL_LIST


def current_platform() -> str:
    """RCC's platform tag (Go ``GOOS_GOARCH``), e.g. ``linux_amd64``."""
    system = {"win32": "windows", "cygwin": "windows"}.get(sys.platform, sys.platform)
    if system.startswith("linux"):
        system = "linux"
    machine = _platform.machine().lower()
    arch = {
        "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
        "i386": "386", "i686": "386", "x86": "386", "armv7l": "arm", "armv6l": "arm",
    }.get(machine, machine or "unknown")
    return f"{system}_{arch}"


def compute_blueprint(catalog: Catalog) -> str:
    """A stable, location-independent name for the recorded content.

    First 16 hex chars of SHA-256 over the platform and, for every entry sorted by path,
    ``path NUL kind NUL mode NUL size NUL digest NUL symlink NUL rewrite-offsets``. The
    identity and path are left out (like RCC's blueprint, it names the content, not where
    it was recorded); they still shape it through digests when files contain the identity."""
    h = hashlib.sha256()
    h.update(f"holofs-blueprint-1\0{catalog.platform}\n".encode())
    lines: list[str] = []
    for path, node in iter_dirs(catalog.tree):
        lines.append(f"{path}/\0d\0{node.mode}\0\0\0{node.symlink}\0{int(node.shadow)}")
        for name, f in node.files.items():
            fpath = f"{path}/{name}" if path else name
            rw = ",".join(map(str, f.rewrite))
            lines.append(f"{fpath}\0f\0{f.mode}\0{f.size}\0{f.digest}\0{f.symlink}\0{rw}")
    for line in sorted(lines):
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()[:16]


# --- scanning (RCC's Dir.Lift) -----------------------------------------------------------


@dataclass(slots=True)
class _FileJob:
    path: str
    entry: FileEntry
    store: bool  # False for shadow files: hashed like RCC, but no blob is kept


@dataclass
class _Scan:
    jobs: list[_FileJob] = field(default_factory=list)
    dirs: int = 0
    symlinks: int = 0
    skipped: list[str] = field(default_factory=list)


def _check_name(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"cannot record {os.fsencode(path)!r}: its name is not valid UTF-8") from None


def _scan(path: str, node: DirEntry, scan: _Scan, ancestors: frozenset[tuple[int, int]], rel: str) -> None:
    try:
        st = os.stat(path)
        node.mode = posix_to_go(st.st_mode)
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise HolofsError(f"cannot read directory {path}: {exc.strerror}") from None
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        log.warning("%s: symlink loop, recorded without contents", path)
        return
    ancestors = ancestors | {key}
    shadow = node.shadow or node.is_symlink
    for name in names:
        if is_ignored(name):
            continue
        full = os.path.join(path, name)
        child_rel = f"{rel}/{name}" if rel else name
        _check_name(full)
        try:
            info = os.stat(full)
        except OSError:
            try:
                info = os.lstat(full)
            except OSError as exc:
                raise HolofsError(f"cannot stat {full}: {exc.strerror}") from None
            if not stat.S_ISLNK(info.st_mode):
                raise HolofsError(f"cannot stat {full}") from None
        symlink = os.readlink(full) if os.path.islink(full) else ""
        if symlink:
            scan.symlinks += 1
        if stat.S_ISDIR(info.st_mode):
            child = DirEntry(name=name, symlink=symlink, shadow=shadow)
            node.subdirs[name] = child
            scan.dirs += 1
            _scan(full, child, scan, ancestors, child_rel)
            continue
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            log.warning("%s: not a regular file, directory or symlink; not recorded", full)
            scan.skipped.append(child_rel)
            continue
        entry = FileEntry(name=name, size=info.st_size, mode=posix_to_go(info.st_mode), digest=NO_DIGEST,
                          symlink=symlink)
        node.files[name] = entry
        if stat.S_ISREG(info.st_mode):  # a broken symlink keeps "N/A"
            scan.jobs.append(_FileJob(full, entry, store=not shadow and not symlink))


# --- per-file work -------------------------------------------------------------------------


class _Compressor:
    """Incremental compression of one blob in ``encoding``."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == GZIP:  # RCC writes gzip at "best speed"
            self._z: object = zlib.compressobj(1, zlib.DEFLATED, 31)
        elif encoding == ZSTD:
            self._z = zstandard.ZstdCompressor(level=3).compressobj()
        else:
            self._z = None

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data) if self._z is not None else data  # type: ignore[attr-defined]

    def flush(self) -> bytes:
        return self._z.flush() if self._z is not None else b""  # type: ignore[attr-defined]


def _one_shot(data: bytes, encoding: str) -> bytes:
    c = _Compressor(encoding)
    return c.compress(data) + c.flush()


class _Importer:
    def __init__(self, lib: Hololib, identity: bytes, algorithm: str, encoding: str) -> None:
        self.lib = lib
        self.identity = identity
        self.algorithm = algorithm
        self.encoding = encoding
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._made_dirs: set[Path] = set()
        self.new_blobs = 0
        self.new_blob_bytes = 0

    def _claim(self, digest: str) -> bool:
        """True if this caller must store ``digest`` (first to see it, and not in the library)."""
        with self._lock:
            if digest in self._claimed:
                return False
            self._claimed.add(digest)
        return not self.lib.has(digest)

    def _digest_of(self, data: bytes | mmap.mmap) -> str:
        if self.algorithm == SIPHASH128:
            return siphash128(data).hex()
        return hashlib.sha256(data).hexdigest()

    def _final(self, digest: str) -> Path:
        final = self.lib.blob_path(digest)
        if final.parent not in self._made_dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(final.parent)
        return final

    def _publish(self, tmp: str, digest: str, stored: int) -> None:
        os.chmod(tmp, 0o644)
        os.replace(tmp, self._final(digest))
        with self._lock:
            self.new_blobs += 1
            self.new_blob_bytes += stored

    def run(self, job: _FileJob) -> None:
        try:
            self._run(job)
        except HolofsError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise_for_disk(exc, str(self.lib.library_dir))
            raise HolofsError(f"cannot record {job.path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # mmap of a file truncated while importing
            raise HolofsError(f"cannot record {job.path}: {exc}") from None

    def _run(self, job: _FileJob) -> None:
        with open(job.path, "rb") as src:
            head = src.read(CHUNK + 1)
            if len(head) <= CHUNK:
                self._small(job, head)
            else:
                self._large(job, src)

    def _small(self, job: _FileJob, data: bytes) -> None:
        finder = OffsetFinder(self.identity)
        finder.feed(data)
        digest = self._digest_of(data)
        job.entry.digest, job.entry.rewrite, job.entry.size = digest, finder.offsets, len(data)
        if not job.store or not self._claim(digest):
            return
        payload = _one_shot(data, self.encoding)
        if len(payload) == len(data):
            # Readers take "stored size == catalog size" to mean raw: never write an
            # ambiguous compressed blob; the raw content is just as small.
            payload = data
        final = self._final(digest)
        tmp = part_name(final)
        try:
            with open(tmp, "xb") as sink:
                sink.write(payload)
            self._publish(tmp, digest, len(payload))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _large(self, job: _FileJob, src: BinaryIO) -> None:
        """Files over one chunk: pass 1 hashes and finds offsets (cheap);
        pass 2 compresses it into the library only if the blob is missing, so re-imports
        never pay for compression. Pass 2 re-hashes what it stores and refuses a file that
        changed in between."""
        finder = OffsetFinder(self.identity)
        size = 0
        if self.algorithm == SIPHASH128:  # one-shot C hash: map the file instead of buffering it
            with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as view:
                digest = self._digest_of(view)
                for start in range(0, len(view), CHUNK):
                    finder.feed(memoryview(view)[start : start + CHUNK])
                size = len(view)
        else:
            hasher = hashlib.sha256()
            src.seek(0)
            while chunk := src.read(CHUNK):
                hasher.update(chunk)
                finder.feed(chunk)
                size += len(chunk)
            digest = hasher.hexdigest()
        job.entry.digest, job.entry.rewrite, job.entry.size = digest, finder.offsets, size
        if not job.store or not self._claim(digest):
            return
        final = self._final(digest)
        tmp = part_name(final)
        try:
            src.seek(0)
            with open(tmp, "xb") as sink:
                stored = self._encode(src, sink, size)
            again = hash_file(tmp, SIPHASH128) if self.encoding == RAW else stored[1]
            if again != digest:
                raise HolofsError(f"{job.path} changed while it was being imported; import again")
            self._publish(tmp, digest, stored[0])
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _encode(self, src: BinaryIO, sink: BinaryIO, size: int) -> tuple[int, str]:
        """Copy ``src`` into ``sink`` in the library's encoding; returns (stored bytes,
        SHA-256 of what was read, '' for raw). A compressed result exactly ``size`` bytes
        long is replaced by the raw content (stored size == size means raw to readers)."""
        comp = _Compressor(self.encoding)
        hasher = hashlib.sha256() if self.encoding != RAW else None
        stored = 0
        while chunk := src.read(CHUNK):
            if hasher is not None:
                hasher.update(chunk)
            out = comp.compress(chunk)
            sink.write(out)
            stored += len(out)
        out = comp.flush()
        sink.write(out)
        stored += len(out)
        if stored == size and self.encoding != RAW:
            src.seek(0)
            sink.seek(0)
            sink.truncate()
            shutil.copyfileobj(src, sink, CHUNK)
        return stored, hasher.hexdigest() if hasher is not None else ""


# --- the whole import ------------------------------------------------------------------------


def _choose_encoding(lib: Hololib, compress: str | None) -> str:
    if compress is not None and compress not in ENCODINGS:
        raise UsageError(f"unknown compression {compress!r}: use one of {', '.join(ENCODINGS)}")
    marker = lib.compress_no
    if compress is None:
        return RAW if marker else GZIP
    if marker and compress != RAW:
        raise UsageError(
            f"{lib.root} has catalog/compress.no (raw blobs, SipHash digests): import it with --compress none"
        )
    if compress == RAW and not marker and lib.library_dir.is_dir() and any(lib.library_dir.iterdir()):
        raise UsageError(
            f"{lib.root} already holds compressed (SHA-256) blobs; --compress none would switch it to "
            "SipHash digests. Use a new hololib for raw storage"
        )
    return compress


def import_tree(
    src: str | os.PathLike[str],
    hololib: str | os.PathLike[str],
    *,
    compress: str | None = None,
    workers: int | None = None,
    progress: ProgressHook | None = None,
) -> ImportResult:
    """Record directory ``src`` into ``hololib`` (created if needed) and write its catalog.

    ``compress`` is ``gzip``, ``zstd`` or ``none`` (raw blobs, RCC's ``compress.no`` marker
    and SipHash-128 digests); ``None`` follows the library (``none`` if it has the marker,
    else ``gzip``). Identity = basename of ``src``; path = its absolute path."""
    started = time.monotonic()
    root = os.path.abspath(os.fspath(src))
    if not os.path.exists(root):
        raise NotFound(f"cannot import {root}: no such directory")
    if not os.path.isdir(root):
        raise UsageError(f"cannot import {root}: not a directory")
    identity = os.path.basename(root.rstrip(os.sep))
    if not identity:
        raise UsageError(f"cannot import {root}: it has no base name to use as identity")
    _check_name(root)

    lib_root = Path(hololib).absolute()
    if lib_root.exists() and not lib_root.is_dir():
        raise UsageError(f"hololib {lib_root} exists and is not a directory")
    if Path(root) == lib_root or lib_root.is_relative_to(root):
        raise UsageError(f"the hololib {lib_root} must not lie inside the directory being imported")
    lib = Hololib(lib_root)
    encoding = _choose_encoding(lib, compress)
    try:
        lib = Hololib.create(lib_root)
        if encoding == RAW:
            lib.set_compress_no(True)
    except OSError as exc:
        raise_for_disk(exc, str(lib_root))
        raise HolofsError(f"cannot create hololib {lib_root}: {exc.strerror}") from None
    algorithm = SIPHASH128 if encoding == RAW else SHA256

    tree = DirEntry(name="")
    scan = _Scan()
    _scan(root, tree, scan, frozenset(), "")

    worker = _Importer(lib, identity.encode("utf-8"), algorithm, encoding)
    total = len(scan.jobs)
    n_workers = workers or min(32, (os.cpu_count() or 2) * 2)
    done = 0
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=max(1, n_workers), thread_name_prefix="holofs-import") as pool:
        futures = [pool.submit(worker.run, job) for job in scan.jobs]
        try:
            for fut in futures:
                fut.result()
                done += 1
                if progress:
                    progress(1, total)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise

    catalog = Catalog(
        identity=identity,
        path=root,
        tree=tree,
        platform=current_platform(),
        lifted=True,
        rcc=f"holofs-{__version__}",
    )
    catalog.blueprint = compute_blueprint(catalog)
    target = lib.catalog_path_for(catalog)
    write_catalog(catalog, target)

    result = ImportResult(catalog=catalog, catalog_path=target, compress=encoding)
    result.dirs = scan.dirs
    result.symlinks = scan.symlinks
    result.skipped = scan.skipped
    digests: set[str] = set()
    for job in scan.jobs:
        if job.store:
            result.files += 1
            result.bytes += job.entry.size
            digests.add(job.entry.digest)
            if job.entry.rewrite:
                result.relocated_files += 1
        elif not job.entry.symlink:
            result.shadow_files += 1
    result.distinct_blobs = len(digests)
    result.new_blobs = worker.new_blobs
    result.new_blob_bytes = worker.new_blob_bytes
    result.seconds = time.monotonic() - started
    return result
