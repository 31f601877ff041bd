"""Statement splitting for simple Query, and the COPY text format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinstream.pgwire import PgError
from twinstream.pgwire.copy import (
    CopyBinaryDecoder,
    CopyCsvDecoder,
    CopyFormat,
    CopyTextDecoder,
    binary_header,
    binary_trailer,
    encode_binary_row,
    encode_copy_row,
    encode_csv_row,
    parse_copy_line,
)
from twinstream.pgwire.sqlsplit import split_statements


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        ("select 1", ["select 1"]),
        ("select 1;", ["select 1"]),
        ("select 1; select 2 ;", ["select 1", "select 2"]),
        ("", []),
        (" ;; ; ", []),
        ("-- just a comment", []),
        ("/* a /* nested */ comment; */", []),
        ("select ';'; select 2", ["select ';'", "select 2"]),
        ("select 'it''s;'; x", ["select 'it''s;'", "x"]),
        ("select E'\\';'; x", ["select E'\\';'", "x"]),
        ("select '\\'; x", ["select '\\'", "x"]),  # standard_conforming_strings: no escapes
        ('select ";" from "a""b;"; x', ['select ";" from "a""b;"', "x"]),
        ("select $$a;b$$; x", ["select $$a;b$$", "x"]),
        ("select $fn$ $$; $fn$; x", ["select $fn$ $$; $fn$", "x"]),
        ("select $1; select a$b; c", ["select $1", "select a$b", "c"]),
        (
            "select 1 -- trailing; comment\n; select 2",
            ["select 1 -- trailing; comment", "select 2"],
        ),
        (
            "create rule r as on insert to t do (select 1; select 2); x",
            [
                "create rule r as on insert to t do (select 1; select 2)",
                "x",
            ],
        ),
        ("select 'unterminated; x", ["select 'unterminated; x"]),
    ],
)
def test_split_statements(sql: str, statements: list[str]) -> None:
    assert split_statements(sql) == statements


def test_copy_line_escapes() -> None:
    assert parse_copy_line(b"1\t\\N\ta\\tb\\\\c\\nd") == ["1", None, "a\tb\\c\nd"]
    assert parse_copy_line(b"\\101\\x42\\b\\f\\r\\v\\q") == ["AB\b\f\r\vq"]
    assert parse_copy_line(b"") == [""]
    assert parse_copy_line("é".encode()) == ["é"]
    with pytest.raises(PgError) as info:
        parse_copy_line(b"\\377")
    assert info.value.sqlstate == "22021"


def test_copy_decoder_lines_and_end_marker() -> None:
    dec = CopyTextDecoder()
    assert dec.feed(b"1\ta\n2\t") == [["1", "a"]]
    assert dec.feed(b"b\r\n3") == [["2", "b"]]
    assert dec.finish() == [["3"]]
    dec = CopyTextDecoder()
    assert dec.feed(b"1\n\\.\n2\n") == [["1"]]
    assert dec.finish() == []


fields = st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=5)


@given(st.lists(fields, max_size=10), st.integers(1, 9))
def test_copy_roundtrip(rows: list[list[str | None]], chunk: int) -> None:
    data = b"".join(encode_copy_row(r) for r in rows)
    dec = CopyTextDecoder()
    got = []
    for i in range(0, len(data), chunk):
        got.extend(dec.feed(data[i : i + chunk]))
    got.extend(dec.finish())
    assert got == rows


# --------------------------------------------------------------------------- csv / binary

_CSV = CopyFormat("csv", ",", "", False, '"', '"')


def test_csv_decoder_handles_quotes_and_chunk_boundaries() -> None:
    data = b'1,"a,b",\n2,"x""y\nz",""\r\n3,plain,"NULL"\n\\.\nignored\n'
    whole = CopyCsvDecoder(_CSV)
    expected = whole.feed(data) + whole.finish()
    assert expected == [["1", "a,b", None], ["2", 'x"y\nz', ""], ["3", "plain", "NULL"]]
    for cut in range(1, len(data)):  # every split point of the stream gives the same rows
        dec = CopyCsvDecoder(_CSV)
        assert dec.feed(data[:cut]) + dec.feed(data[cut:]) + dec.finish() == expected


def test_csv_escape_header_and_errors() -> None:
    fmt = CopyFormat("csv", ";", "\\N", True, "'", "\\")
    dec = CopyCsvDecoder(fmt)
    assert dec.feed(b"h1;h2\n'it\\'s';\\N\n") + dec.finish() == [["it's", None]]
    assert encode_csv_row(["it's", None, "a;b"], fmt) == b"'it\\'s';\\N;'a;b'\n"
    with pytest.raises(PgError) as info:
        dec = CopyCsvDecoder(_CSV)
        dec.feed(b'1,"open\n')
        dec.finish()
    assert info.value.sqlstate == "22P04"


def test_csv_output_quotes_like_postgres() -> None:
    assert encode_csv_row(["1", "", None, 'q"', "\\."], _CSV) == b'1,"",,"q""","\\."\n'


def test_binary_decoder_across_chunks() -> None:
    data = binary_header() + encode_binary_row([b"\x00\x00\x00\x01", None]) + binary_trailer()
    for cut in range(1, len(data)):
        dec = CopyBinaryDecoder()
        rows = dec.feed(data[:cut]) + dec.feed(data[cut:]) + dec.finish()
        assert rows == [[b"\x00\x00\x00\x01", None]]
    with pytest.raises(PgError) as info:
        CopyBinaryDecoder().feed(b"NOTPGCOPY" + b"\x00" * 10)
    assert info.value.sqlstate == "22P04"
