"""twinstream.persist: durable, time-varying collections ("shards") of (row, time, diff).

Start here: `PersistClient.from_urls(consensus_url, blob_url).open(shard_id)` -> `Shard`, with
`compare_and_append`, `snapshot`, `listen`, read holds and compaction. The state of a shard and
its pure transitions are in `state.py`; `machine.py` is the compare-and-set loop; the storage
seams (`Consensus`, `Blob`) are in `location.py`. See doc/design/persist.md.
"""

from twinstream.persist.client import PersistClient
from twinstream.persist.errors import (
    BlobMissing,
    InvalidUpdateTime,
    InvalidUsage,
    LeaseExpired,
    LocationUnavailable,
    OpaqueMismatch,
    PersistError,
    ReadBeforeSince,
    ReadNotYetAvailable,
    UpperMismatch,
)
from twinstream.persist.location import Blob, ChangeFeed, Consensus, VersionedData
from twinstream.persist.machine import (
    CriticalReadHandle,
    ExtraMismatch,
    LeasedReadHandle,
    ListenEvent,
    Progress,
    Shard,
    Updates,
    compare_and_append_many,
    compare_and_transform_many,
)
from twinstream.persist.types import Diff, Row, Timestamp, Update, consolidate, consolidate_rows
from twinstream.persist.urls import open_blob, open_consensus

__all__ = [
    "Blob",
    "BlobMissing",
    "ChangeFeed",
    "Consensus",
    "CriticalReadHandle",
    "Diff",
    "ExtraMismatch",
    "InvalidUpdateTime",
    "InvalidUsage",
    "LeaseExpired",
    "LeasedReadHandle",
    "ListenEvent",
    "LocationUnavailable",
    "OpaqueMismatch",
    "PersistClient",
    "PersistError",
    "Progress",
    "ReadBeforeSince",
    "ReadNotYetAvailable",
    "Row",
    "Shard",
    "Timestamp",
    "Update",
    "Updates",
    "UpperMismatch",
    "VersionedData",
    "compare_and_append_many",
    "compare_and_transform_many",
    "consolidate",
    "consolidate_rows",
    "open_blob",
    "open_consensus",
]
