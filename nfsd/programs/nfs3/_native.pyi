"""Type stubs of nfsd/programs/nfs3/_native.c (READDIRPLUS entries and handles in C)."""

from collections.abc import Mapping
from typing import Any

def entries_plus(
    cookies: Any, rows: list[Any], fsid: int, handles: list[bytes], ftypes: Mapping[Any, int], /
) -> list[bytes] | None: ...
def handles(
    names: list[str], fileids: list[int], depth: int, prefix: bytes, hashed: bool, key: bytes, /
) -> list[bytes] | None: ...
