"""The compiled helpers of the transport and the NFS fast path, or None.

``nfsd._fastcall`` (``nfsd/_fastcall.c``) does a few per-call steps in one
C call each: cutting records, reading an NFS call's header and arguments,
reading a plain file's bytes into a pooled buffer, sending a batch of
replies.  Each has a pure-Python twin beside the code that uses it, which
it equals exactly (``tests/unit/test_fastcall.py``); the twin serves when
the extension did not build, or when ``RECOVERY_FS_PURE=1`` was set when
this module was first imported (the tests run both ways).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("RECOVERY_FS_PURE") == "1"


def built(name: str) -> ModuleType | None:
    """The compiled module ``name``, or None if it was not built (no compiler or
    headers at install: the twins serve)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def load(name: str) -> ModuleType | None:
    """The compiled module ``name`` for the hot paths to use: None for their
    pure-Python twins (not built, or ``RECOVERY_FS_PURE=1``).  Also what
    ``nfsd.programs.nfs3``'s extension (READDIRPLUS entries, a folder's
    handles) is loaded by, where it is used, so that importing this module
    imports no program."""
    return None if PURE else built(name)


compiled = built("nfsd._fastcall")
fastcall: ModuleType | None = None if PURE else compiled
"""The extension the hot paths use: None for their pure-Python twins."""
