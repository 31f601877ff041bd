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

No call waits without bound on a replica that is connected but does not answer (a frozen
process, SIGSTOP): every request/response call must be answered within `call_timeout_s`
(`REPLICA_CALL_TIMEOUT_S`), else it raises `ReplicaUnresponsive` (a `ReplicaUnavailable` and a
`TimeoutError`) and the client is marked unresponsive (`unresponsive`: the reason) until the
replica answers anything again. A command (`create_dataflow`, `drop_dataflow`, `allow_writes`,
`allow_compaction`) is recorded before it is sent, so it is never lost: it is bounded by
`call_timeout_s` as a whole (connecting included), is not cancelled when it times out (the
frozen replica runs it once thawed), and while the client is marked unresponsive it fails at
once — posted on the open connection, or replayed by the next connect — so a controller
issuing many commands waits at most one bound per replica. Peeks and streams (`subscribe`,
`watch_frontiers`) may rightly wait long and keep their own bounds (`peek_while_alive`).

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
#: One TCP connect attempt.
CONNECT_TIMEOUT_S = 5.0
#: Every request/response call (and each request of a connect's hello and replay) must be
#: answered within this, else `ReplicaUnresponsive`: a live replica answers in milliseconds
#: (status p99 19 ms on the loaded VM; commands only install or flag), so 5 s is stalls of
#: two orders of magnitude, yet a frozen replica delays a caller by one bound only.
REPLICA_CALL_TIMEOUT_S = 5.0
READ_CHUNK = 256 * 1024

Address = tuple[str, int]


class ReplicaUnavailable(ConnectionError):
    """The replica process could not be reached (down, or not started)."""


class ReplicaUnresponsive(ReplicaUnavailable, TimeoutError):
    """The replica did not answer a call within its bound (frozen, or not reachable in time)."""


class _Lost(Exception):
    """The connection broke under a request (retry on a new one)."""


class _NoAnswer(Exception):
    """A request was not answered within its bound (the connection stays open)."""


