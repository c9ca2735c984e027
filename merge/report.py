"""``ls`` and ``check``: the presented tree and its problems, as an operator reads them.

Both walk the top of a stack built for the purpose (``merge.stack``), so
they see exactly what the server would, and nothing is cached from an
earlier run.  The walk is depth-first in name order, iterative (a deep tree
cannot exhaust the stack); the presented tree is finite, since the
passthrough layer withholds symbolic links to enclosing directories.

``ls`` prints one line an entry: size, presented path, origin:

==============  ==========================================================
origin          meaning
==============  ==========================================================
``directory``   a storage directory (``-> real`` when a symbolic link)
``passthrough`` a storage file, presented as it is (``-> real`` likewise)
``link F -> T`` the SmartMotion link file ``F`` presenting the file ``T``
``merged: …``   base (a file or a link) + pancbt, merged
==============  ==========================================================

``check`` lists every entry withheld by rules 5 and 6, one a line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from merge.layer import Entry, Layer, Linked, Merged, Origin, Stored
from merge.namespace import Kind, PresentedPath
from merge.problems import Problem, log
from merge.stack import Stack


def walk(top: Layer, start: PresentedPath = ()) -> Iterator[tuple[PresentedPath, Entry]]:
    """``start`` and everything below it, depth-first in name order."""
    todo: list[tuple[PresentedPath, Entry]] = [(start, top.resolve(start))]
    while todo:
        path, entry = todo.pop()
        yield path, entry
        if entry.attrs.kind == Kind.DIR:
            children = top.listing(path).entries
            todo.extend(((*path, n), children[n]) for n in sorted(children, reverse=True))


def ls_lines(stack: Stack, start: PresentedPath = ()) -> Iterator[str]:
    """One line per presented entry at or below ``start``."""
    root = stack.ctx.root
    for path, entry in walk(stack.top, start):
        if not path:
            continue
        shown = "/".join(path)
        if entry.attrs.kind == Kind.DIR:
            yield f"{'-':>12}  {shown}/  {describe(entry.origin, root, 'directory')}"
        else:
            yield f"{entry.attrs.size:>12}  {shown}  {describe(entry.origin, root)}"


def describe(origin: Origin, root: str, plain: str = "passthrough") -> str:
    """Where an entry's bytes come from, with storage paths relative to ``root``."""
    if isinstance(origin, Stored):
        if os.path.islink(origin.path):
            return f"{plain} -> {_rel(os.path.realpath(origin.path), root)}"
        return plain
    if isinstance(origin, Linked):
        return f"link {_rel(origin.link, root)} -> /{'/'.join(origin.target)}"
    assert isinstance(origin, Merged)
    if isinstance(origin.base, Stored):
        base = _rel(origin.base.path, root)
    else:
        base = f"[{describe(origin.base, root)}]"
    return f"merged: base {base} + pancbt {_rel(origin.pancbt.where, root)}"


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root)


def check(stack: Stack, progress: Callable[[int], None] | None = None) -> list[Problem]:
    """Walk the whole tree; every problem found (rules 5 and 6).

    ``progress(n)`` is told how many top-level entries were just walked.
    """
    top = stack.top
    for name in sorted(top.listing(()).entries):
        for _ in walk(top, (name,)):
            pass
        if progress is not None:
            progress(1)
    return stack.problems.all()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside, problems are not logged as warnings (the caller prints them)."""
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)
