"""Frontends that serve a holofs virtual tree to the kernel (FUSE today)."""
