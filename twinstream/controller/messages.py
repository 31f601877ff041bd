"""Bodies of the clusterd protocol's frames: the `Replica` protocol's data as msgpack data.

One encode/decode pair per type crossing the wire (`DataflowDesc`, `CollectionFrontier`,
`ReplicaStatus`, `OutputBatch`, peek rows, errors). Decoders are strict: a body of the wrong
shape raises `MessageError`, which the receiver answers with an `err` frame (the connection
stays up: one bad request does not affect the others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinstream.compute.dataflow.plancodec import (
    PlanCodecError,
    decode_plan,
    decode_value,
    encode_plan,
)
from twinstream.compute.runtime import OutputBatch
from twinstream.controller.protocol import (
    CollectionFrontier,
    DataflowDesc,
    PeekError,
    ReplicaStatus,
)
from twinstream.persist.types import Diff, Row, Update


class MessageError(ValueError):
    """A frame body that does not have the shape its op requires."""


class ReplicaError(Exception):
    """A failure the replica reported for one request (its exception type and message)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise MessageError(what)


def body_map(body: Any, what: str) -> Mapping[str, Any]:
    _need(isinstance(body, dict), f"{what}: expected a map, got {type(body).__name__}")
    assert isinstance(body, dict)
    return body


def _opt(v: Any, t: type, what: str) -> Any:
    _need(v is None or type(v) is t, f"{what}: expected {t.__name__} or nil")
    return v


# ---------------------------------------------------------------- dataflows


def encode_desc(desc: DataflowDesc) -> dict[str, Any]:
    return {
        "id": desc.id,
        "plan": encode_plan(desc.plan),
        "inputs": dict(desc.inputs),
        "output_shard": desc.output_shard,
        "index_key": None if desc.index_key is None else list(desc.index_key),
        "as_of": desc.as_of,
        "errors_shard": desc.errors_shard,
    }


def decode_desc(body: Any) -> DataflowDesc:
    m = body_map(body, "dataflow")
    try:
        plan = decode_plan(m.get("plan"))
    except PlanCodecError as e:
        raise MessageError(f"dataflow plan: {e}") from e
    inputs = body_map(m.get("inputs"), "dataflow inputs")
    _need(
        all(type(k) is str and type(v) is str for k, v in inputs.items()),
        "dataflow inputs: names and shard ids are strings",
    )
    key = m.get("index_key")
    _need(
        key is None or (type(key) is tuple and all(type(c) is int for c in key)),
        "dataflow index_key: a list of column numbers or nil",
    )
    _need(type(m.get("id")) is str, "dataflow id: a string")
    return DataflowDesc(
        id=m["id"],
        plan=plan,
        inputs=dict(inputs),
        output_shard=_opt(m.get("output_shard"), str, "output_shard"),
        index_key=key,
        as_of=_opt(m.get("as_of"), int, "as_of"),
        errors_shard=_opt(m.get("errors_shard"), str, "errors_shard"),
    )


# ---------------------------------------------------------------- frontiers and status


def encode_frontiers(fs: Mapping[str, CollectionFrontier]) -> dict[str, list[Any]]:
    return {id: [f.write_frontier, f.hydrated, f.as_of] for id, f in fs.items()}


def decode_frontiers(body: Any) -> dict[str, CollectionFrontier]:
    out: dict[str, CollectionFrontier] = {}
    for id, v in body_map(body, "frontiers").items():
        _need(
            type(id) is str
            and type(v) is tuple
            and len(v) == 3
            and type(v[0]) is int
            and type(v[1]) is bool,
            f"frontier of {id!r}",
        )
        out[id] = CollectionFrontier(v[0], v[1], _opt(v[2], int, "as_of"))
    return out


def encode_status(s: ReplicaStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "read_only": s.read_only,
        "dataflows": list(s.dataflows),
        "failures": dict(s.failures),
        "builds": s.builds,
    }


def decode_status(body: Any) -> ReplicaStatus:
    m = body_map(body, "status")
    _need(type(m.get("name")) is str and type(m.get("read_only")) is bool, "status fields")
    _need(type(m.get("builds")) is int and type(m.get("dataflows")) is tuple, "status fields")
    return ReplicaStatus(
        name=m["name"],
        read_only=m["read_only"],
        dataflows=tuple(m["dataflows"]),
        failures=dict(body_map(m.get("failures"), "failures")),
        builds=m["builds"],
    )


# ---------------------------------------------------------------- rows and batches


def encode_updates(updates: list[Update]) -> list[Any]:
    return [[r, t, d] for r, t, d in updates]  # values packed by `plancodec.value_default`


def decode_updates(body: Any) -> list[Update]:
    _need(type(body) is tuple, "updates: a list")
    out: list[Update] = []
    for u in body:
        _need(
            type(u) is tuple
            and len(u) == 3
            and type(u[0]) is tuple
            and type(u[1]) is int
            and type(u[2]) is int,
            "update: [row, time, diff]",
        )
        out.append((decode_value(u[0]), u[1], u[2]))
    return out


def encode_batch(b: OutputBatch) -> list[Any]:
    return [b.lower, b.upper, encode_updates(b.updates), encode_updates(b.errors)]


def decode_batch(body: Any) -> OutputBatch:
    _need(type(body) is tuple and len(body) == 4, "batch: [lower, upper, updates, errors]")
    _need(type(body[0]) is int and type(body[1]) is int, "batch bounds")
    return OutputBatch(body[0], body[1], decode_updates(body[2]), decode_updates(body[3]))


def encode_rows(rows: list[tuple[Row, Diff]]) -> list[Any]:
    return [[r, d] for r, d in rows]


def decode_rows(body: Any) -> list[tuple[Row, Diff]]:
    _need(type(body) is tuple, "rows: a list")
    out: list[tuple[Row, Diff]] = []
    for rd in body:
        _need(
            type(rd) is tuple and len(rd) == 2 and type(rd[0]) is tuple and type(rd[1]) is int,
            "row: [row, diff]",
        )
        out.append((decode_value(rd[0]), rd[1]))
    return out


# ---------------------------------------------------------------- errors


def encode_error(e: BaseException) -> dict[str, Any]:
    return {
        "type": type(e).__name__,
        "message": str(e),
        "code": e.code if isinstance(e, PeekError) else None,
    }


def decode_error(body: Any) -> Exception:
    """The exception to raise in the controller: `PeekError` as itself, anything else as a
    `ReplicaError` naming the replica-side type."""
    if not isinstance(body, dict):
        return ReplicaError("ProtocolError", f"malformed error body {body!r}")
    type_name = str(body.get("type", "Error"))
    message = str(body.get("message", ""))
    code = body.get("code")
    if type_name == "PeekError" and isinstance(code, str):
        return PeekError(code, message)
    return ReplicaError(type_name, message)
