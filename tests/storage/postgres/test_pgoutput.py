"""TxnAssembler on hand-built pgoutput messages: the protocol-violation paths a real server
does not produce, and the update/delete rules, without a server."""

from __future__ import annotations

import struct

import pytest

from twinstream.storage.postgres import Column, Progress, SourceError, Txn, UpstreamTable
from twinstream.storage.postgres.pgoutput import PG_EPOCH_UNIX_US, TxnAssembler

T = UpstreamTable(
    "public",
    "t",
    100,
    (Column("id", 23, "integer", "int4"), Column("v", 25, "text", "text")),
    ("id",),
)


def _relation(oid: int = 100, name: str = "t", cols: tuple[tuple[str, int], ...] = ()) -> bytes:
    cols = cols or (("id", 23), ("v", 25))
    body = struct.pack("!I", oid) + b"public\0" + name.encode() + b"\0" + b"f"
    body += struct.pack("!h", len(cols))
    for cname, typ in cols:
        body += b"\0" + cname.encode() + b"\0" + struct.pack("!Ii", typ, -1)
    return b"R" + body


def _tuple(*values: str | None) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        out += b"n" if v is None else b"t" + struct.pack("!i", len(v)) + v.encode()
    return out


def _begin(lsn: int, xid: int = 7) -> bytes:
    return b"B" + struct.pack("!QqI", lsn, 1_000_000, xid)


def _commit(lsn: int, end: int) -> bytes:
    return b"C" + struct.pack("!BQQq", 0, lsn, end, 1_000_000)


def _insert(*values: str | None, oid: int = 100) -> bytes:
    return b"I" + struct.pack("!I", oid) + b"N" + _tuple(*values)


def test_transaction_is_emitted_whole_at_commit() -> None:
    a = TxnAssembler([T])
    assert a.feed(_relation()) is None
    assert a.feed(_begin(50)) is None
    assert a.feed(_insert("1", "x")) is None
    upd = b"U" + struct.pack("!I", 100) + b"O" + _tuple("1", "x") + b"N" + _tuple("1", None)
    assert a.feed(upd) is None
    assert a.feed(b"D" + struct.pack("!I", 100) + b"O" + _tuple("1", None)) is None
    txn = a.feed(_commit(50, 60))
    assert isinstance(txn, Txn)
    assert (txn.commit_lsn, txn.end_lsn, txn.xid) == (50, 60, 7)
    assert txn.commit_time_us == PG_EPOCH_UNIX_US + 1_000_000
    assert [(c.row, c.diff) for c in txn.changes] == [
        ((1, "x"), 1),
        ((1, "x"), -1),
        ((1, None), 1),
        ((1, None), -1),
    ]
    assert repr(txn.changes[0]) == "Change(public.t, (1, 'x'), +1)"


def test_empty_transaction_is_progress() -> None:
    a = TxnAssembler([T])
    a.feed(_begin(50))
    assert a.feed(_commit(50, 60)) == Progress(60)


def test_unchanged_toast_value_comes_from_the_old_row() -> None:
    a = TxnAssembler([T])
    a.feed(_relation())
    a.feed(_begin(50))
    new = struct.pack("!h", 2) + b"t" + struct.pack("!i", 1) + b"2" + b"u"
    a.feed(b"U" + struct.pack("!I", 100) + b"O" + _tuple("1", "big") + b"N" + new)
    txn = a.feed(_commit(50, 60))
    assert isinstance(txn, Txn)
    assert [(c.row, c.diff) for c in txn.changes] == [((1, "big"), -1), ((2, "big"), 1)]


@pytest.mark.parametrize(
    ("messages", "kind"),
    [
        ([_commit(1, 2)], "protocol"),
        ([_begin(1), _begin(1)], "protocol"),
        ([_begin(1), _insert("1", "x")], "protocol"),  # no Relation yet
        ([_relation(), _insert("1", "x")], "protocol"),  # outside a transaction
        ([_begin(1), _commit(2, 3)], "protocol"),  # commit LSN differs from Begin's
        ([b"Z"], "protocol"),
        ([_relation(cols=(("id", 23),))], "schema_changed"),
        ([_relation(cols=(("id", 20), ("v", 25)))], "schema_changed"),
        ([_relation(oid=101)], "schema_changed"),  # same name, new OID: recreated
        (
            [
                _relation(),
                _begin(1),
                b"U" + struct.pack("!I", 100) + b"N" + _tuple("1", "y"),
            ],
            "replica_identity",
        ),
        (
            [_relation(), _begin(1), b"D" + struct.pack("!I", 100) + b"K" + _tuple("1", None)],
            "replica_identity",
        ),
        (
            [_relation(), _begin(1), b"T" + struct.pack("!iBI", 1, 0, 100)],
            "truncated",
        ),
    ],
)
def test_bad_streams(messages: list[bytes], kind: str) -> None:
    a = TxnAssembler([T])
    with pytest.raises(SourceError) as err:
        for msg in messages:
            a.feed(msg)
    assert err.value.kind == kind


def test_other_tables_are_ignored_even_without_full_identity() -> None:
    a = TxnAssembler([T])
    a.feed(_relation(oid=200, name="other", cols=(("k", 23),)))
    a.feed(_begin(1))
    a.feed(_insert("5", oid=200))
    a.feed(b"D" + struct.pack("!I", 200) + b"K" + _tuple("5"))
    a.feed(b"T" + struct.pack("!iBI", 1, 0, 200))
    assert a.feed(_commit(1, 2)) == Progress(2)
