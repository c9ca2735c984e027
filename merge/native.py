"""merge's compiled loops (``merge/_native.c``), or None: then their Python twins run.

None also when ``RECOVERY_FS_PURE=1`` is set (read once, at import): the
tests run both.  What each C function must equal, and its bounds, is in the
C file's comments; its twin is named in the docstring of the module that
calls it (``merge.watch``'s pass, ``merge.passthrough``'s scan).
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None
try:
    from merge import _native as native
except ImportError:  # pragma: no cover - a machine without a C compiler
    native = None
if os.environ.get("RECOVERY_FS_PURE") == "1":
    native = None
