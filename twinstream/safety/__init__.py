"""Upgrade safety harness: checked histories of clients through the balancer while upgrades
and faults happen.

Start at `matrix.py` (a cell = backend x fault x phase; `run_cell` brings an environment up,
runs the workload, upgrades with the fault injected, checks). The pieces: `history.py` (what
is recorded), `checker.py` (pure anomaly checks), `workload.py` (clients), `faults.py`
(signals, phases, the TCP fault proxy), `cluster.py` (the processes of one environment),
`orchd.py` (the orchestrator as a killable process). Design: doc/design/verification.md.
"""
