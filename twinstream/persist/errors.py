"""Persist errors. Every error names the shard and the values involved.

`UpperMismatch` is an expected outcome of compare-and-append (returned, not raised);
the others are raised: misuse (`InvalidUsage`), missing data (`BlobMissing`) and an
unreachable store (`LocationUnavailable`).
"""

from __future__ import annotations

from dataclasses import dataclass


class PersistError(Exception):
    """Base class of everything persist raises."""


@dataclass(frozen=True)
class UpperMismatch:
    """compare_and_append lost: the shard's upper is not what the caller expected."""

    shard_id: str
    expected: int
    actual: int

    def __str__(self) -> str:
        return (
            f"upper mismatch on shard {self.shard_id}: expected {self.expected}, "
            f"actual {self.actual}"
        )


class InvalidUsage(PersistError):
    """The caller broke a persist contract (bad times, bad frontiers, unknown reader)."""


class InvalidUpdateTime(InvalidUsage):
    """An update's time is outside [expected_upper, new_upper)."""


class ReadBeforeSince(InvalidUsage):
    """A read at a time the shard has already compacted away."""


class ReadNotYetAvailable(InvalidUsage):
    """A snapshot at or beyond the upper: that time is not complete yet."""


class OpaqueMismatch(PersistError):
    """A critical reader's expected opaque token is stale: a newer owner took over."""

    def __init__(self, shard_id: str, reader_id: str, expected: object, actual: object) -> None:
        super().__init__(
            f"critical reader {reader_id} on shard {shard_id}: expected opaque {expected!r}, "
            f"actual {actual!r} (fenced by a newer holder)"
        )
        self.shard_id = shard_id
        self.reader_id = reader_id
        self.expected = expected
        self.actual = actual


class LeaseExpired(PersistError):
    """A leased reader was not heartbeated in time and lost its read hold."""


class BlobMissing(PersistError):
    """A batch that the shard state references is gone or does not decode."""


class LocationUnavailable(PersistError):
    """The consensus or blob store cannot be reached (indeterminate for writes)."""
