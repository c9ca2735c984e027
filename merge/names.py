"""Names with a meaning: pancbt files, flat images, presentable components.

``NAME-pancbt.vmdk`` overlays ``NAME-flat.vmdk`` in the same directory
(namespace.md rule 4); matching is case-sensitive, as the spec writes the
suffixes, and ``NAME`` may be empty.

A presented name is a string as Python reads storage names: UTF-8, bytes
that do not decode as surrogate escapes.  A name is presentable only when
that reading gives it back from its bytes (:func:`storage_bytes`): a lone
surrogate such as ``"\\ud800"`` has no bytes at all, and escapes of bytes
that are UTF-8 (``"\\udcc3\\udca9"``) would be sent as ``é`` and looked up
as ``é``, another name.  Both can come only from a link's JSON.
"""

from __future__ import annotations

PANCBT_SUFFIX = "-pancbt.vmdk"
FLAT_SUFFIX = "-flat.vmdk"


NAME_MAX = 255  # bytes in one name: Linux's NAME_MAX, NFSv3's MAXNAMLEN
SURELY_SHORT = NAME_MAX // 4  # characters: at most 4 bytes each, so never too long


def valid_name(name: str) -> bool:
    """Whether ``name`` can be one presented path component: not empty, ``.``
    or ``..``, no ``/`` nor NUL, its own bytes' reading, and at most
    :data:`NAME_MAX` bytes (a longer one cannot be sent in a listing)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return False
    raw = storage_bytes(name)
    return raw is not None and len(raw) <= NAME_MAX


def too_long(name: str) -> bool:
    """Whether the storage name ``name`` is more than :data:`NAME_MAX` bytes (a
    FUSE or CIFS storage can list one; local file systems refuse them)."""
    return len(name) > SURELY_SHORT and len(name.encode("utf-8", "surrogateescape")) > NAME_MAX


def storage_bytes(text: str) -> bytes | None:
    """The bytes that ``text`` spells in the storage, or ``None`` when it spells
    none: reading them again (as Python reads names) would not give ``text``."""
    if text.isascii():
        return text.encode("ascii")
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None
    return raw if raw.decode("utf-8", "surrogateescape") == text else None


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
