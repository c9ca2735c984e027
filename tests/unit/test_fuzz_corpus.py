"""The fuzz corpus and every crash reproducer, replayed without atheris.

Each file of ``tests/fuzz/corpus`` (real calls) and ``tests/fuzz/crashes``
(inputs that once broke an invariant) goes through the fuzz target's
function, :meth:`tests.fuzz.harness.Harness.one_input`, which raises on a
broken invariant: a crash found once stays a test.  The corpus must also be
what ``tests/fuzz/seeds.py`` writes today, so that its handles still
resolve (a stale corpus would quietly fuzz nothing but BADHANDLE).  The
inputs run one after the other on one harness, whose instant-recovery
session they change; the storage tree is the same after all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.harness import Harness
from tests.fuzz.seeds import CORPUS, seeds
from tests.tree_digest import tree_digest

CRASHES = CORPUS.parent / "crashes"
FILES = sorted(CORPUS.iterdir()) + sorted(p for p in CRASHES.iterdir() if p.suffix != ".md")


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    h.digest = tree_digest(h.storage)  # type: ignore[attr-defined]
    yield h
    h.close()


@pytest.fixture
def fresh() -> Iterator[Harness]:
    """A harness no input has changed (the replays change the module's session)."""
    h = Harness()
    yield h
    h.close()


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay(harness: Harness, path: Path) -> None:
    harness.one_input(path.read_bytes())


def test_the_storage_is_the_same_after_every_input(harness: Harness) -> None:
    assert tree_digest(harness.storage) == harness.digest  # type: ignore[attr-defined]


def test_the_corpus_is_what_the_seeds_write(fresh: Harness) -> None:
    want = seeds(fresh)
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(want)
    stale = [p.name for p in CORPUS.iterdir() if p.read_bytes() != want[p.name]]
    assert not stale, f"run `python -m tests.fuzz.seeds`: {stale}"


def test_the_corpus_reaches_every_procedure(harness: Harness) -> None:
    names = {p.name.rsplit("-", 1)[0] for p in CORPUS.iterdir()}
    assert {f"nfs3-{i:02d}" for i in range(22)} <= names
    assert {f"nfs3s-{i:02d}" for i in range(22)} <= names  # on the session
    assert {f"mount3-{i}" for i in range(6)} <= names
    assert {f"portmap{v}-0" for v in (2, 3)} <= names
