"""Array text parsing edge cases (the round trips against PostgreSQL are in
test_types_vs_postgres.py)."""

from __future__ import annotations

import pytest

from twinstream.pgwire import types as t
from twinstream.pgwire.errors import PgError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("{}", []),
        ("{ 1 , 2 }", [1, 2]),
        ("{NULL,null}", [None, None]),
        ("{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        ("[0:1]={5,6}", [5, 6]),
    ],
)
def test_int_array_text_in(text: str, value: list[object]) -> None:
    assert t.decode_text(1007, text) == value


def test_text_array_quotes_and_escapes() -> None:
    assert t.decode_text(1009, '{"a\\"b","NULL",c\\,d}') == ['a"b', "NULL", "c,d"]
    assert t.encode_text(1009, ['a"b', "NULL", "c,d"]) == '{"a\\"b","NULL","c,d"}'


@pytest.mark.parametrize("text", ["1,2", "{1,2", "{1,,2}", "{1}x", "{1 2}"])
def test_malformed_array_is_22P02(text: str) -> None:
    with pytest.raises(PgError) as info:
        t.decode_text(1007, text)
    assert info.value.sqlstate == "22P02"


def test_binary_round_trip_with_nulls() -> None:
    value = [["a", None], ["", "d"]]
    assert t.decode_binary(1009, t.encode_binary(1009, value)) == value


def test_truncated_binary_is_22P03() -> None:
    data = t.encode_binary(1007, [1, 2])
    with pytest.raises(PgError) as info:
        t.decode_binary(1007, data[:-1])
    assert info.value.sqlstate == "22P03"
