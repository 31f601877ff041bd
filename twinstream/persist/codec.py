"""Encoding of rows, updates and shard state with msgpack.

Rows are tuples of scalars. Types msgpack lacks (Decimal, dates, times, intervals, UUIDs) travel
as extension types so a row decodes to exactly the values that were written.
"""

from __future__ import annotations

import datetime as dt
import gc
import uuid
from decimal import Decimal
from typing import Any

import msgpack

from twinstream.persist.types import Update

#: Batches at least this large decode with the cyclic GC paused (see `decode_updates`).
GC_PAUSE_MIN_BYTES = 64 * 1024

_EXT_DECIMAL = 1
_EXT_DATE = 2
_EXT_DATETIME = 3
_EXT_TIMEDELTA = 4
_EXT_UUID = 5
_EXT_TIME = 6


def _default(obj: object) -> msgpack.ExtType:
    if isinstance(obj, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, dt.time):
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if isinstance(obj, dt.timedelta):
        packed = msgpack.packb([obj.days, obj.seconds, obj.microseconds])
        return msgpack.ExtType(_EXT_TIMEDELTA, packed)
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    raise TypeError(f"persist cannot encode a value of type {type(obj).__name__}: {obj!r}")


def _ext_hook(code: int, data: bytes) -> object:
    if code == _EXT_DECIMAL:
        return Decimal(data.decode())
    if code == _EXT_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return dt.time.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        days, seconds, micros = msgpack.unpackb(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _EXT_UUID:
        return uuid.UUID(bytes=data)
    raise ValueError(f"unknown msgpack extension type {code}")


def pack(obj: Any) -> bytes:
    """Encode any persist value (state dicts, update lists)."""
    data = msgpack.packb(obj, default=_default, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def unpack(data: bytes) -> Any:
    """Decode what `pack` produced; sequences come back as tuples (rows are hashable)."""
    return msgpack.unpackb(
        data, ext_hook=_ext_hook, raw=False, use_list=False, strict_map_key=False
    )


def encode_updates(updates: list[Update]) -> bytes:
    """An update list as a msgpack array of `[row, time, diff]` arrays (tuples pack as
    arrays: no per-update conversion)."""
    return pack(updates)


def decode_updates(data: bytes) -> list[Update]:
    """The inverse of `encode_updates`: the arrays come back as tuples.

    The cyclic garbage collector is paused while a large batch decodes: the decoder
    allocates millions of tuples, each allocation burst triggering collections that
    traverse the whole heap (a replica's arrangements) without finding anything (tuples of
    scalars cannot form cycles). Measured: 1M updates decode in ~0.6 s instead of ~1.9 s
    next to a 1M-update heap. Collection resumes afterwards; nothing is skipped."""
    if len(data) < GC_PAUSE_MIN_BYTES or not gc.isenabled():
        out = unpack(data)
    else:
        gc.disable()
        try:
            out = unpack(data)
        finally:
            gc.enable()
    try:  # the shape check runs in C (`map(len)`), not a per-update Python loop
        ok = isinstance(out, tuple) and (not out or set(map(len, out)) == {3})
    except TypeError:
        ok = False
    if not ok:
        raise ValueError("an update batch does not decode to an array of [row, time, diff]")
    return list(out)
