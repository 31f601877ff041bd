"""The narrow interface between the wire-protocol server and whatever executes SQL.

The server owns everything about the protocol (framing, statements and portals, formats,
suspension, COPY sub-protocol, errors, cancellation keys, shutdown); a backend only answers
"what does this statement look like" and "run this statement". One `Session` per connection,
made by a `SessionFactory` after authentication:

    factory(ctx: ConnectionContext) -> Session
    await session.startup(params)            -> extra ParameterStatus values
    await session.describe(sql, param_oids)  -> StatementDescription      (Parse)
    await session.execute(sql, params, oids) -> QueryResult | CopyInRequest | CopyOutStream
    session.transaction_status()             -> "I" | "T" | "E"           (ReadyForQuery)
    await session.describe_cursor(name)      -> columns of a SQL-level cursor (psycopg's
                                                server-side cursors Describe it as a portal)
    await session.cancel()                   (a CancelRequest matched this session)
    await session.close()                    (the connection is gone, whatever the reason)

`sql` is always exactly one statement: the server splits a simple Query with
`twinstream.pgwire.sqlsplit.split_statements` (quotes, dollar quotes and comments aware) and
refuses several statements in one Parse (42601), as PostgreSQL does. Values are Python values
(see `twinstream.pgwire.types` for the mapping); the server decodes parameters with the
statement's parameter types and encodes results with the columns' types, in text or binary as
the client asked.

Errors: raise `PgError(sqlstate, message, detail=..., hint=...)`; severity FATAL closes the
connection after the ErrorResponse. Any other exception is reported as XX000 and logged.

Cancellation: `cancel()` must make the running `execute` (or the row iterator it returned)
raise `PgError(SqlState.QUERY_CANCELED, "canceling statement due to user request")`. The
server also stops streaming rows by itself at the next row once a cancel has arrived, so a
backend whose iterators never block needs no cancel logic at all.

Notices: `ctx.notice(...)` sends a NoticeResponse (ordered with the results being sent; while
the connection is idle it goes out at once). Call it on the server's event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from twinstream.pgwire.copy import TEXT_FORMAT, CopyFormat
from twinstream.pgwire.errors import Notice, PgError, SqlState
from twinstream.pgwire.messages import TransactionStatus

__all__ = [
    "BackendKey",
    "Column",
    "ConnectionContext",
    "CopyInRequest",
    "CopyOutStream",
    "ExecuteResult",
    "KeyAllocator",
    "QueryResult",
    "Row",
    "Rows",
    "Session",
    "SessionFactory",
    "StatementDescription",
]

#: One result row: a value per column, None for NULL.
Row = Sequence[object]
#: The rows of a result: a list, any iterable, or an async iterable (streamed; SUBSCRIBE).
Rows = Iterable[Row] | AsyncIterable[Row]


@dataclass(frozen=True)
class Column:
    """One result column (a RowDescription field)."""

    name: str
    type_oid: int
    #: pg_type.typlen; None means the type's standard size (`types.type_size`).
    type_size: int | None = None
    type_modifier: int = -1
    #: The table and column this comes from, when it is a plain column reference (else 0).
    table_oid: int = 0
    column_number: int = 0


@dataclass(frozen=True)
class StatementDescription:
    """What Parse/Describe learns about a statement without running it.

    `param_oids` has one entry per `$n` parameter. Clients may leave parameter types out
    (0; asyncpg always does): the backend must infer them — they are sent back in
    ParameterDescription and used to decode the Bind values. A type the client did give wins
    over the backend's. `columns` is None for a statement that returns no rows (NoData).
    """

    param_oids: list[int]
    columns: list[Column] | None


@dataclass
class QueryResult:
    """The outcome of a statement that is not a COPY.

    `command_tag` is the CommandComplete text ("INSERT 0 1", "CREATE TABLE", "SELECT 3").
    For a row-returning result it may be None: the server then sends "SELECT n" with n the
    number of rows it sent. `rows` may be lazy (an iterator or async iterator) — the server
    pulls only what the client asks for (Execute with max_rows suspends the portal) and
    closes async generators it abandons (`aclose`).
    """

    command_tag: str | None = None
    columns: list[Column] | None = None
    rows: Rows = field(default=())

    def __post_init__(self) -> None:
        if self.columns is None and self.command_tag is None:
            raise ValueError("a QueryResult without columns needs a command_tag")


class CopyInRequest(ABC):
    """Returned by `execute` for `COPY ... FROM STDIN`: the server runs the COPY sub-protocol.

    Text format: the server splits the CopyData stream into lines and tab-separated fields,
    undoes the backslash escapes, maps `\\N` to None, and decodes each field with its column's
    type, then hands rows over in batches (one batch per CopyData message). A wrong field
    count is 22P04. On CopyDone it calls `finish`, whose tag ends the command. If the client
    sends CopyFail, or anything fails, `abort` is called instead and no `finish`.
    """

    def __init__(self, columns: Sequence[Column], format: CopyFormat = TEXT_FORMAT) -> None:
        self.columns = list(columns)
        #: text (default), csv or binary, with their options (`twinstream.pgwire.copy`)
        self.format = format

    @abstractmethod
    async def write_rows(self, rows: list[tuple[object, ...]]) -> None:
        """A batch of decoded rows."""

    async def finish(self, row_count: int) -> str:
        """All data arrived; the returned CommandComplete tag (default "COPY n")."""
        return f"COPY {row_count}"

    async def abort(self, reason: str) -> None:  # noqa: B027 - optional hook
        """The COPY failed (client CopyFail, bad data, cancellation, disconnect)."""


@dataclass
class CopyOutStream:
    """Returned by `execute` for `COPY ... TO STDOUT` (and SUBSCRIBE, which never ends).

    Each row is sent as one CopyData line in text format (tab-separated, `\\N` for NULL,
    backslash escapes). The stream ends with CopyDone and `command_tag` ("COPY n" if None).
    A cancel (or shutdown) stops it with an ErrorResponse, as PostgreSQL does.
    """

    columns: list[Column]
    rows: Rows
    command_tag: str | None = None
    #: text (default), csv or binary, with their options; HEADER writes the column names
    format: CopyFormat = TEXT_FORMAT


ExecuteResult = QueryResult | CopyInRequest | CopyOutStream


@dataclass(frozen=True)
class BackendKey:
    """The (process id, secret key) pair of BackendKeyData; a CancelRequest must quote both.

    Both are unsigned 32-bit values. The key allocator is injectable so that the balancer can
    encode the generation that serves a connection in it and route CancelRequests.
    """

    pid: int
    secret: int


KeyAllocator = Callable[[], BackendKey]


class ConnectionContext:
    """What a session knows about its connection, and its way of talking out of band."""

    def __init__(
        self,
        *,
        user: str,
        database: str,
        params: Mapping[str, str],
        peer: tuple[str, int] | None,
        key: BackendKey,
        notice_sink: Callable[[Notice], None],
        parameter_sink: Callable[[str, str], None],
    ) -> None:
        self.user = user
        self.database = database
        #: The startup parameters as the client sent them (user, database, options, ...).
        self.params = dict(params)
        self.peer = peer
        self.key = key
        self._notice_sink = notice_sink
        self._parameter_sink = parameter_sink

    def notice(
        self,
        message: str,
        *,
        severity: str = "NOTICE",
        sqlstate: str = SqlState.SUCCESSFUL_COMPLETION,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        """Send a NoticeResponse (NOTICE, WARNING, INFO, LOG or DEBUG)."""
        self._notice_sink(Notice(message, severity, sqlstate, detail, hint))

    def parameter_status(self, name: str, value: str) -> None:
        """Send a ParameterStatus (after `SET application_name`, `SET TimeZone`, ...)."""
        self._parameter_sink(name, value)


class Session(ABC):
    """One connection's view of the database. Only `describe` and `execute` are required."""

    async def startup(self, params: Mapping[str, str]) -> Mapping[str, str]:
        """Called once after authentication with the startup parameters.

        Returns ParameterStatus values to add to (or override) the server's defaults. Raise a
        FATAL PgError to refuse the session (for example 3D000 unknown database).
        """
        return {}

    @abstractmethod
    async def describe(self, sql: str, param_oids: Sequence[int]) -> StatementDescription:
        """Parameter types (inferring the 0s) and result columns of one statement."""

    @abstractmethod
    async def execute(
        self, sql: str, params: Sequence[object], param_oids: Sequence[int]
    ) -> ExecuteResult:
        """Run one statement with decoded parameter values (empty for a simple Query)."""

    async def describe_cursor(self, name: str) -> list[Column] | None:
        """Columns of a cursor made by SQL `DECLARE name CURSOR ...` (None: no rows)."""
        raise PgError(SqlState.INVALID_CURSOR_NAME, f'portal "{name}" does not exist')

    def transaction_status(self) -> TransactionStatus:
        """I (idle), T (in a transaction block) or E (in a failed transaction block)."""
        return "I"

    async def cancel(self) -> None:  # noqa: B027 - optional hook
        """A CancelRequest quoting this session's key arrived: stop the running statement."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """The connection ended (Terminate, disconnect, FATAL or shutdown). Called once."""


SessionFactory = Callable[[ConnectionContext], Session]
