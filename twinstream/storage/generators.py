"""Load generators: deterministic functions of the upstream offset.

`batch(offset, now_ms)` returns the rows of upstream record `offset` per output and the next
offset. Identity (ids, keys, amounts, items) depends on the offset alone, so a generator
resumed at the durable offset continues exactly where the last one stopped; only event times
(`end_time`, `bid_time`) come from the clock, as with Materialize's generators.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any, Protocol

from twinstream.persist.types import Row

#: Default tick (Materialize's load generators tick once a second).
DEFAULT_TICK_S = 1.0
#: AUCTION's fixed population, emitted at offset 0.
AUCTION_ORGANIZATIONS = 10
AUCTION_USERS = 100
#: Bids per auction are drawn from 0..AUCTION_MAX_BIDS.
AUCTION_MAX_BIDS = 4
#: How long an auction stays open after it is created.
AUCTION_DURATION_MS = 10_000
#: KEY VALUE's largest key space and records per tick (the state is held in memory).
KEY_VALUE_MAX_KEYS = 1_000_000
MAX_BATCH_SIZE = 100_000
_ITEMS = ("Signed Memorabilia", "City Bar Crawl", "Best Pizza in Town", "Gift Basket", "Custom Art")


def _col(name: str, type_: str) -> dict[str, Any]:
    return {"name": name, "type": type_, "nullable": False}


@dataclass(frozen=True)
class Output:
    name: str
    columns: list[dict[str, Any]]


class Generator(Protocol):
    outputs: tuple[Output, ...]

    def batch(self, offset: int, now_ms: int) -> tuple[dict[str, list[Row]], int]: ...


class Counter:
    """COUNTER: one row per tick, `counter` = 1, 2, 3, ... (offset + 1)."""

    outputs: tuple[Output, ...] = (Output("counter", [_col("counter", "int8")]),)

    def batch(self, offset: int, now_ms: int) -> tuple[dict[str, list[Row]], int]:
        return {"counter": [(offset + 1,)]}, offset + 1


def _ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class Auction:
    """AUCTION: offset 0 is the population (organizations, users, accounts); every later
    offset k opens auction k with a few bids by existing users. Keys are consistent: every
    bid names an existing auction and user, every user and account an organization."""

    outputs: tuple[Output, ...] = (
        Output("organizations", [_col("id", "int8"), _col("name", "text")]),
        Output("users", [_col("id", "int8"), _col("org_id", "int8"), _col("name", "text")]),
        Output("accounts", [_col("id", "int8"), _col("org_id", "int8"), _col("balance", "int8")]),
        Output(
            "auctions",
            [
                _col("id", "int8"),
                _col("seller", "int8"),
                _col("item", "text"),
                _col("end_time", "timestamptz"),
            ],
        ),
        Output(
            "bids",
            [
                _col("id", "int8"),
                _col("buyer", "int8"),
                _col("auction_id", "int8"),
                _col("amount", "int4"),
                _col("bid_time", "timestamptz"),
            ],
        ),
    )

    def batch(self, offset: int, now_ms: int) -> tuple[dict[str, list[Row]], int]:
        out: dict[str, list[Row]] = {o.name: [] for o in self.outputs}
        if offset == 0:
            for org in range(1, AUCTION_ORGANIZATIONS + 1):
                out["organizations"].append((org, f"org-{org}"))
                out["accounts"].append((org, org, 1_000_000))
            for user in range(1, AUCTION_USERS + 1):
                org = (user - 1) % AUCTION_ORGANIZATIONS + 1
                out["users"].append((user, org, f"user-{user}"))
            return out, 1
        rng = random.Random(offset)
        seller = rng.randint(1, AUCTION_USERS)
        item = _ITEMS[rng.randrange(len(_ITEMS))]
        out["auctions"].append((offset, seller, item, _ts(now_ms + AUCTION_DURATION_MS)))
        for j in range(rng.randint(0, AUCTION_MAX_BIDS)):
            bid_id = offset * (AUCTION_MAX_BIDS + 1) + j
            buyer = rng.randint(1, AUCTION_USERS)
            out["bids"].append((bid_id, buyer, offset, rng.randint(1, 100), _ts(now_ms)))
        return out, offset + 1


class KeyValue:
    """KEY VALUE (ENVELOPE UPSERT): record k upserts key `k % keys` with value k, `batch`
    records per tick. The expected state at binding O is therefore exact: every key holds the
    largest k < O with that key. Materialize's KEY VALUE emits random bytes; ours are the
    record offsets so tests can check latest-wins, no duplicate and no gap."""

    outputs: tuple[Output, ...] = (
        Output("key value", [_col("key", "int8"), _col("value", "int8")]),
    )

    def __init__(self, keys: int, batch: int) -> None:
        assert keys > 0 and batch > 0, (keys, batch)
        self.keys = keys
        self.batch_size = batch

    def batch(self, offset: int, now_ms: int) -> tuple[dict[str, list[Row]], int]:
        end = offset + self.batch_size
        return {"key value": [(k % self.keys, k) for k in range(offset, end)]}, end


GENERATORS: dict[str, type[Counter] | type[Auction] | type[KeyValue]] = {
    "counter": Counter,
    "auction": Auction,
    "key value": KeyValue,
}
#: Generators whose output is an UPSERT collection (key = column 0); they need ENVELOPE UPSERT.
UPSERT_GENERATORS = frozenset({"key value"})


def make(name: str, keys: int = 0, batch: int = 1) -> Generator:
    if name == "key value":
        return KeyValue(keys, batch)
    return Counter() if name == "counter" else Auction()
