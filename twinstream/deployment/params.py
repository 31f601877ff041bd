"""The zero-downtime deployment parameters (the seed's eight names, lower case).

Each is settable by command-line flag (or its environment variable), by `ALTER SYSTEM SET`
(durable, in the catalog), or left at its default; precedence: flag > system parameter >
default. Preflight reads them before the catalog is opened writable.

Defaults are chosen for a small database whose views hydrate in seconds (Materialize's,
meant for large production environments, are in parentheses):
- caught-up check every 200 ms (10 s): checking is cheap here, and it bounds promotion delay;
- allowed lag 1 s (60 s): our timestamp ticks are 100 ms, so a healthy follower is within 1 s;
- cutoff 10 min (2 h): a leader collection stuck for 10 minutes is not going to catch up;
- DDL check every 2 s (5 min): re-reading a small catalog is cheap;
- stability period 2 s (10 min): several checks in a row must agree before cutting over;
- max wait 365 days, panic off (same): never cut over un-hydrated unless told to;
- crash-loop exclusion on, at more than 3 restarts (Materialize: OOM-looping replicas): a
  young generation's replica restarted 4 times with backoff (0.2 + 0.4 + 0.8 + 1.6 s) is not
  going to hydrate, and waiting for it would block the upgrade (`deployment/caught_up.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "sec": 1000,
    "second": 1000,
    "seconds": 1000,
    "m": 60_000,
    "min": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
    "days": 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")

DURATION_FORM = "a duration such as '500ms', '10s', '5min', '2h' or '365d'"
BOOL_FORM = "on/off, true/false"
INT_FORM = "a whole number >= 0"


class ParamError(ValueError):
    """A malformed value; the message names the accepted form (SQLSTATE 22023)."""


def parse_duration_ms(name: str, text: str) -> int:
    m = _DURATION.match(text.lower())
    unit = m.group(2) if m else None
    if m is None or (unit or "ms") not in _UNITS_MS:
        raise ParamError(
            f'invalid value for parameter "{name}": "{text}" (expected {DURATION_FORM})'
        )
    return int(float(m.group(1)) * _UNITS_MS[unit or "ms"])


def parse_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("on", "true", "yes", "1"):
        return True
    if low in ("off", "false", "no", "0"):
        return False
    raise ParamError(f'invalid value for parameter "{name}": "{text}" (expected {BOOL_FORM})')


def parse_count(name: str, text: str) -> int:
    low = text.strip()
    if not low.isdigit():
        raise ParamError(f'invalid value for parameter "{name}": "{text}" (expected {INT_FORM})')
    return int(low)


@dataclass(frozen=True)
class ZeroDowntimeParams:
    enable_0dt_deployment: bool = True
    with_0dt_deployment_max_wait_ms: int = 365 * 86_400_000
    with_0dt_deployment_ddl_check_interval_ms: int = 2_000
    enable_0dt_caught_up_check: bool = True
    with_0dt_caught_up_check_allowed_lag_ms: int = 1_000
    with_0dt_caught_up_check_cutoff_ms: int = 600_000
    enable_0dt_deployment_panic_after_timeout: bool = False
    with_0dt_deployment_caught_up_check_interval_ms: int = 200
    with_0dt_caught_up_check_stability_period_ms: int = 2_000
    enable_0dt_caught_up_replica_status_check: bool = True
    with_0dt_caught_up_check_crash_loop_restarts: int = 3


#: parameter name -> (field, kind)
PARAMS: dict[str, tuple[str, str]] = {
    "enable_0dt_deployment": ("enable_0dt_deployment", "bool"),
    "with_0dt_deployment_max_wait": ("with_0dt_deployment_max_wait_ms", "duration"),
    "with_0dt_deployment_ddl_check_interval": (
        "with_0dt_deployment_ddl_check_interval_ms",
        "duration",
    ),
    "enable_0dt_caught_up_check": ("enable_0dt_caught_up_check", "bool"),
    "with_0dt_caught_up_check_allowed_lag": ("with_0dt_caught_up_check_allowed_lag_ms", "duration"),
    "with_0dt_caught_up_check_cutoff": ("with_0dt_caught_up_check_cutoff_ms", "duration"),
    "enable_0dt_deployment_panic_after_timeout": (
        "enable_0dt_deployment_panic_after_timeout",
        "bool",
    ),
    "with_0dt_deployment_caught_up_check_interval": (
        "with_0dt_deployment_caught_up_check_interval_ms",
        "duration",
    ),
    "with_0dt_caught_up_check_stability_period": (
        "with_0dt_caught_up_check_stability_period_ms",
        "duration",
    ),
    "enable_0dt_caught_up_replica_status_check": (
        "enable_0dt_caught_up_replica_status_check",
        "bool",
    ),
    "with_0dt_caught_up_check_crash_loop_restarts": (
        "with_0dt_caught_up_check_crash_loop_restarts",
        "count",
    ),
}


def validate(name: str, value: str) -> None:
    """Raise ParamError if `value` is not a valid setting of the 0dt parameter `name`."""
    field_kind = PARAMS.get(name)
    if field_kind is None:
        return
    _parse(name, field_kind[1], value)


def _parse(name: str, kind: str, text: str) -> bool | int:
    if kind == "bool":
        return parse_bool(name, text)
    if kind == "count":
        return parse_count(name, text)
    return parse_duration_ms(name, text)


def resolve(flags: Mapping[str, str], system: Mapping[str, str]) -> ZeroDowntimeParams:
    """flag > durable system parameter > default."""
    values: dict[str, object] = {}
    for name, (field, kind) in PARAMS.items():
        text = flags.get(name, system.get(name))
        if text is None:
            continue
        values[field] = _parse(name, kind, text)
    return ZeroDowntimeParams(**values)  # type: ignore[arg-type]


def default_text(name: str) -> str:
    """The default of a 0dt parameter as SHOW prints it."""
    field, kind = PARAMS[name]
    value = getattr(ZeroDowntimeParams(), field)
    if kind == "bool":
        return "on" if value else "off"
    if kind == "count":
        return str(value)
    return f"{value}ms"
