"""instant's compiled helper (``instant/_native.c``), or None: then its Python twin runs.

None also when ``RECOVERY_FS_PURE=1`` is set (read once, at import, by
``merge.native.load``): the tests run both.  What the C function does and
why it is safe is in the C file's comments; its twin
(``instant.rangemap._untrack_py``) does nothing: a piece left tracked is
only scanned by the cyclic collector.
"""

from __future__ import annotations

from types import ModuleType

from merge.native import load

native: ModuleType | None = load("instant._native")
