"""PostgreSQL change data capture: the upstream side of ``CREATE SOURCE ... FROM POSTGRES``.

A library with no knowledge of persist or the catalog; the sources framework calls it::

    import contextlib

    from twinstream.storage.postgres import PgConnInfo, PgReplicator, Progress, Txn, validate


    async def ingest(info: PgConnInfo, durable_lsn: int | None) -> None:
        tables = await validate(info, "pub", [("public", "t")])  # SourceError if unusable
        async with PgReplicator(info, "pub", tables) as rep:
            if durable_lsn is None:  # first start: slot + consistent snapshot
                async with rep.snapshot("slot") as snap:
                    async for table, rows in snap.batches():
                        ...  # append (row, +1) at the snapshot's timestamp
                durable_lsn = snap.lsn  # make durable together with the rows
            stream = rep.stream("slot", start_lsn=durable_lsn)
            async with contextlib.aclosing(stream):  # ends the walsender session promptly
                async for item in stream:
                    if isinstance(item, Txn):
                        ...  # append every (change.row, change.diff) at ONE timestamp
                        durable_lsn = item.end_lsn
                    else:  # Progress: nothing before item.lsn is still to come
                        durable_lsn = item.lsn
                    await rep.ack(durable_lsn)  # only after it is durable downstream

Guarantees: transactions arrive whole, in commit order, with strictly increasing `end_lsn`;
resuming with ``start_lsn`` = the last durable `end_lsn` / `Progress.lsn` repeats nothing and
skips nothing. UPDATE = retract old row + insert new row, DELETE = retract; this needs
REPLICA IDENTITY FULL on every table (checked by `validate`). TRUNCATE of a replicated table
and column changes raise `SourceError` (kinds ``truncated`` / ``schema_changed``). Every
failure is a `SourceError` with a `kind` (see `ErrorKind`) and a message fit for users.
Design: doc/design/sources-postgres.md.
"""

from twinstream.storage.postgres.model import (
    Change,
    Column,
    ErrorKind,
    Lsn,
    PgConnInfo,
    Progress,
    Row,
    SourceError,
    Txn,
    UpstreamTable,
    format_lsn,
    parse_lsn,
)
from twinstream.storage.postgres.replicator import PgReplicator, Snapshot, SnapshotReader
from twinstream.storage.postgres.validate import validate

__all__ = [
    "Change",
    "Column",
    "ErrorKind",
    "Lsn",
    "PgConnInfo",
    "PgReplicator",
    "Progress",
    "Row",
    "Snapshot",
    "SnapshotReader",
    "SourceError",
    "Txn",
    "UpstreamTable",
    "format_lsn",
    "parse_lsn",
    "validate",
]
