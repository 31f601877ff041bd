"""A catalog transaction: changes staged against a view of the state, committed atomically."""

from __future__ import annotations

from typing import Any

from twinstream.catalog.errors import UniquenessViolation
from twinstream.catalog.state import KINDS, CatalogChange, CatalogState


class Transaction:
    """Reads see the transaction's own writes; nothing is durable until `commit`."""

    def __init__(self, base: CatalogState, *, base_upper: int | None = None) -> None:
        self._view = base.copy()
        self.base_upper = base_upper
        self.changes: list[CatalogChange] = []
        self._audit_seq = 0

    @property
    def view(self) -> CatalogState:
        return self._view

    def _push(self, change: CatalogChange) -> None:
        assert change.kind in KINDS, f"unknown catalog kind {change.kind}"
        self._view.apply([change])
        self.changes.append(change)

    def get(self, kind: str, key: str) -> Any:
        return self._view.get(kind, key)

    def entries(self, kind: str) -> dict[str, Any]:
        return self._view.entries(kind)

    def insert(self, kind: str, key: str, value: Any) -> None:
        if self._view.has(kind, key):
            raise UniquenessViolation(f"catalog {kind} {key} already exists")
        self._push(CatalogChange(kind, key, value, +1))

    def delete(self, kind: str, key: str) -> Any:
        old = self._view.get(kind, key)
        if not self._view.has(kind, key):
            raise UniquenessViolation(f"catalog {kind} {key} does not exist")
        self._push(CatalogChange(kind, key, old, -1))
        return old

    def upsert(self, kind: str, key: str, value: Any) -> None:
        if self._view.has(kind, key):
            if self._view.get(kind, key) == value:
                return
            self.delete(kind, key)
        self.insert(kind, key, value)

    def allocate_id(self, space: str, prefix: str = "u") -> str:
        """Next id in an id space (items, replicas, clusters, ...): `u1`, `u2`, ..."""
        nxt = int(self._view.get("id_alloc", space) or 1)
        self.upsert("id_alloc", space, nxt + 1)
        return f"{prefix}{nxt}"

    def audit(self, event: str, object_type: str, details: dict[str, Any], at_ms: int) -> None:
        """Append an audit-log event (kept in the catalog, ordered by its key)."""
        self._audit_seq += 1
        nxt = int(self._view.get("id_alloc", "audit_log") or 1)
        self.upsert("id_alloc", "audit_log", nxt + 1)
        self.insert(
            "audit_log",
            f"{nxt:012d}",
            {"event": event, "object_type": object_type, "details": details, "at_ms": at_ms},
        )
