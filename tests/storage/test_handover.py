"""Handover of sources across an upgrade with real processes: the read-only generation
follows the leader's source shards and appends nothing; on promotion its ingestion continues
from the durable binding; every counter value and every acknowledged webhook value appears
exactly once; statuses come from the current generation."""

from __future__ import annotations

import json
import threading
import urllib.error
from pathlib import Path

from twinstream.testing.clients import leader_status, post, sql, wait_for
from twinstream.testing.environmentd import EnvironmentdProcess
from twinstream.testing.http import http

PATH = "/api/webhook/twinstream/public/w"
#: Webhook values sent after the new generation became leader before the sender stops.
AFTER_PROMOTION = 20


def counter_values(env: EnvironmentdProcess) -> list[int]:
    return [int(r[0]) for r in sql(env, "SELECT counter FROM c ORDER BY counter")[0]]  # type: ignore[call-overload]


class Sender(threading.Thread):
    """Posts 1, 2, 3, ... one at a time to whichever generation accepts it: the old leader
    until it answers 503 or goes away, then the new one. A value is retried until a 200."""

    def __init__(self, old: EnvironmentdProcess, new: EnvironmentdProcess) -> None:
        super().__init__(daemon=True)
        self.targets = [old, new]
        self.acked: list[int] = []
        self.refusals = 0
        self.ambiguous: list[int] = []
        self.stop_after: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n, target = 1, 0
            while self.stop_after is None or len(self.acked) < self.stop_after:
                env = self.targets[target]
                try:
                    code, _, _ = post(env.http_port, PATH, json.dumps({"n": n}).encode())
                except (urllib.error.URLError, ConnectionError):
                    if target == 0:
                        self.ambiguous.append(n)  # outcome unknown: the old one went away
                    code = 0
                if code == 200:
                    self.acked.append(n)
                    n += 1
                    continue
                assert code in (0, 503), code
                self.refusals += 1
                if target == 0:
                    target = 1  # the old leader refuses: from now on, the new generation
        except BaseException as e:
            self.error = e


def test_counter_and_webhook_handover(data_dir: Path) -> None:
    old = EnvironmentdProcess(data_dir, generation=1)
    new = EnvironmentdProcess(data_dir, generation=2)
    old.start()
    sender: Sender | None = None
    try:
        sql(
            old,
            "CREATE SOURCE c FROM LOAD GENERATOR COUNTER (TICK INTERVAL '10ms')",
            "CREATE SOURCE w FROM WEBHOOK BODY FORMAT JSON",
        )
        wait_for("counter ticks", lambda: len(counter_values(old)) >= 5, old)
        new.start()
        sender = Sender(old, new)
        sender.start()
        wait_for("ReadyToPromote", lambda: leader_status(new) == "ReadyToPromote", new)
        # Read-only: follows the leader's source data, appends nothing, writes no status.
        seen = counter_values(new)
        assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 5
        wait_for("the new one follows", lambda: len(counter_values(new)) > len(seen), new)
        gens = sql(new, "SELECT DISTINCT generation FROM mz_internal.mz_source_status_history")
        assert gens[0] == [(1,)]
        wait_for("webhook values flow", lambda: len(sender.acked) >= 5)  # type: ignore[union-attr]
        code, _ = _promote(new)
        assert code == 200
        wait_for("IsLeader", lambda: leader_status(new) == "IsLeader", new)
        assert old.proc is not None
        old.proc.wait(timeout=30)
        assert old.proc.returncode == 0, old.log_tail()
        sender.stop_after = len(sender.acked) + AFTER_PROMOTION
        at_promotion = len(counter_values(new))
        wait_for(
            "the new leader ingests", lambda: len(counter_values(new)) >= at_promotion + 20, new
        )
        sender.join(timeout=60)
        assert not sender.is_alive() and sender.error is None, sender.error
        values = counter_values(new)
        assert values == list(range(1, len(values) + 1)), "counter: a duplicate or a gap"
        got = [int(r[0]) for r in sql(new, "SELECT body->>'n' FROM w")[0]]  # type: ignore[call-overload]
        assert sorted(got) == sorted(set(got)), f"duplicate webhook values: {sorted(got)}"
        assert set(sender.acked) <= set(got), "an acknowledged webhook value is missing"
        assert set(got) - set(sender.acked) <= set(sender.ambiguous)
        assert sender.refusals >= 1  # the handover was exercised
        wait_for(
            "statuses from generation 2",
            lambda: (
                sql(
                    new,
                    "SELECT name, status, generation"
                    " FROM mz_internal.mz_source_statuses ORDER BY 1",
                )[0]
                == [("c", "running", 2), ("w", "running", 2)]
            ),
            new,
        )
    finally:
        if sender is not None:
            sender.stop_after = 0
        old.stop()
        new.stop()


def _promote(env: EnvironmentdProcess) -> tuple[int, str]:
    return http(env.internal_http_port, "POST", "/api/leader/promote", timeout_s=30)
