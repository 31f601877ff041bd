"""Name resolution over the in-memory catalog: databases, schemas, items, clusters.

A pure index rebuilt from `CatalogState` whenever the catalog changes (the catalog is small).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twinstream.adapter.errors import (
    UNDEFINED_DATABASE,
    UNDEFINED_SCHEMA,
    UNDEFINED_TABLE,
    AdapterError,
)
from twinstream.adapter.temporary import TEMP_SCHEMA_ALIASES, is_temp_schema, is_temporary
from twinstream.catalog.state import CatalogState

#: Schemas that exist in every database and are not in the catalog (served by DuckDB/us).
SYSTEM_SCHEMAS = ("mz_catalog", "pg_catalog", "information_schema", "mz_internal")


@dataclass(frozen=True)
class ItemRef:
    id: str
    database: str
    schema: str
    name: str
    value: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.value["type"])

    @property
    def columns(self) -> list[dict[str, Any]]:
        return list(self.value.get("columns", []))

    def fq(self) -> str:
        return f"{self.database}.{self.schema}.{self.name}"


_versions = itertools.count(1)


class CatalogIndex:
    """`temporary`: the coordinator's in-memory temporary items (never in `state`), indexed
    like durable ones under their session's temporary schema."""

    def __init__(self, state: CatalogState, temporary: Mapping[str, ItemRef] | None = None) -> None:
        self.state = state
        #: Distinct per index instance: plans cached against an older index are stale.
        self.version = next(_versions)
        self.databases: dict[str, str] = {}  # name -> id
        self.database_names: dict[str, str] = {}  # id -> name
        for db_id, v in state.entries("database").items():
            self.databases[v["name"]] = db_id
            self.database_names[db_id] = v["name"]
        self.schemas: dict[tuple[str, str], str] = {}  # (db name, schema name) -> id
        self.schema_names: dict[str, tuple[str, str]] = {}  # id -> (db name, schema name)
        for s_id, v in state.entries("schema").items():
            db = self.database_names.get(v["database_id"])
            if db is None:
                continue
            self.schemas[(db, v["name"])] = s_id
            self.schema_names[s_id] = (db, v["name"])
        self.items: dict[tuple[str, str, str], ItemRef] = {}
        self.items_by_id: dict[str, ItemRef] = {}
        for i_id, v in state.items().items():
            loc = self.schema_names.get(v.get("schema_id", ""))
            if loc is None or is_temporary(v):
                continue  # a durable temporary item: written by older builds, its session is gone
            ref = ItemRef(i_id, loc[0], loc[1], v["name"], v)
            self.items[(loc[0], loc[1], v["name"])] = ref
            self.items_by_id[i_id] = ref
        #: (database, schema) of the temporary schemas that hold items.
        self.temp_schemas: set[tuple[str, str]] = set()
        for ref in (temporary or {}).values():
            self.items[(ref.database, ref.schema, ref.name)] = ref
            self.items_by_id[ref.id] = ref
            self.temp_schemas.add((ref.database, ref.schema))
        self.clusters: dict[str, str] = {v["name"]: k for k, v in state.entries("cluster").items()}
        self.replicas: dict[tuple[str, str], str] = {}
        cluster_names = {k: v["name"] for k, v in state.entries("cluster").items()}
        for r_id, v in state.entries("cluster_replica").items():
            cname = cluster_names.get(v["cluster_id"])
            if cname is not None:
                self.replicas[(cname, v["name"])] = r_id

    def require_database(self, name: str) -> str:
        db_id = self.databases.get(name)
        if db_id is None:
            raise AdapterError(UNDEFINED_DATABASE, f'database "{name}" does not exist')
        return db_id

    def require_schema(self, database: str, schema: str) -> str:
        self.require_database(database)
        s_id = self.schemas.get((database, schema))
        if s_id is None:
            raise AdapterError(UNDEFINED_SCHEMA, f'schema "{schema}" does not exist')
        return s_id

    def resolve_item(
        self, parts: Sequence[str], database: str, search_path: Sequence[str]
    ) -> ItemRef | None:
        """`name`, `schema.name` or `db.schema.name`; None if nothing by that name exists.

        A temporary schema is reachable only from its own session (the one whose search_path
        holds it), by its aliases `mz_temp`/`pg_temp` or its own name."""
        if len(parts) >= 2:
            schema = parts[-2]
            if schema in TEMP_SCHEMA_ALIASES or is_temp_schema(schema):
                own = next((p for p in search_path if is_temp_schema(p)), None)
                if own is None or (is_temp_schema(schema) and schema != own):
                    return None
                parts = [*parts[:-2], own, parts[-1]]
        if len(parts) == 3:
            return self.items.get((parts[0], parts[1], parts[2]))
        if len(parts) == 2:
            return self.items.get((database, parts[0], parts[1]))
        assert len(parts) == 1, f"bad name {parts!r}"
        for schema in search_path:
            ref = self.items.get((database, schema, parts[0]))
            if ref is not None:
                return ref
        return None

    def require_item(
        self, parts: Sequence[str], database: str, search_path: Sequence[str]
    ) -> ItemRef:
        ref = self.resolve_item(parts, database, search_path)
        if ref is None:
            raise AdapterError(UNDEFINED_TABLE, f'relation "{".".join(parts)}" does not exist')
        return ref

    def dependents(self, item_id: str) -> list[ItemRef]:
        return [r for r in self.items_by_id.values() if item_id in r.value.get("dependencies", [])]

    def items_in_schema(self, schema_id: str) -> list[ItemRef]:
        return [r for r in self.items_by_id.values() if r.value.get("schema_id") == schema_id]
