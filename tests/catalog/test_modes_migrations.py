"""Open modes and catalog versions, on SQLite and PostgreSQL.

- savepoint: mutations (and migrations) stay in memory, never durable;
- migrations: run in memory by a savepoint, durably exactly once by a writable open; an older
  binary then refuses to write (IncompatibleCatalogVersion) but can still read;
- data of kinds this binary does not know (a newer version's) is refused by name;
- temporary (session-owned) items are not committed ids.
"""

from __future__ import annotations

import pytest
from _catalog_helpers import (
    clients,
    commit_item,
    item_names,
    open_cat,
    shard_position,
)

from twinstream.catalog import (
    CATALOG_SHARD,
    DEFAULT_MIGRATIONS,
    DeployGenerationFenced,
    FenceError,
    IncompatibleCatalogVersion,
    Migration,
    OpenMode,
    Transaction,
    UnknownCatalogData,
    newest_version,
    read_catalog_generation,
)
from twinstream.catalog.state import encode_value, row
from twinstream.clock import SYSTEM_CLOCK
from twinstream.persist import PersistClient
from twinstream.testing.locations import Location

# -- savepoint ---------------------------------------------------------------------------------


async def test_savepoint_mutations_never_become_durable(location: Location) -> None:
    async with clients(location, 3) as [cw, cs, cr]:
        leader = await open_cat(cw, OpenMode.WRITABLE, 1)
        await commit_item(leader, "durable")
        before = await shard_position(cw)

        sp = await open_cat(cs, OpenMode.SAVEPOINT, 2)
        assert sp.token is not None and sp.token.deploy_generation == 2
        for i in range(3):
            await commit_item(sp, f"savepoint-{i}")
        txn = sp.transaction()
        txn.insert("system_parameter", "sp_only", "1")
        await sp.commit(txn)
        assert item_names(sp) == {"durable", "savepoint-0", "savepoint-1", "savepoint-2"}
        assert await sp.sync() == []  # a savepoint does not follow
        await sp.confirm_leadership()  # nor is it ever fenced

        assert await shard_position(cw) == before, "a savepoint writes nothing, not even a fence"
        assert await read_catalog_generation(cr) == 1
        ro = await open_cat(cr, OpenMode.READ_ONLY, None)
        assert item_names(ro) == {"durable"}
        assert "sp_only" not in ro.state.system_parameters()

        # The writable generation 1 is untouched by the generation-2 savepoint.
        await leader.confirm_leadership()
        await commit_item(leader, "after-savepoint")
        await ro.sync()
        assert item_names(ro) == {"durable", "after-savepoint"}


# -- migrations --------------------------------------------------------------------------------

_migration_calls = 0


def _next_release_migration(txn: Transaction) -> None:
    global _migration_calls
    _migration_calls += 1
    txn.insert("system_parameter", "next_release_flag", "on")


async def test_migrations_run_in_memory_or_durably_exactly_once(location: Location) -> None:
    global _migration_calls
    _migration_calls = 0
    current = newest_version(DEFAULT_MIGRATIONS)
    next_release = (
        *DEFAULT_MIGRATIONS,
        Migration(current, "test: next release", _next_release_migration),
    )
    assert newest_version(next_release) == current + 1

    async with clients(location, 2) as [cw, cr]:

        async def durable_version() -> tuple[int | None, dict[str, str]]:
            ro = await open_cat(cr, OpenMode.READ_ONLY, None)
            return ro.state.catalog_version, ro.state.system_parameters()

        old = await open_cat(cw, OpenMode.WRITABLE, 1)  # today's release creates the catalog
        await commit_item(old, "t")
        assert old.state.catalog_version == current
        assert _migration_calls == 0

        # Savepoint of the next release: migrated in memory only.
        sp = await open_cat(cw, OpenMode.SAVEPOINT, 2, next_release)
        assert _migration_calls == 1
        assert sp.state.catalog_version == current + 1
        assert sp.state.system_parameters()["next_release_flag"] == "on"
        assert item_names(sp) == {"t"}
        version, params = await durable_version()
        assert version == current and "next_release_flag" not in params

        # Writable open of the next release: migrated durably, in the fencing write.
        new = await open_cat(cw, OpenMode.WRITABLE, 2, next_release)
        assert _migration_calls == 2
        assert new.state.catalog_version == current + 1
        version, params = await durable_version()
        assert version == current + 1 and params["next_release_flag"] == "on"
        with pytest.raises(FenceError.DeployGeneration):
            await old.confirm_leadership()

        # Re-opening (restart, same or later generation) does not migrate again.
        for gen in (2, 3):
            again = await open_cat(cw, OpenMode.WRITABLE, gen, next_release)
            assert again.state.catalog_version == current + 1
            await commit_item(again, f"g{gen}")
        assert _migration_calls == 2, "a durable migration runs exactly once"

        # Today's binary no longer writes (nor savepoints) the migrated catalog ...
        before = await shard_position(cw)
        for mode in (OpenMode.WRITABLE, OpenMode.SAVEPOINT):
            with pytest.raises(IncompatibleCatalogVersion) as err:
                await open_cat(cw, mode, 4)
            msg = str(err.value)
            assert f"catalog_version {current + 1}" in msg, msg
            assert f"newest {current}" in msg and mode.value in msg, msg
        assert await shard_position(cw) == before
        assert await read_catalog_generation(cw) == 3
        # ... but it still reads it.
        ro = await open_cat(cr, OpenMode.READ_ONLY, None)
        assert ro.state.catalog_version == current + 1
        assert item_names(ro) == {"t", "g2", "g3"}
        assert _migration_calls == 2


