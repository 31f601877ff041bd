"""PRIMARY KEY enforcement for tables: a write may not leave two rows with the same key.

Every table write reaches the coordinator as (row, diff) changes per table. Before group
commit takes a write, `KeyGuard.reserve` nets its changes per key, looks the keys it adds up
in the table mirror (which holds every acknowledged commit once flushed) and in the keys
of writes still in flight, and raises 23505 on a duplicate; otherwise it records the added
keys as in flight until the commit is done (`release`). Check and reservation run with no
await in between, so two concurrent writers of one key cannot both pass. A delete still in
flight does not free its key yet (a concurrent re-insert is refused rather than waited for,
where PostgreSQL would block).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twinstream.adapter.errors import AdapterError
from twinstream.adapter.names import CatalogIndex, ItemRef
from twinstream.adapter.types import oid_of
from twinstream.persist.types import Diff, Row
from twinstream.pgwire.types import encode_text

if TYPE_CHECKING:
    import duckdb

    from twinstream.adapter.engine import QueryEngine

UNIQUE_VIOLATION = "23505"
#: Keys looked up per mirror query (bounds the statement's parameter count).
_LOOKUP_CHUNK = 500

Key = tuple[Any, ...]
Reservation = list[tuple[str, Counter[Key]]]


def primary_key_positions(ref: ItemRef) -> list[int] | None:
    pk = ref.value.get("primary_key")
    if not pk:
        return None
    names = [c["name"] for c in ref.columns]
    return [names.index(c) for c in pk["columns"]]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class KeyGuard:
    """Primary key checks against the engine mirror plus the keys of in-flight writes."""

    def __init__(self, engine: QueryEngine) -> None:
        self._engine = engine
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._inflight: dict[str, Counter[Key]] = {}

    def check(self, ref: ItemRef, changes: Sequence[tuple[Row, Diff]]) -> Counter[Key]:
        """Raise 23505 if applying `changes` to `ref` would duplicate a key; return the keys
        the changes add."""
        positions = primary_key_positions(ref)
        if positions is None:
            return Counter()
        net: Counter[Key] = Counter()
        for row, diff in changes:
            net[tuple(row[p] for p in positions)] += diff
        added = Counter({k: d for k, d in net.items() if d > 0})
        if not added:
            return added
        inflight = self._inflight.get(ref.id, Counter())
        for key, d in added.items():
            if d + inflight[key] > 1:
                self._violation(ref, positions, key)
        present = self._present(ref, positions, list(added))
        if present:
            self._violation(ref, positions, present[0])
        return added

    def reserve(
        self, index: CatalogIndex, writes: Mapping[str, Sequence[tuple[Row, Diff]]]
    ) -> Reservation:
        """Check every table of a write and hold its added keys until `release`."""
        checked: Reservation = []
        for item_id, changes in writes.items():
            ref = index.items_by_id.get(item_id)
            if ref is None or primary_key_positions(ref) is None:
                continue
            checked.append((item_id, self.check(ref, changes)))
        for item_id, added in checked:
            self._inflight.setdefault(item_id, Counter()).update(added)
        return checked

    def release(self, reservation: Reservation) -> None:
        for item_id, added in reservation:
            held = self._inflight.get(item_id)
            if held is None:
                continue
            held.subtract(added)
            for key in [k for k, n in held.items() if n <= 0]:
                del held[key]
            if not held:
                del self._inflight[item_id]

    def _present(self, ref: ItemRef, positions: list[int], keys: list[Key]) -> list[Key]:
        """The keys among `keys` that the mirror holds (NULL never matches: keys are NOT
        NULL anyway)."""
        from twinstream.adapter.engine import fqn

        if self._cursor is None:
            self._cursor = self._engine.cursor()
        cols = [_quote(ref.columns[p]["name"]) for p in positions]
        table = fqn(ref.database, ref.schema, ref.name)
        found: list[Key] = []
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            n = len(positions)
            if n == 1:
                marks = ", ".join(f"${i + 1}" for i in range(len(chunk)))
                where = f"{cols[0]} IN ({marks})"
            else:
                tuples = ", ".join(
                    "(" + ", ".join(f"${r * n + c + 1}" for c in range(n)) + ")"
                    for r in range(len(chunk))
                )
                where = f"({', '.join(cols)}) IN ({tuples})"
            sql = f"SELECT {', '.join(cols)} FROM {table} WHERE {where} LIMIT 1"
            res = self._engine.query_sync(self._cursor, sql, [v for k in chunk for v in k])
            found.extend(tuple(r) for r in res.rows)
            if found:
                break
        return found

    @staticmethod
    def _violation(ref: ItemRef, positions: list[int], key: Key) -> None:
        pk = ref.value["primary_key"]
        cols = [ref.columns[p] for p in positions]
        shown = ", ".join(
            "NULL" if v is None else encode_text(oid_of(c["type"]), v)
            for v, c in zip(key, cols, strict=True)
        )
        raise AdapterError(
            UNIQUE_VIOLATION,
            f'duplicate key value violates unique constraint "{pk["name"]}"',
            detail=f"Key ({', '.join(c['name'] for c in cols)})=({shown}) already exists.",
        )
