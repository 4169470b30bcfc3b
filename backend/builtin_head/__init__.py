"""The built-in head: a FLAME-structured head that Thunder ships because FLAME itself cannot be redistributed.

``build.py`` generates ``builtin_head.npz`` deterministically (``python -m backend.builtin_head.build``);
docs/head_format.md describes the file.
"""
