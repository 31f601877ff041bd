"""The clusterd wire codec (sans-IO): frames split anywhere reassemble, oversized and garbage
input is refused with `WireError`, and every protocol body round-trips through msgpack (plans,
rows with every value type) while malformed bodies raise `MessageError`."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstream.compute.dataflow import plan as P
from twinstream.compute.runtime import OutputBatch
from twinstream.controller import messages as M
from twinstream.controller.protocol import (
    CollectionFrontier,
    DataflowDesc,
    PeekError,
    ReplicaStatus,
)
from twinstream.controller.wire import (
    HEADER,
    ITEM,
    KINDS,
    REQUEST,
    Frame,
    FrameDecoder,
    WireError,
    encode_frame,
)

ROW = (1, "x", None, Decimal("1.50"), dt.date(2024, 1, 2), uuid.UUID(int=7), b"\x00", 2**70)


def through(frame: Frame) -> Frame:
    [got] = FrameDecoder().feed(encode_frame(frame))
    return got


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(KINDS)), st.integers(0, 2**32), st.text(max_size=8)),
        max_size=6,
    ),
    st.integers(1, 7),
)
def test_frames_split_anywhere_reassemble(specs: list[tuple[str, int, str]], step: int) -> None:
    frames = [Frame(k, i, op, {"n": i, "s": [op, None]}) for k, i, op in specs]
    data = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got: list[Frame] = []
    for at in range(0, len(data), step):
        got += decoder.feed(data[at : at + step])
    assert [(f.kind, f.id, f.op) for f in got] == [(f.kind, f.id, f.op) for f in frames]
    assert decoder.buffered == 0


def test_oversized_frames_are_refused_both_ways() -> None:
    decoder = FrameDecoder(max_bytes=100)
    with pytest.raises(WireError, match="exceeds the limit of 100"):
        decoder.feed(HEADER.pack(101))
    with pytest.raises(WireError, match="exceeds 100"):
        encode_frame(Frame(ITEM, 1, "subscribe", b"x" * 200), max_bytes=100)


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # never valid msgpack
        msgpack.packb([1, 2]),
        msgpack.packb(["req", -1, "peek", None]),
        msgpack.packb(["bogus", 1, "peek", None]),
        msgpack.packb(["req", 1, 2, None]),
        msgpack.packb(["req", 1, "x", msgpack.ExtType(99, b"")]),
        msgpack.packb({"kind": "req"}),
    ],
)
def test_garbage_is_a_wire_error(body: bytes) -> None:
    with pytest.raises(WireError):
        FrameDecoder().feed(HEADER.pack(len(body)) + body)


def test_unencodable_bodies_are_refused() -> None:
    with pytest.raises(WireError, match="cannot encode"):
        encode_frame(Frame(REQUEST, 1, "peek", object()))


def test_protocol_bodies_round_trip() -> None:
    plan = P.Filter(P.Get("u1", 2), ())
    desc = DataflowDesc("u5", plan, {"u1": "s1"}, "out", (0, 1), 7, "errs")
    assert M.decode_desc(through(Frame(REQUEST, 1, "c", M.encode_desc(desc))).body) == desc
    bare = DataflowDesc("t1", plan, {"u1": "s1"})
    assert M.decode_desc(through(Frame(REQUEST, 1, "c", M.encode_desc(bare))).body) == bare
    fs = {"u5": CollectionFrontier(9, True, 3), "u6": CollectionFrontier(0, False)}
    assert M.decode_frontiers(through(Frame(ITEM, 2, "f", M.encode_frontiers(fs))).body) == fs
    st_ = ReplicaStatus("c-replica-1", True, ("u5",), {"u5": "LeaseExpired: x"}, 4)
    assert M.decode_status(through(Frame(ITEM, 2, "s", M.encode_status(st_))).body) == st_
    batch = OutputBatch(3, 5, [(ROW, 3, 1), ((2,), 4, -2)], [(("22012", "division"), 4, 1)])
    got = M.decode_batch(through(Frame(ITEM, 3, "b", M.encode_batch(batch))).body)
    assert (got.lower, got.upper, got.updates, got.errors) == (
        batch.lower,
        batch.upper,
        batch.updates,
        batch.errors,
    )
    rows = [(ROW, 2), ((None,), 1)]
    assert M.decode_rows(through(Frame(ITEM, 4, "p", M.encode_rows(rows))).body) == rows


def test_errors_carry_their_type_and_message() -> None:
    e = M.decode_error(
        through(Frame(ITEM, 1, "p", M.encode_error(PeekError("compacted", "x")))).body
    )
    assert isinstance(e, PeekError) and e.code == "compacted" and str(e) == "x"
    e = M.decode_error(M.encode_error(KeyError("k")))
    assert isinstance(e, M.ReplicaError) and e.type_name == "KeyError"
    assert isinstance(M.decode_error("junk"), M.ReplicaError)


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (M.decode_desc, None),
        (M.decode_desc, {"id": "x", "plan": (1, ()), "inputs": {}}),
        (M.decode_desc, {"id": 1, "plan": (1, (("Get", "u1", 1),)), "inputs": {}}),
        (M.decode_desc, {"id": "x", "plan": (1, (("Get", "u1", 1),)), "inputs": {"a": 1}}),
        (M.decode_frontiers, {"u": (1, "yes", None)}),
        (M.decode_status, {"name": "x"}),
        (M.decode_batch, (1, 2, ((1, 2, 3),), ())),
        (M.decode_rows, (((1,), "2"),)),
    ],
)
def test_malformed_bodies_are_message_errors(decode: Any, body: Any) -> None:
    with pytest.raises(M.MessageError):
        decode(msgpack.unpackb(msgpack.packb(body), use_list=False))