async def test_fresh_catalog_starts_at_newest_version(location: Location) -> None:
    """A fresh catalog is created at the binary's newest version: no migration runs."""
    global _migration_calls
    _migration_calls = 0
    current = newest_version(DEFAULT_MIGRATIONS)
    next_release = (*DEFAULT_MIGRATIONS, Migration(current, "test", _next_release_migration))
    async with clients(location) as [client]:
        cat = await open_cat(client, OpenMode.WRITABLE, 1, next_release)
        assert cat.state.catalog_version == current + 1
        assert _migration_calls == 0
        assert cat.state.get("id_alloc", "audit_log") is not None  # bootstrap covers v1 -> v2


# -- unknown data ------------------------------------------------------------------------------


async def _append_raw(client: PersistClient, rows: list[tuple[tuple[str, str, str], int]]) -> None:
    """What a newer binary would write: raw catalog rows at the next catalog timestamp."""
    shard = client.open(CATALOG_SHARD)
    upper = await shard.upper()
    ts = max(upper, SYSTEM_CLOCK.now_ms())
    updates = [(r, ts, d) for r, d in rows]
    assert await shard.compare_and_append(updates, upper, ts + 1) is None


async def test_unknown_kind_is_refused_by_name(location: Location) -> None:
    async with clients(location, 3) as [cw, cr, cf]:
        leader = await open_cat(cw, OpenMode.WRITABLE, 1)
        await commit_item(leader, "t")
        follower = await open_cat(cf, OpenMode.READ_ONLY, None)
        await _append_raw(cr, [(("newkind", "k", "{}"), 1)])
        before = await shard_position(cr)

        for mode, gen in (
            (OpenMode.READ_ONLY, None),
            (OpenMode.SAVEPOINT, 2),
            (OpenMode.WRITABLE, 2),
        ):
            with pytest.raises(UnknownCatalogData, match="newkind") as err:
                await open_cat(cr, mode, gen)
            assert "newer version" in str(err.value)
        assert await shard_position(cr) == before, "refusing the data writes nothing"
        assert await read_catalog_generation(cr) == 1  # the fence still reads
        with pytest.raises(UnknownCatalogData, match="newkind"):  # so does a follower
            await follower.sync()
        assert item_names(follower) == {"t"}


async def test_newer_binary_fence_is_recognised_despite_unknown_data(location: Location) -> None:
    """A newer binary's fence token is decoded before anything else: an older generation is
    fenced (and exits cleanly) rather than crashing on data it does not understand."""
    async with clients(location, 2) as [cw, cn]:
        leader = await open_cat(cw, OpenMode.WRITABLE, 1)
        assert leader.token is not None
        old_token = encode_value(leader.token.to_json())
        newer = encode_value({"deploy_generation": 5, "epoch": leader.token.epoch + 1})
        await _append_raw(
            cn,
            [
                (("fence_token", "", old_token), -1),
                (("fence_token", "", newer), 1),
                (("newkind", "k", encode_value({"x": 1})), 1),
                (row("item", "u77", {"type": "table", "name": "v5"}), 1),
            ],
        )
        assert await read_catalog_generation(cn) == 5
        with pytest.raises(DeployGenerationFenced) as err:
            await commit_item(leader, "t")
        assert err.value.fence == 5
        with pytest.raises(FenceError.DeployGeneration):
            await open_cat(cn, OpenMode.WRITABLE, 4)


# -- temporary items ---------------------------------------------------------------------------


async def test_temporary_items_are_not_committed_ids(location: Location) -> None:
    async with clients(location, 2) as [cw, cr]:
        cat = await open_cat(cw, OpenMode.WRITABLE, 1)
        kept, _ = await commit_item(cat, "kept")
        temp, _ = await commit_item(cat, "temp", temporary_session="conn-7")
        also, _ = await commit_item(cat, "also-kept", temporary_session=None)
        txn = cat.transaction()
        txn.insert("item", "s1", {"type": "view", "name": "system-view"})  # not a user id
        rid = txn.allocate_id("replica")
        txn.insert("cluster_replica", rid, {"name": "r2", "cluster_id": "u1", "size": "1"})
        await cat.commit(txn)

        assert temp in cat.state.items()  # it exists in the catalog ...
        assert cat.committed_user_item_ids() == {kept, also}  # ... but is not a committed id
        items, replicas = await cat.committed_ids()
        assert items == {kept, also}
        assert rid in replicas
        ro = await open_cat(cr, OpenMode.READ_ONLY, None)
        assert ro.state.user_item_ids() == {kept, also}
        assert (await ro.committed_ids())[0] == {kept, also}
