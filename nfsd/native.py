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

compiled: ModuleType | None
try:
    compiled = importlib.import_module("nfsd._fastcall")
except ImportError:  # no compiler or headers at install: the twins serve
    compiled = None

PURE = os.environ.get("RECOVERY_FS_PURE") == "1"
fastcall: ModuleType | None = None if PURE else compiled
"""The extension the hot paths use: None for their pure-Python twins."""