class _Conn:
    """One live connection: a reader task routing frames to waiting requests and streams."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_answer: Callable[[], None] = lambda: None,
    ) -> None:
        self.reader = reader
        #: Called on every frame answering a request or stream (the replica is responsive).
        self.on_answer = on_answer
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
                    self.on_answer()
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

    async def request(
        self, op: str, body: Any = None, *, timeout_s: float | None = None, cancel: bool = True
    ) -> Any:
        """Send one request and return its answer's body. Not answered (sent or not) within
        `timeout_s` (None: no bound): `_NoAnswer`. An abandoned request is cancelled on the
        replica unless `cancel` is False (a command: it must still run once the replica
        answers again)."""
        rid, q = self.open()
        answered = False
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await self.send(Frame(REQUEST, rid, op, body))
                    got = await q.get()
            except TimeoutError:
                answered = not cancel
                raise _NoAnswer(f"{op} not answered within {timeout_s:.1f} s") from None
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

    def post(self, op: str, body: Any = None) -> None:
        """Send a request in the background and ignore its answer (a command to a replica
        that is not answering now: it runs it once thawed)."""
        rid = next(self.ids)
        self._background(self.send(Frame(REQUEST, rid, op, body)))

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
        call_timeout_s: float = REPLICA_CALL_TIMEOUT_S,
        writable: bool = False,
    ) -> None:
        assert call_timeout_s > 0, call_timeout_s
        self.name = name
        self._address = address
        self.unavailable_after_s = unavailable_after_s
        self.call_timeout_s = call_timeout_s
        #: Why the replica counts as not answering (None: it answers). Set when a call was
        #: not answered within `call_timeout_s`, cleared by any answer or a new connection.
        self.unresponsive: str | None = None
        #: Dataflows dropped while the replica was not answering: dropped again on connect.
        self._dropped: set[str] = set()
        self._reconnect: asyncio.Task[None] | None = None
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
        conn = _Conn(reader, writer, self._answered)
        bound = self.call_timeout_s
        try:
            try:
                hello = await conn.request("hello", {"version": PROTOCOL_VERSION}, timeout_s=bound)
            except _NoAnswer as e:
                raise TimeoutError(str(e)) from None
            info = M.body_map(hello, "hello")
            if info.get("name") != self.name:
                raise M.MessageError(
                    f"{addr[0]}:{addr[1]} is replica {info.get('name')!r}, not {self.name!r}"
                )
            if self.instance is not None and info.get("instance") != self.instance:
                log.info("replica %s restarted: replaying its dataflows", self.name)
            self.instance = str(info.get("instance"))
            self.remote_read_only = bool(info.get("read_only"))
            try:
                await self._replay(conn)
            except _NoAnswer as e:
                raise TimeoutError(f"replay: {e}") from None
        except BaseException:
            await conn.close()
            raise
        self.connects += 1
        self._answered()
        return conn

    async def _replay(self, conn: _Conn) -> None:
        """Reconciliation: re-issue everything (idempotent on a replica that kept it)."""
        bound = self.call_timeout_s
        for id in list(self._dropped):
            await conn.request("drop_dataflow", {"id": id}, timeout_s=bound, cancel=False)
            if id not in self._dataflows:
                self._dropped.discard(id)
        for desc in list(self._dataflows.values()):
            try:
                await conn.request(
                    "create_dataflow", M.encode_desc(desc), timeout_s=bound, cancel=False
                )
            except (M.ReplicaError, PeekError) as e:  # one refused desc blocks no other
                log.warning("replica %s refused dataflow %s: %s", self.name, desc.id, e)
        if self._writable:
            await conn.request("allow_writes", timeout_s=bound, cancel=False)
        for id, since in list(self._compaction.items()):
            body = {"id": id, "since": since}
            await conn.request("allow_compaction", body, timeout_s=bound, cancel=False)

    # -- responsiveness ------------------------------------------------------------------------

    def _answered(self) -> None:
        if self.unresponsive is not None:
            log.info("replica %s answers again", self.name)
            self.unresponsive = None

    def _not_answering(self, op: str, why: str) -> ReplicaUnresponsive:
        """Mark the replica unresponsive; the error to raise."""
        if self.unresponsive is None:
            log.warning("replica %s is not answering: %s", self.name, why)
        self.unresponsive = why
        return ReplicaUnresponsive(f"replica {self.name} at {self._describe()}: {op}: {why}")

    def _reconnect_soon(self) -> None:
        """Connect (and so replay) in the background: commands that failed fast while the
        replica was not connected reach it once it is."""
        if self._closed or (self._reconnect is not None and not self._reconnect.done()):
            return

        async def run() -> None:
            deadline = asyncio.get_running_loop().time() + self.unavailable_after_s
            try:
                conn = await self._connection(deadline)
                await self._replay(conn)  # also what was recorded while the connect ran
            except (ReplicaUnavailable, _Lost, _NoAnswer, M.ReplicaError, PeekError) as e:
                log.info("replica %s: background reconnect failed: %s", self.name, e)

        self._reconnect = asyncio.create_task(run(), name=f"reconnect-{self.name}")

    async def _call(self, op: str, body: Any = None, *, bounded: bool = True) -> Any:
        """A query: waits up to `unavailable_after_s` for a connection, then up to
        `call_timeout_s` for the answer (`bounded=False`: a peek, which may rightly wait)."""
        if self._closed:
            raise ReplicaUnavailable(f"replica {self.name}: client closed")
        deadline = asyncio.get_running_loop().time() + self.unavailable_after_s
        timeout_s = self.call_timeout_s if bounded else None
        while True:
            conn = await self._connection(deadline)
            try:
                return await conn.request(op, body, timeout_s=timeout_s)
            except _Lost as e:
                log.info("replica %s: %s; retrying %s", self.name, e, op)
            except _NoAnswer as e:
                raise self._not_answering(op, str(e)) from None

    async def _command(self, op: str, body: Any = None) -> None:
        """A command the caller already recorded (replayed on every connect): delivered within
        `call_timeout_s` in all, connecting included. While the replica is marked
        unresponsive it fails at once: posted on the open connection (run once the replica is
        thawed), else delivered by a background reconnect's replay."""
        if self._closed:
            raise ReplicaUnavailable(f"replica {self.name}: client closed")
        if self.unresponsive is not None:
            conn = self._conn
            if conn is not None and conn.closed is None:
                conn.post(op, body)
            else:
                self._reconnect_soon()
            raise ReplicaUnresponsive(
                f"replica {self.name} at {self._describe()} is not answering "
                f"({self.unresponsive}); {op} is delivered once it does"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await self._connection(deadline)
            except TimeoutError:
                self._reconnect_soon()
                raise self._not_answering(
                    op, f"not connected within {self.call_timeout_s:.1f} s"
                ) from None
            except ReplicaUnavailable as e:
                self._reconnect_soon()
                why = f"not connected within {self.call_timeout_s:.1f} s: {e}"
                raise self._not_answering(op, why) from None
            try:
                await conn.request(
                    op, body, timeout_s=max(0.0, deadline - loop.time()), cancel=False
                )
                return
            except _Lost as e:
                log.info("replica %s: %s; retrying %s", self.name, e, op)
            except _NoAnswer:
                raise self._not_answering(
                    op, f"{op} not answered within {self.call_timeout_s:.1f} s"
                ) from None

    async def disconnect(self) -> None:
        """Drop the connection (the replica keeps running); the next call reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        await self.disconnect()

    # -- the Replica protocol ------------------------------------------------------------------

    async def create_dataflow(self, desc: DataflowDesc) -> None:
        self._dataflows[desc.id] = desc
        self._dropped.discard(desc.id)
        await self._command("create_dataflow", M.encode_desc(desc))

    async def drop_dataflow(self, id: str) -> None:
        self._dataflows.pop(id, None)
        self._compaction.pop(id, None)
        self._dropped.add(id)
        await self._command("drop_dataflow", {"id": id})
        self._dropped.discard(id)

    async def allow_writes(self) -> None:
        self._writable = True
        await self._command("allow_writes")

    async def allow_compaction(self, id: str, since: int) -> None:
        self._compaction[id] = since
        await self._command("allow_compaction", {"id": id, "since": since})

    async def peek(
        self, id: str, timestamp: int, key: tuple[object, ...] | None = None
    ) -> list[tuple[Row, Diff]]:
        body = {
            "id": id,
            "timestamp": timestamp,
            "key": None if key is None else encode_value(key),
        }
        return M.decode_rows(await self._call("peek", body, bounded=False))

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
        bound = min(timeout_s, self.call_timeout_s)
        try:
            return M.decode_frontiers(await conn.request("frontiers", timeout_s=bound))
        except _NoAnswer as e:
            self._not_answering("frontiers", str(e))
            return None
        except _Lost:
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
                body = {"keep": keep}
                answer = await conn.request("reconcile", body, timeout_s=self.call_timeout_s)
                got = M.body_map(answer, "reconcile")
                break
            except _Lost as e:
                log.info("replica %s: %s; retrying reconcile", self.name, e)
            except _NoAnswer as e:
                raise self._not_answering("reconcile", str(e)) from None
        dropped = [str(i) for i in got.get("dropped", ())]
        for id, desc in list(self._dataflows.items()):
            if id not in keep:
                await self._command("create_dataflow", M.encode_desc(desc))
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
