"""Conformance through SQLAlchemy 2 Core on psycopg 3 (`postgresql+psycopg://`).

A plain `create_engine(url)` cannot connect today (the dialect's first-connect queries fail),
so everything past `test_default_engine_connects` uses a *probe engine* with two client-side
workarounds — the server version is not read from `version()` and psycopg's hstore lookup
(which needs SAVEPOINT) is disabled — to find out what fails next. Reflection
(`inspect(engine)`, `MetaData.reflect`) is pg_catalog through and through; each inspector
method is its own test, and a failure names the catalog query that broke
(`Recorder.describe`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB

from twinstream.testing.environmentd import EnvironmentdProcess


def url(env: EnvironmentdProcess) -> str:
    return f"postgresql+psycopg://twinstream@127.0.0.1:{env.sql_port}/twinstream"


class Recorder:
    """Remembers the statements an engine sent, to name the one that failed."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def describe(self) -> str:
        if not self.statements:
            return "(no statement sent)"
        return " ".join(self.statements[-1].split())[:600]


def probe_engine(env: EnvironmentdProcess, **kw: Any) -> sa.Engine:
    # prepare_threshold=None: psycopg must not auto-prepare, because a rollback then sends
    # DEALLOCATE ALL, which fails (see test_rollback_after_auto_prepared_statements)
    kw.setdefault("connect_args", {"prepare_threshold": None})
    engine = sa.create_engine(url(env), use_native_hstore=False, pool_size=2, **kw)
    # select pg_catalog.version() fails server-side (see test_default_engine_connects)
    engine.dialect._get_server_version_info = lambda connection: (15, 0)  # type: ignore[method-assign]
    return engine


@pytest.fixture(scope="module")
def engine(envd: EnvironmentdProcess) -> Iterator[sa.Engine]:
    eng = probe_engine(envd)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def recorder(engine: sa.Engine) -> Recorder:
    return Recorder(engine)


@pytest.fixture(scope="module")
def items(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    table = sa.Table(
        "sa_items",
        md,
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("name", sa.String(20)),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("created", sa.DateTime),
        sa.Column("flag", sa.Boolean),
    )
    md.create_all(engine, checkfirst=False)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIEW sa_items_view AS SELECT id, name FROM sa_items")
    return table


def with_sql(recorder: Recorder, fn: Callable[[], Any]) -> Any:
    """Run fn; on failure re-raise with the last statement SQLAlchemy sent."""
    recorder.statements.clear()
    try:
        return fn()
    except Exception as e:
        raise AssertionError(f"{type(e).__name__}: {e}\n  last SQL: {recorder.describe()}") from e


# --------------------------------------------------------------------------- connecting


def test_default_engine_connects(envd: EnvironmentdProcess) -> None:
    eng = sa.create_engine(url(envd))
    try:
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        eng.dispose()


def test_engine_with_native_hstore_lookup_connects(envd: EnvironmentdProcess) -> None:
    eng = sa.create_engine(url(envd))
    eng.dialect._get_server_version_info = lambda connection: (15, 0)  # type: ignore[method-assign]
    try:
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        eng.dispose()


def test_probe_engine_connects(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert conn.execute(sa.text("SELECT :a + 1"), {"a": 41}).scalar() == 42


def test_default_schema_name(engine: sa.Engine) -> None:
    with engine.connect():
        assert engine.dialect.default_schema_name == "public"


# --------------------------------------------------------------------------- Core CRUD


def test_core_insert_select_update_delete(engine: sa.Engine, items: sa.Table) -> None:
    t0 = dt.datetime(2024, 1, 2, 3, 4, 5, 600000)
    with engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {"id": 1, "name": "one", "amount": Decimal("1.50"), "created": t0, "flag": True},
                {"id": 2, "name": "two", "amount": Decimal("2.00"), "created": t0, "flag": False},
                {"id": 3, "name": None, "amount": None, "created": None, "flag": None},
            ],
        )
    with engine.connect() as conn:
        rows = conn.execute(sa.select(items).order_by(items.c.id)).all()
    assert [tuple(r) for r in rows] == [
        (1, "one", Decimal("1.50"), t0, True),
        (2, "two", Decimal("2.00"), t0, False),
        (3, None, None, None, None),
    ]
    with engine.begin() as conn:
        res = conn.execute(items.update().where(items.c.id == 2).values(name="TWO"))
        assert res.rowcount == 1
    with engine.begin() as conn:
        res = conn.execute(items.delete().where(items.c.id == 3))
        assert res.rowcount == 1
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(items)).scalar()
        names = conn.execute(
            sa.select(items.c.name).where(items.c.amount > Decimal("1")).order_by(items.c.id)
        ).scalars()
        assert total == 2
        assert list(names) == ["one", "TWO"]
        page = conn.execute(sa.select(items.c.id).order_by(items.c.id.desc()).limit(1).offset(1))
        assert page.scalars().all() == [1]


