"""Which answers prove that a statement did not run, so the balancer may send it again.

Besides a lost backend (FATAL 57P01, or a close before any answer), a generation can answer a
statement with an ERROR that means "not here, not now" without having executed anything:
a read-only generation that has not been promoted yet, or one that has just been fenced out.
Such a statement, outside a transaction and before any of its statements completed, is re-sent
(see doc/design/cutover.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from twinstream.balancer.frames import ErrorFields

__all__ = ["DEFAULT_RETRYABLE_ERRORS", "RetryableError", "match_retryable"]


@dataclass(frozen=True)
class RetryableError:
    """An ERROR that means the statement was not executed.

    `sqlstate` must match exactly (None: any); `text` must occur in the message (compared
    case-insensitively). `fenced`: the generation that said it is finished, so the statement
    goes to another generation; otherwise it is re-sent after a short wait, on the route's
    generation (which may be the same one, once it is promoted)."""

    sqlstate: str | None
    text: str
    fenced: bool = False

    def matches(self, err: ErrorFields) -> bool:
        if self.sqlstate is not None and err.code != self.sqlstate:
            return False
        return self.text.lower() in err.message.lower()


DEFAULT_RETRYABLE_ERRORS: tuple[RetryableError, ...] = (
    # A read-only generation (twinstream.adapter.errors.read_only_error). PostgreSQL's own
    # 25006 ("cannot execute INSERT in a read-only transaction") is the user's doing: not here.
    RetryableError("25006", "cannot write in read-only mode"),
    # A generation that has been fenced out but has not closed its sessions yet, e.g.
    # "internal error: group commit has stopped: DeployGenerationFenced('fenced out by ...')".
    RetryableError(None, "fenced out", fenced=True),
)


def match_retryable(
    rules: tuple[RetryableError, ...], err: ErrorFields | None
) -> RetryableError | None:
    if err is None or err.fatal:
        return None
    for rule in rules:
        if rule.matches(err):
            return rule
    return None
