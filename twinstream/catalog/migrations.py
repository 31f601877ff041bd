"""catalog_version and the ordered migrations between versions.

A fresh catalog is created at the newest version this binary knows; an older durable catalog is
migrated N -> N+1 -> ... in the same compare-and-append that fences (writable: durably, exactly
once) or in memory (savepoint). Tests append a `Migration` to simulate "the next release".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twinstream.catalog.txn import Transaction

#: The version a fresh catalog starts at before any migration.
BASE_CATALOG_VERSION = 1


@dataclass(frozen=True)
class Migration:
    """Moves the catalog from `from_version` to `from_version + 1`."""

    from_version: int
    name: str
    apply: Callable[[Transaction], None]


def _add_audit_allocator(txn: Transaction) -> None:
    if txn.get("id_alloc", "audit_log") is None:
        txn.insert("id_alloc", "audit_log", 1)


DEFAULT_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "ensure audit log id allocator", _add_audit_allocator),
)


def newest_version(migrations: Sequence[Migration]) -> int:
    for i, m in enumerate(migrations):
        assert m.from_version == BASE_CATALOG_VERSION + i, f"migration {m.name} out of order"
    return BASE_CATALOG_VERSION + len(migrations)


def run_migrations(txn: Transaction, migrations: Sequence[Migration], durable: int) -> int:
    """Apply every migration from `durable` on; returns the new version."""
    newest = newest_version(migrations)
    assert durable <= newest, "caller checks for a newer durable version"
    for m in migrations[durable - BASE_CATALOG_VERSION :]:
        m.apply(txn)
    txn.upsert("config", "catalog_version", newest)
    return newest
