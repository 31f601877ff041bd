"""split_statements: semicolons inside quotes, identifiers, dollar quotes and comments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstream.sql import split_statements, split_statements_with_offsets
from twinstream.sql.lexer import tokenize

CASES: list[tuple[str, list[str]]] = [
    ("", []),
    ("   \n\t ", []),
    (";;; ; \n;", []),
    ("SELECT 1", ["SELECT 1"]),
    ("SELECT 1;", ["SELECT 1"]),
    ("  SELECT 1 ;  SELECT 2  ", ["SELECT 1", "SELECT 2"]),
    ("SELECT ';'; SELECT 2", ["SELECT ';'", "SELECT 2"]),
    ("SELECT 'it''s;'; x", ["SELECT 'it''s;'", "x"]),
    ("SELECT E'\\';'; x", ["SELECT E'\\';'", "x"]),
    ("SELECT e'a\\\\'; x", ["SELECT e'a\\\\'", "x"]),
    # a standard string: the backslash is an ordinary character
    ("SELECT '\\'; x", ["SELECT '\\'", "x"]),
    ('SELECT "a;b" FROM t; x', ['SELECT "a;b" FROM t', "x"]),
    ('SELECT "a"";b"; x', ['SELECT "a"";b"', "x"]),
    ("SELECT $$a;b$$; x", ["SELECT $$a;b$$", "x"]),
    ("SELECT $tag$ $$ ; $ $tag$; x", ["SELECT $tag$ $$ ; $ $tag$", "x"]),
    ("SELECT $1; SELECT $2", ["SELECT $1", "SELECT $2"]),
    ("SELECT a$b; x", ["SELECT a$b", "x"]),
    ("SELECT 1 -- c;\n; x", ["SELECT 1 -- c;", "x"]),
    ("SELECT /* ; */ 1; x", ["SELECT /* ; */ 1", "x"]),
    ("SELECT /* /* ; */ ; */ 1; x", ["SELECT /* /* ; */ ; */ 1", "x"]),
    ("-- only a comment\n; /* and another */ ; x", ["x"]),
    ("/* leading */ SELECT 1", ["/* leading */ SELECT 1"]),
    # unterminated constructs run to the end
    ("SELECT 'abc; x", ["SELECT 'abc; x"]),
    ("SELECT 1; SELECT /* ; x", ["SELECT 1", "SELECT /* ; x"]),
    ("SELECT $$ ; x", ["SELECT $$ ; x"]),
    ("SELECT E'\\", ["SELECT E'\\"]),
    # U& strings do not use backslash to escape quotes
    ("SELECT U&'\\'; x", ["SELECT U&'\\'", "x"]),
]


@pytest.mark.parametrize(("sql", "expected"), CASES)
def test_split(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


def test_offsets_point_at_statements() -> None:
    sql = "  SELECT 1 ;\n -- c\n SELECT 2;"
    for offset, text in split_statements_with_offsets(sql):
        assert sql[offset : offset + len(text)] == text
    assert split_statements_with_offsets(sql) == [(2, "SELECT 1"), (14, "-- c\n SELECT 2")]


# --- property tests ---------------------------------------------------------------------------

_plain = st.text(alphabet="abcxyz019 ;'\"$\\*/-\n\tE", max_size=12)
_word = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
_standard_string = _plain.map(lambda s: "'" + s.replace("'", "''") + "'")
_escape_string = _plain.map(lambda s: "E'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'")
_quoted_ident = _plain.filter(bool).map(lambda s: '"' + s.replace('"', '""') + '"')
_tag = st.sampled_from(["", "t", "tag", "a_1"])
_dollar_string = st.tuples(_tag, _plain).filter(lambda p: f"${p[0]}$" not in p[1] + "$")
_dollar = _dollar_string.map(lambda p: f"${p[0]}${p[1]}${p[0]}$")
_line_comment = st.text(alphabet="abc ;'\"$*/-", max_size=10).map(lambda s: "--" + s + "\n")
_block_body = st.text(alphabet="abc ;'\"$-\n", max_size=10)
_block_comment = st.recursive(
    _block_body.map(lambda s: "/*" + s + "*/"),
    lambda inner: st.tuples(_block_body, inner, _block_body).map(
        lambda p: "/*" + p[0] + p[1] + p[2] + "*/"
    ),
    max_leaves=3,
)
_operator = st.sampled_from(["+", "-", "*", "=", "<>", "::", "(", ")", ",", ".", "$1", "12.5"])

_token_atoms = st.one_of(_word, _standard_string, _escape_string, _quoted_ident, _dollar, _operator)
_comment_atoms = st.one_of(_line_comment, _block_comment)


@st.composite
def _statement(draw: st.DrawFn) -> tuple[str, bool]:
    """A statement's text (atoms separated by spaces) and whether it has a non-comment token."""
    atoms = draw(st.lists(st.one_of(_token_atoms, _comment_atoms), max_size=6))
    has_token = any(not (a.startswith("--") or a.startswith("/*")) for a in atoms)
    return " ".join(atoms), has_token


@settings(max_examples=200, deadline=None)
@given(st.lists(_statement(), max_size=6))
def test_split_of_joined_statements(statements: list[tuple[str, bool]]) -> None:
    sql = ";".join(text for text, _ in statements)
    expected = [text.strip(" \t\n\r\f\v") for text, has_token in statements if has_token]
    assert split_statements(sql) == expected


_any_sql = st.text(
    alphabet=st.sampled_from(list("ab E$;'\"\\-/*\n\t()1U&")) | st.characters(), max_size=60
)


@settings(max_examples=500, deadline=None)
@given(_any_sql)
def test_split_is_stable(sql: str) -> None:
    statements = split_statements(sql)
    assert split_statements("\n;\n".join(statements)) == statements
    for statement in statements:
        assert split_statements(statement) == [statement]


@settings(max_examples=300, deadline=None)
@given(_any_sql)
def test_lenient_tokenize_never_fails(sql: str) -> None:
    tokens = tokenize(sql, strict=False)
    assert tokens[-1].start == len(sql)
    starts = [t.start for t in tokens]
    assert starts == sorted(starts)
