"""The values the PostgreSQL CDC library hands to its caller: upstream tables, transactions,
progress marks, and the one error type (`SourceError`, with a machine-readable `kind`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Change",
    "Column",
    "ErrorKind",
    "Lsn",
    "PgConnInfo",
    "Progress",
    "Row",
    "SourceError",
    "Txn",
    "UpstreamTable",
    "format_lsn",
    "parse_lsn",
]

#: A WAL position (pg_lsn) as an unsigned 64-bit integer.
Lsn = int
#: One upstream row: Python values in the table's column order (None for NULL).
Row = tuple[object, ...]

ErrorKind = Literal[
    "unreachable",  # TCP connect failed / connection lost / timed out
    "auth",  # wrong password, no pg_hba entry, unsupported auth method
    "missing_database",
    "permission",  # role lacks REPLICATION / SELECT
    "wal_level",  # upstream wal_level is not logical
    "missing_publication",
    "missing_table",  # requested table is not in the publication / does not exist
    "no_primary_key",  # table has neither a primary key nor REPLICA IDENTITY FULL
    "replica_identity",  # table's REPLICA IDENTITY is not FULL (updates lack the old row)
    "slot_in_use",  # the replication slot is active for another process
    "slot_missing",  # the replication slot does not exist (dropped upstream?)
    "slot_exists",  # CREATE of a slot that already exists
    "too_many_slots",  # max_replication_slots / max_wal_senders exhausted
    "schema_changed",  # a table's columns changed (or it was recreated) while replicating
    "truncated",  # TRUNCATE of a replicated table (cannot be expressed as retractions)
    "protocol",  # unexpected message from upstream
    "upstream",  # any other upstream error
]


class SourceError(Exception):
    """Why talking to the upstream PostgreSQL failed; `kind` is for code, `message` for users.

    `sqlstate` is the upstream SQLSTATE when the error came from the server. `retryable` is a
    hint for the caller's backoff loop: transient conditions (unreachable, slot in use) may heal
    by themselves; configuration errors need a user's fix but a retry does no harm either.
    """

    def __init__(self, kind: ErrorKind, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
        self.message = message
        self.sqlstate = sqlstate

    @property
    def retryable(self) -> bool:
        return self.kind in ("unreachable", "slot_in_use", "too_many_slots", "upstream")


@dataclass(frozen=True)
class PgConnInfo:
    """Where the upstream lives. The caller resolves `password` from its secret."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    #: Seconds allowed for TCP connect plus authentication.
    connect_timeout_s: float = 10.0

    def __repr__(self) -> str:  # never print the password
        return (
            f"PgConnInfo(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"database={self.database!r})"
        )


@dataclass(frozen=True)
class Column:
    """One upstream column.

    `type_name` is PostgreSQL's ``format_type`` (e.g. ``character varying(20)``);
    `sql_type` is the twinstream type its decoded values have (``int4``, ``numeric``,
    ``timestamptz``…; ``text`` for types twinstream does not know).
    """

    name: str
    type_oid: int
    type_name: str
    sql_type: str
    nullable: bool = True


@dataclass(frozen=True)
class UpstreamTable:
    """A published upstream table as validated. `oid` pins the table's identity: a table
    dropped and recreated under the same name is a different table (schema_changed)."""

    schema: str
    name: str
    oid: int
    columns: tuple[Column, ...]
    #: Primary key columns (informational; empty if the table has none).
    key_columns: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True, slots=True)
class Change:
    """One row change: `diff` is +1 (insert) or -1 (retraction). An UPDATE is two changes."""

    table: UpstreamTable
    row: Row
    diff: int


@dataclass(frozen=True)
class Txn:
    """One upstream transaction, delivered whole.

    `commit_lsn` is the position of its commit record; `end_lsn` is just past it and is the
    resume token: once the transaction is durable downstream, ``ack(end_lsn)`` and, after a
    restart, ``stream(start_lsn=end_lsn)`` continues with the next transaction (no duplicate,
    no gap). Transactions arrive in commit order with strictly increasing `end_lsn`.
    """

    commit_lsn: Lsn
    end_lsn: Lsn
    xid: int
    #: Commit time, microseconds since the Unix epoch (upstream's clock).
    commit_time_us: int
    changes: tuple[Change, ...] = field(default=())


@dataclass(frozen=True)
class Progress:
    """Every transaction that commits before `lsn` has been delivered already.

    Emitted for upstream keepalives and for transactions with nothing to replicate, so a
    caller can advance its upstream frontier (and ``ack``) while no data arrives.
    """

    lsn: Lsn


def format_lsn(lsn: Lsn) -> str:
    """``0x16B3748`` → ``0/16B3748`` (PostgreSQL's pg_lsn text form)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> Lsn:
    """``0/16B3748`` → int; raises ValueError on anything else."""
    hi, sep, lo = text.partition("/")
    if not sep or not hi or not lo:
        raise ValueError(f"invalid LSN {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


# PostgreSQL SQLSTATE → error kind, for errors raised by the server.
SQLSTATE_KINDS: Mapping[str, ErrorKind] = {
    "28P01": "auth",  # invalid_password
    "28000": "auth",  # invalid_authorization_specification (pg_hba)
    "3D000": "missing_database",
    "42501": "permission",
    "55006": "slot_in_use",  # object_in_use: slot active for PID n
    "53400": "too_many_slots",  # configuration_limit_exceeded
    "53300": "too_many_slots",  # too_many_connections (wal senders)
    "42710": "slot_exists",
    "57P01": "unreachable",  # admin_shutdown
    "57P02": "unreachable",  # crash_shutdown
    "57P03": "unreachable",  # cannot_connect_now (starting up / shutting down)
}
