"""A PostgreSQL-compatible lexer, just enough for statement shells and for splitting.

It knows the lexical structure of PostgreSQL text: whitespace, `--` and nested `/* */`
comments, unquoted identifiers (folded to lower case, ASCII only, as PostgreSQL does), quoted
identifiers, standard `'...'` strings, `E'...'` strings with backslash escapes, `U&'...'`
strings, bit strings (`B'...'`, `X'...'`), dollar-quoted strings (`$$...$$`, `$tag$...$tag$`),
numbers, parameters (`$1`), operators and punctuation. Comments and whitespace produce no
tokens. Embedded queries are not interpreted here: the parser slices their original text by
token offsets and hands it to sqlglot.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from twinstream.sql.errors import SqlError, syntax_error

WHITESPACE = " \t\n\r\f\v"
_OP_CHARS = frozenset("+-*/<>=~!@#%^&|`?")
_OP_SPECIAL = frozenset("~!@#%^&|`?")  # an operator containing one of these may end in + or -
_SELF_CHARS = frozenset(",()[].;:")
_IDENT_RE = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_DOLLAR_TAG_RE = re.compile(r"\$([A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_NUMBER_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PARAM_RE = re.compile(r"\$[0-9]+")
_DIGITS = frozenset("0123456789")
_HEX_RE = re.compile(r"[0-9a-fA-F]{4}|[0-9a-fA-F]{6}")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def is_ascii_digits(text: str) -> bool:
    """Whether `text` is non-empty and all ASCII digits."""
    return text.isascii() and text.isdigit()


def fold_identifier(name: str) -> str:
    """Fold an unquoted identifier the way PostgreSQL does: ASCII letters to lower case."""
    return name.translate(_ASCII_LOWER)


class TokenKind(enum.Enum):
    IDENT = "identifier"  # unquoted word; value is folded to lower case (keywords are these)
    QIDENT = "quoted identifier"  # "..."; value is the unescaped name
    STRING = "string"  # '...', E'...', U&'...', N'...', $$...$$; value is the decoded text
    BITSTRING = "bit string"  # B'...' or X'...'; value is the raw text between the quotes
    NUMBER = "number"  # value is the literal text
    PARAM = "parameter"  # $n; value is the digits
    OP = "operator"  # punctuation and operators; value is the text
    EOF = "end of input"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    value: str
    start: int  # offset of the first character in the source
    end: int  # offset one past the last character

    def is_keyword(self, *words: str) -> bool:
        return self.kind is TokenKind.IDENT and self.value in words

    def is_op(self, *ops: str) -> bool:
        return self.kind is TokenKind.OP and self.value in ops

    def describe(self) -> str:
        if self.kind is TokenKind.EOF:
            return "end of input"
        if self.kind is TokenKind.IDENT:
            return f'"{self.value}"'
        if self.kind is TokenKind.QIDENT:
            return f'identifier "{self.value}"'
        if self.kind is TokenKind.STRING:
            return f"string literal '{_shorten(self.value)}'"
        if self.kind is TokenKind.NUMBER:
            return f"number {self.value}"
        if self.kind is TokenKind.PARAM:
            return f"parameter ${self.value}"
        return f'"{self.value}"'


def _shorten(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tokenize(sql: str, *, strict: bool = True) -> list[Token]:
    """The tokens of `sql`, ending with one EOF token.

    With `strict`, an unterminated string, quoted identifier or comment raises a 42601
    `SqlError`; without, it extends to the end of the input (used for splitting).
    """
    return _Lexer(sql, strict).run()


class _Lexer:
    def __init__(self, sql: str, strict: bool) -> None:
        self.sql = sql
        self.strict = strict
        self.tokens: list[Token] = []

    def unterminated(self, what: str, start: int) -> int:
        if self.strict:
            raise syntax_error(f"unterminated {what}", start + 1)
        return len(self.sql)

    def run(self) -> list[Token]:
        sql = self.sql
        n = len(sql)
        i = 0
        while i < n:
            c = sql[i]
            if c in WHITESPACE:
                i += 1
            elif c == "-" and sql.startswith("--", i):
                j = i + 2
                while j < n and sql[j] not in "\n\r":
                    j += 1
                i = j
            elif c == "/" and sql.startswith("/*", i):
                i = self.block_comment(i)
            elif c == "'":
                i = self.string(i, i, TokenKind.STRING, backslashes=False)
            elif c == '"':
                i = self.quoted_identifier(i, i + 1)
            elif c == "$":
                i = self.dollar(i)
            elif c in _DIGITS or (c == "." and i + 1 < n and sql[i + 1] in _DIGITS):
                m = _NUMBER_RE.match(sql, i)
                assert m is not None
                self.tokens.append(Token(TokenKind.NUMBER, m.group(), i, m.end()))
                i = m.end()
            elif (m := _IDENT_RE.match(sql, i)) is not None:
                i = self.word(i, m.group())
            elif c in _SELF_CHARS:
                if c == ":" and sql.startswith("::", i):
                    self.tokens.append(Token(TokenKind.OP, "::", i, i + 2))
                    i += 2
                else:
                    self.tokens.append(Token(TokenKind.OP, c, i, i + 1))
                    i += 1
            elif c in _OP_CHARS:
                i = self.operator(i)
            else:
                self.tokens.append(Token(TokenKind.OP, c, i, i + 1))
                i += 1
        self.tokens.append(Token(TokenKind.EOF, "", n, n))
        return self.tokens

    def block_comment(self, start: int) -> int:
        sql = self.sql
        depth = 0
        i = start
        n = len(sql)
        while i < n:
            if sql.startswith("/*", i):
                depth += 1
                i += 2
            elif sql.startswith("*/", i):
                depth -= 1
                i += 2
                if depth == 0:
                    return i
            else:
                i += 1
        return self.unterminated("/* comment", start)

    def word(self, start: int, word: str) -> int:
        sql = self.sql
        after = start + len(word)
        nxt = sql[after] if after < len(sql) else ""
        if len(word) == 1 and nxt == "'":
            prefix = word.lower()
            if prefix == "e":
                return self.string(start, after, TokenKind.STRING, backslashes=True)
            if prefix in ("b", "x"):
                return self.string(start, after, TokenKind.BITSTRING, backslashes=False)
            if prefix == "n":
                return self.string(start, after, TokenKind.STRING, backslashes=False)
        if len(word) == 1 and word in "uU" and sql.startswith("&'", after):
            return self.string(start, after + 1, TokenKind.STRING, backslashes=False, uescape=True)
        if len(word) == 1 and word in "uU" and sql.startswith('&"', after):
            return self.quoted_identifier(start, after + 2, uescape=True)
        self.tokens.append(Token(TokenKind.IDENT, fold_identifier(word), start, after))
        return after

    def string(
        self, start: int, quote: int, kind: TokenKind, *, backslashes: bool, uescape: bool = False
    ) -> int:
        """A quoted string whose opening quote is at `quote`; the token starts at `start`."""
        sql = self.sql
        n = len(sql)
        i = quote + 1
        parts: list[str] = []
        while True:
            if i >= n:
                end = self.unterminated("quoted string", start)
                self.tokens.append(Token(kind, "".join(parts) + sql[i:end], start, end))
                return end
            c = sql[i]
            if c == "'":
                if i + 1 < n and sql[i + 1] == "'":
                    parts.append("'")
                    i += 2
                    continue
                i += 1
                break
            if c == "\\" and backslashes:
                if i + 1 >= n:
                    i += 1
                    continue
                try:
                    decoded, i = _backslash_escape(sql, i)
                except SqlError:
                    if self.strict:
                        raise
                    decoded, i = sql[i + 1], i + 2
                parts.append(decoded)
                continue
            parts.append(c)
            i += 1
        value = "".join(parts)
        if uescape:
            value = self.unicode_unescape(value, start)
        self.tokens.append(Token(kind, value, start, i))
        return i

    def quoted_identifier(self, start: int, body: int, *, uescape: bool = False) -> int:
        sql = self.sql
        n = len(sql)
        i = body
        parts: list[str] = []
        while True:
            if i >= n:
                end = self.unterminated("quoted identifier", start)
                self.tokens.append(Token(TokenKind.QIDENT, "".join(parts), start, end))
                return end
            c = sql[i]
            if c == '"':
                if i + 1 < n and sql[i + 1] == '"':
                    parts.append('"')
                    i += 2
                    continue
                i += 1
                break
            parts.append(c)
            i += 1
        value = "".join(parts)
        if uescape:
            value = self.unicode_unescape(value, start)
        if not value and self.strict:
            raise syntax_error("zero-length delimited identifier", start + 1)
        self.tokens.append(Token(TokenKind.QIDENT, value, start, i))
        return i

    def unicode_unescape(self, value: str, start: int) -> str:
        try:
            return _unicode_unescape(value, start)
        except SqlError:
            if self.strict:
                raise
            return value

    def dollar(self, start: int) -> int:
        sql = self.sql
        m = _PARAM_RE.match(sql, start)
        if m is not None:
            self.tokens.append(Token(TokenKind.PARAM, m.group()[1:], start, m.end()))
            return m.end()
        m = _DOLLAR_TAG_RE.match(sql, start)
        if m is None:
            self.tokens.append(Token(TokenKind.OP, "$", start, start + 1))
            return start + 1
        delimiter = m.group()
        close = sql.find(delimiter, m.end())
        if close < 0:
            end = self.unterminated("dollar-quoted string", start)
            self.tokens.append(Token(TokenKind.STRING, sql[m.end() : end], start, end))
            return end
        end = close + len(delimiter)
        self.tokens.append(Token(TokenKind.STRING, sql[m.end() : close], start, end))
        return end

    def operator(self, start: int) -> int:
        sql = self.sql
        n = len(sql)
        i = start
        while i < n and sql[i] in _OP_CHARS:
            if i > start and (sql.startswith("--", i) or sql.startswith("/*", i)):
                break
            i += 1
        # PostgreSQL: a multi-character operator ends in + or - only if it contains one of
        # ~ ! @ # % ^ & | ` ?; otherwise the trailing signs are separate operators.
        if i - start > 1 and not any(ch in _OP_SPECIAL for ch in sql[start:i]):
            while i - start > 1 and sql[i - 1] in "+-":
                i -= 1
        self.tokens.append(Token(TokenKind.OP, sql[start:i], start, i))
        return i


_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _backslash_escape(sql: str, i: int) -> tuple[str, int]:
    """Decode the escape at sql[i] == '\\'; return (text, next offset)."""
    c = sql[i + 1]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 2
    if c in "01234567":
        j = i + 1
        while j < len(sql) and j < i + 4 and sql[j] in "01234567":
            j += 1
        return chr(int(sql[i + 1 : j], 8)), j
    if c == "x":
        j = i + 2
        while j < len(sql) and j < i + 4 and sql[j] in "0123456789abcdefABCDEF":
            j += 1
        if j > i + 2:
            return chr(int(sql[i + 2 : j], 16)), j
        return "x", i + 2
    if c in "uU":
        width = 4 if c == "u" else 8
        digits = sql[i + 2 : i + 2 + width]
        if len(digits) == width and all(d in "0123456789abcdefABCDEF" for d in digits):
            code = int(digits, 16)
            if code <= 0x10FFFF:
                return chr(code), i + 2 + width
        raise syntax_error("invalid Unicode escape", i + 1)
    return c, i + 2


def _unicode_unescape(value: str, start: int) -> str:
    """Decode the \\XXXX and \\+XXXXXX escapes of a U&'...' string or U&"..." identifier."""
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if value.startswith("\\\\", i):
            out.append("\\")
            i += 2
            continue
        if value.startswith("\\+", i):
            digits, i = value[i + 2 : i + 8], i + 8
        else:
            digits, i = value[i + 1 : i + 5], i + 5
        if not _HEX_RE.fullmatch(digits) or (code := int(digits, 16)) > 0x10FFFF:
            raise syntax_error("invalid Unicode escape", start + 1)
        out.append(chr(code))
    return "".join(out)
