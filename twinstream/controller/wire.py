"""The controller <-> clusterd wire format: length-prefixed msgpack frames (sans-IO).

    data = encode_frame(Frame(REQUEST, 7, "peek", {...}))   # bytes to write
    decoder = FrameDecoder()
    for frame in decoder.feed(chunk): ...                 # bytes read -> whole frames

A frame is a 4-byte big-endian body length, then the msgpack body `[kind, id, op, body]`:

- `req` (controller -> replica): a command or query; `id` is the controller's request id,
  unique among its requests in flight, so peeks, subscribes and frontier watches interleave.
- `ok`: the request's single answer; `err`: its failure (`{"type", "message", "code"}`).
- `item`: one element of a stream (`subscribe`, `watch_frontiers`); `end`: the stream is over.
- `cancel` (controller -> replica): stop the request `id` (a subscription the reader left).

A frame longer than `MAX_FRAME_BYTES`, or a body that is not such a list, is a protocol
violation: `FrameDecoder.feed` raises `WireError` and the connection is closed (after an `err`
frame with id 0 telling the peer why). Values inside bodies use the plan codec's extension
types (`twinstream.compute.dataflow.plancodec`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from twinstream.compute.dataflow.plancodec import PlanCodecError, ext_hook, pack_data

#: Wire protocol version, exchanged in the `hello` request.
PROTOCOL_VERSION = 1
#: The largest frame body either side accepts (a peek result or subscribe batch must fit).
MAX_FRAME_BYTES = 64 * 1024 * 1024
HEADER = struct.Struct("!I")

REQUEST = "req"
OK = "ok"
ERROR = "err"
ITEM = "item"
END = "end"
CANCEL = "cancel"
KINDS = frozenset({REQUEST, OK, ERROR, ITEM, END, CANCEL})


class WireError(Exception):
    """The byte stream is not this protocol (the connection cannot continue)."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str
    id: int
    op: str
    body: Any = None


def encode_frame(frame: Frame, *, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """The frame's bytes. The body is plain data whose values are row values or already
    encoded (`plancodec.pack_data`); a body over `max_bytes` raises `WireError` rather than
    sending what the peer would refuse."""
    assert frame.kind in KINDS, frame.kind
    try:
        body = pack_data([frame.kind, frame.id, frame.op, frame.body])
    except (TypeError, ValueError, OverflowError) as e:
        raise WireError(f"cannot encode {frame.op} frame: {e}") from e
    assert isinstance(body, bytes)
    if len(body) > max_bytes:
        raise WireError(f"{frame.op} frame of {len(body)} bytes exceeds {max_bytes}")
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: `feed` bytes, get the complete frames they finish."""

    def __init__(self, *, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while len(self._buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self._buf)
            if n > self.max_bytes:
                raise WireError(f"frame of {n} bytes exceeds the limit of {self.max_bytes}")
            if len(self._buf) < HEADER.size + n:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + n])
            del self._buf[: HEADER.size + n]
            out.append(decode_body(body))
        return out


def decode_body(body: bytes) -> Frame:
    try:
        obj = msgpack.unpackb(
            body, ext_hook=ext_hook, raw=False, use_list=False, strict_map_key=False
        )
    except PlanCodecError as e:
        raise WireError(f"bad frame body: {e}") from e
    except Exception as e:  # any msgpack failure: garbage
        raise WireError(f"frame body is not msgpack: {e}") from e
    if not (
        type(obj) is tuple
        and len(obj) == 4
        and obj[0] in KINDS
        and type(obj[1]) is int
        and obj[1] >= 0
        and type(obj[2]) is str
    ):
        raise WireError(f"not a frame: {str(obj)[:200]}")
    return Frame(obj[0], obj[1], obj[2], obj[3])
