"""Generated environment trees for tests: every case ``holofs import`` must get right.

``make_env_tree(root)`` creates ``root`` (its basename is the identity, as in RCC) and
fills it with text and binary files carrying the identity at awkward offsets, symlinks of
every kind, empty, executable and unicode-named files, and files RCC never records. The
returned :class:`EnvTree` says what a correct catalog of it must contain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

IDENTITY = "h0123456_0123456789abcdeft"
"""A 26-byte, RCC-looking identity; use ``base / IDENTITY`` as the root for relocation tests."""

CHUNK = 1 << 20


@dataclass
class EnvTree:
    """What :func:`make_env_tree` created, relative to ``root`` (POSIX separators)."""

    root: Path
    identity: str
    files: dict[str, bytes] = field(default_factory=dict)
    """Regular files that must be recorded, with their exact content."""
    offsets: dict[str, list[int]] = field(default_factory=dict)
    """Every occurrence of the identity in each recorded regular file (empty list if none)."""
    executables: set[str] = field(default_factory=set)
    symlinks: dict[str, str] = field(default_factory=dict)
    """Symlinks (to files, dirs, or nothing) and their target text."""
    dir_symlinks: set[str] = field(default_factory=set)
    broken_symlinks: set[str] = field(default_factory=set)
    shadow_files: set[str] = field(default_factory=set)
    """Files recorded beneath a symlinked directory (``shadow``: never restored)."""
    dirs: set[str] = field(default_factory=set)
    """Real directories that must be recorded (root excluded)."""
    empty_dirs: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)
    """Paths that exist on disk but RCC (and holofs) never record."""
    duplicates: tuple[str, str] = ("", "")
    """Two different paths with identical content (one blob)."""

    @property
    def identity_bytes(self) -> bytes:
        return self.identity.encode()


_KILL = {"__MACOSX", "__pycache__", ".pyc", ".git", ".hg", ".svn", ".gitignore"}


def rcc_ignores(name: str) -> bool:
    """RCC's rule: the name, or its Go ``filepath.Ext``, is on the kill list."""
    dot = name.rfind(".")
    return name in _KILL or (dot >= 0 and name[dot:] in _KILL)


def _occurrences(data: bytes, needle: bytes) -> list[int]:
    out, pos = [], 0
    while (hit := data.find(needle, pos)) >= 0:
        out.append(hit)
        pos = hit + len(needle)
    return out


