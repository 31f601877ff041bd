"""Millisecond settings (`statement_timeout`, `lock_timeout`, ...) parsed and shown as
PostgreSQL does: a bare number is milliseconds, units `us ms s min h d` (case-sensitive,
optionally after spaces), fractions rounded to the nearest millisecond, range 0 .. INT_MAX,
and SHOW prints the largest unit that divides the value exactly (`500ms`, `2s`, `1min`, `0`).
"""

from __future__ import annotations

import math
import re

from twinstream.adapter.errors import INVALID_PARAMETER_VALUE, AdapterError

#: The settings that are durations in milliseconds.
MS_SETTINGS = frozenset(
    ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
)

#: PostgreSQL's time units for a millisecond setting, largest first (how SHOW picks one).
UNITS_MS: tuple[tuple[str, float], ...] = (
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("min", 60_000),
    ("s", 1_000),
    ("ms", 1),
    ("us", 0.001),
)
_UNIT = dict(UNITS_MS)
#: The upper bound of every integer setting (INT_MAX).
MAX_MS = 2_147_483_647
_UNITS_HINT = 'Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".'
_NUMBER = re.compile(
    r"\s*([+-]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))"
    r"\s*(.*?)\s*$"
)


def parse_ms(name: str, text: str) -> int:
    """The setting's value in milliseconds; 22023 with PostgreSQL's message when invalid."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise AdapterError(
            INVALID_PARAMETER_VALUE, f'invalid value for parameter "{name}": "{text}"'
        )
    number, unit = match.group(1), match.group(2)
    if unit and unit not in _UNIT:
        raise AdapterError(
            INVALID_PARAMETER_VALUE,
            f'invalid value for parameter "{name}": "{text}"',
            hint=_UNITS_HINT,
        )
    hexa = number.lstrip("+-")[:2].lower() == "0x"
    magnitude = int(number.lstrip("+-"), 16) if hexa else float(number.lstrip("+-"))
    scaled = (-magnitude if number.startswith("-") else magnitude) * _UNIT.get(unit, 1)
    if not -MAX_MS - 1.5 < scaled < MAX_MS + 0.5:
        raise AdapterError(
            INVALID_PARAMETER_VALUE,
            f'invalid value for parameter "{name}": "{text}"',
            # a number too large for a double is no number to PostgreSQL (no hint)
            hint=None if math.isinf(scaled) else "Value exceeds integer range.",
        )
    ms = round(scaled)  # PostgreSQL's rint: half to even
    if ms < 0:
        raise AdapterError(
            INVALID_PARAMETER_VALUE,
            f'{ms} ms is outside the valid range for parameter "{name}" (0 .. {MAX_MS})',
        )
    return ms


def format_ms(ms: int) -> str:
    """SHOW's text: 0, or the value in the largest unit that divides it exactly."""
    if ms == 0:
        return "0"
    for unit, size in UNITS_MS:
        if size >= 1 and ms % int(size) == 0:
            return f"{ms // int(size)}{unit}"
    raise AssertionError("every millisecond count is divisible by 1 ms")