def test_core_aggregates_and_join(engine: sa.Engine, items: sa.Table) -> None:
    md = sa.MetaData()
    view = sa.Table("sa_items_view", md, sa.Column("id", sa.Integer), sa.Column("name", sa.Text))
    with engine.connect() as conn:
        q = (
            sa.select(view.c.name, sa.func.max(items.c.amount))
            .join_from(view, items, view.c.id == items.c.id)
            .group_by(view.c.name)
            .order_by(view.c.name)
        )
        rows = [tuple(r) for r in conn.execute(q)]
    assert rows == [("TWO", Decimal("2.00")), ("one", Decimal("1.50"))]


def test_transaction_rollback(engine: sa.Engine, items: sa.Table) -> None:
    with engine.connect() as conn:
        trans = conn.begin()
        conn.execute(items.insert().values(id=100, name="rolled back"))
        trans.rollback()
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(items).where(items.c.id == 100)
        ).scalar()
    assert count == 0


def test_rollback_after_auto_prepared_statements(envd: EnvironmentdProcess) -> None:
    eng = probe_engine(envd, connect_args={})
    try:
        for _ in range(3):
            with eng.connect() as conn:
                for i in range(6):
                    assert conn.execute(sa.text("SELECT :x"), {"x": i}).scalar() == i
    finally:
        eng.dispose()


def test_jsonb_column(engine: sa.Engine) -> None:
    md = sa.MetaData()
    docs = sa.Table(
        "sa_docs", md, sa.Column("id", sa.Integer, autoincrement=False), sa.Column("doc", JSONB)
    )
    md.create_all(engine, checkfirst=False)
    with engine.begin() as conn:
        conn.execute(docs.insert().values(id=1, doc={"a": [1, None], "b": {"c": "d"}}))
    with engine.connect() as conn:
        assert conn.execute(sa.select(docs.c.doc)).scalar() == {"a": [1, None], "b": {"c": "d"}}


