"""Temporary items: names of the per-session temporary schema and the id space.

A temporary table or view lives only in the coordinator's memory (never in the durable
catalog, so a new generation, the DDL check and a restart never see it), in a schema of its
own per session, `mz_temp_<conn id>`, which the session reaches as `mz_temp` or `pg_temp` and
which its search_path searches first (as in PostgreSQL). See doc/design/temporary-items.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Names a session uses for its own temporary schema.
TEMP_SCHEMA_ALIASES = ("mz_temp", "pg_temp")
#: The engine/catalog-index schema of a session's temporary items is this plus its conn id.
TEMP_SCHEMA_PREFIX = "mz_temp_"
#: Ids of temporary items start with this (durable user items start with "u").
TEMP_ID_PREFIX = "t"


def temp_schema(conn_id: int) -> str:
    return f"{TEMP_SCHEMA_PREFIX}{conn_id}"


def is_temp_schema(schema: str) -> bool:
    return schema.startswith(TEMP_SCHEMA_PREFIX)


def is_temporary_id(item_id: str) -> bool:
    return item_id.startswith(TEMP_ID_PREFIX)


def is_temporary(value: Mapping[str, Any]) -> bool:
    """An item value created by CREATE TEMPORARY (it names its session)."""
    return value.get("temporary_session") is not None
