"""Export options: the ``(...)`` after a client, and the ``-...`` defaults of a line.

Design notes
------------
* An option list is applied left to right on top of the defaults it starts
  from (the line's ``-defaults``, else :class:`ExportOptions`' own): of two
  conflicting options the last wins, as exportfs does.
* Every option is known here or refused: an unknown one stops the server at
  start, never a silent ``rw`` or ``no_root_squash`` that did not take.
* ``rw`` is refused unless the caller says the export may be writable
  (``allow_rw``); recovery-fs exports are read-only.
* The knfsd options that mean nothing for a read-only user-space server are
  accepted and have no effect (:data:`IGNORED`); only those.
* :meth:`ExportOptions.describe` writes options in the syntax they are read
  in, so ``parse_options(o.describe()) == o`` for any valid options.

=========================  ==============================================
option                     field
=========================  ==============================================
``ro`` / ``rw``            ``ro``
``secure`` / ``insecure``  ``secure`` (source port below 1024 required)
``root_squash``            ``squash="root"``
``no_root_squash``         ``squash="none"``
``all_squash``             ``squash="all"``
``no_all_squash``          back to the root_squash / no_root_squash choice
``anonuid=N``/``anongid``  ``anonuid`` / ``anongid`` (0 .. 2**32-1)
``sec=sys:none``           ``sec`` (flavours allowed, in order)
``mountpoint``/``mp``      ``mountpoint=""``; ``mountpoint=PATH``: PATH
``fsid=N|root|UUID``       ``fsid`` (a string)
``xprtsec=none:tls:mtls``  ``xprtsec``
=========================  ==============================================
"""

from __future__ import annotations

import posixpath
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace

from exports.errors import ExportsError

AUTH_NONE = 0
AUTH_SYS = 1
FLAVORS = {"sys": AUTH_SYS, "none": AUTH_NONE}
KERBEROS = ("krb5", "krb5i", "krb5p")
XPRTSEC = ("none", "tls", "mtls")
SQUASH = {"root": "root_squash", "none": "no_root_squash", "all": "all_squash"}
MAX_ID = 2**32 - 1

# knfsd options that change nothing for a read-only server in user space:
# write timing (sync, async, wdelay), crossing into other file systems
# (hide, crossmnt: the storage is presented as one tree), subtree checks
# (handles here are MAC'd paths) and POSIX ACLs (NFSACL is not offered).
IGNORED = frozenset(
    {
        "sync",
        "async",
        "wdelay",
        "no_wdelay",
        "hide",
        "nohide",
        "crossmnt",
        "no_subtree_check",
        "subtree_check",
        "no_acl",
        "acl",
    }
)

# A mountpoint=PATH must survive describe() and a re-parse: no separators.
_PATH_CHARS = re.compile(r"/[^\s,()\"#\\]*")


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """The options of one client of one export (defaults: those of exports(5))."""

    ro: bool = True
    secure: bool = True
    squash: str = "root"
    anonuid: int = 65534
    anongid: int = 65534
    sec: tuple[str, ...] = ("sys",)
    mountpoint: str | None = None
    fsid: str | None = None
    xprtsec: tuple[str, ...] = XPRTSEC  # any transport, as knfsd without xprtsec=

    def __post_init__(self) -> None:
        # Options built in code (loopback_only, tests, the server) are held to
        # the rules of the parser: describe() must always be re-readable.
        if self.squash not in SQUASH:
            raise ValueError(f"squash must be one of {sorted(SQUASH)}, not {self.squash!r}")
        for value in (self.anonuid, self.anongid):
            if not 0 <= value <= MAX_ID:
                raise ValueError(f"anonuid/anongid out of range: {value}")
        if not self.sec or any(s not in FLAVORS for s in self.sec):
            raise ValueError(f"sec must be a non-empty list of {sorted(FLAVORS)}: {self.sec}")
        if not self.xprtsec or any(x not in XPRTSEC for x in self.xprtsec):
            raise ValueError(f"xprtsec must be a non-empty list of {XPRTSEC}: {self.xprtsec}")

    def describe(self) -> str:
        """The options as ``exportfs -v`` prints them, and as this parser reads them back."""
        parts = [
            "ro" if self.ro else "rw",
            "secure" if self.secure else "insecure",
            SQUASH[self.squash],
            f"anonuid={self.anonuid}",
            f"anongid={self.anongid}",
        ]
        if self.mountpoint is not None:
            parts.append(f"mountpoint={self.mountpoint}" if self.mountpoint else "mountpoint")
        if self.fsid is not None:
            parts.append(f"fsid={self.fsid}")
        parts.append("sec=" + ":".join(self.sec))
        if self.xprtsec != XPRTSEC:
            parts.append("xprtsec=" + ":".join(self.xprtsec))
        return ",".join(parts)

    def flavors(self) -> tuple[int, ...]:
        """The RPC auth flavour numbers allowed (AUTH_SYS=1, AUTH_NONE=0), in ``sec`` order."""
        return tuple(FLAVORS[s] for s in self.sec)


