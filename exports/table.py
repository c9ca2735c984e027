"""The parsed exports list, and the question asked on every call: which spec admits this client?

Design notes
------------
* :meth:`ExportTable.match` tries an export's client specs by precedence,
  as exports(5) orders them: hosts (names and addresses), then networks,
  then wildcards, then anyone; line order decides only within a kind.  The
  first spec that admits the client gives its options.
* Matching is lazy: specs are tried in precedence order and the first that
  admits wins, so a client admitted by an address or network spec never
  causes a look-up unless a host-name or wildcard spec of higher precedence
  comes first (and then only that spec's look-up).  A look-up answered from
  the resolver's cache costs a dictionary access; one not answered within
  ``wait`` (in total for the whole match) does not admit the client.
* The table is immutable: a reload builds a new one and swaps it in whole,
  so a call never sees half of an old list and half of a new one.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field

from exports.clients import KINDS, Lookups, Matcher, classify, client_ip
from exports.errors import ExportsError
from exports.options import ExportOptions


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One client of one export, as written, with its options and the line it came from."""

    text: str
    kind: str
    options: ExportOptions
    source: str


@dataclass(frozen=True, slots=True)
class Export:
    """An exported path and its clients, in file order."""

    path: str
    clients: tuple[ClientSpec, ...]


def normalize_path(path: str) -> str:
    """Absolute ``path`` without ``//``, ``.``, ``..`` or a trailing slash (lexically)."""
    if not path.startswith("/"):
        raise ValueError(f"not an absolute path: {path!r}")
    return "/" + posixpath.normpath(path).lstrip("/")


@dataclass(frozen=True)
class ExportTable:
    """Every export, the warnings of the files they came from, and matching."""

    exports: tuple[Export, ...]
    warnings: tuple[str, ...] = ()
    _ordered: dict[str, tuple[tuple[ClientSpec, Matcher], ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        ordered: dict[str, tuple[tuple[ClientSpec, Matcher], ...]] = {}
        for export in self.exports:
            if export.path in ordered:
                continue
            pairs = [(spec, classify(spec.text, spec.source)[1]) for spec in export.clients]
            pairs.sort(key=lambda pair: KINDS.index(pair[0].kind))  # stable: line order kept
            ordered[export.path] = tuple(pairs)
        object.__setattr__(self, "_ordered", ordered)

    def check_only(self, path: str, source: object) -> None:
        """Raise ``ExportsError`` naming the line of an export other than ``path``
        (the one path a server serves): a typo there would make its clients
        unknown to it.  ``source``: the file, for an export with no client."""
        for export in self.exports:
            if export.path != path:
                where = export.clients[0].source if export.clients else str(source)
                raise ExportsError(
                    f"{where}: {export.path} is not an export of this server (it serves {path})"
                )

    def get(self, path: str) -> Export | None:
        """The export of ``path`` (compared after normalization), or None."""
        try:
            key = normalize_path(path)
        except ValueError:
            return None
        return next((e for e in self.exports if e.path == key), None)

    def match(
        self, path: str, addr: str, resolver: Lookups, *, wait: float = 0.0
    ) -> ClientSpec | None:
        """The spec admitting ``addr`` (an IP literal, maybe v4-mapped) to ``path``, by precedence.

        None when the path is not exported, ``addr`` is not an address, or no
        spec admits it.  Look-ups together wait at most ``wait`` seconds.
        """
        pairs = self._ordered.get(path)
        if pairs is None:
            export = self.get(path)
            if export is None:
                return None
            pairs = self._ordered[export.path]
        try:
            ip = client_ip(addr)
        except ValueError:
            return None
        deadline = time.monotonic() + wait
        for spec, matcher in pairs:
            if matcher.admits(ip, resolver, deadline):
                return spec
        return None

    def show(self) -> str:
        """One line per export and client, as ``exportfs -v`` prints them and ``parse`` reads."""
        width = max((len(quote_path(e.path)) for e in self.exports), default=0)
        lines = [
            f"{quote_path(e.path):<{width}}  {spec.text or '*'}({spec.options.describe()})"
            for e in self.exports
            for spec in e.clients
        ]
        return "".join(line + "\n" for line in lines)


def quote_path(path: str) -> str:
    """``path`` as an exports file writes it: octal escapes for blanks, backslashes and ``#``."""
    special = {c: f"\\{ord(c):03o}" for c in ' \t\\#"'}
    return "".join(special.get(c, c) for c in path)
