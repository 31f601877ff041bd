"""COPY data formats: rows <-> the CopyData stream, for `text`, `csv` and `binary`.

`CopyFormat` holds the options (`FORMAT`, `DELIMITER`, `NULL`, `HEADER`, `QUOTE`, `ESCAPE`)
with PostgreSQL's defaults per format. Decoders are fed the CopyData payloads as they come (a
row may span payloads) and return raw fields: str (None for NULL) for text and csv, bytes for
binary; the server decodes them with the column types. Encoders turn one row of text fields
(or binary field bytes) into its bytes.

- text: tab-separated (or DELIMITER), backslash escapes, `\\N` for NULL (or NULL), `\\n` or
  `\\r\\n` line ends, the old `\\.` end-of-data line.
- csv: RFC 4180 style with QUOTE (default `"`) and ESCAPE (default QUOTE); quoted fields may
  span lines; an unquoted field equal to NULL (default empty) is NULL, a quoted one never.
- binary: the `PGCOPY\\n\\377\\r\\n\\0` signature, flags and extension area, then per row
  an int16 field count and int32-length-prefixed fields (-1 NULL), ended by a -1 count.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from twinstream.pgwire.errors import PgError, SqlState

__all__ = [
    "TEXT_FORMAT",
    "CopyBinaryDecoder",
    "CopyCsvDecoder",
    "CopyFormat",
    "CopyTextDecoder",
    "encode_binary_row",
    "encode_copy_row",
    "encode_csv_row",
    "escape_copy_field",
    "parse_copy_line",
]


@dataclass(frozen=True)
class CopyFormat:
    """The format options of one COPY (see `for_options` for the defaults)."""

    kind: Literal["text", "csv", "binary"] = "text"
    delimiter: str = "\t"
    null: str = "\\N"
    header: bool = False
    quote: str = '"'
    escape: str = '"'

    @property
    def code(self) -> int:
        """The overall format code of CopyInResponse/CopyOutResponse (0 text, 1 binary)."""
        return 1 if self.kind == "binary" else 0


TEXT_FORMAT = CopyFormat()

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


# --------------------------------------------------------------------------- text, any options


def _split_unescaped(line: bytes, delim: int) -> list[bytes]:
    """Split on `delim` except where a backslash escapes it (or another backslash)."""
    out: list[bytes] = []
    start = i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c == 0x5C:  # backslash: skip the escaped byte
            i += 2
            continue
        if c == delim:
            out.append(line[start:i])
            start = i + 1
        i += 1
    out.append(line[start:])
    return out


def parse_text_line(line: bytes, fmt: CopyFormat) -> list[str | None]:
    """One text-format line with the format's DELIMITER and NULL."""
    if fmt.delimiter == "\t" and fmt.null == "\\N":
        return parse_copy_line(line)
    delim = fmt.delimiter.encode()
    null = fmt.null.encode()
    raws = line.split(delim) if b"\\" not in line else _split_unescaped(line, delim[0])
    fields: list[str | None] = []
    for raw in raws:
        if raw == null:
            fields.append(None)
        elif b"\\" in raw:
            fields.append(_decode(_ESCAPE.sub(_unescape_match, raw)))
        else:
            fields.append(_decode(raw))
    return fields


def encode_text_row(fields: Sequence[str | None], fmt: CopyFormat) -> bytes:
    if fmt.delimiter == "\t" and fmt.null == "\\N":
        return encode_copy_row(fields)
    d = fmt.delimiter
    parts = []
    for f in fields:
        if f is None:
            parts.append(fmt.null)
        else:
            text = f.translate(_OUT)
            parts.append(text.replace(d, "\\" + d) if d in text else text)
    return (d.join(parts) + "\n").encode()


class CopyTextFormatDecoder(CopyTextDecoder):
    """The text format with DELIMITER / NULL / HEADER options."""

    def __init__(self, fmt: CopyFormat) -> None:
        super().__init__()
        self._fmt = fmt
        self._skip_header = fmt.header

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
            if self._skip_header:
                self._skip_header = False
                continue
            rows.append(parse_text_line(line, self._fmt))
        return rows


# --------------------------------------------------------------------------- csv


def _bad_csv(why: str) -> PgError:
    return PgError(SqlState.BAD_COPY_FILE_FORMAT, why)


