"""Reading exports files: Linux exports(5) syntax, and ``FILE.d/*.exports``.

Design notes
------------
* Lines: ``PATH [-DEFAULTS] CLIENT[(OPTIONS)] ...``.  A backslash at the end
  of a line joins the next one (the leading blanks of which are dropped), as
  nfs-utils' reader does; ``#`` outside double quotes starts a comment,
  which ends at its newline, a backslash there included (nfs-utils'
  ``xskipcomment``); blank lines are skipped.  An error names the first
  physical line of the logical line.
* PATH may be double-quoted and may hold ``\\NNN`` octal escapes
  (``\\040`` for a blank); it must be absolute and is normalized lexically.
* ``-DEFAULTS`` right after the path is the option list every client of the
  line starts from; a client without ``(...)`` gets exactly those.
* exports(5)'s rule on blanks is implemented to the letter:
  ``host (ro)`` is two clients, ``host`` with the defaults and anyone with
  ``ro``; it is almost always a mistake, so it is reported as a warning.  A
  line with no client exports to anyone, with a warning, as exportfs does.
* The same path on several lines (or files) is one export whose clients are
  all of them, in the order read; a client listed twice for one path is
  warned about (the first one applies, being first in line order).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from exports.clients import classify
from exports.errors import ExportsError
from exports.options import ExportOptions, apply_options
from exports.table import ClientSpec, Export, ExportTable, normalize_path

BUILT_IN = "<built-in>"
_OCTAL = re.compile(rb"\\([0-7]{3})")


class _Builder:
    """Exports read so far, from one or more sources, merged by path."""

    def __init__(self, allow_rw: bool) -> None:
        self.allow_rw = allow_rw
        self.clients: dict[str, list[ClientSpec]] = {}
        self.first: dict[tuple[str, str], ClientSpec] = {}  # (path, client): its first spec
        self.warnings: list[str] = []

    def table(self) -> ExportTable:
        exports = tuple(Export(path, tuple(specs)) for path, specs in self.clients.items())
        return ExportTable(exports, tuple(self.warnings))

    def feed(self, text: str, source: str) -> None:
        """Every line of ``text``, an exports file named ``source`` in messages."""
        for logical, first in _logical_lines(text.replace("\r\n", "\n")):
            self.line(logical, f"{source}:{first}")

    def line(self, line: str, where: str) -> None:
        """One logical line."""
        tokens = _tokens(line, where)
        if not tokens:
            return
        path = _path(tokens[0], where)
        rest = tokens[1:]
        defaults, root = ExportOptions(), "root"
        if rest and rest[0].startswith("-"):
            defaults, root = apply_options(
                rest[0][1:], defaults, root, where, allow_rw=self.allow_rw
            )
            rest = rest[1:]
        specs = self.clients.setdefault(path, [])
        if not rest:
            self.warnings.append(
                f"{where}: no client given for {path}: exported to anyone; "
                f"write *({defaults.describe()}) to say so"
            )
            self._add(path, specs, ClientSpec("*", "anyone", defaults, where))
            return
        previous: str | None = None
        for token in rest:
            client, body = _client_token(token, where)
            options = defaults
            if body is not None:
                options, _ = apply_options(body, defaults, root, where, allow_rw=self.allow_rw)
            if client == "":
                self._warn_blank(previous, body or "", where)
            kind, _ = classify(client, where)
            self._add(path, specs, ClientSpec(client or "*", kind, options, where))
            previous = client if body is None else None

    def _warn_blank(self, previous: str | None, body: str, where: str) -> None:
        if previous:
            self.warnings.append(
                f"{where}: '{previous} ({body})' is two clients: {previous} with the default "
                f"options, and anyone with ({body}); write {previous}({body}) for one"
            )
        else:
            self.warnings.append(
                f"{where}: '({body})' names no client: anyone may mount; write *({body}) to say so"
            )

    def _add(self, path: str, specs: list[ClientSpec], spec: ClientSpec) -> None:
        first = self.first.setdefault((path, spec.text.lower()), spec)
        if first is not spec:
            self.warnings.append(
                f"{spec.source}: {spec.text} is listed again for {path} "
                f"(first at {first.source}); the first one applies"
            )
        specs.append(spec)


def _logical_lines(text: str) -> list[tuple[str, int]]:
    """The logical lines of ``text`` (continuations joined), each with its first line number.

    A backslash ending a line joins the next one, unless it ends a comment: a
    comment runs to its newline and never joins, as in nfs-utils, whose
    ``xskipcomment`` reads a comment with a plain ``getc`` (not ``xgetc``, which
    undoes backslash-newlines) up to the newline.
    """
    out: list[tuple[str, int]] = []
    parts: list[str] = []
    first = 1
    quoted = False
    for number, physical in enumerate(text.split("\n"), 1):
        line = physical.lstrip(" \t") if parts else physical
        if not parts:
            first, quoted = number, False
        commented, quoted = _comment_in(line, quoted)
        if line.endswith("\\") and not commented:
            parts.append(line[:-1])
            continue
        parts.append(line)
        out.append((" ".join(parts), first))
        parts = []
    if parts:
        out.append((" ".join(parts), first))
    return out


def _comment_in(line: str, quoted: bool) -> tuple[bool, bool]:
    """Whether ``line`` holds a ``#`` outside double quotes (``_tokens``' rule), and
    whether a quote is still open at its end; ``quoted``: one open at its start."""
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == "#" and not quoted:
            return True, quoted
    return False, quoted


def _tokens(line: str, where: str) -> list[str]:
    """Blank-separated words of ``line`` up to a ``#``; double quotes group and are dropped."""
    tokens: list[str] = []
    word: list[str] = []
    started = quoted = False
    for c in line:
        if quoted:
            if c == '"':
                quoted = False
            else:
                word.append(c)
        elif c == '"':
            quoted = started = True
        elif c == "#":
            break
        elif c in " \t":
            if started:
                tokens.append("".join(word))
                word, started = [], False
        else:
            word.append(c)
            started = True
    if quoted:
        raise ExportsError(where, "unbalanced double quote")
    if started:
        tokens.append("".join(word))
    return tokens


