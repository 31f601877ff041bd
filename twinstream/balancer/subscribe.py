"""Resuming a SUBSCRIBE on the next generation from its last progress timestamp. Pure.

A SUBSCRIBE streams COPY data until cancelled, so a cutover always cuts one. The balancer can
resume it, transparently, when all of these hold: it came as a simple Query outside a
transaction, alone, in a form this module can rewrite (`SUBSCRIBE [TO] name [WITH (...)]
[AS OF n] [UP TO n]`, optionally inside `COPY (...) TO STDOUT`), with `WITH (PROGRESS)`, and at
least one progress row reached the client. A progress row at U says every update before U was
sent, so the balancer re-issues it `AS OF U - 1` on the new generation and drops what the client
already has: the new CopyOutResponse, the snapshot rows (at U - 1) and progress rows up to U.
Anything else is ended with the old generation's FATAL, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SUBSCRIBE = re.compile(
    r"""^\s*(?P<copy>COPY\s*\(\s*)?
        SUBSCRIBE\s+(?:TO\s+)?(?P<target>(?:"[^"]+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"[^"]+"|[A-Za-z_][\w$]*)){0,2})
        \s*(?P<opts>WITH\s*\((?P<optlist>[^()]*)\))?
        \s*(?:AS\s+OF\s+(?:AT\s+LEAST\s+)?\d+)?
        \s*(?P<upto>UP\s+TO\s+\d+)?
        \s*(?P<tail>\)\s*TO\s+STDOUT)?
        \s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_PROGRESS_ON = re.compile(r"^\s*PROGRESS\s*(?:=?\s*(?:TRUE|ON)\s*)?$", re.IGNORECASE)


@dataclass
class SubscribeResume:
    """One resumable SUBSCRIBE in flight and what the client has seen of it."""

    copy: bool
    target: str
    options: str
    up_to: str
    #: The newest progress timestamp the client was sent.
    last_progress: int | None = None
    #: After a resume: data rows at or below this were already sent (the new snapshot).
    skip_through: int | None = None
    #: After a resume: the new CopyOutResponse is dropped (the client has one).
    swallow_copy_out: bool = False
    resumes: int = 0

    def resumable(self) -> bool:
        return self.last_progress is not None and self.last_progress > 0

    def resume_sql(self) -> str:
        """The statement to send the next generation; arms the filters for its answer."""
        assert self.last_progress is not None and self.last_progress > 0
        as_of = self.last_progress - 1
        self.skip_through = as_of
        self.swallow_copy_out = True
        self.resumes += 1
        sql = f"SUBSCRIBE {self.target} {self.options} AS OF {as_of}"
        if self.up_to:
            sql += f" {self.up_to}"
        return f"COPY ({sql}) TO STDOUT" if self.copy else sql

    def admit(self, copy_data: bytes) -> bool:
        """Whether a CopyData frame (type byte, length, one text row) goes to the client."""
        ts, progressed = _row_head(copy_data)
        if ts is None:
            return True  # not a row we understand: pass it on
        if progressed:
            if self.last_progress is not None and ts <= self.last_progress:
                return False
            self.last_progress = ts
            return True
        return self.skip_through is None or ts > self.skip_through


def parse_resumable(sql: str) -> SubscribeResume | None:
    """The resumable SUBSCRIBE in `sql` (one statement), or None."""
    match = _SUBSCRIBE.match(sql)
    if match is None or bool(match.group("copy")) != bool(match.group("tail")):
        return None
    optlist = match.group("optlist") or ""
    if not any(_PROGRESS_ON.match(opt) for opt in optlist.split(",")):
        return None
    return SubscribeResume(
        copy=bool(match.group("copy")),
        target=match.group("target"),
        options=match.group("opts"),
        up_to=match.group("upto") or "",
    )


def _row_head(copy_data: bytes) -> tuple[int | None, bool]:
    """(mz_timestamp, mz_progressed) of a text-format SUBSCRIBE ... WITH (PROGRESS) row."""
    fields = copy_data[5:].split(b"\t", 2)
    if len(fields) < 2:
        return None, False
    try:
        return int(fields[0]), fields[1] == b"t"
    except ValueError:
        return None, False
