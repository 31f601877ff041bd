"""Named limits of the pgwire layer, in one place so that they can be reasoned about together."""

from __future__ import annotations

#: Largest frontend message accepted, length word included (PostgreSQL itself allows 1 GiB).
#: A bigger length word is treated as garbage: FATAL 08P01 and the connection is closed.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Largest startup-phase packet (StartupMessage, SSLRequest, CancelRequest); PostgreSQL's
#: MAX_STARTUP_PACKET_LENGTH.
MAX_STARTUP_PACKET_BYTES = 10_000
#: Largest message of the types that never carry a payload of their own size (Sync, Flush,
#: Terminate, Describe, Close, Execute, CopyDone, CopyFail); PostgreSQL's PQ_SMALL_MESSAGE_LIMIT.
MAX_SMALL_MESSAGE_BYTES = 10_000
#: Default number of sessions served at once; one more gets FATAL 53300 "too many clients".
MAX_CONNECTIONS_DEFAULT = 1024
#: Time a new connection has to finish its startup packet and authentication.
STARTUP_TIMEOUT_S = 60.0
#: Bytes read from a socket per read call.
READ_CHUNK_BYTES = 64 * 1024
#: Outgoing bytes buffered before they are written (and drained) in the middle of a result.
OUTPUT_FLUSH_BYTES = 64 * 1024
#: Rows taken from a result iterator at a time; cancellation is checked between batches.
ROW_BATCH = 512
#: How long shutdown waits for a closing connection's last bytes (the FATAL) to be written.
SHUTDOWN_FLUSH_TIMEOUT_S = 2.0
#: At shutdown, how long statements already running may take to finish and be answered
#: before they are cut off with FATAL 57P01 (a write's commit is decided long before: the
#: group commit drains first; this bounds reads and SUBSCRIBEs, which are safe to re-send).
SHUTDOWN_GRACE_S = 1.0
#: PBKDF2 iterations of the SCRAM-SHA-256 verifiers computed from plain passwords (PostgreSQL's
#: scram_iterations default).
SCRAM_ITERATIONS = 4096
#: Bytes of random server nonce in a SCRAM exchange.
SCRAM_NONCE_BYTES = 18
