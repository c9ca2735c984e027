"""Type stubs of instant/_native.c (a map's pieces kept out of the cyclic collector)."""

from collections.abc import Sequence

def untrack(pieces: Sequence[object], /) -> None: ...
