"""Type stubs of nfsd/programs/nfs3/_native.c (READDIRPLUS entries in C)."""

from collections.abc import Mapping
from typing import Any

def entries_plus(
    cookies: Any, rows: list[Any], fsid: int, handles: list[bytes], ftypes: Mapping[Any, int], /
) -> list[bytes] | None: ...
