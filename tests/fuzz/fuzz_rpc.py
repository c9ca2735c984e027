"""Coverage-guided fuzzing (atheris, libFuzzer) of the sans-IO path.

Run from the repository root, as ``make fuzz`` and ``make fuzz-short`` do::

    python -m tests.fuzz.fuzz_rpc [libFuzzer options] WORK_CORPUS tests/fuzz/corpus

The input format and the invariants are :mod:`tests.fuzz.harness`'s.  An
input that breaks one raises, and libFuzzer writes it as ``crash-<sha1>``
under ``-artifact_prefix``; kept in ``tests/fuzz/crashes/``, it is replayed
by ``tests/unit/test_fuzz_corpus.py`` from then on.

``xdr``, ``nfsd``, ``merge``, ``instant`` (the harness's session) and
``exports`` are imported under ``atheris.instrument_imports`` so that their
branches guide the search: nothing of theirs may be imported before
:func:`main` runs.
"""

from __future__ import annotations

import sys


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["xdr", "nfsd", "merge", "instant", "exports"]):
        from tests.fuzz.harness import Harness

    harness = Harness(quiet=True)
    atheris.Setup(sys.argv, harness.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