def _path(token: str, where: str) -> str:
    """The export path of the first word: escapes decoded, absolute, normalized."""
    try:
        path = _OCTAL.sub(lambda m: bytes([int(m[1], 8) & 0xFF]), token.encode()).decode()
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise ExportsError(where, f"{token}: the path is not UTF-8") from None
    if not path:
        raise ExportsError(where, "empty path")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ExportsError(where, f"{token}: control character in the path")
    if not path.startswith("/"):
        raise ExportsError(where, f"{path}: relative path (an export path starts with /)")
    return normalize_path(path)


def _client_token(token: str, where: str) -> tuple[str, str | None]:
    """``CLIENT(OPTIONS)`` → (CLIENT, OPTIONS); a bare ``CLIENT`` → (CLIENT, None)."""
    if token.startswith("-"):
        raise ExportsError(where, f"{token}: default options must come right after the path")
    open_at = token.find("(")
    if open_at < 0:
        if ")" in token:
            raise ExportsError(where, f"{token}: unbalanced parentheses")
        return token, None
    body = token[open_at + 1 :]
    if not body.endswith(")") or "(" in body or ")" in body[:-1]:
        raise ExportsError(
            where, f"{token}: unbalanced parentheses (no blank may appear inside an option list)"
        )
    return token[:open_at], body[:-1]


def parse(text: str, source: str = "<exports>", *, allow_rw: bool = False) -> ExportTable:
    """The exports of ``text``, an exports file named ``source`` in messages."""
    builder = _Builder(allow_rw)
    builder.feed(text, source)
    return builder.table()


def load(path: Path, *, allow_rw: bool = False) -> ExportTable:
    """The exports of ``path`` and of ``path.d/*.exports`` (by name), as exportfs reads them.

    A missing ``path`` is fine when ``path.d`` exists; with neither,
    FileNotFoundError (the caller decides what having no exports file means).
    """
    path = Path(path)
    folder = Path(f"{path}.d")
    files: list[Path] = []
    if path.exists():
        files.append(path)
    elif not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no exports file", str(path))
    if folder.is_dir():
        files += sorted((p for p in folder.glob("*.exports") if p.is_file()), key=lambda p: p.name)
    builder = _Builder(allow_rw)
    for file in files:
        raw = file.read_bytes()
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise ExportsError(f"{file}:{line}", "not UTF-8 text") from None
        builder.feed(text, str(file))
    return builder.table()


def loopback_only(path: str = "/recover/images") -> ExportTable:
    """The table used with no exports file: ``path`` to 127.0.0.1 and ::1 only, ``insecure``."""
    options = ExportOptions(secure=False)
    path = normalize_path(path)
    clients = tuple(ClientSpec(addr, "host", options, BUILT_IN) for addr in ("127.0.0.1", "::1"))
    return ExportTable((Export(path, clients),))
