"""Names with a meaning: pancbt files, flat images, presentable components.

``NAME-pancbt.vmdk`` overlays ``NAME-flat.vmdk`` in the same directory
(namespace.md rule 4); matching is case-sensitive, as the spec writes the
suffixes, and ``NAME`` may be empty.
"""

from __future__ import annotations

PANCBT_SUFFIX = "-pancbt.vmdk"
FLAT_SUFFIX = "-flat.vmdk"


def valid_name(name: str) -> bool:
    """Whether ``name`` can be one presented path component."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def is_pancbt(name: str) -> bool:
    return name.endswith(PANCBT_SUFFIX)


def is_flat(name: str) -> bool:
    return name.endswith(FLAT_SUFFIX)


def flat_of(pancbt: str) -> str:
    """``NAME-flat.vmdk`` for ``NAME-pancbt.vmdk``."""
    return pancbt[: -len(PANCBT_SUFFIX)] + FLAT_SUFFIX


def pancbt_of(flat: str) -> str:
    """``NAME-pancbt.vmdk`` for ``NAME-flat.vmdk``."""
    return flat[: -len(FLAT_SUFFIX)] + PANCBT_SUFFIX
