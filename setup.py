"""Build configuration beyond pyproject.toml: the optional native accelerator (Linux only).

``holofs._native`` does a fresh restore's per-file work in C threads; holofs works without it
(pure-Python path), so a failed compile is a warning, not an install failure. It links zlib
(gzip blobs) and libzstd (zstd blobs) when their headers are installed (zlib1g-dev, libzstd-dev)."""

import os
import sys

from setuptools import Extension, setup


def _has_header(name: str) -> bool:
    return any(os.path.exists(os.path.join(d, name)) for d in ("/usr/include", "/usr/local/include"))


ext_modules = []
if sys.platform.startswith("linux"):
    codecs = [(lib, macro) for header, lib, macro in (("zlib.h", "z", "HAVE_ZLIB"), ("zstd.h", "zstd", "HAVE_ZSTD"))
              if _has_header(header)]
    ext_modules.append(Extension("holofs._native", ["holofs/_native.c"], optional=True, extra_compile_args=["-O2"],
                                 libraries=[lib for lib, _ in codecs], define_macros=[(m, "1") for _, m in codecs]))

setup(ext_modules=ext_modules)
