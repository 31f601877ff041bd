"""Sans-IO client side of the PostgreSQL v3 protocol, as much as replication needs.

`Framer` cuts the bytes a socket gave into (type, payload) backend messages; the small
`parse_*` functions read the payloads that matter (errors, rows, authentication requests,
the replication stream's XLogData and keepalive). `ScramClient` is the SCRAM-SHA-256 client
exchange (RFC 5802 / 7677) without channel binding; `md5_password` the legacy md5 answer.
Encoding frontend messages reuses `twinstream.pgwire.messages`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import unicodedata
from dataclasses import dataclass

__all__ = [
    "MAX_BACKEND_MESSAGE_BYTES",
    "Framer",
    "Keepalive",
    "ScramClient",
    "ServerError",
    "WireError",
    "XLogData",
    "encode_standby_status",
    "md5_password",
    "parse_data_row",
    "parse_error",
    "parse_replication_message",
    "parse_row_description",
]

#: Upper bound for one backend message; a wider one means a broken stream (PostgreSQL's own
#: limit for a row is 1 GB; replication messages carry one change each).
MAX_BACKEND_MESSAGE_BYTES = 1 << 30

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_XLOGDATA = struct.Struct("!QQq")
_KEEPALIVE = struct.Struct("!QqB")
_STATUS = struct.Struct("!cQQQqB")


class WireError(Exception):
    """The upstream sent something that is not the protocol (connection must be dropped)."""


@dataclass(frozen=True)
class ServerError:
    """An ErrorResponse / NoticeResponse."""

    severity: str
    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None

    def text(self) -> str:
        parts = [self.message]
        if self.detail:
            parts.append(f"DETAIL: {self.detail}")
        if self.hint:
            parts.append(f"HINT: {self.hint}")
        return " ".join(parts)


class Framer:
    """Accumulates bytes; yields complete backend messages as (type byte, payload)."""

    def __init__(self, max_message_bytes: int = MAX_BACKEND_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max = max_message_bytes

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> tuple[int, bytes] | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            return None
        (length,) = _I32.unpack_from(buf, pos + 1)
        if length < 4 or length > self._max:
            raise WireError(f"invalid message length {length} for type {chr(buf[pos])!r}")
        end = pos + 1 + length
        if len(buf) < end:
            return None
        self._pos = end
        return buf[pos], bytes(buf[pos + 5 : end])


def _cstrings(payload: bytes) -> list[str]:
    return payload.decode("utf-8", "replace").split("\0")


def parse_error(payload: bytes) -> ServerError:
    fields: dict[str, str] = {}
    for item in _cstrings(payload):
        if item:
            fields[item[0]] = item[1:]
    return ServerError(
        severity=fields.get("V", fields.get("S", "ERROR")),
        sqlstate=fields.get("C", ""),
        message=fields.get("M", ""),
        detail=fields.get("D"),
        hint=fields.get("H"),
    )


def parse_row_description(payload: bytes) -> list[str]:
    (n,) = _I16.unpack_from(payload, 0)
    names: list[str] = []
    pos = 2
    for _ in range(n):
        end = payload.index(b"\0", pos)
        names.append(payload[pos:end].decode())
        pos = end + 1 + 18  # table oid, attnum, type oid, typlen, typmod, format
    return names


def parse_data_row(payload: bytes) -> list[str | None]:
    (n,) = _I16.unpack_from(payload, 0)
    values: list[str | None] = []
    pos = 2
    for _ in range(n):
        (size,) = _I32.unpack_from(payload, pos)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(payload[pos : pos + size].decode())
            pos += size
    return values


@dataclass(frozen=True, slots=True)
class XLogData:
    wal_start: int
    wal_end: int
    send_time_us: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    send_time_us: int
    reply_requested: bool


def parse_replication_message(payload: bytes) -> XLogData | Keepalive:
    """The payload of one CopyData of the START_REPLICATION stream."""
    if not payload:
        raise WireError("empty replication message")
    kind = payload[0]
    if kind == ord("w"):
        start, end, sent = _XLOGDATA.unpack_from(payload, 1)
        return XLogData(start, end, sent, payload[1 + _XLOGDATA.size :])
    if kind == ord("k"):
        end, sent, reply = _KEEPALIVE.unpack_from(payload, 1)
        return Keepalive(end, sent, bool(reply))
    raise WireError(f"unknown replication message {chr(kind)!r}")


def encode_standby_status(
    written: int, flushed: int, applied: int, now_pg_us: int, reply_requested: bool = False
) -> bytes:
    """Standby status update ('r'), the payload of a CopyData."""
    return _STATUS.pack(b"r", written, flushed, applied, now_pg_us, int(reply_requested))


def md5_password(user: str, password: str, salt: bytes) -> str:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def _saslprep(password: str) -> str:
    return password if password.isascii() else unicodedata.normalize("NFKC", password)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class ScramClient:
    """SCRAM-SHA-256 client: `first()`, then `final(server_first)`, then `verify(server_final)`.

    The user name is not sent in SCRAM (PostgreSQL takes it from the startup packet).
    """

    MECHANISM = "SCRAM-SHA-256"

    def __init__(self, password: str, nonce: str | None = None) -> None:
        self._password = _saslprep(password)
        self._nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self._first_bare = f"n=,r={self._nonce}"
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        return ("n,," + self._first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i")
        if not nonce.startswith(self._nonce) or salt is None or iterations is None:
            raise WireError("malformed SCRAM server-first-message")
        salted = hashlib.pbkdf2_hmac(
            "sha256", self._password.encode(), base64.b64decode(salt), int(iterations)
        )
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        text = server_final.decode()
        if self._server_signature is None or not text.startswith("v="):
            raise WireError(f"unexpected SCRAM server-final-message {text!r}")
        if not hmac.compare_digest(base64.b64decode(text[2:]), self._server_signature):
            raise WireError("SCRAM server signature mismatch (server does not know the password)")
