"""Fuzzing the exports parser: whatever the text, a table or ExportsError, nothing else.

And whatever table is accepted can be matched against, shown, and its
``show()`` output read back.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exports import ExportsError, ExportTable, parse

FUZZ = settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])

VALID = (
    "# backups\n"
    '/recover/images -insecure 10.0.0.0/8(ro,all_squash) "[fd00::]/64"(sec=sys:none) \\\n'
    "    backup1.example *.backup.example(anonuid=1000,mp=/s,fsid=7) host (no_root_squash)\n"
    '"/a\\040b" *(xprtsec=tls:mtls,no_subtree_check,fsid=8a0c1c2e-55d5-4e8c-9a4f-1234567890ab)\n'
)

# Characters that mean something to the syntax, often, and anything else, sometimes.
SYNTAX = st.sampled_from([*' \t\n\\"#()[]*?!^,:=/.-@%0123456789abcdefxy', "\r\n", "\\\n"])
FUZZ_TEXT = st.lists(st.one_of(SYNTAX, SYNTAX, st.characters()), max_size=200).map("".join)
WORDS = st.sampled_from(
    [
        "/e",
        "/",
        "-",
        "-ro",
        "*",
        "(",
        ")",
        "(ro)",
        "a(rw)",
        "10.0.0.0/8",
        "fd00::/64",
        "::ffff:1.2.3.4",
        "*.x",
        "@g",
        "sec=sys:none",
        "anonuid=1",
        "fsid=root",
        "mp",
        "\\",
        "\\040",
        '"',
        "#",
        "\n",
        " ",
        ",",
    ]
)
WORD_SOUP = st.lists(WORDS, max_size=30).map("".join)


def check(text: str) -> None:
    try:
        table = parse(text, "fuzz")
    except ExportsError as e:
        assert str(e).startswith("fuzz:")
        return
    probe(table)


def probe(table: ExportTable) -> None:
    class NoNames:
        def addresses(self, name: str, wait: float = 0.0) -> set[str] | None:
            return {"10.0.0.1"}

        def names(self, addr: str, wait: float = 0.0) -> set[str] | None:
            return {"a.x", "host"}

    for export in table.exports:
        for addr in ("10.0.0.1", "::1", "::ffff:10.1.2.3", "fd00::1", "bogus"):
            spec = table.match(export.path, addr, NoNames())
            assert spec is None or spec in export.clients
    again = parse(table.show(), "shown")
    assert [(e.path, [(c.text, c.kind, c.options) for c in e.clients]) for e in again.exports] == [
        (e.path, [(c.text, c.kind, c.options) for c in e.clients]) for e in table.exports
    ]


@FUZZ
@given(FUZZ_TEXT)
def test_random_text(text: str) -> None:
    check(text)


@FUZZ
@given(WORD_SOUP)
def test_word_soup(text: str) -> None:
    check(text)


@FUZZ
@given(st.data())
def test_mutated_valid_file(data: st.DataObject) -> None:
    text = VALID
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 5))
        insert = data.draw(st.one_of(st.just(""), SYNTAX, WORDS, st.characters()))
        text = text[:pos] + insert + text[pos + cut :]
    check(text)


def test_the_valid_seed_parses() -> None:
    table = parse(VALID, "fuzz")
    assert [len(e.clients) for e in table.exports] == [6, 1]
    probe(table)
