"""The fast path of a fresh restore: the whole tree in one native call.

Given a fresh staging directory, :func:`clone_tree` hands every directory and every
rewrite-free regular file to ``holofs._native.build_tree``, which makes the directories and
the files in C threads with the GIL released (no per-file or per-directory Python work, no
worker processes): raw blobs are reflinked (copied where the filesystems cannot share
extents), gzip/zstd blobs decoded into the new file. Blobs
the verification policy wants hashed are hashed there too (a raw one before its clone, a
compressed one once decoded): one whose content does not match its digest is left uncreated,
and the general path names it. The few the C code cannot hash (raw ones over 64 MiB) are
hashed afterwards, in threads; a mismatch removes the clone and raises CorruptBlob (the
staging directory is never renamed into place).

It is an accelerator only: symlinks, files with rewrites, copy-pattern matches, bad blobs
and whatever the native code could not do are returned to the caller for
the general per-file path (:func:`holofs.strategies.produce_file`), which also reports errors.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from array import array
from collections.abc import Callable, Sequence

from .catalog import DirEntry, file_rows
from .library import blob_relpath
from .strategies import (
    COMPRESSED_REFLINK_WARNING,
    COPY,
    COPY_FILE_RANGE,
    DECOMPRESS,
    NO_REFLINK_WARNING,
    REFLINK,
    Linker,
    _corrupt,
    _hash_fd,
)
from .verification import VerifiedStore, VerifyPolicy

try:  # the optional C accelerator (holofs/_native.c, Linux)
    from . import _native
except ImportError:  # pragma: no cover - exercised where no compiler built it
    _native = None

PROGRESS_EVERY = 0.1  # seconds between progress reports while the native call runs
# build_tree's made[i]: reflinked (or empty), decoded, copied by copy_file_range, copied by write
MADE_CLONE, MADE_DECODE, MADE_COPY_RANGE, MADE_COPY = 1, 2, 3, 4


class ClonedTree:
    """What :func:`clone_tree` did, and what it left: ``left``, per directory, the names left
    to do; ``dirs_stamped``, every directory made got its mode and the mother time, after its files."""

    def __init__(self, left: dict[str, list[str]], written: int, verified: int, dirs_stamped: bool) -> None:
        self.left = left
        self.written = written
        self.verified = verified
        self.dirs_stamped = dirs_stamped


def available(linker: Linker) -> bool:
    """The accelerator is built and the strategy lets it reflink (auto or reflink)."""
    return _native is not None and linker.mode in ("auto", "reflink")


def clone_tree(lib_fd: int, lib_dev: int, dir_fds: dict[str, int], target_dev: int, dirs: list[tuple[str, DirEntry]], *,
               perm: Callable[[int], int], ident: bytes, linker: Linker, store: VerifiedStore,
               policy: VerifyPolicy, times_ns: int, dir_mode: int, threads: int,
               progress: Callable[[int], None] | None = None,
               meanwhile: Callable[[], None] | None = None) -> ClonedTree | None:
    """Make ``dirs`` (parents first; ``dirs[0]`` is the root, open as ``dir_fds[""]``) and their
    files natively; the directories made join ``dir_fds`` (open: the caller closes them all,
    also after an error). None when the fast path does not apply (no accelerator, a strategy
    other than auto/reflink); the caller then does everything itself. Where the filesystems
    cannot reflink, raw files are copied here (copy_file_range, or written from memory when
    just hashed). ``ident``: what each rewrite offset gets (empty: the target is the recorded path).
    ``meanwhile`` runs in this thread while the native threads work."""
    pair = (lib_dev, target_dev)
    if not available(linker):
        return None
    # Comprehensions, not one loop of appends: half the time (~1.5 ms for the corpus' 2.8k directories).
    rels = [rel for rel, _node in dirs]
    index = {rel: i for i, rel in enumerate(rels)}
    split = [rel.rpartition("/") for rel in rels]
    dir_parents = [index[parent] for parent, _, _name in split]
    dir_parents[0] = -1  # the root ("" is its own parent above)
    dir_names = [name for _parent, _, name in split]
    dir_rows: list[Sequence[tuple]] = [file_rows(node) for _rel, node in dirs]
    left: dict[str, list[str]] = {}
    if linker.copy_patterns:  # files matching a copy pattern are left to the general path
        for i, rel in enumerate(rels):
            kept = []
            for row in dir_rows[i]:
                if linker.must_copy(f"{rel}/{row[0]}" if rel else row[0]):
                    left.setdefault(rel, []).append(row[0])
                else:
                    kept.append(row)
            dir_rows[i] = kept
    # Symlinks, and files with a rewrite range outside the file (the general path reports it), are left too.
    file_dirs, digests, names, modes, sizes, rewrites, leave = _native.flatten_rows(dir_rows, {}, perm, len(ident))
    for i, fname in leave:
        left.setdefault(dirs[i][0], []).append(fname)
    # What the C code hashes: every blob (always), those whose blob file is not recorded as
    # verified (trusted), none (skip).
    hashing = {VerifyPolicy.TRUSTED: 1, VerifyPolicy.SKIP: 2}.get(policy, 0)
    verified = store.log_bytes() if hashing == 1 else b""
    counter = array("q", [0])
    outcome: list[tuple[list[int], list]] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(_native.build_tree(
                lib_fd, dir_fds[""], dir_parents, dir_names, file_dirs, digests, names, modes, sizes, rewrites, ident,
                verified, linker.chmod_after, dir_mode, times_ns, hashing, linker.reflink_known(pair) is not False,
                threads, counter))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(exc)

    t0 = time.perf_counter()
    worker = threading.Thread(target=run, name="holofs-native")
    worker.start()
    if meanwhile is not None:
        meanwhile()
    reported = 0
    while worker.is_alive():
        worker.join(PROGRESS_EVERY)
        if progress is not None and counter[0] > reported:
            progress(counter[0] - reported)
            reported = counter[0]
    seconds = time.perf_counter() - t0
    if failure:
        raise failure[0]
    fds, made, unverified, hashed, dirs_stamped = outcome[0]
    dir_fds.update((rel, fds[i]) for rel, i in index.items() if i and fds[i] >= 0)
    # made[i] -> the files i made that way (0: not made)
    if made.count(MADE_CLONE) == len(made):  # the usual outcome, without a loop over every file
        by_kind: dict[int, Sequence[int]] = {MADE_CLONE: range(len(made))} if made else {}
    else:
        lists: dict[int, list[int]] = {}
        for i, kind in enumerate(made):
            lists.setdefault(kind, []).append(i)
        by_kind = dict(lists)
    for i in by_kind.pop(0, []):
        left.setdefault(rels[file_dirs[i]], []).append(names[i])
    cloned, decoded = by_kind.get(MADE_CLONE, []), by_kind.get(MADE_DECODE, [])
    ranged, copied = by_kind.get(MADE_COPY_RANGE, []), by_kind.get(MADE_COPY, [])
    written = sum(map(len, by_kind.values()))
    if progress is not None and written > reported:
        progress(written - reported)
    check = sorted(unverified.items())
    if check and policy == VerifyPolicy.TRUSTED:  # recorded meanwhile by another process?
        missing = store.unverified_keys([key for _i, key in check])
        check = [(i, key) for i, key in check if key in missing]
    if check:
        _verify(lib_fd, dir_fds, check, digests, sizes, names, file_dirs, rels, store, threads)
    store.mark_verified_keys(hashed.values())
    if len(cloned) == len(sizes):
        nonempty, cloned_bytes = len(sizes) - sizes.count(0), sum(sizes)
    else:
        nonempty, cloned_bytes = sum(1 for i in cloned if sizes[i]), sum(sizes[i] for i in cloned)
    share = seconds / max(1, written - (len(cloned) - nonempty))  # the threads' time per file with data
    if nonempty:
        linker._set(linker._reflink, pair, True)
        linker.record(REFLINK, cloned_bytes, share * nonempty, files=nonempty)
    elif ranged or copied:
        linker._set(linker._reflink, pair, False)
    if (ranged or copied) and linker.mode == "reflink":
        linker.warn_once(f"reflink:{pair}", NO_REFLINK_WARNING)
    if ranged:
        linker._set(linker._cfr, pair, True)
        linker.record(COPY_FILE_RANGE, sum(sizes[i] for i in ranged), share * len(ranged), files=len(ranged))
    if len(cloned) > nonempty or copied:
        linker.record(COPY, sum(sizes[i] for i in copied), share * len(copied), files=len(cloned) - nonempty + len(copied))
    if decoded:
        linker.record(DECOMPRESS, sum(sizes[i] for i in decoded), share * len(decoded), files=len(decoded))
        if linker.mode == "reflink":
            linker.warn_once("reflink:compressed", COMPRESSED_REFLINK_WARNING)
    return ClonedTree(left=left, written=written, verified=len(check) + len(hashed), dirs_stamped=dirs_stamped)


def _verify(lib_fd: int, dir_fds: dict[str, int], check: list[tuple[int, str]], digests: list[str], sizes: list[int],
            names: list[str], file_dirs: list[int], rels: list[str], store: VerifiedStore, threads: int) -> None:
    """Hash the blobs behind ``check`` (in threads: hashlib releases the GIL); record the good
    ones; on the first mismatch remove that clone and raise CorruptBlob."""

    def one(item: tuple[int, str]) -> None:
        i, key = item
        src = os.open(blob_relpath(digests[i]), os.O_RDONLY | os.O_CLOEXEC, dir_fd=lib_fd)
        try:
            actual = _hash_fd(src, sizes[i], digests[i])
        finally:
            os.close(src)
        if actual != digests[i]:
            rel = rels[file_dirs[i]]
            with contextlib.suppress(OSError):
                os.unlink(names[i], dir_fd=dir_fds[rel])
            raise _corrupt(f"{rel}/{names[i]}" if rel else names[i], digests[i], actual)
        store.mark_verified_key(key)

    def share(items: list[tuple[int, str]]) -> None:
        for item in items:
            one(item)

    # One slice per thread, not one task per blob: a task costs ~50 µs of hand-offs, as much as
    # hashing a small blob.
    n = max(1, min(threads, len(check)))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="holofs-verify") as pool:
        for _ in pool.map(share, [check[i::n] for i in range(n)]):
            pass