class CopyCsvDecoder:
    """Incremental CSV: `feed` each CopyData payload, then `finish` at CopyDone."""

    def __init__(self, fmt: CopyFormat) -> None:
        self._fmt = fmt
        self._d = ord(fmt.delimiter)
        self._q = ord(fmt.quote)
        self._e = ord(fmt.escape)
        self._null = fmt.null
        self._pending = b""
        self._ended = False
        self._skip_header = fmt.header

    def feed(self, data: bytes) -> list[list[str | None]]:
        self._pending += data
        return self._records(final=False)

    def finish(self) -> list[list[str | None]]:
        return self._records(final=True)

    def _records(self, *, final: bool) -> list[list[str | None]]:
        buf = self._pending
        pos = 0
        out: list[list[str | None]] = []
        while pos < len(buf):
            record, nxt = self._record(buf, pos, final)
            if record is None:
                break
            pos = nxt
            if self._ended:
                continue
            if record == [r"\."]:
                self._ended = True
                continue
            if self._skip_header:
                self._skip_header = False
                continue
            out.append(record)
        self._pending = buf[pos:]
        return out

    def _field(self, raw: bytearray, quoted: bool) -> str | None:
        text = _decode(bytes(raw))
        return None if not quoted and text == self._null else text

    def _record(self, buf: bytes, pos: int, final: bool) -> tuple[list[str | None] | None, int]:
        """One record from `pos`, or (None, pos) if it is not complete yet."""
        lf = buf.find(b"\n", pos)
        if lf >= 0 and self._q not in buf[pos:lf]:  # fast path: no quoting on this line
            line = buf[pos:lf]
            if line.endswith(b"\r"):
                line = line[:-1]
            raw = line.split(bytes([self._d]))
            if len(raw) == 1 and raw[0] == b"\\.":
                return [r"\."], lf + 1
            return [self._field(bytearray(r), False) for r in raw], lf + 1
        q, e, d = self._q, self._e, self._d
        n = len(buf)
        fields: list[str | None] = []
        cur = bytearray()
        quoted = in_quotes = False
        i = pos
        while True:
            if i >= n:
                if not final:
                    return None, pos
                if in_quotes:
                    raise _bad_csv("unterminated CSV quoted field")
                fields.append(self._field(cur, quoted))
                return fields, i
            c = buf[i]
            if in_quotes:
                if c == e and e != q:
                    if i + 1 >= n and not final:
                        return None, pos
                    if i + 1 < n and buf[i + 1] in (q, e):
                        cur.append(buf[i + 1])
                        i += 2
                        continue
                elif c == q:
                    if i + 1 >= n and not final:
                        return None, pos
                    if e == q and i + 1 < n and buf[i + 1] == q:
                        cur.append(q)
                        i += 2
                        continue
                    in_quotes = False
                    i += 1
                    continue
                cur.append(c)
                i += 1
                continue
            if c == d:
                fields.append(self._field(cur, quoted))
                cur = bytearray()
                quoted = False
                i += 1
            elif c in (0x0A, 0x0D):
                fields.append(self._field(cur, quoted))
                i += 1
                if c == 0x0D:
                    if i >= n and not final:
                        return None, pos
                    if i < n and buf[i] == 0x0A:
                        i += 1
                return fields, i
            elif c == q:
                in_quotes = quoted = True
                i += 1
            else:
                cur.append(c)
                i += 1


def csv_quote(text: str, fmt: CopyFormat) -> str:
    """A value as a CSV field: quoted when PostgreSQL quotes it."""
    q, e = fmt.quote, fmt.escape
    if (
        text == fmt.null
        or text == "\\."
        or any(ch in text for ch in (fmt.delimiter, q, "\n", "\r"))
        or (e != q and e in text)
    ):
        if e == q:
            body = text.replace(q, q + q)
        else:
            body = "".join(e + ch if ch in (q, e) else ch for ch in text)
        return q + body + q
    return text


def encode_csv_row(fields: Sequence[str | None], fmt: CopyFormat) -> bytes:
    parts = [fmt.null if f is None else csv_quote(f, fmt) for f in fields]
    return (fmt.delimiter.join(parts) + "\n").encode()


def encode_header(names: Sequence[str], fmt: CopyFormat) -> bytes:
    """The HEADER line of a text or csv COPY TO."""
    if fmt.kind == "csv":
        return encode_csv_row(names, fmt)
    return encode_text_row(names, fmt)


# --------------------------------------------------------------------------- binary

BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


def binary_header() -> bytes:
    return BINARY_SIGNATURE + _I32.pack(0) + _I32.pack(0)


def binary_trailer() -> bytes:
    return _I16.pack(-1)


def encode_binary_row(fields: Sequence[bytes | None]) -> bytes:
    parts = [_I16.pack(len(fields))]
    for f in fields:
        if f is None:
            parts.append(_I32.pack(-1))
        else:
            parts.append(_I32.pack(len(f)))
            parts.append(f)
    return b"".join(parts)


class CopyBinaryDecoder:
    """Incremental binary COPY: rows of field bytes (None for NULL)."""

    def __init__(self) -> None:
        self._pending = b""
        self._header_done = False
        self._ended = False

    def feed(self, data: bytes) -> list[list[bytes | None]]:
        self._pending += data
        return self._rows()

    def finish(self) -> list[list[bytes | None]]:
        rows = self._rows()
        if not self._header_done:
            raise _bad_csv("COPY file signature not recognized")
        if self._pending and not self._ended:
            raise _bad_csv("unexpected EOF in COPY data")
        return rows

    def _rows(self) -> list[list[bytes | None]]:
        buf = self._pending
        pos = 0
        if not self._header_done:
            if len(buf) < len(BINARY_SIGNATURE) + 8:
                return []
            if not buf.startswith(BINARY_SIGNATURE):
                raise _bad_csv("COPY file signature not recognized")
            pos = len(BINARY_SIGNATURE)
            (flags,) = _I32.unpack_from(buf, pos)
            if flags & 0x10000:
                raise _bad_csv("COPY file uses OIDs, which are not supported")
            (ext,) = _I32.unpack_from(buf, pos + 4)
            if len(buf) < pos + 8 + ext:
                return []
            pos += 8 + ext
            self._header_done = True
        rows: list[list[bytes | None]] = []
        n = len(buf)
        while not self._ended and pos + 2 <= n:
            (count,) = _I16.unpack_from(buf, pos)
            if count == -1:
                self._ended = True
                pos += 2
                break
            i = pos + 2
            fields: list[bytes | None] = []
            complete = True
            for _ in range(count):
                if i + 4 > n:
                    complete = False
                    break
                (size,) = _I32.unpack_from(buf, i)
                i += 4
                if size < 0:
                    fields.append(None)
                    continue
                if i + size > n:
                    complete = False
                    break
                fields.append(buf[i : i + size])
                i += size
            if not complete:
                break
            rows.append(fields)
            pos = i
        self._pending = b"" if self._ended else buf[pos:]  # after the trailer: ignored
        return rows
