"""Entries withheld from the export (namespace.md rules 5 and 6), logged once each.

Every layer that withholds an entry reports it here with the storage path
at fault and the reason.  The first report of a (path, reason) pair is
logged as a warning on the ``recovery_fs.merge`` logger; repeats (the same
listing computed again after its cache expired) are not.  ``check`` builds a
fresh namespace, walks it, and prints :meth:`Problems.all`.

Storage paths are canonical: the directory part has its symbolic links
resolved (the entry itself may be the symbolic link at fault), so an entry
seen through two presented paths is one problem.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

log = logging.getLogger("recovery_fs.merge")

MAX_REMEMBERED = 100_000  # past this, the oldest are forgotten (and may be logged again)


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One withheld entry: the rule that withholds it, where, and why."""

    storage_path: str
    reason: str
    rule: int = 5

    def __str__(self) -> str:
        return f"rule {self.rule}: {self.storage_path}: {self.reason}"


def canonical(storage_path: str) -> str:
    """``storage_path`` with the symbolic links of its directory part resolved."""
    head, tail = os.path.split(storage_path)
    return os.path.join(os.path.realpath(head), tail)


class Problems:
    """The problems seen so far; thread-safe."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Problem] = {}
        self._lock = threading.Lock()

    def report(self, rule: int, storage_path: str, reason: str) -> None:
        """Record a problem; log it the first time it is seen."""
        problem = Problem(canonical(storage_path), reason, rule)
        key = (problem.storage_path, reason)
        with self._lock:
            if key in self._seen:
                return
            if len(self._seen) >= MAX_REMEMBERED:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = problem
        log.warning("not presented: %s", problem)

    def all(self) -> list[Problem]:
        """Every problem recorded, sorted by storage path."""
        with self._lock:
            return sorted(self._seen.values())
