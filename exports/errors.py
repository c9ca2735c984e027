"""The one error of the exports package: what is wrong, and where."""

from __future__ import annotations


class ExportsError(Exception):
    """A line of an exports file that cannot be used; ``str(e)`` is ``"FILE:LINE: what is wrong"``.

    The server refuses to start on one (and a reload keeps the old list), so
    the message names the place an administrator has to edit.  Raised as
    ``ExportsError(where, what)`` here; ``ExportsError(message)`` with the
    whole message is accepted too (for callers that check more).
    """

    def __init__(self, where: str, what: str | None = None) -> None:
        if what is None:
            where, _, what = where.partition(": ") if ": " in where else ("", "", where)
            message = f"{where}: {what}" if where else what
        else:
            message = f"{where}: {what}"
        super().__init__(message)
        self.where = where
        self.what = what
