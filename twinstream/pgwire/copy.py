"""COPY text format: rows ↔ lines of tab-separated, backslash-escaped fields.

This is PostgreSQL's default `COPY ... (FORMAT text)` with delimiter TAB and NULL `\\N`. The
decoder is fed the CopyData payloads as they come (a row may span payloads) and accepts
`\\n` or `\\r\\n` line ends and the old `\\.` end-of-data line. CSV and binary COPY formats
are not implemented.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from twinstream.pgwire.errors import PgError, SqlState

__all__ = ["CopyTextDecoder", "encode_copy_row", "escape_copy_field", "parse_copy_line"]

_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_SIMPLE = {
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("v"): b"\v",
}
_OUT = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
)


def _unescape_match(match: re.Match[bytes]) -> bytes:
    octal, hexa, other = match.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexa is not None:
        return bytes([int(hexa, 16)])
    return _SIMPLE.get(other[0], other)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise PgError(
            SqlState.CHARACTER_NOT_IN_REPERTOIRE,
            f'invalid byte sequence for encoding "UTF8": 0x{bad}',
        ) from None


def parse_copy_line(line: bytes) -> list[str | None]:
    """One line (no line end) → its fields, None for `\\N`."""
    fields: list[str | None] = []
    for raw in line.split(b"\t"):
        if raw == b"\\N":
            fields.append(None)
        elif b"\\" in raw:
            fields.append(_decode(_ESCAPE.sub(_unescape_match, raw)))
        else:
            fields.append(_decode(raw))
    return fields


class CopyTextDecoder:
    """Incremental: `feed` each CopyData payload, then `finish` at CopyDone."""

    def __init__(self) -> None:
        self._pending = b""
        self._ended = False

    def feed(self, data: bytes) -> list[list[str | None]]:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        return self._lines(lines)

    def finish(self) -> list[list[str | None]]:
        rest, self._pending = self._pending, b""
        return self._lines([rest] if rest else [])

    def _lines(self, lines: list[bytes]) -> list[list[str | None]]:
        rows = []
        for line in lines:
            if self._ended:
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if line == b"\\.":
                self._ended = True
                continue
            rows.append(parse_copy_line(line))
        return rows


def escape_copy_field(text: str) -> str:
    return text.translate(_OUT)


def encode_copy_row(fields: Sequence[str | None]) -> bytes:
    """Text fields (None = NULL) → one COPY text line, newline included."""
    return ("\t".join("\\N" if f is None else f.translate(_OUT) for f in fields) + "\n").encode()
