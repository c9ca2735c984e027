"""SmartMotion link files (namespace.md rule 3): what one says, from its bytes.

A file named ``*.json`` whose content is a JSON object with
``"smartmotion": 1`` and a string ``"target"`` is a link.  Anything else is
an ordinary file (rule 1): not JSON, not an object, no ``smartmotion`` key or
another value, no string target.

Where the spec is silent (also in ``docs/namespace-notes.md``):

* ``"smartmotion"`` must be the JSON integer 1: ``1.0`` and ``true`` make
  an ordinary file;
* a file larger than :data:`MAX_LINK_SIZE` is not read and is an ordinary
  file: a link is a few hundred bytes, and a listing must not read images;
  one whose bytes cannot hold the ``"smartmotion"`` key is not parsed;
* JSON is decoded as ``json.loads`` does (UTF-8, -16 or -32), but as RFC
  8259 defines it: ``NaN``, ``Infinity`` and ``-Infinity`` make invalid
  JSON (an ordinary file), and an integer of any length is valid (one too
  long for ``int()``'s digit limit is read as a float: never ``1``, never a
  string, all a link's keys need to know; it raised ``ValueError`` and made
  the link an ordinary file);
* a link whose ``"name"`` is present but not a usable name (not a string,
  empty, ``.``/``..``, holding ``/`` or NUL, or longer than 255 bytes, which
  NFSv3 cannot send) is a link that cannot be
  presented: it is withheld and reported (rule 5), not shown as a file;
* so is a link whose ``"name"`` or ``"target"`` JSON escapes spell no
  storage bytes (a lone surrogate ``\\ud800``, or escapes of bytes that
  read back as other text, ``merge.names.storage_bytes``), or whose target
  holds a NUL: no file can be named so, and no path could be looked up.
"""

from __future__ import annotations

import json
from typing import NamedTuple, NoReturn

from merge.names import storage_bytes, valid_name

MAX_LINK_SIZE = 64 * 1024
SUFFIX = ".json"


class LinkDoc(NamedTuple):
    """What a link file says: its target as written, and its presented name."""

    target: str
    name: str


class BadLink(Exception):
    """A SmartMotion link that cannot be presented (reason in the message)."""


def parse_link(file_name: str, raw: bytes) -> LinkDoc | None:
    """The link in ``raw`` (the content of ``file_name``), or ``None`` if not a link.

    Raises :class:`BadLink` for a link with an unusable ``"name"`` or ``"target"``.
    """
    if not file_name.endswith(SUFFIX) or len(raw) > MAX_LINK_SIZE or _surely_no_marker(raw):
        return None
    try:
        doc = json.loads(raw, parse_int=_integer, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    marker = doc.get("smartmotion")
    target = doc.get("target")
    if type(marker) is not int or marker != 1 or not isinstance(target, str):
        return None
    if "\0" in target or storage_bytes(target) is None:
        raise BadLink(f'SmartMotion link with an unusable "target": {target!r}')
    if "name" not in doc:
        return LinkDoc(target, file_name[: -len(SUFFIX)])
    name = doc["name"]
    if not isinstance(name, str) or not valid_name(name):
        raise BadLink(f'SmartMotion link with an unusable "name": {name!r}')
    return LinkDoc(target, name)


_INT_DIGITS = 100  # far below the digit limit of int() (640 at the least)


def _integer(text: str) -> int | float:
    """A JSON integer: an ``int``, or a ``float`` when too long for ``int()``."""
    return int(text) if len(text) <= _INT_DIGITS else float(text)


def _not_json(text: str) -> NoReturn:
    """``NaN``, ``Infinity``, ``-Infinity``: ``json`` accepts them, JSON does not."""
    raise ValueError(f"{text} is not JSON")


def _surely_no_marker(raw: bytes) -> bool:
    """Whether ``raw`` cannot hold a ``"smartmotion"`` key: then it is not parsed.

    In UTF-8 JSON the key is spelt out, or with ``\\u`` escapes: with neither
    in the bytes, no parse can find it (other encodings are always parsed).
    """
    if json.detect_encoding(raw) not in ("utf-8", "utf-8-sig"):
        return False
    return b"smartmotion" not in raw and b"\\u" not in raw


def target_path(link_dir: tuple[str, ...], target: str) -> tuple[str, ...] | None:
    """The presented path ``target`` names, from the link's directory ``link_dir``.

    Relative to ``link_dir``, or to the storage root when it starts with
    ``/``.  Empty and ``.`` components are skipped and ``..`` removes one;
    ``None`` when a ``..`` would climb above the storage root.
    """
    parts = [] if target.startswith("/") else list(link_dir)
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(comp)
    return tuple(parts)
