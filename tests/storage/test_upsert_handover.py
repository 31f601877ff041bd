"""UPSERT across an upgrade with real processes: the read-only generation hydrates the per-key
state by following the leader's output shards (appending nothing, refusing webhooks), and at
promotion its ingestion continues from the durable binding with the handed-over state: one
row per key, the latest value, for a KEY VALUE generator ticking every 10 ms and a keyed
webhook sender that switches to the new leader."""

from __future__ import annotations

import json
import threading
import urllib.error
from pathlib import Path

from twinstream.testing.clients import leader_status, post, sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess
from twinstream.testing.http import http

PATH = "/api/webhook/twinstream/public/w"
KEYS = 10
#: Keys the webhook sender cycles through.
WEBHOOK_KEYS = 5
#: Webhook values acknowledged by the new leader before the sender stops.
AFTER_PROMOTION = 20


def kv_top(env: EnvironmentdProcess) -> int:
    """The newest record in the KEY VALUE state, after checking it: one row per key, each the
    latest record of its key (the values are consecutive offsets)."""
    rows = sql(env, "SELECT key, value FROM kv")[0]
    keys = [int(r[0]) for r in rows]  # type: ignore[call-overload]
    values = sorted(int(r[1]) for r in rows)  # type: ignore[call-overload]
    assert len(keys) == len(set(keys)), f"a key has two rows: {sorted(rows)}"  # type: ignore[type-var]
    assert all(int(v) % KEYS == int(k) for k, v in rows), rows  # type: ignore[call-overload]
    if not values:
        return -1
    top = values[-1]
    assert values == list(range(max(top - KEYS + 1, 0), top + 1)), f"gap or stale: {values}"
    return top


def webhook_state(env: EnvironmentdProcess) -> dict[str, int]:
    rows = sql(env, "SELECT key, (body->>'n')::int FROM w")[0]
    keys = [str(r[0]) for r in rows]
    assert len(keys) == len(set(keys)), f"a key has two rows: {sorted(keys)}"
    return {str(r[0]): int(r[1]) for r in rows}  # type: ignore[call-overload]


class Sender(threading.Thread):
    """Upserts n = 1, 2, 3, ... under key n % WEBHOOK_KEYS, one at a time, to the old leader
    until it refuses (503) or goes away, then to the new one; each value until a 200."""

    def __init__(self, old: EnvironmentdProcess, new: EnvironmentdProcess) -> None:
        super().__init__(daemon=True)
        self.targets = [old, new]
        self.acked: list[int] = []
        self.refusals = 0
        self.stop_after: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n, target = 1, 0
            while self.stop_after is None or len(self.acked) < self.stop_after:
                body = json.dumps({"id": str(n % WEBHOOK_KEYS), "n": n}).encode()
                try:
                    code, _, _ = post(self.targets[target].http_port, PATH, body)
                except (urllib.error.URLError, ConnectionError):
                    code = 0
                if code == 200:
                    self.acked.append(n)
                    n += 1
                    continue
                assert code in (0, 503), code
                self.refusals += 1
                target = 1
        except BaseException as e:
            self.error = e


def test_upsert_state_hydrates_read_only_and_hands_over(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    sender: Sender | None = None
    try:
        sql(
            old,
            f"CREATE SOURCE kv FROM LOAD GENERATOR KEY VALUE (KEYS {KEYS}, BATCH SIZE 2, "
            "TICK INTERVAL '10ms') ENVELOPE UPSERT",
            "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON ENVELOPE UPSERT (KEY (body->>'id'))",
        )
        wait_for("keys overwritten", lambda: kv_top(old) >= 3 * KEYS, old)
        new.start()
        sender = Sender(old, new)
        sender.start()
        wait_for("ReadyToPromote", lambda: leader_status(new) == "ReadyToPromote", new)
        # read-only: follows the leader's upserts (one row per key), refuses webhooks
        seen = kv_top(new)
        wait_for("the new one follows", lambda: kv_top(new) > seen + KEYS, new)
        code, headers, _ = post(new.http_port, PATH, b'{"id": "x", "n": 0}')
        assert code == 503 and headers.get("Retry-After") == "1"
        wait_for("webhook values flow", lambda: len(sender.acked) >= 10)  # type: ignore[union-attr]
        assert len(webhook_state(new)) <= WEBHOOK_KEYS
        promoted = http(new.internal_http_port, "POST", "/api/leader/promote", timeout_s=30)
        assert promoted[0] == 200
        wait_for("IsLeader", lambda: leader_status(new) == "IsLeader", new)
        assert old.proc is not None
        old.proc.wait(timeout=30)
        assert old.proc.returncode == 0, old.log_tail()
        sender.stop_after = len(sender.acked) + AFTER_PROMOTION
        at_promotion = kv_top(new)
        wait_for("the new leader upserts", lambda: kv_top(new) >= at_promotion + 3 * KEYS, new)
        sender.join(timeout=60)
        assert not sender.is_alive() and sender.error is None, sender.error
        assert sender.refusals >= 1  # the handover was exercised
        # every key holds exactly one row: its latest acknowledged value
        want: dict[str, int] = {}
        for n in sender.acked:
            want[str(n % WEBHOOK_KEYS)] = n
        assert webhook_state(new) == want
        # the new leader used the state it hydrated while read-only
        log = new.log_path.read_text(errors="replace")
        assert log.count("handed over") == 2, new.log_tail()
        assert "ended early" not in log
        top = kv_top(new)
        [[(offset,)]] = sql(new, 'SELECT "offset" FROM kv_progress')
        assert isinstance(offset, int) and offset >= top + 1  # the binding covers the data
    finally:
        if sender is not None:
            sender.stop_after = 0
        old.stop()
        new.stop()
