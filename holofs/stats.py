"""Facts about a catalog and the hololib blobs it needs (``holofs info``).

Counting rule: every catalog entry below the root is exactly one of ``dirs`` (real
directories), ``files`` (regular files), ``symlinks`` (file or directory symlinks) or
``shadow`` (anything beneath a symlinked directory: recorded, never restored), so
``entries == dirs + files + symlinks + shadow``. Bytes, blobs and relocations count the
regular files a restore writes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .catalog import Catalog, DirEntry, iter_dirs
from .digest import is_valid_digest
from .errors import MissingBlob
from .library import GZIP, RAW, ZSTD, Hololib


@dataclass
class CatalogStats:
    identity: str
    path: str
    platform: str
    blueprint: str
    rcc: str | None
    entries: int = 0
    dirs: int = 0
    files: int = 0
    symlinks: int = 0
    shadow: int = 0
    bytes: int = 0
    distinct_blobs: int = 0
    relocated_files: int = 0
    rewrite_offsets: int = 0
    library: dict[str, int] | None = None
    """Distinct blobs by stored encoding: gzip, zstd, raw, missing (None if not inspected)."""
    blob_sizes: dict[str, int] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("blob_sizes")
        return out


def _is_shadow(node: DirEntry) -> bool:
    return node.shadow or node.is_symlink


def catalog_stats(catalog: Catalog) -> CatalogStats:
    """Count a catalog's entries (no library access)."""
    s = CatalogStats(catalog.identity, catalog.path, catalog.platform, catalog.blueprint, catalog.rcc)
    for path, node in iter_dirs(catalog.tree):
        if path:
            s.entries += 1
            if node.shadow:
                s.shadow += 1
            elif node.is_symlink:
                s.symlinks += 1
            else:
                s.dirs += 1
        for f in node.files.values():
            s.entries += 1
            if _is_shadow(node):
                s.shadow += 1
            elif f.is_symlink:
                s.symlinks += 1
            else:
                s.files += 1
                s.bytes += f.size
                s.blob_sizes.setdefault(f.digest, f.size)
                if f.rewrite:
                    s.relocated_files += 1
                    s.rewrite_offsets += len(f.rewrite)
    s.distinct_blobs = len(s.blob_sizes)
    return s


def library_breakdown(stats: CatalogStats, lib: Hololib, *, workers: int = 16) -> dict[str, int]:
    """Read each needed blob's magic bytes: how many are gzip, zstd, raw or missing."""
    counts = {GZIP: 0, ZSTD: 0, "raw": 0, "missing": 0}

    def classify(item: tuple[str, int]) -> str:
        digest, size = item
        if not is_valid_digest(digest):
            return "missing"
        try:
            enc = lib.encoding(digest, size)
        except MissingBlob:
            return "missing"
        return "raw" if enc == RAW else enc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for kind in pool.map(classify, stats.blob_sizes.items()):
            counts[kind] += 1
    return counts


def full_stats(catalog: Catalog, lib: Hololib | None) -> CatalogStats:
    """Catalog counts plus, when ``lib`` is given, the library breakdown."""
    s = catalog_stats(catalog)
    if lib is not None:
        s.library = library_breakdown(s, lib)
    return s