def make_env_tree(root: str | os.PathLike[str], *, big: bool = True) -> EnvTree:
    """Create a realistic, nasty environment tree at ``root`` and describe it.

    ``big=False`` leaves out the 2+ MiB file that straddles chunk boundaries (faster)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=False)
    tree = EnvTree(root=root, identity=root.name)
    ident = tree.identity_bytes
    path_bytes = os.fsencode(os.path.abspath(root))

    def add(rel: str, data: bytes, *, mode: int = 0o644) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
        tree.files[rel] = data
        tree.offsets[rel] = _occurrences(data, ident)
        if mode & 0o111:
            tree.executables.add(rel)

    def link(rel: str, target: str, *, to_dir: bool = False, broken: bool = False) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)
        tree.symlinks[rel] = target
        if to_dir:
            tree.dir_symlinks.add(rel)
        if broken:
            tree.broken_symlinks.add(rel)

    def ignore(rel: str, data: bytes = b"ignored\n") -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        tree.ignored.add(rel)

    # Launcher script: identity in the shebang (absolute path), executable.
    add("bin/python-launcher", b"#!" + path_bytes + b"/bin/python3.11\nimport sys\nprint(sys.prefix)\n", mode=0o755)
    add("bin/activate", b"export PATH=" + path_bytes + b"/bin:$PATH\nexport CONDA_PREFIX=" + path_bytes + b"\n")
    # Identity at offset 0 and at end of file.
    add("etc/starts-with-identity", ident + b" is the first thing here\n")
    add("etc/ends-with-identity", b"the last thing here is " + ident)
    add("etc/only-identity", ident)
    # Binary with an RPATH-like string, NULs around it, and a near miss (identity minus its last byte).
    add(
        "lib/libdemo.so",
        b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 4 + b"\x00$ORIGIN:" + path_bytes + b"/lib\x00"
        + ident[:-1] + b"\x00" + bytes(300) + ident + ident + b"\x00\xff",
        mode=0o755,
    )
    # Identity right after a byte equal to its last character (RCC's detector can miss this at EOF).
    add("etc/tricky-eof", b"x" * 10 + ident[-1:] + ident)
    # Empty and plain files, one duplicate pair, unicode names.
    add("empty.txt", b"")
    add("lib/python3.11/site-packages/demo/__init__.py", b"VERSION = '1.0'\n")
    add("lib/python3.11/site-packages/demo/core.py", b"def hello():\n    return 'hello'\n" * 20)
    add("lib/python3.11/site-packages/demo-1.0.dist-info/RECORD", b"demo/__init__.py,,\ndemo/core.py,,\n")
    add("lib/python3.11/site-packages/twin/a.txt", b"same content in two places\n" * 50)
    add("lib/python3.11/site-packages/twin/b.txt", b"same content in two places\n" * 50)
    tree.duplicates = ("lib/python3.11/site-packages/twin/a.txt", "lib/python3.11/site-packages/twin/b.txt")
    add("share/ünïcødé-файл-名前.txt", "unicode name, and content too: ✓ ".encode() + ident + b"\n")
    add("share/with space & <angle>.txt", b"go json escapes <>& in names\n")
    add("share/deep/er/and/deeper/leaf.txt", b"leaf\n")
    add("conda-meta/history", b"==> 2024-01-01 <==\n# cmd: " + path_bytes + b"/bin/conda install\n")
    (root / "share/empty-dir").mkdir(parents=True)
    tree.empty_dirs.add("share/empty-dir")

    if big:
        # 2 MiB + a bit: identity at 0, straddling both 1 MiB boundaries, and at EOF.
        size = 2 * CHUNK + 4096
        buf = bytearray(b"\xab" * size)
        n = len(ident)
        positions = [0, CHUNK - n // 2, CHUNK + 1000, 2 * CHUNK - 3, size - n]
        for pos in positions:
            buf[pos : pos + n] = ident
        add("lib/big.bin", bytes(buf))

    # Symlinks: relative/absolute, to files and dirs, broken; never followed when restoring.
    link("bin/python3", "python-launcher")
    link("bin/python", "python3")
    link("lib/libdemo.so.1", os.fspath(root / "lib/libdemo.so"))  # absolute, target holds the identity
    link("lib/python3", "python3.11", to_dir=True)  # relative dir link
    link("share/abs-dir-link", os.fspath(root / "share/deep"), to_dir=True)  # absolute dir link
    link("bin/dangling", "does-not-exist", broken=True)
    link("share/dangling-abs", "/nonexistent/holofs/target", broken=True)

    # Things RCC never records.
    ignore("lib/python3.11/site-packages/demo/__pycache__/core.cpython-311.pyc", b"\x00bytecode")
    ignore("lib/python3.11/site-packages/demo/stray.pyc", b"\x00bytecode")
    ignore(".git/config", b"[core]\n")
    ignore(".git/HEAD", b"ref: refs/heads/main\n")
    ignore(".gitignore", b"*.pyc\n")
    ignore("share/.hg/store", b"hg\n")
    ignore("share/.svn/entries", b"svn\n")
    ignore("__MACOSX/._junk", b"mac\n")
    ignore("share/archive.git", b"ext .git is ignored too (Go filepath.Ext)\n")

    # Directories that must be recorded (every parent of every recorded file + empty dirs).
    for rel in list(tree.files) + list(tree.symlinks) + list(tree.empty_dirs):
        parent = Path(rel).parent
        while str(parent) != ".":
            tree.dirs.add(parent.as_posix())
            parent = parent.parent
    tree.dirs |= tree.empty_dirs

    # Files seen through symlinked directories (recorded with shadow, never restored).
    for link_rel in tree.dir_symlinks:
        real = (root / link_rel).resolve()
        for dirpath, dirs, names in os.walk(real):
            dirs[:] = [d for d in dirs if not rcc_ignores(d)]
            for name in names:
                if rcc_ignores(name):
                    continue
                rel_real = Path(dirpath, name).relative_to(real)
                tree.shadow_files.add((Path(link_rel) / rel_real).as_posix())
    return tree
