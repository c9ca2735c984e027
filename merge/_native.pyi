"""Type stubs of merge/_native.c (merge.watch's pass, merge.passthrough's scan, in C)."""

from collections.abc import Callable, Mapping
from typing import Any

def times_match(folder_fd: int, entries: Mapping[str, Any], /) -> bool | None: ...
def layout(
    new: Callable[..., Any],
    types: tuple[type, type, type],
    sets: tuple[Any, ...],
    kinds: tuple[Any, Any],
    perms: tuple[int, ...],
    used: tuple[int, ...],
    zero: int,
    /,
) -> None: ...
def scan(
    path: str,
    before: dict[str, Any],
    fileid: Callable[[str], int] | tuple[bytes, bytes],
    folder: str,
    want_checks: bool,
    max_checks: int,
    /,
) -> tuple[dict[str, Any], list[tuple[str, Any]] | None] | None: ...
def hash64(names: list[str], person: bytes, prefix: bytes, suffix: bytes, /) -> list[int]: ...
