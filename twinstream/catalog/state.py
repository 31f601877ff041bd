"""The catalog's contents: a consolidated map (kind, key) -> value, and how rows encode.

A catalog row in the persist shard is `(kind, key, value_json)`; the JSON is canonical (sorted
keys, no spaces) so that a retraction matches its insertion byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from twinstream.catalog.errors import UnknownCatalogData
from twinstream.catalog.fence import FenceToken
from twinstream.persist.types import Row

#: Every kind this binary knows. Anything else in the shard is a newer binary's data.
KINDS = frozenset(
    {
        "config",  # catalog_version and other catalog-level settings
        "fence_token",  # (deploy_generation, epoch); exactly one after any writable open
        "id_alloc",  # next id per id space
        "database",
        "schema",
        "role",
        "cluster",
        "cluster_replica",
        "item",  # tables, views, materialized views, indexes, sources, connections, ...
        "system_parameter",
        "audit_log",
    }
)

ITEM_TYPES = frozenset(
    {"table", "view", "materialized_view", "index", "source", "connection", "secret", "sink"}
)

Key = tuple[str, str]


def encode_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def decode_value(kind: str, key: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise UnknownCatalogData(f"catalog value of {kind}/{key} does not decode: {e}") from e


def row(kind: str, key: str, value: Any) -> Row:
    return (kind, key, encode_value(value))


@dataclass(frozen=True)
class CatalogChange:
    """One change delivered to whoever follows the catalog (diff +1 insert, -1 retract)."""

    kind: str
    key: str
    value: Any
    diff: int


class CatalogState:
    """What the catalog holds at one timestamp."""

    def __init__(self, entries: dict[Key, Any] | None = None) -> None:
        self._entries: dict[Key, Any] = dict(entries or {})

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Row, int]]) -> CatalogState:
        """Decode consolidated (row, diff) pairs; every live row must have diff exactly 1."""
        rows = list(rows)
        unknown = sorted({str(r[0]) for r, _d in rows if r[0] not in KINDS})
        if unknown:
            raise UnknownCatalogData(
                f"catalog holds kinds this binary does not know: {', '.join(unknown)} "
                "(written by a newer version?)"
            )
        entries: dict[Key, Any] = {}
        for r, d in rows:
            kind, key, raw = r
            assert isinstance(kind, str) and isinstance(key, str) and isinstance(raw, str)
            if d != 1:
                raise UnknownCatalogData(f"catalog row {kind}/{key} has multiplicity {d}")
            if (kind, key) in entries:
                raise UnknownCatalogData(f"catalog key {kind}/{key} has two values")
            entries[(kind, key)] = decode_value(kind, key, raw)
        return cls(entries)

    @staticmethod
    def fence_tokens(rows: Iterable[tuple[Row, int]]) -> list[FenceToken]:
        """Tokens in raw rows, decoded before anything else (a newer binary's other data may
        not decode, but its fence must still be recognised)."""
        out = []
        for r, d in rows:
            if r[0] == "fence_token" and d > 0:
                raw = r[2]
                assert isinstance(raw, str)
                out.append(FenceToken.from_json(json.loads(raw)))
        return out

    def copy(self) -> CatalogState:
        return CatalogState(self._entries)

    def get(self, kind: str, key: str) -> Any:
        return self._entries.get((kind, key))

    def has(self, kind: str, key: str) -> bool:
        return (kind, key) in self._entries

    def entries(self, kind: str) -> dict[str, Any]:
        return {k: v for (kd, k), v in self._entries.items() if kd == kind}

    def __iter__(self) -> Iterator[tuple[Key, Any]]:
        return iter(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, changes: Iterable[CatalogChange]) -> None:
        for c in changes:
            k = (c.kind, c.key)
            if c.diff > 0:
                assert k not in self._entries, f"catalog insert of existing {k}"
                self._entries[k] = c.value
            else:
                assert k in self._entries, f"catalog retraction of missing {k}"
                del self._entries[k]

    def diff_to(self, newer: CatalogState) -> list[CatalogChange]:
        """The changes that turn this state into `newer` (retractions first)."""
        out = [
            CatalogChange(k[0], k[1], v, -1)
            for k, v in self._entries.items()
            if k not in newer._entries or newer._entries[k] != v
        ]
        out += [
            CatalogChange(k[0], k[1], v, +1)
            for k, v in newer._entries.items()
            if k not in self._entries or self._entries[k] != v
        ]
        return out

    # -- typed views -----------------------------------------------------------------------

    @property
    def fence_token(self) -> FenceToken | None:
        tokens = [FenceToken.from_json(v) for v in self.entries("fence_token").values()]
        assert len(tokens) <= 1, f"catalog holds {len(tokens)} fence tokens"
        return tokens[0] if tokens else None

    @property
    def catalog_version(self) -> int | None:
        v = self.get("config", "catalog_version")
        return None if v is None else int(v)

    @property
    def initialized(self) -> bool:
        return self.catalog_version is not None

    def items(self) -> dict[str, Any]:
        return self.entries("item")

    def user_item_ids(self) -> set[str]:
        """Committed user item ids, temporary (session-owned) items excluded."""
        return {
            k
            for k, v in self.items().items()
            if k.startswith("u") and not v.get("temporary_session")
        }

    def user_replica_ids(self) -> set[str]:
        return {k for k in self.entries("cluster_replica") if k.startswith("u")}

    def system_parameters(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.entries("system_parameter").items()}
