"""Serves one `Replica` (a `LocalReplica`) to compute controllers over loopback TCP.

Each connection is read frame by frame (`twinstream.controller.wire`); every request runs in
its own task so peeks, subscriptions and frontier watches interleave, and answers are written
under one lock per connection. A request that fails (unknown dataflow, a malformed body)
gets an `err` frame and the connection carries on; bytes that are not frames get an `err`
frame with id 0 and the connection is closed — the replica, its dataflows and its other
connections are unaffected. A controller that disconnects changes nothing either: the
dataflows keep running until a controller (the same or a new one) drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from twinstream.compute.dataflow.plancodec import decode_value
from twinstream.controller import messages as M
from twinstream.controller.protocol import CollectionFrontier, Replica
from twinstream.controller.wire import (
    CANCEL,
    END,
    ERROR,
    ITEM,
    OK,
    PROTOCOL_VERSION,
    REQUEST,
    Frame,
    FrameDecoder,
    WireError,
    encode_frame,
)

log = logging.getLogger(__name__)

#: How often a `watch_frontiers` stream looks for changed frontiers to push.
FRONTIER_WATCH_INTERVAL_S = 0.05
#: Bytes read from a socket at a time.
READ_CHUNK = 256 * 1024


class ReplicaServer:
    """See the module docstring. `instance` identifies this process's replica state: a
    controller that sees it change after a reconnect knows the dataflows are gone."""

    def __init__(self, replica: Replica, *, read_only: bool) -> None:
        self.replica = replica
        self.read_only = read_only
        self.instance = uuid.uuid4().hex
        self.connections = 0
        self.protocol_errors = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._on_connection, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.connections += 1
        try:
            await _Connection(self, reader, writer).serve()
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Connection:
    def __init__(
        self, server: ReplicaServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.replica = server.replica
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()
        self.requests: dict[int, asyncio.Task[None]] = {}

    async def send(self, frame: Frame) -> None:
        try:
            data = encode_frame(frame)
        except WireError as e:  # e.g. a peek result over the frame limit
            data = encode_frame(Frame(ERROR, frame.id, frame.op, M.encode_error(e)))
        async with self.lock:
            self.writer.write(data)
            await self.writer.drain()

    async def serve(self) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                chunk = await self.reader.read(READ_CHUNK)
                if not chunk:
                    return  # the controller went away: the dataflows stay
                try:
                    frames = decoder.feed(chunk)
                except WireError as e:
                    self.server.protocol_errors += 1
                    log.warning("closing a controller connection: %s", e)
                    with contextlib.suppress(Exception):
                        await self.send(Frame(ERROR, 0, "protocol", M.encode_error(e)))
                    return
                for frame in frames:
                    self.dispatch(frame)
        except (ConnectionError, OSError):
            return
        finally:
            for task in list(self.requests.values()):
                task.cancel()
            for task in list(self.requests.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def dispatch(self, frame: Frame) -> None:
        if frame.kind == CANCEL:
            task = self.requests.get(frame.id)
            if task is not None:
                task.cancel()
            return
        if frame.kind != REQUEST:
            self._later(Frame(ERROR, frame.id, frame.op, _err("ProtocolError", "not a request")))
            return
        if frame.id in self.requests:
            msg = f"request id {frame.id} is already in flight"
            self._later(Frame(ERROR, frame.id, frame.op, _err("ProtocolError", msg)))
            return
        task = asyncio.create_task(self._run(frame), name=f"req-{frame.id}-{frame.op}")
        self.requests[frame.id] = task
        rid = frame.id

        def done(_t: asyncio.Task[None]) -> None:
            if self.requests.get(rid) is _t:
                del self.requests[rid]

        task.add_done_callback(done)

    def _later(self, frame: Frame) -> None:
        task = asyncio.create_task(self.send(frame))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _run(self, frame: Frame) -> None:
        try:
            handler = self._handlers().get(frame.op)
            if handler is None:
                raise M.MessageError(f"unknown op {frame.op!r}")
            await handler(frame)
        except asyncio.CancelledError:
            return
        except (ConnectionError, OSError):
            return
        except Exception as e:  # any failure of one request is that request's answer
            if not isinstance(e, M.MessageError) and type(e).__name__ != "PeekError":
                log.warning("request %s failed: %s: %s", frame.op, type(e).__name__, e)
            with contextlib.suppress(ConnectionError, OSError):
                await self.send(Frame(ERROR, frame.id, frame.op, M.encode_error(e)))

    def _handlers(self) -> dict[str, Callable[[Frame], Awaitable[None]]]:
        return {
            "hello": self._hello,
            "create_dataflow": self._create,
            "drop_dataflow": self._drop,
            "allow_writes": self._allow_writes,
            "allow_compaction": self._allow_compaction,
            "peek": self._peek,
            "subscribe": self._subscribe,
            "frontiers": self._frontiers,
            "watch_frontiers": self._watch_frontiers,
            "status": self._status,
            "reconcile": self._reconcile,
        }

    async def _ok(self, frame: Frame, body: Any = None) -> None:
        await self.send(Frame(OK, frame.id, frame.op, body))

    async def _hello(self, frame: Frame) -> None:
        m = M.body_map(frame.body, "hello")
        if m.get("version") != PROTOCOL_VERSION:
            raise M.MessageError(
                f"protocol version {m.get('version')!r} unsupported (speaks {PROTOCOL_VERSION})"
            )
        status = await self.replica.status()
        await self._ok(
            frame,
            {
                "version": PROTOCOL_VERSION,
                "name": self.replica.name,
                "instance": self.server.instance,
                "read_only": status.read_only,
            },
        )

    async def _create(self, frame: Frame) -> None:
        await self.replica.create_dataflow(M.decode_desc(frame.body))
        await self._ok(frame)

    async def _drop(self, frame: Frame) -> None:
        await self.replica.drop_dataflow(_str(frame.body, "id"))
        await self._ok(frame)

    async def _allow_writes(self, frame: Frame) -> None:
        await self.replica.allow_writes()
        self.server.read_only = False
        await self._ok(frame)

    async def _allow_compaction(self, frame: Frame) -> None:
        await self.replica.allow_compaction(_str(frame.body, "id"), _int(frame.body, "since"))
        await self._ok(frame)

    async def _peek(self, frame: Frame) -> None:
        m = M.body_map(frame.body, "peek")
        key = m.get("key")
        if key is not None and type(key) is not tuple:
            raise M.MessageError("peek key: a list of values or nil")
        key_values = None if key is None else decode_value(key)
        rows = await self.replica.peek(_str(m, "id"), _int(m, "timestamp"), key_values)
        await self._ok(frame, M.encode_rows(rows))

    async def _subscribe(self, frame: Frame) -> None:
        it = self.replica.subscribe(_str(frame.body, "id"))
        try:
            async for batch in it:
                await self.send(Frame(ITEM, frame.id, frame.op, M.encode_batch(batch)))
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        await self.send(Frame(END, frame.id, frame.op))

    async def _frontiers(self, frame: Frame) -> None:
        await self._ok(frame, M.encode_frontiers(await self.replica.frontiers()))

    async def _watch_frontiers(self, frame: Frame) -> None:
        """Pushes every collection's frontier whenever any changed (until cancelled)."""
        last: dict[str, CollectionFrontier] | None = None
        while True:
            now = await self.replica.frontiers()
            if now != last:
                await self.send(Frame(ITEM, frame.id, frame.op, M.encode_frontiers(now)))
                last = now
            await asyncio.sleep(FRONTIER_WATCH_INTERVAL_S)  # poll period, not synchronization

    async def _reconcile(self, frame: Frame) -> None:
        """Drop every dataflow not in `keep` (what a restarted controller re-created)."""
        keep = M.body_map(frame.body, "reconcile").get("keep")
        if type(keep) is not tuple or not all(type(i) is str for i in keep):
            raise M.MessageError("reconcile keep: a list of dataflow ids")
        dropped = [id for id in (await self.replica.status()).dataflows if id not in keep]
        for id in dropped:
            await self.replica.drop_dataflow(id)
        await self._ok(frame, {"dropped": dropped})

    async def _status(self, frame: Frame) -> None:
        await self._ok(frame, M.encode_status(await self.replica.status()))


def _err(type_name: str, message: str) -> dict[str, Any]:
    return {"type": type_name, "message": message, "code": None}


def _str(body: Any, key: str) -> str:
    v = M.body_map(body, key).get(key)
    if type(v) is not str:
        raise M.MessageError(f"{key}: a string")
    return v


def _int(body: Any, key: str) -> int:
    v = M.body_map(body, key).get(key)
    if type(v) is not int:
        raise M.MessageError(f"{key}: an integer")
    return v
