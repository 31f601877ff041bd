"""Fixtures for the PostgreSQL catalog emulation tests.

`catalog`: an in-process engine with the emulation over a small catalog (two databases, two
schemas, a table of several types, a view, a materialized view, an index), whose `run(sql)`
plans a query as a session does (no server). `envd`: a real environmentd for the client tests
(psql, SQLAlchemy, asyncpg, psycopg).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from twinstream.adapter.engine import QueryEngine
from twinstream.adapter.names import CatalogIndex
from twinstream.adapter.plan import PlannedQuery, qualify
from twinstream.adapter.system_tables import NAMES as SYSTEM_RELATIONS
from twinstream.adapter.system_tables import SystemTables
from twinstream.catalog.state import CatalogState
from twinstream.sql import ast, parse_statement
from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process

PEOPLE_COLUMNS = [
    {"name": "id", "type": "int4", "nullable": False, "default": None},
    {"name": "name", "type": "varchar(20)", "nullable": True, "default": "'anon'"},
    {"name": "salary", "type": "numeric(10,2)", "nullable": True, "default": None},
    {"name": "hired", "type": "timestamptz", "nullable": True, "default": None},
    {"name": "doc", "type": "jsonb", "nullable": True, "default": None},
    {"name": "code", "type": "bpchar(3)", "nullable": True, "default": None},
]


def catalog_entries() -> dict[tuple[str, str], Any]:
    """Two databases; `twinstream` has schemas public and s2 (both with a table `t2`)."""
    return {
        ("role", "u1"): {"name": "twinstream", "superuser": True},
        ("role", "u2"): {"name": "alice", "superuser": False},
        ("database", "u1"): {"name": "twinstream", "owner": "u1"},
        ("database", "u2"): {"name": "other", "owner": "u2"},
        ("schema", "u1"): {"name": "public", "database_id": "u1", "owner": "u1"},
        ("schema", "u2"): {"name": "s2", "database_id": "u1", "owner": "u2"},
        ("schema", "u3"): {"name": "public", "database_id": "u2", "owner": "u2"},
        ("item", "u1"): {
            "type": "table",
            "name": "people",
            "schema_id": "u1",
            "owner": "u1",
            "columns": PEOPLE_COLUMNS,
        },
        ("item", "u2"): {
            "type": "view",
            "name": "people_v",
            "schema_id": "u1",
            "owner": "u1",
            "query": "SELECT id, salary FROM people",
            "duck_sql": 'SELECT "id", "salary" FROM "twinstream"."public"."people"',
            "columns": [
                {"name": "id", "type": "text", "nullable": True},
                {"name": "salary", "type": "text", "nullable": True},
            ],
        },
        ("item", "u3"): {
            "type": "index",
            "name": "people_name_idx",
            "schema_id": "u1",
            "owner": "u1",
            "on_id": "u1",
            "keys": ["name"],
        },
        ("item", "u4"): {
            "type": "table",
            "name": "t2",
            "schema_id": "u1",
            "owner": "u1",
            "columns": [{"name": "a", "type": "int8", "nullable": True}],
        },
        ("item", "u5"): {
            "type": "table",
            "name": "t2",
            "schema_id": "u2",
            "owner": "u2",
            "columns": [{"name": "b", "type": "text", "nullable": True}],
        },
        ("item", "u6"): {
            "type": "materialized_view",
            "name": "people_count",
            "schema_id": "u1",
            "owner": "u1",
            "query": "SELECT count(*) FROM people",
            "duck_sql": 'SELECT count(*) AS "count" FROM "twinstream"."public"."people"',
            "columns": [{"name": "count", "type": "text", "nullable": True}],
        },
        ("item", "u7"): {
            "type": "table",
            "name": "elsewhere",
            "schema_id": "u3",
            "owner": "u2",
            "columns": [{"name": "x", "type": "bool", "nullable": True}],
        },
    }


@dataclass
class Catalog:
    engine: QueryEngine
    system: SystemTables
    index: CatalogIndex

    def plan(
        self,
        sql: str,
        *,
        database: str = "twinstream",
        search_path: Sequence[str] = ("public",),
        user: str = "twinstream",
    ) -> PlannedQuery:
        stmt = parse_statement(sql)
        assert isinstance(stmt, ast.Select), stmt
        return qualify(
            stmt.query,
            self.index,
            database,
            list(search_path),
            SYSTEM_RELATIONS,
            user=user,
            backend_pid=42,
        )

    def run(self, sql: str, *params: object, **kw: Any) -> list[tuple[Any, ...]]:
        planned = self.plan(sql, **kw)
        cur = self.engine.cursor()
        return cur.execute(planned.duck_sql, list(params)).fetchall()

    def one(self, sql: str, *params: object, **kw: Any) -> Any:
        rows = self.run(sql, *params, **kw)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]


def make_catalog() -> Catalog:
    engine = QueryEngine()
    engine.create_database("twinstream")
    engine.create_database("other")
    engine.create_schema("twinstream", "public")
    engine.create_schema("twinstream", "s2")
    engine.create_schema("other", "public")
    engine.create_table(
        "twinstream", "public", "people", [(c["name"], c["type"]) for c in PEOPLE_COLUMNS]
    )
    engine.create_table("twinstream", "public", "t2", [("a", "int8")])
    engine.create_table("twinstream", "s2", "t2", [("b", "text")])
    index = CatalogIndex(CatalogState(catalog_entries()))
    system = SystemTables(engine)
    system.refresh(index, {})
    return Catalog(engine, system, index)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture(scope="module")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvironmentdProcess]:
    """A real `twinstream environmentd` process for this test module."""
    data_dir: Path = tmp_path_factory.mktemp("envd")
    with environmentd_process(data_dir) as env:
        yield env
