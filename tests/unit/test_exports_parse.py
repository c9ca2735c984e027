"""The exports file syntax: lines, comments, continuations, quoting, defaults, merging, errors.

Every error names FILE:LINE of the line at fault (the first physical line of
a continued one).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exports import (
    ClientSpec,
    Export,
    ExportOptions,
    ExportsError,
    ExportTable,
    load,
    loopback_only,
    parse,
)

SQUASHED_ALL = ExportOptions(squash="all")


def clients(table: ExportTable, path: str = "/e") -> list[tuple[str, str]]:
    export = table.get(path)
    assert export is not None
    return [(c.text, c.kind) for c in export.clients]


def only(table: ExportTable, path: str = "/e") -> ClientSpec:
    export = table.get(path)
    assert export is not None and len(export.clients) == 1
    return export.clients[0]


def error(text: str, source: str = "f") -> str:
    with pytest.raises(ExportsError) as info:
        parse(text, source)
    return str(info.value)


# -- lines ---------------------------------------------------------------------


def test_blank_lines_and_comments_are_skipped() -> None:
    table = parse("\n# a comment\n   \n\t# indented comment\n/e a(ro) # trailing\n\n", "f")
    assert clients(table) == [("a", "host")]
    assert only(table).source == "f:5"


def test_a_hash_inside_quotes_is_part_of_the_path() -> None:
    assert parse('"/e#1" a', "f").get("/e#1") is not None


def test_continuation_joins_lines_and_keeps_the_first_line_number() -> None:
    table = parse("# x\n/e a(ro) \\\n    b(insecure) \\\n\tc\n/f d\n", "f")
    assert clients(table) == [("a", "host"), ("b", "host"), ("c", "host")]
    assert {c.source for c in table.exports[0].clients} == {"f:2"}
    assert table.exports[1].clients[0].source == "f:5"


def test_a_comment_ends_at_its_newline_even_after_a_backslash() -> None:
    # As nfs-utils' xskipcomment: a comment is read to the newline, never joined.
    table = parse("# retired: old \\\n/kept a\n/e b # c \\\n/f c\n", "f")
    assert [(e.path, [c.text for c in e.clients]) for e in table.exports] == [
        ("/kept", ["a"]),
        ("/e", ["b"]),
        ("/f", ["c"]),
    ]
    assert table.exports[2].clients[0].source == "f:4"
    # a backslash before the comment still joins; a quoted # starts none
    table = parse('/e a \\\n  b # c\n"/g#1" d \\\n e\n', "f")
    assert [(e.path, [c.text for c in e.clients]) for e in table.exports] == [
        ("/e", ["a", "b"]),
        ("/g#1", ["d", "e"]),
    ]


def test_error_on_a_continued_line_names_its_first_line() -> None:
    assert error("\n/e a \\\n  b(bogus)\n") == "f:2: bogus: unknown option"


def test_crlf_line_ends() -> None:
    assert clients(parse("/e a\r\n/e b\r\n")) == [("a", "host"), ("b", "host")]


# -- paths ---------------------------------------------------------------------


def test_quoted_path_with_a_blank_and_octal_escapes() -> None:
    table = parse('"/recover/my images" a\n/other\\040one b\n', "f")
    assert table.get("/recover/my images") is not None
    assert table.get("/other one") is not None


def test_octal_escapes_are_utf8_bytes() -> None:
    assert parse("/caf\\303\\251 a").get("/café") is not None


@pytest.mark.parametrize(
    ("written", "normalized"),
    [("/e/", "/e"), ("//e//f/", "/e/f"), ("/e/./f", "/e/f"), ("/e/g/../f", "/e/f"), ("/", "/")],
)
def test_paths_are_normalized(written: str, normalized: str) -> None:
    assert [e.path for e in parse(f"{written} a").exports] == [normalized]


def test_get_normalizes_the_path_asked() -> None:
    table = parse("/e/f a")
    assert table.get("/e/f/") is table.get("//e/./f") is table.exports[0]
    assert table.get("e/f") is None
    assert table.get("/e") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("e a", "f:1: e: relative path (an export path starts with /)"),
        ('"" a', "f:1: empty path"),
        ('"/e a', "f:1: unbalanced double quote"),
        ("/e\\001 a", "f:1: /e\\001: control character in the path"),
        ("/\\377 a", "f:1: /\\377: the path is not UTF-8"),
    ],
)
def test_bad_paths(text: str, message: str) -> None:
    assert error(text) == message


# -- clients and options on a line -----------------------------------------------


def test_client_without_options_gets_the_defaults() -> None:
    assert only(parse("/e a")).options == ExportOptions()


def test_line_defaults_apply_to_every_client_and_options_start_from_them() -> None:
    table = parse("/e -insecure,all_squash a b(secure) c(no_all_squash)")
    options = [c.options for c in table.exports[0].clients]
    assert options == [
        ExportOptions(secure=False, squash="all"),
        ExportOptions(secure=True, squash="all"),
        ExportOptions(secure=False, squash="root"),
    ]


def test_no_all_squash_returns_to_the_root_squash_choice_of_the_defaults() -> None:
    table = parse("/e -no_root_squash,all_squash a b(no_all_squash) c(root_squash,no_all_squash)")
    squash = [c.options.squash for c in table.exports[0].clients]
    assert squash == ["all", "none", "root"]


def test_defaults_must_follow_the_path() -> None:
    assert (
        error("/e a -insecure") == "f:1: -insecure: default options must come right after the path"
    )


def test_bad_default_option_names_the_line() -> None:
    assert error("\n/e -bogus a") == "f:2: bogus: unknown option"


def test_same_path_on_several_lines_merges_clients_in_order() -> None:
    table = parse("/e a\n/other x\n/e/ b c\n")
    assert [e.path for e in table.exports] == ["/e", "/other"]
    assert clients(table) == [("a", "host"), ("b", "host"), ("c", "host")]


def test_a_client_listed_twice_is_a_warning_and_the_first_applies() -> None:
    table = parse("/e a(insecure)\n/e A(secure)\n", "f")
    assert table.warnings == (
        "f:2: A is listed again for /e (first at f:1); the first one applies",
    )


def test_host_blank_options_is_two_clients_with_a_warning() -> None:
    # exports(5): "host (ro)" is host with the defaults, and anyone with ro.
    table = parse("/e -insecure host (all_squash)", "f")
    assert table.exports[0].clients == (
        ClientSpec("host", "host", ExportOptions(secure=False), "f:1"),
        ClientSpec("*", "anyone", ExportOptions(secure=False, squash="all"), "f:1"),
    )
    assert table.warnings == (
        "f:1: 'host (all_squash)' is two clients: host with the default options, "
        "and anyone with (all_squash); write host(all_squash) for one",
    )


def test_options_with_no_client_mean_anyone_with_a_warning() -> None:
    table = parse("/e (insecure) a(ro)", "f")
    assert clients(table) == [("*", "anyone"), ("a", "host")]
    assert table.warnings == (
        "f:1: '(insecure)' names no client: anyone may mount; write *(insecure) to say so",
    )


def test_a_path_alone_is_exported_to_anyone_with_a_warning() -> None:
    table = parse("/e -insecure", "f")
    assert only(table) == ClientSpec("*", "anyone", ExportOptions(secure=False), "f:1")
    assert len(table.warnings) == 1 and table.warnings[0].startswith("f:1: no client given for /e")


def test_no_warning_for_a_clean_file() -> None:
    assert parse("/e a(ro) b *(insecure)\n").warnings == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "/e a(ro",
            "f:1: a(ro: unbalanced parentheses (no blank may appear inside an option list)",
        ),
        ("/e a(ro, insecure)", "f:1: a(ro,: unbalanced parentheses"),
        ("/e a)ro(", "f:1: a)ro(: unbalanced parentheses"),
        ("/e a(ro)(ro)", "f:1: a(ro)(ro): unbalanced parentheses"),
        ("/e a(ro)x", "f:1: a(ro)x: unbalanced parentheses"),
        ("/e ro)", "f:1: ro): unbalanced parentheses"),
        ("/e a(rw)", "f:1: rw: this export is read-only"),
        ("/e a(foo)", "f:1: foo: unknown option"),
        ("/e @group(ro)", "f:1: @group: netgroups are not supported"),
        ("/e gss/krb5(ro)", "f:1: gss/krb5: gss/ clients are not supported (Kerberos)"),
    ],
)
def test_malformed_clients(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_error_names_the_source_and_line() -> None:
    assert error("/e a\n\n/e b(nope)\n", "/etc/recovery_fs/exports") == (
        "/etc/recovery_fs/exports:3: nope: unknown option"
    )


def test_allow_rw_accepts_rw() -> None:
    table = parse("/e a(rw)", allow_rw=True)
    assert only(table).options.ro is False


# -- show ------------------------------------------------------------------------


def test_show_prints_one_line_per_client_like_exportfs_v() -> None:
    table = parse('/e a(insecure) 10.0.0.0/8\n"/long path" *\n')
    assert table.show() == (
        "/e             a(ro,insecure,root_squash,anonuid=65534,anongid=65534,sec=sys)\n"
        "/e             10.0.0.0/8(ro,secure,root_squash,anonuid=65534,anongid=65534,sec=sys)\n"
        "/long\\040path  *(ro,secure,root_squash,anonuid=65534,anongid=65534,sec=sys)\n"
    )


def test_show_reads_back_as_the_same_table() -> None:
    text = (
        "/e -insecure a(all_squash,anonuid=7) 10.0.0.0/255.0.0.0 [fd00::]/64(sec=none:sys)\n"
        '"/x y#z" *.example(mp=/s,fsid=3) host (no_root_squash)\n'
    )
    table = parse(text)
    again = parse(table.show())
    assert [(e.path, [(c.text, c.kind, c.options) for c in e.clients]) for e in again.exports] == [
        (e.path, [(c.text, c.kind, c.options) for c in e.clients]) for e in table.exports
    ]


def test_show_of_nothing_is_empty() -> None:
    assert ExportTable(()).show() == ""


# -- loopback_only -----------------------------------------------------------------


def test_loopback_only() -> None:
    table = loopback_only()
    assert table == ExportTable(
        (
            Export(
                "/recover/images",
                (
                    ClientSpec("127.0.0.1", "host", ExportOptions(secure=False), "<built-in>"),
                    ClientSpec("::1", "host", ExportOptions(secure=False), "<built-in>"),
                ),
            ),
        )
    )
    assert loopback_only("/x/").exports[0].path == "/x"


# -- load: the file and FILE.d/*.exports -------------------------------------------


def test_load_reads_the_file_then_the_d_folder_by_name(tmp_path: Path) -> None:
    main = tmp_path / "exports"
    main.write_text("/e a\n")
    folder = tmp_path / "exports.d"
    folder.mkdir()
    (folder / "20-b.exports").write_text("/e c\n")
    (folder / "10-a.exports").write_text("/e b\n/f d\n")
    (folder / "30-skip.conf").write_text("/e never\n")
    (folder / "40-dir.exports").mkdir()
    table = load(main)
    assert clients(table) == [("a", "host"), ("b", "host"), ("c", "host")]
    assert [c.source for c in table.exports[0].clients] == [
        f"{main}:1",
        f"{folder / '10-a.exports'}:1",
        f"{folder / '20-b.exports'}:1",
    ]
    assert [e.path for e in table.exports] == ["/e", "/f"]


def test_load_without_the_file_but_with_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "exports.d"
    folder.mkdir()
    assert load(tmp_path / "exports").exports == ()
    (folder / "a.exports").write_text("/e a\n")
    assert clients(load(tmp_path / "exports")) == [("a", "host")]


def test_load_with_neither_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "exports")


def test_load_error_names_the_file_in_the_folder(tmp_path: Path) -> None:
    (tmp_path / "exports").write_text("/e a\n")
    (tmp_path / "exports.d").mkdir()
    bad = tmp_path / "exports.d" / "x.exports"
    bad.write_text("# ok\n/e a(rw)\n")
    with pytest.raises(ExportsError) as info:
        load(tmp_path / "exports")
    assert str(info.value) == f"{bad}:2: rw: this export is read-only"
    assert isinstance(load(tmp_path / "exports", allow_rw=True), ExportTable)


def test_load_refuses_bytes_that_are_not_utf8_naming_the_line(tmp_path: Path) -> None:
    main = tmp_path / "exports"
    main.write_bytes(b"/e a\n/e \xff\n")
    with pytest.raises(ExportsError) as info:
        load(main)
    assert str(info.value) == f"{main}:2: not UTF-8 text"


def test_exports_error_from_a_whole_message() -> None:
    e = ExportsError("f:3: /x is not an export: it serves /y")
    assert (str(e), e.where, e.what) == (
        "f:3: /x is not an export: it serves /y",
        "f:3",
        "/x is not an export: it serves /y",
    )
    assert str(ExportsError("no place")) == "no place"


# -- the manual's examples are what the parser reads ---------------------------------

MANUAL = Path(__file__).resolve().parents[2] / "docs" / "exports.5.md"


def manual_blocks() -> list[str]:
    """The indented lines of the manual's EXAMPLES section: the good ones, then the mistakes."""
    section = MANUAL.read_text().split("## EXAMPLES", 1)[1].split("\n## ", 1)[0]
    return [
        "".join(line[4:] + "\n" for line in part.splitlines() if line.startswith("    "))
        for part in section.split("Mistakes")
    ]


def test_the_manual_examples_parse_cleanly() -> None:
    good, mistakes = manual_blocks()
    table = parse(good, "manual")
    assert table.warnings == ()
    assert [e.path for e in table.exports] == ["/recover/images"]
    export = table.exports[0]
    assert [c.kind for c in export.clients].count("wildcard") == 1
    assert {c.options.squash for c in export.clients} == {"none", "all", "root"}
    lines = [line.split("#")[0] for line in mistakes.splitlines()]
    assert len(parse(lines[0]).warnings) == 1
    assert parse(lines[1]).match("/recover/images", "10.0.0.1", _NoNames()) is None
    for line, message in ((lines[2], "rw: this export"), (lines[3], "unbalanced parentheses")):
        with pytest.raises(ExportsError, match=message):
            parse(line)


class _NoNames:
    def addresses(self, name: str, wait: float = 0.0) -> set[str] | None:
        return None

    def names(self, addr: str, wait: float = 0.0) -> set[str] | None:
        return {"10.0.0.1"}
