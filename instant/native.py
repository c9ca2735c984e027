"""instant's compiled helper (``instant/_native.c``), or None: then its Python twin runs.

None also when ``RECOVERY_FS_PURE=1`` is set (read once, at import): the
tests run both.  What the C function does and why it is safe is in the C
file's comments; its twin (``instant.rangemap._untrack_py``) does nothing:
a piece left tracked is only scanned by the cyclic collector.
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None
try:
    from instant import _native as native
except ImportError:  # pragma: no cover - a machine without a C compiler
    native = None
if os.environ.get("RECOVERY_FS_PURE") == "1":
    native = None
