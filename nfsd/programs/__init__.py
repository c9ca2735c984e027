"""The RPC programs the server offers on its NFS port: MOUNT v3 and NFS v3.

NFSACL (100227) is deliberately absent: its calls get ``PROG_UNAVAIL``,
which the Linux client takes as "no ACL support" and mounts anyway.

:func:`build_programs` lives in ``nfsd.programs.build`` and is imported
from there on first use: this package's light modules (``access``,
``portmap``, ``mountlist``) serve a supervisor that never builds them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nfsd.programs.build import build_programs

EXPORT_PATH = "/recover/images"
READ_BUFFERS = 48  # 48 MiB at most in flight in READ replies (shared by a server's workers)

__all__ = ["EXPORT_PATH", "READ_BUFFERS", "build_programs"]


def __getattr__(name: str) -> Any:
    if name == "build_programs":
        return getattr(importlib.import_module("nfsd.programs.build"), name)
    raise AttributeError(f"module 'nfsd.programs' has no attribute {name!r}")
