"""Failpoints: named places where the orchestrator can be made to crash, for tests that kill
it in each rollout phase at an exact point (a real SIGKILL cannot aim that precisely).

`TWINSTREAM_FAILPOINTS=name[,name...]` in the environment makes `failpoint(name)` end the
process at once with exit code 137 — like SIGKILL: no cleanup, child processes keep running.
Unset (always, outside tests), a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV = "TWINSTREAM_FAILPOINTS"
#: The exit code of a process killed by SIGKILL, as a shell reports it.
CRASH_EXIT_CODE = 137


def failpoint(name: str) -> None:
    """Crash here if `name` is armed."""
    armed = os.environ.get(ENV)
    if armed and name in armed.split(","):
        log.error("failpoint %s: crashing", name)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
