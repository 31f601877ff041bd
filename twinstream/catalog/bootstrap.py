"""What a fresh catalog holds: the default role, database, schemas, cluster and parameters."""

from __future__ import annotations

from twinstream.catalog.txn import Transaction

DEFAULT_USER = "twinstream"
DEFAULT_DATABASE = "twinstream"
DEFAULT_CLUSTER = "quickstart"
DEFAULT_REPLICA_SIZE = "1"


def bootstrap(txn: Transaction, now_ms: int) -> None:
    role_id = txn.allocate_id("role")
    txn.insert("role", role_id, {"name": DEFAULT_USER, "superuser": True})
    db_id = txn.allocate_id("database")
    txn.insert("database", db_id, {"name": DEFAULT_DATABASE, "owner": role_id})
    schema_id = txn.allocate_id("schema")
    txn.insert("schema", schema_id, {"name": "public", "database_id": db_id, "owner": role_id})
    cluster_id = txn.allocate_id("cluster")
    txn.insert(
        "cluster",
        cluster_id,
        {
            "name": DEFAULT_CLUSTER,
            "owner": role_id,
            "size": DEFAULT_REPLICA_SIZE,
            "replication_factor": 1,
            "managed": True,
        },
    )
    replica_id = txn.allocate_id("replica")
    txn.insert(
        "cluster_replica",
        replica_id,
        {"name": "r1", "cluster_id": cluster_id, "size": DEFAULT_REPLICA_SIZE},
    )
    if txn.get("id_alloc", "item") is None:
        txn.insert("id_alloc", "item", 1)
    if txn.get("id_alloc", "audit_log") is None:
        txn.insert("id_alloc", "audit_log", 1)
    txn.audit("create", "environment", {"database": DEFAULT_DATABASE}, now_ms)
