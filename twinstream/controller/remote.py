"""`RemoteReplica`: the `Replica` protocol over a socket to a `clusterd` process.

    replica = RemoteReplica("quickstart-replica-u1", ("127.0.0.1", port))
    await replica.create_dataflow(desc)      # like LocalReplica, one hop away
    async for batch in replica.subscribe("u5"): ...
    await replica.close()

The connection is made lazily and remade when lost: connecting retries with backoff, and a
call fails with `ReplicaUnavailable` only when the replica stayed unreachable for
`unavailable_after_s`. Every command is idempotent, so a call interrupted by a lost connection
is simply sent again on the next one. The client remembers what it asked for (dataflows,
`allow_writes`, compaction) and replays it on every (re)connect: that is reconciliation — a
replica that kept running keeps its equal dataflows (no rebuild), a replica process that was
restarted (a new `instance`) gets them all back. A subscription cannot be resumed exactly, so a
lost connection ends it with `ReplicaUnavailable`; the reader re-subscribes.

`address` is a fixed (host, port) or a callable returning the current one (None: not started
yet) — a process orchestrator's replica moves to a new port when it is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from twinstream.compute.dataflow.plancodec import encode_value
from twinstream.compute.runtime import OutputBatch
from twinstream.controller import messages as M
from twinstream.controller.protocol import (
    CollectionFrontier,
    DataflowDesc,
    PeekError,
    ReplicaStatus,
)
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
from twinstream.persist.types import Diff, Row

log = logging.getLogger(__name__)

#: A call fails once the replica was unreachable this long (it is down, not restarting).
UNAVAILABLE_AFTER_S = 15.0
#: Reconnect backoff: first pause and cap.
CONNECT_BACKOFF_FIRST_S = 0.05
CONNECT_BACKOFF_MAX_S = 1.0
#: One TCP connect + hello attempt.
CONNECT_TIMEOUT_S = 5.0
READ_CHUNK = 256 * 1024

Address = tuple[str, int]


class ReplicaUnavailable(ConnectionError):
    """The replica process could not be reached (down, or not started)."""


class _Lost(Exception):
    """The connection broke under a request (retry on a new one)."""


class _Conn:
    """One live connection: a reader task routing frames to waiting requests and streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Queue[Frame | BaseException]] = {}
        self.lock = asyncio.Lock()
        self.closed: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.task = asyncio.create_task(self._read(), name="remote-replica-reader")

    async def _read(self) -> None:
        decoder = FrameDecoder()
        reason: BaseException = _Lost("connection closed by the replica")
        try:
            while True:
                chunk = await self.reader.read(READ_CHUNK)
                if not chunk:
                    break
                for frame in decoder.feed(chunk):
                    if frame.id == 0 and frame.kind == ERROR:
                        reason = _Lost(f"replica closed the connection: {frame.body!r}")
                        continue
                    q = self.waiting.get(frame.id)
                    if q is not None:
                        q.put_nowait(frame)
        except (ConnectionError, OSError) as e:
            reason = _Lost(f"connection lost: {e}")
        except WireError as e:
            reason = _Lost(f"replica sent garbage: {e}")
        finally:
            self.closed = reason
            for q in self.waiting.values():
                q.put_nowait(reason)
            self.writer.close()

    async def send(self, frame: Frame) -> None:
        if self.closed is not None:
            raise _Lost(str(self.closed))
        data = encode_frame(frame)
        try:
            async with self.lock:
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise _Lost(f"connection lost: {e}") from e

    def open(self) -> tuple[int, asyncio.Queue[Frame | BaseException]]:
        rid = next(self.ids)
        q: asyncio.Queue[Frame | BaseException] = asyncio.Queue()
        self.waiting[rid] = q
        if self.closed is not None:
            q.put_nowait(self.closed)
        return rid, q

    async def request(self, op: str, body: Any = None) -> Any:
        rid, q = self.open()
        answered = False
        try:
            await self.send(Frame(REQUEST, rid, op, body))
            got = await q.get()
            answered = True
            if isinstance(got, BaseException):
                raise got
            if got.kind == OK:
                return got.body
            if got.kind == ERROR:
                raise M.decode_error(got.body)
            raise M.MessageError(f"unexpected {got.kind} frame for {op}")
        finally:
            self.waiting.pop(rid, None)
            if not answered and self.closed is None:
                # Abandoned (the caller was cancelled, e.g. a peek that timed out): tell
                # the replica to stop working on it, without waiting for the write.
                self._background(self.send(Frame(CANCEL, rid, op)))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled():
                t.exception()  # retrieved: a lost connection here is not news

        task.add_done_callback(done)

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class RemoteReplica:
    """See the module docstring."""

    def __init__(
        self,
        name: str,
        address: Address | Callable[[], Address | None],
        *,
        unavailable_after_s: float = UNAVAILABLE_AFTER_S,
        writable: bool = False,
    ) -> None:
        self.name = name
        self._address = address
        self.unavailable_after_s = unavailable_after_s
        self._conn: _Conn | None = None
        self._connecting = asyncio.Lock()
        self._closed = False
        #: What the controller asked for, replayed on every (re)connect.
        self._dataflows: dict[str, DataflowDesc] = {}
        #: True: `allow_writes` is sent on every connect (a writable controller's replica).
        self._writable = writable
        self._compaction: dict[str, int] = {}
        #: Connections made, and the replica process's instance id at the last one.
        self.connects = 0
        self.instance: str | None = None
        self.remote_read_only: bool | None = None

    # -- connection ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def address(self) -> Address | None:
        return self._address() if callable(self._address) else self._address

    async def _connection(self, deadline: float) -> _Conn:
        conn = self._conn
        if conn is not None and conn.closed is None:
            return conn
        async with self._connecting:
            conn = self._conn
            if conn is not None and conn.closed is None:
                return conn
            loop = asyncio.get_running_loop()
            backoff = CONNECT_BACKOFF_FIRST_S
            last = "not started"
            while not self._closed:
                addr = self.address()
                if addr is not None:
                    try:
                        conn = await self._open(addr)
                        self._conn = conn
                        return conn
                    except (OSError, TimeoutError, _Lost, M.MessageError) as e:
                        last = f"{type(e).__name__}: {e}"
                if loop.time() + backoff > deadline:
                    break
                await asyncio.sleep(backoff)  # reconnect backoff
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX_S)
            raise ReplicaUnavailable(
                f"replica {self.name} at {self._describe()} is unavailable ({last})"
            )

    def _describe(self) -> str:
        addr = self.address()
        return "an unknown address" if addr is None else f"{addr[0]}:{addr[1]}"

    async def _open(self, addr: Address) -> _Conn:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(*addr)
        conn = _Conn(reader, writer)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                hello = await conn.request("hello", {"version": PROTOCOL_VERSION})
            info = M.body_map(hello, "hello")
            if info.get("name") != self.name:
                raise M.MessageError(
                    f"{addr[0]}:{addr[1]} is replica {info.get('name')!r}, not {self.name!r}"
                )
            if self.instance is not None and info.get("instance") != self.instance:
                log.info("replica %s restarted: replaying its dataflows", self.name)
            self.instance = str(info.get("instance"))
            self.remote_read_only = bool(info.get("read_only"))
            # Reconciliation: re-issue everything (idempotent on a replica that kept it).
            for desc in list(self._dataflows.values()):
                try:
                    await conn.request("create_dataflow", M.encode_desc(desc))
                except (M.ReplicaError, PeekError) as e:  # one refused desc blocks no other
                    log.warning("replica %s refused dataflow %s: %s", self.name, desc.id, e)
            if self._writable:
                await conn.request("allow_writes")
            for id, since in list(self._compaction.items()):
                await conn.request("allow_compaction", {"id": id, "since": since})
        except BaseException:
            await conn.close()
            raise
        self.connects += 1
        return conn

    async def _call(self, op: str, body: Any = None) -> Any:
        if self._closed:
            raise ReplicaUnavailable(f"replica {self.name}: client closed")
        deadline = asyncio.get_running_loop().time() + self.unavailable_after_s
        while True:
            conn = await self._connection(deadline)
            try:
                return await conn.request(op, body)
            except _Lost as e:
                log.info("replica %s: %s; retrying %s", self.name, e, op)

    async def disconnect(self) -> None:
        """Drop the connection (the replica keeps running); the next call reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        self._closed = True
        await self.disconnect()

    # -- the Replica protocol ------------------------------------------------------------------

    async def create_dataflow(self, desc: DataflowDesc) -> None:
        self._dataflows[desc.id] = desc
        await self._call("create_dataflow", M.encode_desc(desc))

    async def drop_dataflow(self, id: str) -> None:
        self._dataflows.pop(id, None)
        self._compaction.pop(id, None)
        await self._call("drop_dataflow", {"id": id})

    async def allow_writes(self) -> None:
        self._writable = True
        await self._call("allow_writes")

    async def allow_compaction(self, id: str, since: int) -> None:
        self._compaction[id] = since
        await self._call("allow_compaction", {"id": id, "since": since})

    async def peek(
        self, id: str, timestamp: int, key: tuple[object, ...] | None = None
    ) -> list[tuple[Row, Diff]]:
        body = {
            "id": id,
            "timestamp": timestamp,
            "key": None if key is None else encode_value(key),
        }
        return M.decode_rows(await self._call("peek", body))

    def subscribe(self, id: str) -> AsyncIterator[OutputBatch]:
        return self._stream("subscribe", {"id": id}, M.decode_batch)

    def watch_frontiers(self) -> AsyncIterator[dict[str, CollectionFrontier]]:
        """Every collection's frontier, pushed by the replica whenever one changes."""
        return self._stream("watch_frontiers", None, M.decode_frontiers)

    async def frontiers(self) -> dict[str, CollectionFrontier]:
        return M.decode_frontiers(await self._call("frontiers"))

    async def frontier(self, id: str) -> CollectionFrontier | None:
        return (await self.frontiers()).get(id)

    async def try_frontiers(self, timeout_s: float) -> dict[str, CollectionFrontier] | None:
        """`frontiers()` over the current connection if there is one and it answers within
        `timeout_s`; None otherwise (never waits for a reconnect)."""
        conn = self._conn
        if conn is None or conn.closed is not None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                return M.decode_frontiers(await conn.request("frontiers"))
        except (TimeoutError, _Lost):
            return None

    async def reconcile(self) -> list[str]:
        """End of a (re)started controller's reconciliation: the replica drops every dataflow
        this client did not (re-)create — ones a previous controller left behind. Returns
        their ids. A dataflow created while this was in flight is re-created afterwards."""
        deadline = asyncio.get_running_loop().time() + self.unavailable_after_s
        while True:
            conn = await self._connection(deadline)  # connected: everything replayed
            keep = list(self._dataflows)  # taken now, not before a wait for the replica
            try:
                got = M.body_map(await conn.request("reconcile", {"keep": keep}), "reconcile")
                break
            except _Lost as e:
                log.info("replica %s: %s; retrying reconcile", self.name, e)
        dropped = [str(i) for i in got.get("dropped", ())]
        for id, desc in list(self._dataflows.items()):
            if id not in keep:
                await self._call("create_dataflow", M.encode_desc(desc))
        return dropped

    async def status(self) -> ReplicaStatus:
        return M.decode_status(await self._call("status"))

    async def _stream(self, op: str, body: Any, decode: Callable[[Any], Any]) -> AsyncIterator[Any]:
        deadline = asyncio.get_running_loop().time() + self.unavailable_after_s
        conn = await self._connection(deadline)
        rid, q = conn.open()
        finished = False
        try:
            await conn.send(Frame(REQUEST, rid, op, body))
            while True:
                got = await q.get()
                if isinstance(got, BaseException):
                    finished = True
                    raise ReplicaUnavailable(f"replica {self.name}: {op} interrupted: {got}")
                if got.kind == ITEM:
                    yield decode(got.body)
                elif got.kind == END:
                    finished = True
                    return
                elif got.kind == ERROR:  # (cancel anyway: an item too big to send ends
                    raise M.decode_error(got.body)  # the stream here, not on the replica)
        except _Lost as e:
            finished = True
            raise ReplicaUnavailable(f"replica {self.name}: {op} interrupted: {e}") from e
        finally:
            conn.waiting.pop(rid, None)
            if not finished and conn.closed is None:
                with contextlib.suppress(_Lost, WireError):
                    await conn.send(Frame(CANCEL, rid, op))
