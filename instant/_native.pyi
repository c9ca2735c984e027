"""Type stubs of instant/_native.c (a map's pieces kept out of the cyclic collector,
RangeMap.put's and apply's common cases)."""

from collections.abc import Sequence
from typing import Any

def untrack(pieces: Sequence[object], /) -> None: ...
def put(
    map: object, piece: tuple[int, int, int, int], load: int, piece_type: type, edits_type: type, /
) -> Any: ...
def apply(
    map: object, removed: list[int], added: list[Any], load: int, piece_type: type, /
) -> tuple[int, int]: ...
