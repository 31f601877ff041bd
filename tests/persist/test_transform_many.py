"""`compare_and_transform_many`: pure transitions on several shards plus extra consensus legs
in one consensus transaction (what promotion uses to claim the oracle and take over every
table's critical hold at once), on SQLite and PostgreSQL consensus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from twinstream.persist import (
    ExtraMismatch,
    OpaqueMismatch,
    PersistClient,
    VersionedData,
    compare_and_transform_many,
)
from twinstream.persist import state as st
from twinstream.persist.state import ShardState
from twinstream.testing.locations import Location

HOLD = "controller"


@pytest.fixture
async def client(location: Location) -> AsyncIterator[PersistClient]:
    c = PersistClient.from_urls(location.consensus_url, location.blob_url)
    try:
        yield c
    finally:
        await c.close()


def take(ours: list[int]) -> Callable[[ShardState], ShardState]:
    def t(state: ShardState) -> ShardState:
        state = st.register_critical(state, HOLD, [1, 1])
        current = state.critical[HOLD].opaque
        return st.compare_and_downgrade_critical(state, HOLD, current, ours, 0)

    return t


async def test_all_shards_and_the_extra_leg_in_one_transaction(client: PersistClient) -> None:
    a, b = client.open("a"), client.open("b")
    assert await a.compare_and_append([(("x",), 0, 1)], 0, 1) is None
    assert await b.compare_and_append([(("y",), 0, 1), (("z",), 1, 1)], 0, 2) is None
    key = "oracle/test"
    assert await client.consensus.compare_and_set(key, None, VersionedData(0, b"v0"))

    # Someone else moves `b` after we cached its state: the transaction retries from fresh.
    other = client.open("b")
    assert await other.compare_and_append([(("w",), 2, 1)], 2, 3) is None

    leg = (key, 0, VersionedData(1, b"v1"))
    out = await compare_and_transform_many([(a, take([2, 1])), (b, take([2, 1]))], extra=[leg])
    assert not isinstance(out, ExtraMismatch)
    assert {k: s.upper for k, s in out.items()} == {"a": 1, "b": 3}  # b's final upper
    for shard in (client.open("a"), client.open("b")):
        state = await shard.fetch_state()
        assert list(state.critical[HOLD].opaque) == [2, 1]
    head = await client.consensus.head(key)
    assert head is not None and head.data == b"v1"

    # A stale extra leg: nothing is touched.
    before = (await client.open("a").fetch_state()).seqno
    stale = (key, 0, VersionedData(1, b"again"))
    out = await compare_and_transform_many([(a, take([3, 1]))], extra=[stale])
    assert out == ExtraMismatch((key,))
    state = await client.open("a").fetch_state()
    assert state.seqno == before and list(state.critical[HOLD].opaque) == [2, 1]


async def test_a_transition_that_fails_on_fresh_state_raises(client: PersistClient) -> None:
    a = client.open("a")
    assert await a.compare_and_append([(("x",), 0, 1)], 0, 1) is None

    def wrong_owner(state: ShardState) -> ShardState:
        state = st.register_critical(state, HOLD, [1, 1])
        return st.compare_and_downgrade_critical(state, HOLD, [9, 9], [2, 1], 0)

    with pytest.raises(OpaqueMismatch):
        await compare_and_transform_many([(a, wrong_owner)])
    assert await compare_and_transform_many([]) == {}
