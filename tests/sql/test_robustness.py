"""Any input either parses or raises SqlError: never another exception."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinstream.sql import SqlError, infer_param_types, parse_statements

_TEXT = """
SELECT FROM t WHERE ( ) , = 1 'a' $1 :: int [ ] AS OF AT LEAST CREATE TABLE VIEW MATERIALIZED
INDEX DEFAULT NOT NULL SET TO SHOW SUBSCRIBE WITH COPY STDIN INSERT INTO VALUES UPDATE DELETE
RETURNING CLUSTER REPLICA REPLICAS SIZE SOURCE LOAD GENERATOR COUNTER WEBHOOK BODY FORMAT JSON
CHECK EXPLAIN FOR DECLARE CURSOR FETCH ALL BEGIN ISOLATION LEVEL DROP IF EXISTS ALTER SYSTEM
RESET PREPARE EXECUTE oid x "Q" UP ENVELOPE KEY INCLUDE HEADERS SECRET CONNECTION POSTGRES
TABLES ON IN ; - * E'\\n' $$x$$ /*c*/ ANY LIMIT
"""
_WORDS = [word for line in _TEXT.splitlines() for word in line.split(" ") if word]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_WORDS), max_size=14))
def test_word_salad(words: list[str]) -> None:
    with contextlib.suppress(SqlError):
        for stmt in parse_statements(" ".join(words)):
            infer_param_types(stmt, lambda table, column: "int4")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text(text: str) -> None:
    with contextlib.suppress(SqlError):
        parse_statements(text)
