"""Build configuration beyond pyproject.toml: the optional native accelerator (Linux only).

``holofs._native`` does a fresh restore's per-file work in C threads; holofs works without it
(pure-Python path), so a failed compile is a warning, not an install failure. It links
libdeflate (gzip blobs; zlib where it is missing), libzstd (zstd blobs) and OpenSSL's libcrypto
(SHA-256 while decoding) when their headers are installed (libdeflate-dev, zlib1g-dev,
libzstd-dev, libssl-dev)."""

import os
import sys

from setuptools import Extension, setup


def _has_header(name: str) -> bool:
    return any(os.path.exists(os.path.join(d, name)) for d in ("/usr/include", "/usr/local/include"))


ext_modules = []
if sys.platform.startswith("linux"):
    codecs = [(lib, macro) for header, lib, macro in (("zlib.h", "z", "HAVE_ZLIB"), ("zstd.h", "zstd", "HAVE_ZSTD"),
                                                           ("openssl/evp.h", "crypto", "HAVE_OPENSSL"),
                                                           ("libdeflate.h", "deflate", "HAVE_LIBDEFLATE"))
              if _has_header(header)]
    ext_modules.append(Extension("holofs._native", ["holofs/_native.c"], optional=True, extra_compile_args=["-O2"],
                                 libraries=[lib for lib, _ in codecs], define_macros=[(m, "1") for _, m in codecs]))
    if _has_header("fuse3/fuse_lowlevel.h"):  # built against the libfuse headers pyfuse3 builds against
        ext_modules.append(Extension("holofs._fuseshim", ["holofs/_fuseshim.c"], optional=True,
                                     extra_compile_args=["-O2"], include_dirs=["/usr/include/fuse3"]))

setup(ext_modules=ext_modules)
