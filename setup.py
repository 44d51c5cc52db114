"""Build configuration beyond pyproject.toml: the optional native accelerator (Linux only).

``holofs._native`` speeds up the per-file loop of fresh reflink restores; holofs works without
it (pure-Python path), so a failed compile is a warning, not an install failure."""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("holofs._native", ["holofs/_native.c"], optional=True,
                                 extra_compile_args=["-O2"]))

setup(ext_modules=ext_modules)