def parse_options(
    text: str, base: ExportOptions, where: str, *, allow_rw: bool = False
) -> ExportOptions:
    """``base`` with the comma-separated options of ``text`` applied left to right.

    Empty items (``ro,,secure``, a trailing comma) are skipped.
    """
    return apply_options(text, base, None, where, allow_rw=allow_rw)[0]


def apply_options(
    text: str, base: ExportOptions, root: str | None, where: str, *, allow_rw: bool = False
) -> tuple[ExportOptions, str]:
    """:func:`parse_options`, carrying the root squash choice ``no_all_squash`` returns to.

    ``root`` is that choice made before ``text`` (``"root"`` or ``"none"``;
    None: the one ``base`` shows).  Returns the options and the choice after
    ``text``: ``-no_root_squash,all_squash host(no_all_squash)`` gives host
    no_root_squash.
    """
    opts = base
    if root is None:
        root = "none" if base.squash == "none" else "root"
    for item in text.split(","):
        name, eq, value = item.strip().partition("=")
        if not name and not eq:
            continue
        if name in IGNORED and not eq:
            continue
        if eq:
            opts = _valued(opts, name, value, where, item.strip())
            continue
        if name == "ro":
            opts = replace(opts, ro=True)
        elif name == "rw":
            if not allow_rw:
                raise ExportsError(where, "rw: this export is read-only")
            opts = replace(opts, ro=False)
        elif name in ("secure", "insecure"):
            opts = replace(opts, secure=name == "secure")
        elif name in ("root_squash", "no_root_squash"):
            root = "root" if name == "root_squash" else "none"
            opts = opts if opts.squash == "all" else replace(opts, squash=root)
        elif name == "all_squash":
            opts = replace(opts, squash="all")
        elif name == "no_all_squash":
            opts = replace(opts, squash=root)
        elif name in ("mountpoint", "mp"):
            opts = replace(opts, mountpoint="")
        else:
            raise ExportsError(where, f"{item.strip()}: unknown option")
    return opts, root


def _valued(opts: ExportOptions, name: str, value: str, where: str, item: str) -> ExportOptions:
    """``opts`` with one ``name=value`` option applied."""
    if name in ("anonuid", "anongid"):
        if not value.isascii() or not value.isdigit() or int(value) > MAX_ID:
            raise ExportsError(where, f"{item}: {name} must be an integer from 0 to {MAX_ID}")
        if name == "anonuid":
            return replace(opts, anonuid=int(value))
        return replace(opts, anongid=int(value))
    if name == "sec":
        return replace(opts, sec=_colon_list(value, FLAVORS, where, item))
    if name == "xprtsec":
        return replace(opts, xprtsec=_colon_list(value, XPRTSEC, where, item))
    if name in ("mountpoint", "mp"):
        if not _PATH_CHARS.fullmatch(value):
            raise ExportsError(where, f"{item}: {name} needs an absolute path")
        return replace(opts, mountpoint=posixpath.normpath(value).replace("//", "/"))
    if name == "fsid":
        return replace(opts, fsid=_fsid(value, where, item))
    if name in IGNORED or name in ("ro", "rw", "secure", "insecure"):
        raise ExportsError(where, f"{item}: {name} takes no value")
    raise ExportsError(where, f"{item}: unknown option")


def _colon_list(value: str, allowed: Collection[str], where: str, item: str) -> tuple[str, ...]:
    """The names of a ``a:b:c`` list, in order, each once; refused if one is not ``allowed``."""
    names: list[str] = []
    for name in value.split(":"):
        if name in KERBEROS:
            raise ExportsError(where, f"{item}: {name}: Kerberos is not supported")
        if name not in allowed:
            raise ExportsError(where, f"{item}: {name or '(empty)'}: not supported")
        if name not in names:
            names.append(name)
    return tuple(names)


def _fsid(value: str, where: str, item: str) -> str:
    """An fsid as exports(5) allows it: a 32-bit integer, ``root``, or a UUID (canonical form)."""
    if value == "root":
        return value
    if value.isascii() and value.isdigit():
        if int(value) > MAX_ID:
            raise ExportsError(where, f"{item}: fsid must fit in 32 bits")
        return str(int(value))
    hexdigits = value.replace("-", "").replace(":", "")
    if len(hexdigits) == 32 and all(c in "0123456789abcdefABCDEF" for c in hexdigits):
        return str(uuid.UUID(hex=hexdigits))
    raise ExportsError(where, f"{item}: fsid must be an integer, root or a UUID")
