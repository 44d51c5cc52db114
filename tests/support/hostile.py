"""Hostile catalogs and hololibs: a small valid world, and mutations that attack it.

:func:`make_world` builds, under one sandbox directory::

    sandbox/hololib/            a real hololib (gzip blobs, SHA-256) with one catalog
    sandbox/holotree/<RECORDED> where the catalog says it was recorded (never created)
    sandbox/holotree/<TARGET>   the restore target (same length, same base: relocatable)
    sandbox/holotree/sentinel/  files an attack would like to overwrite
    sandbox/cache/              HOLOFS_CACHE for the CLI

Each ``MUTATIONS[name](world)`` changes the catalog (and/or library) in place and returns the
catalog path of the entry the error must name. :meth:`World.save` writes the catalog back.
:func:`snapshot` lists a directory tree (type, size, mtime, mode, content hash, link text)
so a test can prove nothing outside the target changed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from holofs.catalog import Catalog, DirEntry, FileEntry, iter_files, read_catalog, write_catalog
from holofs.library import GZIP, Hololib
from holofs.modes import (
    GO_CHAR_DEVICE,
    GO_DEVICE,
    GO_DIR,
    GO_IRREGULAR,
    GO_NAMED_PIPE,
    GO_SOCKET,
    GO_SYMLINK,
)

RECORDED = "h1111111_1111111111111111t"
TARGET = "h2222222_2222222222222222t"
BLUEPRINT = "0123456789abcdef"
PLATFORM = "linux_amd64"

SENTINEL_FILES = {
    "victim.txt": b"sentinel victim: must never change\n",
    "sub/deep.txt": b"deep sentinel\n",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    sandbox: Path
    lib: Hololib
    catalog: Catalog
    catalog_path: Path
    contents: dict[str, bytes] = field(default_factory=dict)
    """Original (recorded) content of every regular file entry."""

    @property
    def hololib(self) -> Path:
        return self.lib.root

    @property
    def holotree(self) -> Path:
        return self.sandbox / "holotree"

    @property
    def target(self) -> Path:
        return self.holotree / TARGET

    @property
    def sentinel(self) -> Path:
        return self.holotree / "sentinel"

    @property
    def cache(self) -> Path:
        return self.sandbox / "cache"

    @property
    def env(self) -> dict[str, str]:
        """Environment for CLI runs: a private cache inside the sandbox."""
        return {"HOLOFS_CACHE": str(self.cache), "HOLOFS_CONFIG": str(self.sandbox / "no-settings.toml")}

    def restored(self, path: str) -> bytes:
        """What a correct restore at ``target`` writes for regular file ``path``."""
        data = self.contents[path]
        return data.replace(RECORDED.encode(), TARGET.encode())

    def entry(self, path: str) -> FileEntry:
        node = self.catalog.tree
        *dirs, name = path.split("/")
        for d in dirs:
            node = node.subdirs[d]
        return node.files[name]

    def dir(self, path: str) -> DirEntry:
        node = self.catalog.tree
        for d in path.split("/"):
            node = node.subdirs[d]
        return node

    def put_blob(self, digest: str, content: bytes, *, encoding: str = GZIP) -> Path:
        return self.lib.write_blob_from(digest, io.BytesIO(content), encoding)

    def save(self) -> Path:
        write_catalog(self.catalog, self.catalog_path)
        return self.catalog_path

    def outside(self) -> dict[str, tuple]:
        """Snapshot of the sandbox minus the target, the hololib and the cache."""
        return snapshot(self.sandbox, exclude={self.target, self.hololib, self.cache})


def _file(name: str, data: bytes, mode: int = 0o644) -> FileEntry:
    needle = RECORDED.encode()
    offsets, at = [], data.find(needle)
    while at >= 0:
        offsets.append(at)
        at = data.find(needle, at + len(needle))
    return FileEntry(name=name, size=len(data), mode=mode, digest=sha256(data), rewrite=offsets)


def make_world(sandbox: Path) -> World:
    """A small valid catalog + hololib; the target does not exist yet."""
    sandbox.mkdir(parents=True, exist_ok=True)
    lib = Hololib.create(sandbox / "hololib")
    recorded_path = str(sandbox / "holotree" / RECORDED)
    ident = RECORDED.encode()
    contents = {
        "bin/tool": b"#!/bin/sh\nexec " + recorded_path.encode() + b"/lib/run \"$@\"\n",
        "lib/data.txt": b"plain data without the identity\n" * 20,
        "lib/pair-a.bin": b"A" * 64,
        "lib/pair-b.bin": b"B" * 64,
        "etc/config": ident + b" at the start and at the end " + ident,
        "empty": b"",
        "README": b"hello\n",
    }
    root = DirEntry(name="", mode=GO_DIR | 0o755)
    for path, data in contents.items():
        *dirs, name = path.split("/")
        node = root
        for d in dirs:
            node = node.subdirs.setdefault(d, DirEntry(name=d, mode=GO_DIR | 0o755))
        node.files[name] = _file(name, data, 0o755 if path.startswith("bin/") else 0o644)
        lib.write_blob_from(sha256(data), io.BytesIO(data), GZIP)
    # Symlinks are data: created verbatim, pointing wherever they were recorded to point.
    root.files["link-out"] = FileEntry(name="link-out", size=10, mode=0o644, digest="N/A",
                                       symlink="../sentinel/victim.txt")
    root.files["link-abs"] = FileEntry(name="link-abs", size=10, mode=GO_SYMLINK | 0o777, digest="N/A",
                                       symlink=str(sandbox / "holotree" / "sentinel" / "victim.txt"))
    catalog = Catalog(identity=RECORDED, path=recorded_path, tree=root, platform=PLATFORM,
                      blueprint=BLUEPRINT, lifted=True, rcc="holofs-tests")
    world = World(sandbox=sandbox, lib=lib, catalog=catalog,
                  catalog_path=lib.catalog_dir / f"{BLUEPRINT}v12.{PLATFORM}", contents=contents)
    world.save()
    world.catalog = read_catalog(world.catalog_path)
    for rel, data in SENTINEL_FILES.items():
        p = world.sentinel / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (sandbox / "outside-root.txt").write_bytes(b"next to the holotree\n")
    return world


def snapshot(root: Path, exclude: set[Path] = frozenset()) -> dict[str, tuple]:  # type: ignore[assignment]
    """Every path under ``root`` (symlinks not followed) -> (type, size, mode, mtime_ns, sha256 | link)."""
    excluded = {os.path.abspath(p) for p in exclude}
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in excluded]
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            if full in excluded:
                continue
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                with open(full, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
    return out


# --- catalog mutations: each returns the path of the entry the error must name ----------


def _rename(world: World, path: str, new: str) -> str:
    *dirs, name = path.split("/")
    node = world.dir("/".join(dirs)) if dirs else world.catalog.tree
    entry = node.files.pop(name)
    entry.name = new
    node.files[new] = entry
    return "/".join([*dirs, new])


def name_dotdot(w: World) -> str:
    return _rename(w, "lib/data.txt", "..")


def name_dot(w: World) -> str:
    return _rename(w, "lib/data.txt", ".")


def name_slash(w: World) -> str:
    return _rename(w, "lib/data.txt", "a/b")


def name_traversal(w: World) -> str:
    return _rename(w, "lib/data.txt", "../../sentinel/victim.txt")


def name_absolute(w: World) -> str:
    return _rename(w, "README", str(w.sentinel / "victim.txt"))


def name_nul(w: World) -> str:
    return _rename(w, "README", "READ\0ME")


def name_empty(w: World) -> str:
    _rename(w, "lib/data.txt", "")
    return "lib/"


def dir_name_dotdot(w: World) -> str:
    node = w.catalog.tree
    sub = node.subdirs.pop("lib")
    sub.name = ".."
    node.subdirs[".."] = sub
    return ".."


def key_differs(w: World) -> str:
    w.entry("README").name = "../sentinel/victim.txt"
    return "README"


def name_file_and_dir(w: World) -> str:
    w.catalog.tree.files["lib"] = w.catalog.tree.files.pop("README")
    w.catalog.tree.files["lib"].name = "lib"
    return "lib"


def digest_traversal(w: World) -> str:
    w.entry("README").digest = "../../../../sentinel/victim.txt"
    return "README"


def digest_uppercase(w: World) -> str:
    e = w.entry("README")
    e.digest = e.digest.upper()
    return "README"


def digest_wrong_length(w: World) -> str:
    e = w.entry("README")
    e.digest = e.digest[:40]
    return "README"


def digest_na_regular(w: World) -> str:
    w.entry("README").digest = "N/A"
    return "README"


def offset_past_eof(w: World) -> str:
    e = w.entry("etc/config")
    e.rewrite = [0, e.size - len(RECORDED) + 1]
    return "etc/config"


def offset_far_past_eof(w: World) -> str:
    e = w.entry("README")
    e.rewrite = [1 << 30]
    return "README"


def offset_negative(w: World) -> str:
    w.entry("etc/config").rewrite = [-5]
    return "etc/config"


def size_negative(w: World) -> str:
    w.entry("README").size = -1
    return "README"


def _mode(name: str, bits: int) -> Callable[[World], str]:
    def mutate(w: World) -> str:
        w.entry("README").mode = bits | 0o644
        return "README"

    mutate.__name__ = name
    return mutate


mode_block_device = _mode("mode_block_device", GO_DEVICE)
mode_char_device = _mode("mode_char_device", GO_DEVICE | GO_CHAR_DEVICE)
mode_pipe = _mode("mode_pipe", GO_NAMED_PIPE)
mode_socket = _mode("mode_socket", GO_SOCKET)
mode_irregular = _mode("mode_irregular", GO_IRREGULAR)
mode_file_is_dir = _mode("mode_file_is_dir", GO_DIR)
mode_unknown_bits = _mode("mode_unknown_bits", 1 << 35)


def mode_dir_not_dir(w: World) -> str:
    w.dir("lib").mode = 0o755
    return "lib"


def symlinked_dir_writes_through(w: World) -> str:
    """``lib`` becomes a symlink to the sentinel dir, with a non-shadow subdir beneath it."""
    lib = w.dir("lib")
    lib.symlink = "../sentinel"
    lib.subdirs["sub"] = DirEntry(name="sub", mode=GO_DIR | 0o755,
                                  files={"deep.txt": _file("deep.txt", w.contents["README"])})
    return "lib/sub"


def identity_empty(w: World) -> str:
    w.catalog.identity = ""
    return ""


def identity_slash(w: World) -> str:
    w.catalog.identity = "a/" + RECORDED[2:]
    return ""


def path_not_identity(w: World) -> str:
    w.catalog.path = str(w.holotree / "somewhere-else")
    return ""


VALIDATION_MUTATIONS: dict[str, Callable[[World], str]] = {
    f.__name__: f
    for f in (
        name_dotdot, name_dot, name_slash, name_traversal, name_absolute, name_nul, name_empty,
        dir_name_dotdot, key_differs, name_file_and_dir, digest_traversal, digest_uppercase,
        digest_wrong_length, digest_na_regular, offset_past_eof, offset_far_past_eof, offset_negative,
        size_negative, mode_block_device, mode_char_device, mode_pipe, mode_socket, mode_irregular,
        mode_file_is_dir, mode_unknown_bits, mode_dir_not_dir, symlinked_dir_writes_through,
        identity_empty, identity_slash, path_not_identity,
    )
}
"""Catalog mutations that validation must reject before anything is written."""
assert len(VALIDATION_MUTATIONS) == 30

READER_REJECTS = {"key_differs"}
"""Mutations the catalog reader itself refuses (the written JSON cannot be read back)."""


# --- legitimate but tricky catalogs (must restore, without writing outside) -------------


def symlinked_dir_with_shadow_files(w: World) -> None:
    """``lib`` is a symlink to the sentinel dir; its recorded files must not be written."""
    lib = w.dir("lib")
    lib.symlink = "../sentinel"
    lib.files["victim.txt"] = _file("victim.txt", b"OVERWRITTEN THROUGH A SYMLINK\n")
    w.put_blob(lib.files["victim.txt"].digest, b"OVERWRITTEN THROUGH A SYMLINK\n")
    lib.subdirs["sub"] = DirEntry(name="sub", mode=GO_DIR | 0o755, shadow=True,
                                  files={"deep.txt": _file("deep.txt", b"OVERWRITTEN deep\n")})


# --- library corruptions: each returns (entry path, digest) the error must name ---------


def _blob_of(w: World, path: str) -> tuple[str, Path]:
    digest = w.entry(path).digest
    return digest, w.lib.blob_path(digest)


def gzip_bomb(w: World) -> tuple[str, str]:
    """The blob for ``README`` (6 bytes) decompresses to 50 MB of zeros."""
    digest, blob = _blob_of(w, "README")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        chunk = bytes(1 << 20)
        for _ in range(50):
            gz.write(chunk)
    blob.write_bytes(buf.getvalue())
    return "README", digest


def truncated_gzip(w: World) -> tuple[str, str]:
    digest, blob = _blob_of(w, "lib/data.txt")
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    return "lib/data.txt", digest


def swapped_blobs(w: World) -> tuple[str, str]:
    """The blobs of two same-size files trade places: sizes match, hashes do not."""
    da, pa = _blob_of(w, "lib/pair-a.bin")
    db, pb = _blob_of(w, "lib/pair-b.bin")
    a, b = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(b)
    pb.write_bytes(a)
    return "lib/pair-a.bin", da


def missing_blob(w: World) -> tuple[str, str]:
    digest, blob = _blob_of(w, "bin/tool")
    blob.unlink()
    return "bin/tool", digest


def flipped_byte(w: World) -> tuple[str, str]:
    """A raw-stored blob with one byte changed (no container checksum to catch it)."""
    digest, blob = _blob_of(w, "lib/data.txt")
    data = bytearray(w.contents["lib/data.txt"])
    data[5] ^= 0x20
    blob.unlink()
    w.put_blob(digest, bytes(data), encoding="none")
    return "lib/data.txt", digest


CORRUPTIONS: dict[str, Callable[[World], tuple[str, str]]] = {
    f.__name__: f for f in (gzip_bomb, truncated_gzip, swapped_blobs, missing_blob, flipped_byte)
}


def regular_files(w: World) -> list[str]:
    return [p for p, f, _ in iter_files(w.catalog.tree, include_shadow=False) if not f.symlink]
