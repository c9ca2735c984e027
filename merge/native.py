"""merge's compiled loops (``merge/_native.c``), or None: then their Python twins run.

None also when ``RECOVERY_FS_PURE=1`` is set (read once, at import): the
tests run both.  What each C function must equal, and its bounds, is in the
C file's comments; its twin is named in the docstring of the module that
calls it (``merge.watch``'s pass, ``merge.passthrough``'s scan).  The
storage packages stacked on merge load theirs with :func:`load` too
(``instant.native``).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("RECOVERY_FS_PURE") == "1"


def load(name: str) -> ModuleType | None:
    """The compiled module ``name``, or None: not built (no C compiler or Python's
    headers at install), or ``RECOVERY_FS_PURE=1``; the twins serve then."""
    if PURE:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - a machine without a C compiler
        return None


native: ModuleType | None = load("merge._native")
