"""Type stubs of merge/_native.c (merge.watch's pass in C)."""

from collections.abc import Mapping
from typing import Any

def times_match(folder_fd: int, entries: Mapping[str, Any], /) -> bool | None: ...
