"""Sans-IO decoding of the pgoutput logical replication stream (protocol version 1).

`TxnAssembler.feed` takes the payload of one XLogData and returns a whole `Txn` at its Commit
(changes are buffered between Begin and Commit, so a transaction is delivered atomically or
not at all), a `Progress` for a transaction with nothing for us, or None.

Rules (see doc/design/sources-postgres.md):
- Tables are identified by OID; a Relation message whose columns differ from the validated
  table (names or type OIDs) raises `schema_changed`.
- UPDATE retracts the old row and inserts the new one; DELETE retracts the old row. Both need
  the complete old row, i.e. REPLICA IDENTITY FULL; a key-only old tuple ('K') or a missing
  one raises `replica_identity`. Unchanged TOASTed values ('u') in the new row are taken
  from the old row.
- TRUNCATE of a replicated table raises `truncated` (the library keeps no copy of the table,
  so it cannot retract its rows; the caller re-snapshots).
- Changes to tables we do not replicate are ignored.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twinstream.pgwire import types as pgtypes
from twinstream.storage.postgres.model import (
    Change,
    Progress,
    Row,
    SourceError,
    Txn,
    UpstreamTable,
)

__all__ = ["SQL_TYPES", "TxnAssembler", "decode_value", "sql_type_for"]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
#: Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
PG_EPOCH_UNIX_US = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000

#: Type OID → the twinstream SQL type of its decoded values; anything else decodes as text.
SQL_TYPES: dict[int, str] = {
    16: "bool",
    17: "bytea",
    18: "text",
    19: "text",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "int8",
    114: "json",
    700: "float4",
    701: "float8",
    1042: "text",
    1043: "text",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    1186: "interval",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
}


def sql_type_for(type_oid: int) -> str:
    return SQL_TYPES.get(type_oid, "text")


def _converter(type_oid: int) -> Callable[[str], object]:
    t = pgtypes.TYPES.get(type_oid) if type_oid in SQL_TYPES else None
    return (lambda s: s) if t is None else t.text_in


def decode_value(type_oid: int, text: str | None) -> object:
    """A text-format upstream value → its Python value (None stays None)."""
    return None if text is None else _converter(type_oid)(text)


@dataclass
class _Relation:
    table: UpstreamTable | None  # None: not replicated by us
    converters: tuple[Callable[[str], object], ...]


_UNCHANGED = object()  # an unchanged TOASTed value in a new tuple


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1  # past the message type byte

    def i8(self) -> int:
        v = self.data[self.pos]
        self.pos += 1
        return v

    def i16(self) -> int:
        (v,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        (v,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def u32(self) -> int:
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def cstring(self) -> str:
        end = self.data.index(b"\0", self.pos)
        s = self.data[self.pos : end].decode()
        self.pos = end + 1
        return s

    def tuple_data(self, rel: _Relation) -> list[object]:
        n = self.i16()
        convs = rel.converters
        if n != len(convs):
            raise _schema_changed(rel, f"tuple has {n} columns, expected {len(convs)}")
        data, pos = self.data, self.pos
        out: list[object] = []
        for conv in convs:
            kind = data[pos]
            pos += 1
            if kind == 0x74:  # 't'
                (size,) = _I32.unpack_from(data, pos)
                pos += 4
                out.append(conv(data[pos : pos + size].decode()))
                pos += size
            elif kind == 0x6E:  # 'n'
                out.append(None)
            elif kind == 0x75:  # 'u'
                out.append(_UNCHANGED)
            else:
                raise SourceError("protocol", f"unexpected tuple column kind {chr(kind)!r}")
        self.pos = pos
        return out


def _schema_changed(rel: _Relation, why: str) -> SourceError:
    name = rel.table.qualified if rel.table else "?"
    return SourceError("schema_changed", f"table {name} changed upstream: {why}")


def _full_identity_error(table: UpstreamTable, op: str) -> SourceError:
    return SourceError(
        "replica_identity",
        f"{op} on {table.qualified} did not carry the complete old row; the table needs "
        f"REPLICA IDENTITY FULL (ALTER TABLE {table.qualified} REPLICA IDENTITY FULL)",
    )


class TxnAssembler:
    """Pure state machine over pgoutput messages; see the module docstring."""

    def __init__(self, tables: Sequence[UpstreamTable]) -> None:
        self._by_oid = {t.oid: t for t in tables}
        self._by_name = {(t.schema, t.name): t for t in tables}
        self._relations: dict[int, _Relation] = {}
        self._in_txn = False
        self._begin: tuple[int, int, int] = (0, 0, 0)
        self._changes: list[Change] = []

    def feed(self, data: bytes) -> Txn | Progress | None:
        kind = data[:1]
        if kind in (b"I", b"U", b"D"):
            self._change(kind, data)
            return None
        if kind == b"B":
            if self._in_txn:
                raise SourceError("protocol", "Begin inside a transaction")
            final_lsn, ts, xid = _BEGIN.unpack_from(data, 1)
            self._in_txn, self._begin, self._changes = True, (final_lsn, ts, xid), []
            return None
        if kind == b"C":
            if not self._in_txn:
                raise SourceError("protocol", "Commit outside a transaction")
            _flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(data, 1)
            final_lsn, _begin_ts, xid = self._begin
            if commit_lsn != final_lsn:
                raise SourceError("protocol", "Commit LSN differs from the Begin's final LSN")
            changes, self._changes, self._in_txn = tuple(self._changes), [], False
            if not changes:
                return Progress(end_lsn)
            return Txn(commit_lsn, end_lsn, xid, ts + PG_EPOCH_UNIX_US, changes)
        if kind == b"R":
            self._relation(data)
            return None
        if kind == b"T":
            self._truncate(data)
            return None
        if kind in (b"Y", b"O", b"M"):  # type, origin, logical message: nothing to do
            return None
        raise SourceError("protocol", f"unknown pgoutput message {kind!r}")

    def _relation(self, data: bytes) -> None:
        r = _Reader(data)
        oid = r.u32()
        schema = r.cstring() or "pg_catalog"
        name = r.cstring()
        _replident = r.i8()
        ncols = r.i16()
        cols: list[tuple[str, int]] = []
        for _ in range(ncols):
            _flags = r.i8()
            cname = r.cstring()
            type_oid = r.u32()
            _typmod = r.i32()
            cols.append((cname, type_oid))
        table = self._by_oid.get(oid)
        if table is None:
            known = self._by_name.get((schema, name))
            if known is not None:
                raise SourceError(
                    "schema_changed",
                    f"table {known.qualified} was dropped and recreated upstream "
                    f"(oid {known.oid} → {oid})",
                )
            self._relations[oid] = _Relation(None, tuple(_converter(t) for _, t in cols))
            return
        want = [(c.name, c.type_oid) for c in table.columns]
        if cols != want:
            raise SourceError(
                "schema_changed",
                f"table {table.qualified} changed upstream: columns {want} are now {cols}",
            )
        self._relations[oid] = _Relation(table, tuple(_converter(t) for _, t in cols))

    def _rel(self, r: _Reader) -> _Relation:
        oid = r.u32()
        rel = self._relations.get(oid)
        if rel is None:
            raise SourceError("protocol", f"change for relation {oid} before its Relation message")
        return rel

    def _change(self, kind: bytes, data: bytes) -> None:
        if not self._in_txn:
            raise SourceError("protocol", "change outside a transaction")
        r = _Reader(data)
        rel = self._rel(r)
        table = rel.table
        if kind == b"I":
            if r.i8() != 0x4E:  # 'N'
                raise SourceError("protocol", "Insert without a new tuple")
            new = r.tuple_data(rel)
            if table is not None:
                self._changes.append(Change(table, _row(new), 1))
            return
        tag = r.i8()
        old: list[object] | None = None
        if tag in (0x4B, 0x4F):  # 'K' key only, 'O' full old row
            old = r.tuple_data(rel)
            if tag == 0x4B:
                old = None
            if kind == b"U":
                tag = r.i8()
        if table is None:
            return
        if old is None or any(v is _UNCHANGED for v in old):
            raise _full_identity_error(table, "UPDATE" if kind == b"U" else "DELETE")
        old_row = _row(old)
        self._changes.append(Change(table, old_row, -1))
        if kind == b"U":
            if tag != 0x4E:
                raise SourceError("protocol", "Update without a new tuple")
            new = r.tuple_data(rel)
            merged = [o if v is _UNCHANGED else v for v, o in zip(new, old, strict=True)]
            self._changes.append(Change(table, _row(merged), 1))

    def _truncate(self, data: bytes) -> None:
        r = _Reader(data)
        n = r.i32()
        _options = r.i8()
        for _ in range(n):
            rel = self._relations.get(r.u32())
            if rel is not None and rel.table is not None:
                raise SourceError(
                    "truncated",
                    f"table {rel.table.qualified} was truncated upstream; the source must be "
                    "recreated (TRUNCATE cannot be replicated as row retractions)",
                )


def _row(values: list[object]) -> Row:
    if any(v is _UNCHANGED for v in values):
        raise SourceError("protocol", "unchanged TOAST value in an inserted row")
    return tuple(values)
