"""A materialized view's evaluation errors, as a reader sees them.

A dataflow does not stop on a row it cannot evaluate (`1/x` with `x = 0`): the error becomes an
update of its `$errors` collection, with the row's time and diff, so it is retracted with the
row. The replicas write that collection to the view's errors shard (`errors_shard_id`, rows
`(sqlstate, message)`), beside its output shard. environmentd follows it here and a read of
the view at T fails with the error (SQLSTATE and message as the dataflow raised them: 22012
`division by zero`) while the collection is non-empty at T — as in Materialize, where SELECT
from a view with errors fails until the offending rows are gone, and the dataflow keeps
running meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from twinstream.adapter.errors import AdapterError
from twinstream.persist.types import Diff, Row


def errors_shard_id(output_shard_id: str) -> str:
    """The errors shard of a view, derived from its output shard (no catalog field: views
    created before errors were surfaced get one too)."""
    return f"{output_shard_id}-errors"


class ViewErrors:
    """The accumulated `(sqlstate, message)` rows of one view's errors collection; the
    `MirrorTarget` of a `TableFollower` on its errors shard."""

    def __init__(self, view_name: str) -> None:
        self.view_name = view_name
        self.counts: dict[Row, Diff] = {}
        #: Bumped by every change after which an error is present, with that error in
        #: `last_error`: a running SUBSCRIBE compares it with its start value, so an error
        #: retracted again before it looked still ends the subscription.
        self.episodes = 0
        self.last_error: tuple[str, str] | None = None

    def replace_contents(self, table: str, ncols: int, rows: Sequence[tuple[Row, Diff]]) -> None:
        self.counts = {}
        self.apply(table, ncols, rows)

    def apply(self, table: str, ncols: int, updates: Sequence[tuple[Row, Diff]]) -> None:
        for row, d in updates:
            n = self.counts.get(row, 0) + d
            if n:
                self.counts[row] = n
            else:
                self.counts.pop(row, None)
        found = self.first() if updates else None
        if found is not None:
            self.episodes += 1
            self.last_error = found

    def first(self) -> tuple[str, str] | None:
        """One present error (the smallest, so every reader reports the same one)."""
        present = sorted(row for row, n in self.counts.items() if n > 0)
        if not present:
            return None
        sqlstate, message = present[0][0], present[0][1]
        return str(sqlstate), str(message)

    def check(self, since_episode: int | None = None) -> None:
        """Raise the view's error, if it has one (the caller waited for the read time); with
        `since_episode`, also the last error seen after that value of `episodes`."""
        found = self.first()
        if found is None and since_episode is not None and self.episodes != since_episode:
            found = self.last_error
        if found is not None:
            sqlstate, message = found
            raise AdapterError(
                sqlstate,
                message,
                detail=f'while evaluating materialized view "{self.view_name}"',
            )