def test_primary_key_table(engine: sa.Engine) -> None:
    md = sa.MetaData()
    pk = sa.Table(
        "sa_pk",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", sa.Text),
    )
    sa.Table(
        "sa_pk2",
        md,
        sa.Column("a", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("b", sa.Text, primary_key=True),
    )
    md.create_all(engine, checkfirst=False)
    with engine.begin() as conn:
        conn.execute(pk.insert().values(id=1, v="one"))
    with pytest.raises(sa.exc.IntegrityError) as info, engine.begin() as conn:
        conn.execute(pk.insert().values(id=1, v="again"))
    assert getattr(info.value.orig, "sqlstate", None) == "23505"
    insp = sa.inspect(engine)
    assert insp.get_pk_constraint("sa_pk") == {
        "constrained_columns": ["id"],
        "name": "sa_pk_pkey",
        "comment": None,
        "dialect_options": {"postgresql_include": []},
    }
    reflected = sa.Table("sa_pk2", sa.MetaData(), autoload_with=engine)
    assert [c.name for c in reflected.primary_key.columns] == ["a", "b"]
    assert insp.get_indexes("sa_pk") == []  # the key's index is not a separate index


# --------------------------------------------------------------------------- reflection


def test_has_table(engine: sa.Engine, items: sa.Table, recorder: Recorder) -> None:
    assert with_sql(recorder, lambda: sa.inspect(engine).has_table("sa_items"))


def test_create_all_default_checkfirst(engine: sa.Engine, recorder: Recorder) -> None:
    md = sa.MetaData()
    sa.Table("sa_checkfirst", md, sa.Column("id", sa.Integer, autoincrement=False))
    with_sql(recorder, lambda: md.create_all(engine))


def test_create_all_is_idempotent(engine: sa.Engine, recorder: Recorder) -> None:
    md = sa.MetaData()
    sa.Table("sa_twice", md, sa.Column("id", sa.Integer, autoincrement=False))
    with_sql(recorder, lambda: md.create_all(engine))
    with_sql(recorder, lambda: md.create_all(engine))


def test_drop_all_drops(engine: sa.Engine, recorder: Recorder) -> None:
    md = sa.MetaData()
    sa.Table("sa_dropme", md, sa.Column("id", sa.Integer, autoincrement=False))
    md.create_all(engine, checkfirst=False)
    with_sql(recorder, lambda: md.drop_all(engine))
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT count(*) FROM mz_catalog.mz_tables WHERE name = 'sa_dropme'"
        ).scalar()
    assert rows == 0


def _inspect(engine: sa.Engine, method: str, *args: Any) -> Any:
    return getattr(sa.inspect(engine), method)(*args)


REFLECTION: list[tuple[str, tuple[Any, ...], Callable[[Any], bool]]] = [
    (
        "get_table_names",
        (),
        lambda v: "sa_items" in v and not any(n.startswith("mz_") for n in v),
    ),
    (
        "get_schema_names",
        (),
        lambda v: "public" in v,
    ),
    (
        "get_view_names",
        (),
        lambda v: "sa_items_view" in v,
    ),
    (
        "get_columns",
        ("sa_items",),
        lambda v: [c["name"] for c in v] == ["id", "name", "amount", "created", "flag"],
    ),
    (
        "get_pk_constraint",
        ("sa_items",),
        lambda v: v.get("constrained_columns") == [],
    ),
    (
        "get_foreign_keys",
        ("sa_items",),
        lambda v: v == [],
    ),
    (
        "get_indexes",
        ("sa_items",),
        lambda v: v == [],
    ),
    (
        "get_unique_constraints",
        ("sa_items",),
        lambda v: v == [],
    ),
    (
        "get_check_constraints",
        ("sa_items",),
        lambda v: v == [],
    ),
    (
        "get_table_comment",
        ("sa_items",),
        lambda v: v.get("text") is None,
    ),
]


@pytest.mark.parametrize(
    ("method", "args", "check"), [pytest.param(m, a, c, id=m) for m, a, c in REFLECTION]
)
def test_inspector(
    engine: sa.Engine,
    items: sa.Table,
    recorder: Recorder,
    method: str,
    args: tuple[Any, ...],
    check: Callable[[Any], bool],
) -> None:
    value = with_sql(recorder, lambda: _inspect(engine, method, *args))
    assert check(value), f"{method}{args} -> {value!r}"


def test_metadata_reflect(engine: sa.Engine, items: sa.Table, recorder: Recorder) -> None:
    md = sa.MetaData()
    with_sql(recorder, lambda: md.reflect(engine, only=["sa_items"]))
    table = md.tables["sa_items"]
    assert [c.name for c in table.columns] == ["id", "name", "amount", "created", "flag"]
    assert isinstance(table.c.amount.type, sa.Numeric)
    assert (table.c.amount.type.precision, table.c.amount.type.scale) == (10, 2)


def test_table_autoload(engine: sa.Engine, items: sa.Table, recorder: Recorder) -> None:
    table = with_sql(recorder, lambda: sa.Table("sa_items", sa.MetaData(), autoload_with=engine))
    assert table.c.name.type.length == 20
