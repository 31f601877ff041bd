"""The client conformance script: scenarios of SQL steps that every client runner executes.

A `Scenario` is a list of `Step`s (SQL with `$n` placeholders, parameters, and either the
expected rows or the expected SQLSTATE). Each runner (`test_psql.py`, `test_psycopg3.py`,
`test_psycopg2.py`, `test_asyncpg.py`) adapts the placeholders and parameter values to its
client, runs the steps in order on one session (two for `sessions=2`) and compares with
`check_step`. Expected values are Python values; psql compares their PostgreSQL text form
(`pg_text`), drivers compare the decoded values *and their Python types* (`same_value`).

`SETUP` creates the shared tables once per runner module (one environmentd per module); the
other scenarios are independent of each other (each writes its own `id` range of
`conf_types`). Known product bugs are listed per scenario in `Scenario.bugs` (client name or
prefix, or "*" for every client -> reason); runners turn them into strict xfails, so a fixed
bug shows up as XPASS and fails the suite until its entry is removed.

Client names: "psql", "psycopg3-text", "psycopg3-binary", "psycopg3-client", "psycopg2",
"asyncpg".
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Json:
    """A jsonb value: drivers adapt it (Jsonb/Json/json.dumps); results are compared decoded
    (psycopg decodes jsonb itself, the asyncpg runner decodes asyncpg's text)."""

    obj: Any


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: Matches any value (for values that depend on time or on other sessions).
ANY: Any = _Any()


@dataclass(frozen=True)
class Pred:
    """Matches a value for which `fn` is true (e.g. a version string prefix)."""

    fn: Callable[[Any], bool]
    text: str

    def __repr__(self) -> str:
        return f"Pred({self.text})"


UTC = dt.UTC


def _trim_fraction(us: int) -> str:
    return "" if us == 0 else "." + f"{us:06d}".rstrip("0")


def pg_interval_text(v: dt.timedelta) -> str:
    """PostgreSQL's IntervalStyle=postgres output of a timedelta (days + time, no months)."""
    days = v.days
    secs = v.seconds
    us = v.microseconds
    parts = []
    if days:
        parts.append(f"{days} day" + ("" if abs(days) == 1 else "s"))
    if secs or us or not parts:
        h, rem = divmod(secs, 3600)
        m, s = divmod(rem, 60)
        parts.append(f"{h:02d}:{m:02d}:{s:02d}{_trim_fraction(us)}")
    return " ".join(parts)


def pg_json_text(obj: Any) -> str:
    """jsonb output: PostgreSQL prints `{"a": 1, "b": [1, 2]}` (keys as stored; our test
    values use keys already in jsonb's order: shorter first, then bytewise)."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def pg_text(v: Any) -> str:
    """The text psql prints for a value (`-A -t -P null=<null>`)."""
    if v is ANY or isinstance(v, Pred):
        return repr(v)
    if v is None:
        return NULL_TEXT
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int | Decimal):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        text = repr(v)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(v, dt.datetime):
        base = v.strftime("%Y-%m-%d %H:%M:%S") + _trim_fraction(v.microsecond)
        if v.tzinfo is None:
            return base
        off = v.utcoffset()
        assert off is not None
        total = int(off.total_seconds())
        sign = "+" if total >= 0 else "-"
        hh, rem = divmod(abs(total), 3600)
        return base + f"{sign}{hh:02d}" + (f":{rem // 60:02d}" if rem else "")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return pg_interval_text(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, Json):
        return pg_json_text(v.obj)
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, str):
        return v
    raise TypeError(f"no text form for {v!r}")


NULL_TEXT = "<null>"


def sql_literal(v: Any) -> str:
    """A SQL literal for a parameter value (psql has no parameters: they are inlined)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | Decimal):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, Json):
        return _quote(pg_json_text(v.obj))
    if isinstance(v, bytes):
        return _quote("\\x" + v.hex())
    if isinstance(v, dt.timedelta):
        return _quote(f"{v.days} days {v.seconds}.{v.microseconds:06d} seconds")
    if isinstance(v, dt.datetime | dt.date | uuid.UUID):
        return _quote(pg_text(v))
    if isinstance(v, str):
        return _quote(v)
    raise TypeError(f"no literal for {v!r}")


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


_PARAM = re.compile(r"\$(\d+)")


def inline_params(sql: str, params: Sequence[Any]) -> str:
    return _PARAM.sub(lambda m: sql_literal(params[int(m.group(1)) - 1]), sql)


def to_format_params(sql: str) -> str:
    """`$1, $2` -> `%s, %s` for psycopg (every scenario uses each $n once, in order)."""
    return _PARAM.sub("%s", sql.replace("%", "%%"))


