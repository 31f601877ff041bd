"""twinstream.pgwire: our PostgreSQL v3 wire-protocol server, independent of SQL execution.

Layers (see doc/design/pgwire.md):
- `messages`, `codec`: sans-IO message dataclasses, encoders and incremental parsers.
- `types`: type OIDs and the text/binary encodings of the supported types.
- `backend`: the narrow interface a SQL layer implements (`Session` and its results).
- `auth`: trust, cleartext and SCRAM-SHA-256 authenticators.
- `server`, `connection`: the asyncio server and its per-connection protocol state machine.
- `sqlsplit`, `copy`: splitting simple-Query strings; COPY text format.
"""

from twinstream.pgwire.auth import (
    Authenticator,
    CleartextPasswordAuthenticator,
    ScramSha256Authenticator,
    TrustAuthenticator,
)
from twinstream.pgwire.backend import (
    BackendKey,
    Column,
    ConnectionContext,
    CopyInRequest,
    CopyOutStream,
    ExecuteResult,
    KeyAllocator,
    QueryResult,
    Row,
    Rows,
    Session,
    SessionFactory,
    StatementDescription,
)
from twinstream.pgwire.errors import Notice, PgError, ProtocolViolation, SqlState
from twinstream.pgwire.server import PgWireServer, SequentialKeyAllocator
from twinstream.pgwire.sqlsplit import split_statements
from twinstream.pgwire.types import Oid

__all__ = [
    "Authenticator",
    "BackendKey",
    "CleartextPasswordAuthenticator",
    "Column",
    "ConnectionContext",
    "CopyInRequest",
    "CopyOutStream",
    "ExecuteResult",
    "KeyAllocator",
    "Notice",
    "Oid",
    "PgError",
    "PgWireServer",
    "ProtocolViolation",
    "QueryResult",
    "Row",
    "Rows",
    "ScramSha256Authenticator",
    "SequentialKeyAllocator",
    "Session",
    "SessionFactory",
    "SqlState",
    "StatementDescription",
    "TrustAuthenticator",
    "split_statements",
]
