"""Named limits of persist, in one place so that they can be reasoned about together."""

from __future__ import annotations

#: Batches whose encoding is at most this many bytes live inline in the shard state
#: (one consensus write per append, no blob round trip).
INLINE_BATCH_MAX_BYTES = 4096
#: Upper bound on the sum of inline batch bytes in one state; beyond it batches go to blob.
INLINE_TOTAL_MAX_BYTES = 64 * 1024
#: When a shard has more batches than this, the writer merges them (compaction).
COMPACTION_BATCH_COUNT = 16
#: Versions older than head - this many are truncated from consensus.
CONSENSUS_VERSIONS_KEPT = 32
#: Default lease of a leased reader (and of a writer registration).
LEASE_DEFAULT_MS = 60_000
#: How often a listener re-reads state without a change notification (safety net).
LISTEN_POLL_FALLBACK_S = 0.25
#: Bounded retries for compare-and-set races inside one logical operation.
CAS_RETRY_MAX = 10_000
#: How many times a reader re-reads state when a referenced blob vanished under it (compaction).
BLOB_RACE_RETRY_MAX = 20
#: The empty frontier: a shard whose upper is this is sealed (no more times will appear).
FRONTIER_EMPTY = 2**63 - 1