def same_value(expected: Any, got: Any) -> bool:
    """Driver comparison: equal value *and* the Python type a PostgreSQL server gives."""
    if expected is ANY:
        return True
    if isinstance(expected, Pred):
        return bool(expected.fn(got))
    if expected is None or got is None:
        return expected is None and got is None
    if isinstance(expected, Json):
        # drivers decode jsonb (asyncpg's runner decodes its text): a str here means the
        # server sent a JSON string, e.g. a document encoded twice
        return bool(type(got) is type(expected.obj) and got == expected.obj)
    if isinstance(got, memoryview):
        got = bytes(got)
    if isinstance(expected, uuid.UUID):
        return isinstance(got, uuid.UUID) and got == expected
    if isinstance(expected, Decimal):
        return isinstance(got, Decimal) and str(got) == str(expected)
    if isinstance(expected, dt.datetime):
        return (
            isinstance(got, dt.datetime)
            and (got.tzinfo is None) == (expected.tzinfo is None)
            and got == expected
        )
    return bool(type(got) is type(expected) and got == expected)


def same_text(expected: Any, got: str) -> bool:
    if expected is ANY:
        return True
    if isinstance(expected, Pred):
        return bool(expected.fn(got))
    return pg_text(expected) == got


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Step:
    sql: str
    params: tuple[Any, ...] = ()
    #: Expected rows (None: the statement's rows are not checked).
    rows: list[tuple[Any, ...]] | None = None
    #: Expected SQLSTATE of the error (None: must succeed).
    sqlstate: str | None = None
    ordered: bool = True
    #: Which session runs it (scenarios with sessions=2 use 0 and 1).
    session: int = 0
    #: Expected affected-row count (drivers that report it).
    rowcount: int | None = None
    #: Expected output column names (drivers).
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    sessions: int = 1
    #: Clients the scenario does not apply to (their driver decides the outcome itself).
    not_for: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What a runner observed for one step."""

    rows: list[tuple[Any, ...]] | None = None
    sqlstate: str | None = None
    message: str | None = None
    rowcount: int | None = None
    columns: tuple[str, ...] | None = None


def _sort_key(row: Sequence[Any]) -> str:
    return repr(tuple(NULL_TEXT if v is None else str(v) for v in row))


def check_step(
    scenario: Scenario, index: int, step: Step, out: Outcome, *, text: bool = False
) -> None:
    """Assert that `out` matches `step` (text=True: psql, rows are lists of strings)."""
    where = f"{scenario.name} step {index}: {step.sql.strip()[:200]!r} params={step.params!r}"
    if step.sqlstate is not None:
        assert out.sqlstate == step.sqlstate, (
            f"{where}: expected SQLSTATE {step.sqlstate}, got "
            f"{out.sqlstate or 'success'} {out.message or ''}"
        )
        return
    assert out.sqlstate is None, f"{where}: unexpected error {out.sqlstate}: {out.message}"
    if step.rows is not None:
        assert out.rows is not None, f"{where}: no result rows"
        got = [tuple(r) for r in out.rows]
        want = list(step.rows)
        if not step.ordered:
            got = sorted(got, key=_sort_key)
            want = sorted(want, key=lambda r: _sort_key([pg_text(v) for v in r]))
        ok = len(got) == len(want) and all(
            len(g) == len(w)
            and all(
                (same_text(wv, gv) if text else same_value(wv, gv))
                for wv, gv in zip(w, g, strict=True)
            )
            for w, g in zip(want, got, strict=True)
        )
        if not ok:
            shown = [tuple(pg_text(v) if text else v for v in r) for r in want]
            types = "" if text else f"\n  got types: {[[type(v).__name__ for v in r] for r in got]}"
            raise AssertionError(f"{where}:\n  expected {shown}\n  got      {got}{types}")
    if step.rowcount is not None and out.rowcount is not None:
        assert out.rowcount == step.rowcount, (
            f"{where}: expected rowcount {step.rowcount}, got {out.rowcount}"
        )
    if step.columns is not None and out.columns is not None:
        assert tuple(out.columns) == step.columns, (
            f"{where}: expected columns {step.columns}, got {out.columns}"
        )


def ok(sql: str, *params: Any, **kw: Any) -> Step:
    return Step(sql, tuple(params), **kw)


def q(sql: str, rows: list[tuple[Any, ...]], *params: Any, **kw: Any) -> Step:
    return Step(sql, tuple(params), rows=rows, **kw)


def err(sql: str, sqlstate: str, *params: Any, **kw: Any) -> Step:
    return Step(sql, tuple(params), sqlstate=sqlstate, **kw)


ALIVE = q("SELECT 1", [(1,)])


def err_then_alive(sql: str, sqlstate: str, *params: Any) -> tuple[Step, Step]:
    """An error, then proof that the session still works."""
    return err(sql, sqlstate, *params), ALIVE


# --------------------------------------------------------------------------- shared tables

#: (column, SQL type, parameter value, literal SQL, value the literal stands for)
TYPES: list[tuple[str, str, Any, str, Any]] = [
    ("b", "bool", True, "false", False),
    ("i2", "int2", -32768, "32767", 32767),
    ("i4", "int4", 2147483647, "-2147483648", -2147483648),
    ("i8", "int8", -9223372036854775808, "9223372036854775807", 9223372036854775807),
    ("f4", "float4", 1.5, "-0.25", -0.25),
    ("f8", "float8", 0.1, "1e-300", 1e-300),
    ("n", "numeric(10,2)", Decimal("12345678.12"), "-1.5", Decimal("-1.50")),
    ("t", "text", "it's héllo\tworld", "'ünï''cödé'", "ünï'cödé"),
    ("v", "varchar(20)", "varchar value", "'vc'", "vc"),
    ("d", "date", dt.date(2024, 2, 29), "'1999-12-31'", dt.date(1999, 12, 31)),
    (
        "ts",
        "timestamp",
        dt.datetime(2024, 2, 29, 12, 34, 56, 789),
        "'2000-01-02 03:04:05.5'",
        dt.datetime(2000, 1, 2, 3, 4, 5, 500000),
    ),
    (
        "tz",
        "timestamptz",
        dt.datetime(2024, 2, 29, 12, 34, 56, 789, tzinfo=UTC),
        "'2024-02-29 14:34:56.000789+02'",
        dt.datetime(2024, 2, 29, 12, 34, 56, 789, tzinfo=UTC),
    ),
    (
        "iv",
        "interval",
        dt.timedelta(days=3, hours=4, minutes=5, seconds=6, microseconds=7),
        "'1 day 02:03:04'",
        dt.timedelta(days=1, hours=2, minutes=3, seconds=4),
    ),
    (
        "u",
        "uuid",
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ),
    (
        "j",
        "jsonb",
        Json({"a": [1, 2, {"b": None}], "c": "ü"}),
        '\'{"k": [true, 1.5, "x"]}\'',
        Json({"k": [True, 1.5, "x"]}),
    ),
    (
        "by",
        "bytea",
        b"\x00\x01\xffbytes",
        "'\\x00ff41'",
        b"\x00\xffA",
    ),
]

TYPE_COLUMNS = ", ".join(f"{c} {t}" for c, t, *_ in TYPES)

PEOPLE = [
    (1, "alice", 10, Decimal("5000.00"), dt.date(2020, 1, 15)),
    (2, "bob", 10, Decimal("4000.50"), dt.date(2021, 3, 1)),
    (3, "carol", 20, Decimal("6000.00"), dt.date(2019, 7, 30)),
    (4, "dave", None, Decimal("3000.25"), dt.date(2022, 11, 11)),
    (5, "eve", 20, Decimal("5500.00"), dt.date(2023, 5, 5)),
]
DEPTS = [(10, "eng"), (20, "sales"), (30, "empty")]

SETUP = Scenario(
    "setup",
    (
        ok("DROP TABLE IF EXISTS conf_types"),
        ok(f"CREATE TABLE conf_types (id int4, {TYPE_COLUMNS})"),
        ok("DROP TABLE IF EXISTS conf_people"),
        ok(
            "CREATE TABLE conf_people (id int4 NOT NULL, name text, dept_id int4, "
            "salary numeric(10,2), hired date)"
        ),
        ok("DROP TABLE IF EXISTS conf_depts"),
        ok("CREATE TABLE conf_depts (id int4 NOT NULL, name text)"),
        *[
            ok("INSERT INTO conf_people VALUES ($1, $2, $3, $4, $5)", *p, rowcount=1)
            for p in PEOPLE
        ],
        ok(
            "INSERT INTO conf_depts VALUES ($1, $2), ($3, $4), ($5, $6)",
            *[v for d in DEPTS for v in d],
            rowcount=3,
        ),
        q("SELECT count(*) FROM conf_people", [(5,)]),
    ),
)


# --------------------------------------------------------------------------- type round trips


def _type_scenarios() -> list[Scenario]:
    out = []
    for i, (col, _type, value, literal, literal_value) in enumerate(TYPES):
        base = 1000 + 10 * i
        out.append(
            Scenario(
                f"type_param_{col}",
                (
                    ok(f"INSERT INTO conf_types (id, {col}) VALUES ($1, $2)", base + 1, value),
                    ok(f"INSERT INTO conf_types (id, {col}) VALUES ($1, $2)", base + 2, None),
                    q(
                        f"SELECT id, {col} FROM conf_types WHERE id >= $1 AND id < $2 ORDER BY id",
                        [(base + 1, value), (base + 2, None)],
                        base,
                        base + 10,
                    ),
                    q(
                        f"SELECT {col} IS NULL FROM conf_types WHERE id = $1",
                        [(True,)],
                        base + 2,
                    ),
                ),
            )
        )
        base = 2000 + 10 * i
        out.append(
            Scenario(
                f"type_literal_{col}",
                (
                    ok(f"INSERT INTO conf_types (id, {col}) VALUES ({base + 1}, {literal})"),
                    ok(f"INSERT INTO conf_types (id, {col}) VALUES ({base + 2}, NULL)"),
                    q(
                        f"SELECT id, {col} FROM conf_types "
                        f"WHERE id BETWEEN {base} AND {base + 9} ORDER BY id",
                        [(base + 1, literal_value), (base + 2, None)],
                    ),
                    q(
                        f"SELECT {col} FROM conf_types WHERE {col} = {literal} "
                        f"AND id BETWEEN {base} AND {base + 9}",
                        [(literal_value,)],
                    ),
                ),
            )
        )
    return out


_FULL_ROW = (3001, *(v for _c, _t, v, _l, _lv in TYPES))
_NULL_ROW = (3002, *(None for _ in TYPES))
_ALL_COLS = "id, " + ", ".join(c for c, *_ in TYPES)
_MARKS = ", ".join(f"${i + 1}" for i in range(len(TYPES) + 1))

TYPE_SCENARIOS = [
    *_type_scenarios(),
    Scenario(
        "full_row_all_types",
        (
            ok(f"INSERT INTO conf_types ({_ALL_COLS}) VALUES ({_MARKS})", *_FULL_ROW, rowcount=1),
            q(f"SELECT {_ALL_COLS} FROM conf_types WHERE id = 3001", [_FULL_ROW]),
            q("SELECT * FROM conf_types WHERE id = $1", [_FULL_ROW], 3001),
        ),
    ),
    Scenario(
        "full_row_all_nulls",
        (
            ok(f"INSERT INTO conf_types ({_ALL_COLS}) VALUES ({_MARKS})", *_NULL_ROW, rowcount=1),
            q(f"SELECT {_ALL_COLS} FROM conf_types WHERE id = 3002", [_NULL_ROW]),
        ),
    ),
    Scenario(
        "typed_param_echo",
        (
            q(
                "SELECT $1::int8 + 1, $2::text || '!', $3::numeric(10,2) * 2, $4::date",
                [(10, "hi!", Decimal("3.00"), dt.date(2024, 1, 2))],
                9,
                "hi",
                Decimal("1.50"),
                dt.date(2024, 1, 2),
            ),
            q("SELECT $1::bool, $2::float8", [(False, 2.5)], False, 2.5),
        ),
    ),
    Scenario(
        "numeric_unconstrained_cast",
        (
            q("SELECT '-12345.678900'::numeric", [(Decimal("-12345.678900"),)]),
            q("SELECT $1::numeric", [(Decimal("0.123456789"),)], Decimal("0.123456789")),
            q("SELECT 1.50::numeric, '1e3'::numeric", [(Decimal("1.50"), Decimal("1000"))]),
        ),
    ),
    Scenario(
        "interval_keyword_literal",
        (
            q(
                "SELECT interval '1 day 02:03:04'",
                [(dt.timedelta(days=1, hours=2, minutes=3, seconds=4),)],
            ),
        ),
    ),
    Scenario(
        "bytea_escape_literal",
        (q("SELECT 'ab\\001'::bytea, octet_length('\\x00ff'::bytea)", [(b"ab\x01", 2)]),),
    ),
]


# --------------------------------------------------------------------------- queries

QUERY_SCENARIOS = [
    Scenario(
        "select_order_by",
        (
            q(
                "SELECT id, name, dept_id, salary, hired FROM conf_people ORDER BY id",
                list(PEOPLE),
            ),
            q(
                "SELECT name FROM conf_people ORDER BY dept_id DESC, name",
                [("dave",), ("carol",), ("eve",), ("alice",), ("bob",)],
            ),
            q(
                "SELECT name FROM conf_people ORDER BY dept_id NULLS FIRST, name DESC",
                [("dave",), ("bob",), ("alice",), ("eve",), ("carol",)],
            ),
        ),
    ),
    Scenario(
        "limit_offset",
        (
            q(
                "SELECT name FROM conf_people ORDER BY salary DESC LIMIT 2",
                [("carol",), ("eve",)],
            ),
            q(
                "SELECT name FROM conf_people ORDER BY salary DESC LIMIT 2 OFFSET 1",
                [("eve",), ("alice",)],
            ),
            q("SELECT name FROM conf_people ORDER BY id OFFSET 4", [("eve",)]),
            q("SELECT name FROM conf_people ORDER BY id LIMIT 0", []),
            q(
                "SELECT name FROM conf_people ORDER BY id LIMIT $1 OFFSET $2",
                [("bob",), ("carol",)],
                2,
                1,
            ),
        ),
    ),
    Scenario(
        "where_params",
        (
            q(
                "SELECT name FROM conf_people WHERE dept_id = $1 AND salary > $2 ORDER BY name",
                [("alice",)],
                10,
                Decimal("4500"),
            ),
            q(
                "SELECT name FROM conf_people WHERE name LIKE $1 ORDER BY name",
                [("alice",), ("carol",), ("dave",)],
                "%a%",
            ),
            q(
                "SELECT name FROM conf_people WHERE hired > $1 ORDER BY hired",
                [("dave",), ("eve",)],
                dt.date(2022, 1, 1),
            ),
            q("SELECT name FROM conf_people WHERE dept_id IS NULL", [("dave",)]),
            q(
                "SELECT name FROM conf_people WHERE id IN (1, 3, 99) ORDER BY id",
                [("alice",), ("carol",)],
            ),
        ),
    ),
    Scenario(
        "joins",
        (
            q(
                "SELECT p.name, d.name FROM conf_people p JOIN conf_depts d ON p.dept_id = d.id "
                "ORDER BY p.id",
                [("alice", "eng"), ("bob", "eng"), ("carol", "sales"), ("eve", "sales")],
            ),
            q(
                "SELECT p.name, d.name FROM conf_people p LEFT JOIN conf_depts d "
                "ON p.dept_id = d.id ORDER BY p.id",
                [
                    ("alice", "eng"),
                    ("bob", "eng"),
                    ("carol", "sales"),
                    ("dave", None),
                    ("eve", "sales"),
                ],
            ),
            q(
                "SELECT d.name, count(p.id) FROM conf_depts d LEFT JOIN conf_people p "
                "ON p.dept_id = d.id GROUP BY d.name ORDER BY d.name",
                [("empty", 0), ("eng", 2), ("sales", 2)],
            ),
            q(
                "SELECT p.name FROM conf_people p WHERE EXISTS "
                "(SELECT 1 FROM conf_depts d WHERE d.id = p.dept_id AND d.name = 'sales') "
                "ORDER BY 1",
                [("carol",), ("eve",)],
            ),
        ),
    ),
    Scenario(
        "aggregates",
        (
            q(
                "SELECT count(*), count(dept_id), min(salary), max(salary), sum(salary) "
                "FROM conf_people",
                [(5, 4, Decimal("3000.25"), Decimal("6000.00"), Decimal("23500.75"))],
                columns=("count", "count", "min", "max", "sum"),
            ),
            q(
                "SELECT dept_id, count(*), max(name) FROM conf_people GROUP BY dept_id "
                "HAVING count(*) > 1 ORDER BY dept_id",
                [(10, 2, "bob"), (20, 2, "eve")],
            ),
            q(
                "SELECT count(*) FROM conf_people WHERE id > 100",
                [(0,)],
            ),
            q("SELECT count(DISTINCT dept_id) FROM conf_people", [(2,)]),
        ),
    ),
    Scenario(
        "aggregate_result_types",
        (
            # PostgreSQL: sum(int4) is int8, avg(...) is numeric
            q("SELECT sum(id) FROM conf_people", [(15,)]),
            q(
                "SELECT avg(salary) = 4700.15, avg(id) FROM conf_people",
                [(True, Decimal("3.0000000000000000"))],
            ),
        ),
    ),
    Scenario(
        "aggregate_column_names",
        (
            q(
                "SELECT string_agg(name, ',' ORDER BY name), bool_and(id > 0) FROM conf_people",
                [("alice,bob,carol,dave,eve", True)],
                columns=("string_agg", "bool_and"),
            ),
        ),
    ),
    Scenario(
        "cte_subquery_union_case",
        (
            q(
                "WITH rich AS (SELECT name, salary FROM conf_people WHERE salary >= 5000) "
                "SELECT name FROM rich ORDER BY salary DESC",
                [("carol",), ("eve",), ("alice",)],
            ),
            q(
                "SELECT name FROM conf_people WHERE salary > (SELECT avg(salary) "
                "FROM conf_people) ORDER BY name",
                [("alice",), ("carol",), ("eve",)],
            ),
            q(
                "SELECT name FROM conf_depts UNION SELECT name FROM conf_people "
                "WHERE id = 1 ORDER BY 1",
                [("alice",), ("empty",), ("eng",), ("sales",)],
            ),
            q(
                "SELECT name, CASE WHEN salary > 5000 THEN 'high' ELSE 'low' END, "
                "coalesce(dept_id, -1) FROM conf_people ORDER BY id LIMIT 4",
                [
                    ("alice", "low", 10),
                    ("bob", "low", 10),
                    ("carol", "high", 20),
                    ("dave", "low", -1),
                ],
            ),
            q("SELECT DISTINCT dept_id FROM conf_people ORDER BY 1", [(10,), (20,), (None,)]),
        ),
    ),
    Scenario(
        "expressions",
        (
            q("SELECT 7 / 2, 7 % 3, -7 / 2", [(3, 1, -3)]),
            q("SELECT upper('abc') || lower('DEF'), length('héllo')", [("ABCdef", 5)]),
            q("SELECT 1 = 1, 1 < 0, NULL::int4 IS NULL", [(True, False, True)]),
            q("SELECT '2024-02-28'::date + 1", [(dt.date(2024, 2, 29),)]),
        ),
    ),
    Scenario(
        "now_unaliased",
        (
            q("SELECT now() IS NOT NULL", [(True,)]),
            q("SELECT now()", [(ANY,)], columns=("now",)),
            q("SELECT current_timestamp", [(ANY,)], columns=("current_timestamp",)),
        ),
    ),
    Scenario(
        "generate_series",
        (q("SELECT * FROM generate_series(1, 3)", [(1,), (2,), (3,)], ordered=False),),
    ),
    Scenario("empty_result", (q("SELECT id FROM conf_people WHERE false", []),)),
]


# --------------------------------------------------------------------------- DML

DML_SCENARIOS = [
    Scenario(
        "update_delete",
        (
            ok(
                "INSERT INTO conf_types (id, t, i4) VALUES ($1, $2, $3), ($4, $5, $6), "
                "($7, $8, $9)",
                10001,
                "a",
                1,
                10002,
                "b",
                2,
                10003,
                "c",
                3,
                rowcount=3,
            ),
            ok(
                "UPDATE conf_types SET t = $1, i4 = i4 * 10 WHERE id = $2",
                "B",
                10002,
                rowcount=1,
            ),
            ok("UPDATE conf_types SET t = upper(t) WHERE id BETWEEN 10001 AND 10003", rowcount=3),
            ok("UPDATE conf_types SET t = 'x' WHERE id = -1", rowcount=0),
            q(
                "SELECT id, t, i4 FROM conf_types WHERE id BETWEEN 10001 AND 10009 ORDER BY id",
                [(10001, "A", 1), (10002, "B", 20), (10003, "C", 3)],
            ),
            ok("DELETE FROM conf_types WHERE id = $1", 10001, rowcount=1),
            ok("DELETE FROM conf_types WHERE id = -1", rowcount=0),
            q(
                "SELECT id FROM conf_types WHERE id BETWEEN 10001 AND 10009 ORDER BY id",
                [(10002,), (10003,)],
            ),
            ok("UPDATE conf_types SET i4 = NULL WHERE id = 10003", rowcount=1),
            q("SELECT i4 FROM conf_types WHERE id = 10003", [(None,)]),
            ok("DELETE FROM conf_types WHERE id BETWEEN 10001 AND 10009", rowcount=2),
            q("SELECT count(*) FROM conf_types WHERE id BETWEEN 10001 AND 10009", [(0,)]),
        ),
    ),
    Scenario(
        "insert_select",
        (
            ok(
                "INSERT INTO conf_types (id, t) SELECT id + 10100, name FROM conf_people "
                "WHERE dept_id = 20",
                rowcount=2,
            ),
            q(
                "SELECT id, t FROM conf_types WHERE id BETWEEN 10100 AND 10199 ORDER BY id",
                [(10103, "carol"), (10105, "eve")],
            ),
        ),
    ),
    Scenario(
        "insert_column_defaults_and_not_null",
        (
            err("INSERT INTO conf_people (id, name) VALUES (NULL, 'x')", "23502"),
            ALIVE,
            q("SELECT count(*) FROM conf_people", [(5,)]),
        ),
    ),
]


# --------------------------------------------------------------------------- transactions

TXN_SCENARIOS = [
    Scenario(
        "txn_commit",
        (
            ok("BEGIN"),
            ok("INSERT INTO conf_types (id, t) VALUES ($1, $2)", 11001, "one"),
            ok("INSERT INTO conf_types (id, t) VALUES ($1, $2)", 11002, "two"),
            ok("COMMIT"),
            q(
                "SELECT id, t FROM conf_types WHERE id BETWEEN 11001 AND 11009 ORDER BY id",
                [(11001, "one"), (11002, "two")],
            ),
        ),
    ),
    Scenario(
        "txn_rollback",
        (
            ok("BEGIN"),
            ok("INSERT INTO conf_types (id, t) VALUES ($1, $2)", 11011, "gone"),
            ok("ROLLBACK"),
            q("SELECT count(*) FROM conf_types WHERE id = 11011", [(0,)]),
        ),
    ),
    Scenario(
        "txn_read_only_snapshot",
        (
            ok("INSERT INTO conf_types (id, t) VALUES (11021, 'before')"),
            ok("BEGIN", session=0),
            q("SELECT count(*) FROM conf_types WHERE id BETWEEN 11021 AND 11029", [(1,)]),
            ok("INSERT INTO conf_types (id, t) VALUES (11022, 'during')", session=1),
            q(
                "SELECT count(*) FROM conf_types WHERE id BETWEEN 11021 AND 11029",
                [(2,)],
                session=1,
            ),
            q("SELECT count(*) FROM conf_types WHERE id BETWEEN 11021 AND 11029", [(1,)]),
            ok("COMMIT"),
            q("SELECT count(*) FROM conf_types WHERE id BETWEEN 11021 AND 11029", [(2,)]),
        ),
        sessions=2,
    ),
    Scenario(
        "txn_writes_invisible_until_commit",
        (
            ok("BEGIN"),
            ok("INSERT INTO conf_types (id, t) VALUES (11031, 'w')"),
            q("SELECT count(*) FROM conf_types WHERE id = 11031", [(0,)], session=1),
            ok("COMMIT"),
            q("SELECT count(*) FROM conf_types WHERE id = 11031", [(1,)], session=1),
        ),
        sessions=2,
    ),
    Scenario(
        "txn_read_then_write_is_25000",
        (
            ok("BEGIN"),
            q("SELECT count(*) FROM conf_types WHERE id = 11041", [(0,)]),
            err("INSERT INTO conf_types (id) VALUES (11041)", "25000"),
            ok("ROLLBACK"),
            ALIVE,
            q("SELECT count(*) FROM conf_types WHERE id = 11041", [(0,)]),
        ),
    ),
    Scenario(
        "txn_write_then_read_is_25000",
        (
            ok("BEGIN"),
            ok("INSERT INTO conf_types (id) VALUES (11051)"),
            err("SELECT count(*) FROM conf_types", "25000"),
            ok("ROLLBACK"),
            ALIVE,
            q("SELECT count(*) FROM conf_types WHERE id = 11051", [(0,)]),
        ),
    ),
    Scenario(
        "txn_error_aborts_block",
        (
            ok("BEGIN"),
            ok("INSERT INTO conf_types (id) VALUES (11061)"),
            err("INSERT INTO conf_types (id, i4) VALUES (11062, 'not a number')", "22P02"),
            err("INSERT INTO conf_types (id) VALUES (11063)", "25P02"),
            ok("COMMIT"),  # ends the failed block: a rollback
            ALIVE,
            q("SELECT count(*) FROM conf_types WHERE id BETWEEN 11061 AND 11069", [(0,)]),
        ),
    ),
    Scenario(
        "txn_ddl_in_write_txn",
        (
            ok("BEGIN"),
            ok("INSERT INTO conf_types (id) VALUES (11071)"),
            err("CREATE TABLE conf_never (a int4)", "25001"),
            ok("ROLLBACK"),
            ALIVE,
        ),
    ),
]


# --------------------------------------------------------------------------- errors

ERROR_SCENARIOS = [
    Scenario(
        "error_42P01_undefined_table",
        (
            *err_then_alive("SELECT * FROM no_such_table", "42P01"),
            *err_then_alive("INSERT INTO no_such_table VALUES (1)", "42P01"),
            *err_then_alive("SELECT * FROM conf_people p JOIN nope n ON true", "42P01"),
        ),
    ),
    Scenario(
        "error_42601_syntax",
        (
            *err_then_alive("SELEC 1", "42601"),
            *err_then_alive("SELECT * FROM", "42601"),
            *err_then_alive("SELECT 1 1", "42601"),
            *err_then_alive("CREATE TABLE (a int4)", "42601"),
        ),
    ),
    Scenario(
        "error_42703_undefined_column",
        (
            *err_then_alive("SELECT nope FROM conf_people", "42703"),
            *err_then_alive("INSERT INTO conf_people (nope) VALUES (1)", "42703"),
            *err_then_alive("UPDATE conf_people SET nope = 1", "42703"),
        ),
    ),
    Scenario(
        "error_42703_qualified_column",
        (*err_then_alive("SELECT p.nope FROM conf_people p", "42703"),),
    ),
    Scenario(
        "error_22P02_invalid_text",
        (
            *err_then_alive("SELECT 'abc'::int4", "22P02"),
            *err_then_alive("INSERT INTO conf_types (id, i4) VALUES (1, 'abc')", "22P02"),
            *err_then_alive("SELECT 'not-a-uuid'::uuid", "22P02"),
        ),
    ),
    Scenario(
        "error_42804_datatype_mismatch",
        (*err_then_alive("SELECT id FROM conf_people WHERE id", "42804"),),
    ),
    Scenario(
        "error_22012_division_by_zero",
        (
            *err_then_alive("SELECT 1 / 0", "22012"),
            *err_then_alive("SELECT salary / 0 FROM conf_people", "22012"),
        ),
    ),
    Scenario(
        "error_42P07_duplicate_table",
        (
            *err_then_alive("CREATE TABLE conf_people (a int4)", "42P07"),
            *err_then_alive("CREATE VIEW conf_depts AS SELECT 1", "42P07"),
        ),
    ),
    Scenario(
        "error_0A000_unsupported",
        (
            *err_then_alive("CREATE TABLE conf_serial (a serial)", "0A000"),
            *err_then_alive("INSERT INTO conf_types (id) VALUES (1) RETURNING id", "0A000"),
            *err_then_alive("SELECT * FROM conf_people AS OF 1", "0A000"),
        ),
    ),
    Scenario(
        "error_other_states",
        (
            *err_then_alive("SELECT 2147483647::int4 + 1", "22003"),
            *err_then_alive("SELECT no_such_function(1)", "42883"),
        ),
    ),
    Scenario(
        "error_22P02_bad_parameter_text",
        (*err_then_alive("SELECT * FROM conf_people WHERE id = $1", "22P02", "x1"),),
        # asyncpg encodes parameters by the described type and rejects "x1" itself
        not_for=("asyncpg",),
    ),
]


# --------------------------------------------------------------------------- session, catalog

SESSION_SCENARIOS = [
    Scenario(
        "set_show_reset",
        (
            ok("SET application_name = 'conformance'"),
            q("SHOW application_name", [("conformance",)]),
            ok("RESET application_name"),
            q("SHOW application_name", [(ANY,)]),
            q("SHOW search_path", [("public",)]),
            q("SHOW transaction_isolation", [("strict serializable",)]),
            err("SET no_such_variable = 1", "42704"),
            ALIVE,
        ),
    ),
    Scenario(
        "mz_catalog_tables",
        (
            q(
                "SELECT name FROM mz_catalog.mz_tables WHERE name LIKE 'conf_%' ORDER BY name",
                [("conf_depts",), ("conf_people",), ("conf_types",)],
            ),
            q("SELECT count(*) > 0 FROM mz_catalog.mz_sessions", [(True,)]),
            q("SELECT count(*) > 0 FROM mz_tables", [(True,)]),
            q(
                "SELECT c.name FROM mz_catalog.mz_columns c JOIN mz_catalog.mz_tables t "
                "ON c.id = t.id WHERE t.name = 'conf_depts' ORDER BY c.position",
                [("id",), ("name",)],
            ),
            q("EXPLAIN TIMESTAMP FOR SELECT * FROM conf_people", None),
            q("SHOW TABLES", [("conf_depts",), ("conf_people",), ("conf_types",)]),
        ),
    ),
    Scenario(
        "server_functions",
        (
            q("SELECT current_database()", [("twinstream",)]),
            q("SELECT current_schema()", [("public",)]),
            q("SELECT current_user", [("twinstream",)]),
            q(
                "SELECT version()",
                [(Pred(lambda v: str(v).startswith("PostgreSQL "), "starts with PostgreSQL"),)],
            ),
        ),
    ),
    Scenario(
        "pg_catalog_qualified_functions",
        (
            q(
                "SELECT pg_catalog.version()",
                [(Pred(lambda v: str(v).startswith("PostgreSQL "), "starts with PostgreSQL"),)],
            ),
            q("SELECT pg_catalog.current_schema()", [("public",)]),
        ),
    ),
    Scenario(
        "pg_catalog_relations",
        (
            q(
                "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = 'public'",
                [("public",)],
            ),
            q(
                "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname LIKE 'conf_%' ORDER BY 1",
                [("conf_depts", "r"), ("conf_people", "r"), ("conf_types", "r")],
            ),
            q(
                "SELECT datname FROM pg_catalog.pg_database WHERE datname = 'twinstream'",
                [("twinstream",)],
            ),
            q(
                "SELECT count(*) FROM pg_catalog.pg_class WHERE relname LIKE 'mz_%'",
                [(0,)],
            ),
        ),
    ),
    Scenario(
        "pg_catalog_attribute_types",
        (
            q(
                "SELECT a.attname, a.atttypid::int4 FROM pg_catalog.pg_attribute a "
                "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                "WHERE c.relname = 'conf_depts' AND a.attnum > 0 ORDER BY a.attnum",
                [("id", 23), ("name", 25)],
            ),
            q(
                "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) "
                "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c "
                "ON c.oid = a.attrelid WHERE c.relname = 'conf_types' AND a.attnum > 0 "
                "ORDER BY a.attnum",
                [
                    (t,)
                    for t in (
                        "integer",
                        "boolean",
                        "smallint",
                        "integer",
                        "bigint",
                        "real",
                        "double precision",
                        "numeric(10,2)",
                        "text",
                        "character varying(20)",
                        "date",
                        "timestamp without time zone",
                        "timestamp with time zone",
                        "interval",
                        "uuid",
                        "jsonb",
                        "bytea",
                    )
                ],
            ),
        ),
    ),
    Scenario(
        "pg_type_oids",
        (
            q(
                "SELECT typname, oid::int4 FROM pg_catalog.pg_type "
                "WHERE typname IN ('bool', 'int4', 'text', 'jsonb', 'uuid', 'timestamptz') "
                "ORDER BY typname",
                [
                    ("bool", 16),
                    ("int4", 23),
                    ("jsonb", 3802),
                    ("text", 25),
                    ("timestamptz", 1184),
                    ("uuid", 2950),
                ],
            ),
        ),
    ),
    Scenario(
        "regclass_cast",
        (q("SELECT 'conf_people'::regclass::oid > 0", [(True,)]),),
    ),
    Scenario(
        "information_schema",
        (
            q(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_name LIKE 'conf_%' ORDER BY 1",
                [("conf_depts",), ("conf_people",), ("conf_types",)],
            ),
            q(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'conf_people' "
                "ORDER BY ordinal_position",
                [
                    ("id", "integer", "NO"),
                    ("name", "text", "YES"),
                    ("dept_id", "integer", "YES"),
                    ("salary", "numeric", "YES"),
                    ("hired", "date", "YES"),
                ],
            ),
        ),
    ),
]


SCENARIOS: list[Scenario] = [
    *TYPE_SCENARIOS,
    *QUERY_SCENARIOS,
    *DML_SCENARIOS,
    *TXN_SCENARIOS,
    *ERROR_SCENARIOS,
    *SESSION_SCENARIOS,
]

BY_NAME = {s.name: s for s in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS), "scenario names must be unique"


# --------------------------------------------------------------------------- known bugs

#: scenario -> {client name, client prefix ("psycopg3" matches "psycopg3-text") or "*": why
#: it fails}. Runners mark these strict xfail: fixing the product makes them XPASS (a
#: failure) until the entry is removed here.
KNOWN_BUGS: dict[str, dict[str, str]] = {}


def known_bug(scenario: str, client: str) -> str | None:
    for key, reason in KNOWN_BUGS.get(scenario, {}).items():
        if key == "*" or client == key or client.startswith(key + "-"):
            return reason
    return None


def scenario_params(client: str, *, max_sessions: int = 2) -> list[Any]:
    """pytest parameters (one per scenario) for a runner, with its known bugs as xfails."""
    import pytest

    out = []
    for s in SCENARIOS:
        if s.sessions > max_sessions or client in s.not_for:
            continue
        reason = known_bug(s.name, client)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(s, id=s.name, marks=marks))
    return out


def run_scenario(scenario: Scenario, run: Callable[[Step], Outcome], *, text: bool = False) -> None:
    """Run the steps in order through `run` and check each outcome."""
    for i, step in enumerate(scenario.steps):
        check_step(scenario, i, step, run(step), text=text)
