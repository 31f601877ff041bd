"""Parsing statements into `twinstream.sql.ast`.

The statement "shells" (CREATE ..., SUBSCRIBE ..., SET ...) are parsed here by recursive
descent over the tokens of `twinstream.sql.lexer`; embedded queries and expressions are
sliced out of the original text by token offsets and parsed by stock
`sqlglot.parse_one(..., read="postgres")` (public API only; no subclassing).

Errors are `SqlError`s: 42601 (syntax_error) naming what was expected, or 0A000
(feature_not_supported) for valid PostgreSQL or Materialize statements twinstream does not
accept. Positions are 1-based offsets into the text given to `parse_statement(s)`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from twinstream.sql import ast
from twinstream.sql.errors import SqlError, not_supported, syntax_error
from twinstream.sql.lexer import Token, TokenKind, is_ascii_digits, tokenize
from twinstream.sql.typenames import array_element_name, canonical_type_name

__all__ = ["parse_statement", "parse_statements", "parse_type_name"]

_MAX_NAME_PARTS = 3


def _phrases(text: str) -> list[str]:
    """The comma-separated phrases of `text`, each with its words joined by one space."""
    return [" ".join(phrase.split()) for phrase in text.split(",")]


# Multi-word option names, matched longest first; any other option name is one word.
_MULTIWORD_OPTIONS: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(name.split())
            for name in _phrases(
                """
            replication factor, availability zones, introspection interval,
            introspection debugging, tick interval, up to, as of, scale factor, max cardinality,
            ssl mode, ssl certificate authority, ssl certificate, ssl key, ssh tunnel,
            aws privatelink, aws connection, security protocol, sasl mechanisms, sasl username,
            sasl password, progress topic, progress topic replication factor, start offset,
            start timestamp, topic metadata refresh interval, text columns, exclude columns,
            retain history, timestamp interval, force not null, force null, force quote,
            refresh every, refresh at, refresh on commit, assert not null, partition by,
            value decoding errors, schema registry, access key id, secret access key,
            session token, assume role arn, assume role session name, batch size, value size,
            snapshot rounds, transactional snapshot
            """
            )
        ),
        key=len,
        reverse=True,
    )
)

# First keywords of statements that PostgreSQL has and twinstream does not.
_UNSUPPORTED_STATEMENTS = {
    "savepoint": "SAVEPOINT",
    "release": "RELEASE SAVEPOINT",
    "truncate": "TRUNCATE",
    "vacuum": "VACUUM",
    "analyze": "ANALYZE",
    "analyse": "ANALYZE",
    "cluster": "CLUSTER",
    "reindex": "REINDEX",
    "lock": "LOCK",
    "listen": "LISTEN",
    "unlisten": "UNLISTEN",
    "notify": "NOTIFY",
    "load": "LOAD",
    "checkpoint": "CHECKPOINT",
    "grant": "GRANT",
    "revoke": "REVOKE",
    "comment": "COMMENT",
    "security": "SECURITY LABEL",
    "reassign": "REASSIGN OWNED",
    "refresh": "REFRESH MATERIALIZED VIEW",
    "call": "CALL",
    "do": "DO",
    "merge": "MERGE",
    "import": "IMPORT FOREIGN SCHEMA",
}

# Object kinds of CREATE/DROP/ALTER that PostgreSQL or Materialize has and twinstream does not.
_UNSUPPORTED_OBJECTS: tuple[tuple[str, ...], ...] = tuple(
    tuple(words.split())
    for words in _phrases(
        """
    function, procedure, aggregate, trigger, event trigger, role, user, group, type, domain,
    sequence, extension, policy, rule, operator, collation, conversion, foreign table,
    foreign data wrapper, server, publication, subscription, tablespace, text search, language,
    cast, statistics, access method, transform, owned, default privileges, sink, network policy,
    continual task
    """
    )
)

_STATEMENT_STARTS = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, SUBSCRIBE, SET, SHOW, ..."

# sqlglot (30.x) cannot parse `x::oid[]` and the other OID-alias array casts; we hand it the
# equivalent `_oid` spelling (same length, so positions stay put) and turn it back after.
_OID_TYPES = frozenset(
    _phrases(
        """oid, regclass, regtype, regproc, regprocedure, regoper, regoperator, regnamespace,
        regrole, regconfig, regdictionary, regcollation"""
    )
)

# Reserved words that begin a clause and so can never follow a comma.
_CLAUSE_KEYWORDS = frozenset(
    _phrases(
        """from, where, group, having, order, limit, offset, union, intersect, except, window,
        returning, into, on, using, join"""
    )
)

# Words that may follow `AS of` when `of` is an alias rather than Materialize's `AS OF`.
_AFTER_ALIAS = _CLAUSE_KEYWORDS | frozenset(
    _phrases("left, right, inner, full, cross, natural, lateral, for, fetch")
)

_log = logging.getLogger(__name__)
_REQUIRED_KEYWORD = re.compile(r"Required keyword: '\w+' missing for <class '[\w.]*?(\w+)'>")


def parse_statements(sql: str) -> list[ast.Statement]:
    """Every statement of `sql` (separated by `;`), in order; empty statements are skipped."""
    tokens = tokenize(sql)
    out: list[ast.Statement] = []
    for segment in _segments(tokens):
        out.append(_Parser(sql, segment).parse())
    return out


def parse_statement(sql: str) -> ast.Statement:
    """The one statement in `sql` (a trailing `;` is allowed).

    Raises 42601 for an empty string or for more than one statement."""
    tokens = tokenize(sql)
    segments = _segments(tokens)
    if not segments:
        raise syntax_error("empty query: expected a statement", 1)
    if len(segments) > 1:
        raise syntax_error(
            "cannot insert multiple commands into a prepared statement",
            segments[1][0].start + 1,
        )
    return _Parser(sql, segments[0]).parse()


def parse_type_name(text: str) -> ast.TypeName:
    """A type name such as `integer`, `varchar(10)`, `timestamp with time zone`, `int[]`."""
    tokens = tokenize(text)
    parser = _Parser(text, tokens)
    type_name = parser.type_name()
    parser.expect_end("end of type name")
    return type_name


def _segments(tokens: list[Token]) -> list[list[Token]]:
    """Split tokens at `;` into non-empty segments, each ending with an EOF token."""
    out: list[list[Token]] = []
    current: list[Token] = []
    for tok in tokens:
        if tok.kind is TokenKind.EOF or tok.is_op(";"):
            if current:
                current.append(Token(TokenKind.EOF, "", tok.start, tok.start))
                out.append(current)
            current = []
        else:
            current.append(tok)
    return out


def _is_integer(tok: Token) -> bool:
    return tok.kind is TokenKind.NUMBER and is_ascii_digits(tok.value)


class _Parser:
    """Recursive descent over one statement's tokens (the last one is EOF)."""

    def __init__(self, sql: str, tokens: list[Token]) -> None:
        self.sql = sql
        self.toks = tokens
        self.i = 0

    # ------------------------------------------------------------------------------------------
    # Cursor

    @property
    def end(self) -> int:
        """Index of the EOF token."""
        return len(self.toks) - 1

    def peek(self, k: int = 0) -> Token:
        return self.toks[min(self.i + k, self.end)]

    def advance(self) -> Token:
        tok = self.peek()
        if self.i < self.end:
            self.i += 1
        return tok

    def at_kw(self, *words: str) -> bool:
        return all(self.peek(k).is_keyword(w) for k, w in enumerate(words))

    def accept_kw(self, *words: str) -> bool:
        if self.at_kw(*words):
            self.i += len(words)
            return True
        return False

    def expect_kw(self, *words: str) -> None:
        for w in words:
            if not self.peek().is_keyword(w):
                raise self.error(w.upper())
            self.advance()

    def at_query(self) -> bool:
        """Whether a query starts at the cursor."""
        return self.peek().is_keyword("select", "with", "values", "table") or self.at_op("(")

    def at_op(self, op: str) -> bool:
        return self.peek().is_op(op)

    def accept_op(self, op: str) -> bool:
        if self.at_op(op):
            self.advance()
            return True
        return False

    def expect_op(self, op: str) -> None:
        if not self.accept_op(op):
            raise self.error(f'"{op}"')

    def at_end(self) -> bool:
        return self.peek().kind is TokenKind.EOF

    def expect_end(self, expected: str = "end of statement") -> None:
        if not self.at_end():
            raise self.error(expected)

    def error(self, expected: str, tok: Token | None = None) -> SqlError:
        tok = self.peek() if tok is None else tok
        return syntax_error(f"Expected {expected}, found {tok.describe()}", tok.start + 1)

    def unsupported(self, what: str, tok: Token | None = None) -> SqlError:
        tok = self.peek() if tok is None else tok
        return not_supported(f"{what} is not supported", tok.start + 1)

    # ------------------------------------------------------------------------------------------
    # Names, literals, types

    def ident(self, what: str = "identifier") -> str:
        tok = self.peek()
        if tok.kind in (TokenKind.IDENT, TokenKind.QIDENT):
            self.advance()
            return tok.value
        raise self.error(what)

    def qualified_name(
        self, what: str = "object name", max_parts: int = _MAX_NAME_PARTS
    ) -> ast.QualifiedName:
        first = self.peek()
        parts = [self.ident(what)]
        while self.at_op(".") and self.peek(1).kind in (TokenKind.IDENT, TokenKind.QIDENT):
            self.advance()
            parts.append(self.ident(what))
        if len(parts) > max_parts:
            name = ".".join(ast.quote_identifier(p) for p in parts)
            if max_parts == 1:
                message = f"Expected an unqualified {what}, found qualified name {name}"
            else:
                message = f"improper qualified name (too many dotted names): {name}"
            raise syntax_error(message, first.start + 1)
        return ast.QualifiedName(tuple(parts))

    def ident_list(self, what: str = "column name") -> tuple[str, ...]:
        """`(a, b, c)`; the cursor is on the opening parenthesis."""
        self.expect_op("(")
        names: list[str] = []
        if not self.at_op(")"):
            names.append(self.ident(what))
            while self.accept_op(","):
                names.append(self.ident(what))
        self.expect_op(")")
        return tuple(names)

    def string(self, what: str = "string literal") -> str:
        tok = self.peek()
        if tok.kind is not TokenKind.STRING:
            raise self.error(what)
        self.advance()
        return tok.value

    def integer(self, what: str = "integer") -> int:
        tok = self.peek()
        if not _is_integer(tok):
            raise self.error(what)
        self.advance()
        return int(tok.value)

    def type_name(self) -> ast.TypeName:
        tok = self.peek()
        if tok.kind is TokenKind.QIDENT:
            parts = [self.ident()]
            quoted = True
        elif tok.kind is TokenKind.IDENT:
            parts = [self.ident()]
            quoted = False
        else:
            raise self.error("type name")
        while self.at_op(".") and self.peek(1).kind in (TokenKind.IDENT, TokenKind.QIDENT):
            self.advance()
            quoted = self.peek().kind is TokenKind.QIDENT
            parts.append(self.ident("type name"))
        if len(parts) > 1 and parts[:-1] == ["pg_catalog"]:
            parts = parts[-1:]
        modifiers: tuple[int, ...] = ()
        if len(parts) > 1 or quoted:
            name = ".".join(parts) if len(parts) > 1 else parts[0]
            if self.at_op("("):
                modifiers = self.type_modifiers()
        else:
            name, modifiers = self.builtin_type_words(parts[0])
        array_dims = 0
        element = array_element_name(name) if not quoted else None
        if element is not None:
            name, array_dims = canonical_type_name(element), 1
        while self.at_op("["):
            self.advance()
            if _is_integer(self.peek()):
                self.advance()
            self.expect_op("]")
            array_dims += 1
        if self.accept_kw("array"):
            if self.accept_op("["):
                self.integer("array bound")
                self.expect_op("]")
            array_dims += 1
        if self.at_kw("list"):
            raise self.unsupported("list types")
        return ast.TypeName(name, modifiers, array_dims)

    def builtin_type_words(self, first: str) -> tuple[str, tuple[int, ...]]:
        """Multi-word built-in types after their first word; returns (canonical, modifiers)."""
        if first == "map" and self.at_op("["):
            raise self.unsupported("map types", self.toks[self.i - 1])
        words = first
        if first == "double" and self.accept_kw("precision"):
            words = "double precision"
        elif first in ("character", "char", "bit") and self.accept_kw("varying"):
            words = f"{first} varying"
        elif first in ("national", "nchar"):
            raise self.unsupported("national character types")
        modifiers: tuple[int, ...] = ()
        if first in ("time", "timestamp"):
            if self.at_op("("):
                modifiers = self.type_modifiers()
            if self.accept_kw("with", "time", "zone"):
                words = f"{first} with time zone"
            else:
                self.accept_kw("without", "time", "zone")
            return canonical_type_name(words), modifiers
        if first == "interval":
            fields = ("year", "month", "day", "hour", "minute", "second")
            if self.peek().value in fields and self.peek().kind is TokenKind.IDENT:
                self.advance()
                if self.accept_kw("to"):
                    tok = self.peek()
                    if not (tok.kind is TokenKind.IDENT and tok.value in fields):
                        raise self.error("interval field")
                    self.advance()
        if self.at_op("("):
            modifiers = self.type_modifiers()
        if words == "float":
            precision = modifiers[0] if modifiers else 53
            return ("float4" if precision <= 24 else "float8"), ()
        canonical = canonical_type_name(words)
        if canonical == "bpchar" and words != "bpchar" and not modifiers:
            modifiers = (1,)
        return canonical, modifiers

    def type_modifiers(self) -> tuple[int, ...]:
        self.expect_op("(")
        mods = [self.signed_integer()]
        while self.accept_op(","):
            mods.append(self.signed_integer())
        self.expect_op(")")
        return tuple(mods)

    def signed_integer(self) -> int:
        negative = self.accept_op("-")
        value = self.integer("integer type modifier")
        return -value if negative else value

    # ------------------------------------------------------------------------------------------
    # Options: `(NAME [=] value, ...)`

    def option_name(self) -> str:
        for words in _MULTIWORD_OPTIONS:
            if self.at_kw(*words):
                self.i += len(words)
                return " ".join(words)
        tok = self.peek()
        if tok.kind is not TokenKind.IDENT:
            raise self.error("option name")
        self.advance()
        return tok.value

    def option(self) -> ast.Option:
        name = self.option_name()
        had_equals = self.accept_op("=")
        if name == "retain history":
            self.accept_kw("for")
        if self.at_op(",") or self.at_op(")") or self.at_end():
            if had_equals:
                raise self.error(f"a value for option {name.upper()}")
            return ast.Option(name, True)
        return ast.Option(name, self.option_value())

    def option_value(self) -> ast.OptionValue:
        tok = self.peek()
        if tok.kind is TokenKind.STRING:
            self.advance()
            return tok.value
        if tok.kind is TokenKind.NUMBER or (
            tok.is_op("-", "+") and self.peek(1).kind is TokenKind.NUMBER
        ):
            sign = -1 if tok.is_op("-") else 1
            if tok.kind is TokenKind.OP:
                self.advance()
            text = self.advance().value
            if is_ascii_digits(text):
                return sign * int(text)
            return sign * float(text)
        if tok.is_keyword("true", "false"):
            self.advance()
            return tok.value == "true"
        if tok.is_keyword("secret") and self.peek(1).kind in (TokenKind.IDENT, TokenKind.QIDENT):
            self.advance()
            return ast.SecretRef(self.qualified_name("secret name"))
        if tok.kind in (TokenKind.IDENT, TokenKind.QIDENT):
            name = self.qualified_name("option value")
            return name.parts[0] if len(name.parts) == 1 else name
        if tok.is_op("("):
            self.advance()
            values: list[ast.OptionValue] = []
            if not self.at_op(")"):
                values.append(self.option_value())
                while self.accept_op(","):
                    values.append(self.option_value())
            self.expect_op(")")
            return tuple(values)
        raise self.error("option value")

    def option_list(self) -> tuple[ast.Option, ...]:
        """`(opt, ...)`; the cursor is on the opening parenthesis."""
        self.expect_op("(")
        options: list[ast.Option] = []
        if not self.at_op(")"):
            options.append(self.option())
            while self.accept_op(","):
                options.append(self.option())
        self.expect_op(")")
        return tuple(options)

    def with_options(self) -> tuple[ast.Option, ...]:
        """`[WITH] (opt, ...)` when present."""
        if self.at_kw("with") and self.peek(1).is_op("("):
            self.advance()
            return self.option_list()
        return ()

    def in_cluster(self) -> str | None:
        if self.accept_kw("in", "cluster"):
            return self.ident("cluster name")
        return None

    def if_not_exists(self) -> bool:
        return self.accept_kw("if", "not", "exists")

    # ------------------------------------------------------------------------------------------
    # Token-range helpers

    def matching(self, idx: int) -> int:
        """Index of the `)`/`]` closing the bracket at `idx`."""
        depth = 0
        for j in range(idx, self.end):
            tok = self.toks[j]
            if tok.is_op("(", "["):
                depth += 1
            elif tok.is_op(")", "]"):
                depth -= 1
                if depth == 0:
                    return j
        raise self.error('")"', self.toks[self.end])

    def find_top_level(self, lo: int, hi: int, *words: str) -> int | None:
        """The first index in [lo, hi) at bracket depth 0 where the keywords `words` start."""
        depth = 0
        for j in range(lo, hi):
            tok = self.toks[j]
            if tok.is_op("(", "["):
                depth += 1
            elif tok.is_op(")", "]"):
                depth -= 1
            elif depth == 0 and all(
                j + k < hi and self.toks[j + k].is_keyword(w) for k, w in enumerate(words)
            ):
                return j
        return None

    def split_commas(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """[lo, hi) split at top-level commas."""
        parts: list[tuple[int, int]] = []
        depth = 0
        start = lo
        for j in range(lo, hi):
            tok = self.toks[j]
            if tok.is_op("(", "["):
                depth += 1
            elif tok.is_op(")", "]"):
                depth -= 1
            elif depth == 0 and tok.is_op(","):
                parts.append((start, j))
                start = j + 1
        parts.append((start, hi))
        return parts

    def expr_end(self, stop_keywords: frozenset[str] = frozenset()) -> int:
        """The end of an expression starting at the cursor: the first top-level `,`, an
        unmatched `)`, the end, or (after the first token) one of `stop_keywords`."""
        depth = 0
        j = self.i
        while j < self.end:
            tok = self.toks[j]
            if tok.is_op("(", "["):
                depth += 1
            elif tok.is_op(")", "]"):
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and (
                tok.is_op(",")
                or (j > self.i and tok.kind is TokenKind.IDENT and tok.value in stop_keywords)
            ):
                break
            j += 1
        return j

    def render(self, lo: int, hi: int) -> str:
        """Tokens [lo, hi) as normalized text: keywords lower case, single spaces."""
        out: list[str] = []
        for j in range(lo, hi):
            tok = self.toks[j]
            text = tok.value if tok.kind is TokenKind.IDENT else self.sql[tok.start : tok.end]
            if out and not (tok.is_op(")", ",", "]") or out[-1] in ("(", "[")):
                out.append(" ")
            out.append(text)
        return "".join(out)

    # ------------------------------------------------------------------------------------------
    # sqlglot

    def sqlglot_text(self, lo: int, hi: int) -> str:
        """The source text of tokens [lo, hi), with sqlglot workarounds (length-preserving)."""
        self.reject_trailing_commas(lo, hi)
        start = self.toks[lo].start
        text = self.sql[start : self.toks[hi - 1].end]
        pieces: list[str] = []
        last = 0
        for j in range(lo, hi - 2):
            tok = self.toks[j]
            if (
                tok.kind is TokenKind.IDENT
                and tok.value in _OID_TYPES
                and j > lo
                and (self.toks[j - 1].is_op("::") or self.toks[j - 1].is_keyword("as"))
                and self.toks[j + 1].is_op("[")
                and self.toks[j + 2].is_op("]")
            ):
                a, b = tok.start - start, self.toks[j + 2].end - start
                pieces.append(text[last:a])
                replacement = "_" + tok.value
                pieces.append(replacement + " " * (b - a - len(replacement)))
                last = b
        if pieces:
            pieces.append(text[last:])
            text = "".join(pieces)
        text = self._interval_literals(text, lo, hi, start)
        return _space_after_params(text)

    def _interval_literals(self, text: str, lo: int, hi: int, start: int) -> str:
        """`INTERVAL '1 day 02:03:04'` -> `CAST('1 day 02:03:04' AS INTERVAL)`: sqlglot keeps
        only the first field of an interval literal without a unit (it would give `1 day`).
        Runs on text whose offsets still match the tokens (the rewrites before keep lengths)."""
        spans: list[tuple[int, int]] = []
        for j in range(lo, hi - 1):
            tok, nxt = self.toks[j], self.toks[j + 1]
            after = self.toks[j + 2] if j + 2 < hi else None
            if (
                tok.kind is TokenKind.IDENT
                and tok.value == "interval"
                and nxt.kind is TokenKind.STRING
                and not (
                    after is not None
                    and after.kind is TokenKind.IDENT
                    and after.value in _INTERVAL_UNITS
                )
            ):
                spans.append((tok.start - start, nxt.end - start))
        for a, b in reversed(spans):
            literal = text[text.index("'", a) : b] if "'" in text[a:b] else text[a:b]
            text = text[:a] + f"CAST({literal} AS INTERVAL)" + text[b:]
        return text

    def reject_trailing_commas(self, lo: int, hi: int) -> None:
        """sqlglot accepts `f(a,)`, `SELECT a, FROM t` and `x IN (1,)`; PostgreSQL does not."""
        for j in range(lo, hi):
            if not self.toks[j].is_op(","):
                continue
            nxt = self.toks[j + 1] if j + 1 < hi else self.toks[self.end]
            if j + 1 >= hi:
                raise syntax_error("syntax error at end of input", nxt.start + 1)
            if nxt.is_op(")", "]") or (
                nxt.kind is TokenKind.IDENT and nxt.value in _CLAUSE_KEYWORDS
            ):
                text = self.sql[nxt.start : nxt.end]
                raise syntax_error(f'syntax error at or near "{text}"', nxt.start + 1)

    def sqlglot(self, lo: int, hi: int, what: str, prefix: str = "") -> exp.Expr:
        """Parse tokens [lo, hi) with sqlglot (postgres dialect), optionally after `prefix`."""
        if lo >= hi:
            raise self.error(what, self.toks[lo])
        start = self.toks[lo].start
        text = prefix + self.sqlglot_text(lo, hi)
        try:
            result = sqlglot.parse_one(text, read="postgres")
        except ParseError as e:
            raise self.sqlglot_error(e, text, start - len(prefix), start + 1) from None
        except TokenError as e:
            raise syntax_error(f"syntax error in {what}: {e}", start + 1) from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            # sqlglot occasionally fails on odd input with a plain exception
            _log.debug("sqlglot failed on %r: %r", text, e)
            raise syntax_error(f"syntax error in {what}", start + 1) from None
        if result is None:
            raise self.error(what, self.toks[lo])
        _restore_oid_arrays(result)
        return result

    def sqlglot_error(self, e: ParseError, text: str, base: int, floor: int) -> SqlError:
        """A SqlError for sqlglot's error in `text`, which starts at offset `base` of the
        statement; positions before `floor` (in a prefix we added) are moved to it."""
        info = e.errors[0] if e.errors else {}
        description = str(info.get("description") or "syntax error")
        cut = description.find(" but got <Token")
        if cut >= 0:
            description = description[:cut]
        missing = _REQUIRED_KEYWORD.match(description)
        if missing is not None:
            description = f"incomplete {missing.group(1).lower()} expression"
        highlight = str(info.get("highlight") or "")
        line = info.get("line")
        col = info.get("col")
        position = base + 1
        if isinstance(line, int) and isinstance(col, int) and line >= 1:
            offset = 0
            for _ in range(line - 1):
                nl = text.find("\n", offset)
                if nl < 0:
                    break
                offset = nl + 1
            offset += col - max(len(highlight), 1)
            if 0 <= offset <= len(text) and (not highlight or text.startswith(highlight, offset)):
                position = base + offset + 1
        at_end = text[position - base - 1 + len(highlight) :].strip(" \t\n\r\f\v;") == ""
        if missing is not None and at_end and highlight not in (")", "]"):
            near = " at end of input"
        else:
            near = f' at or near "{highlight}"' if highlight else ""
        return syntax_error(f"syntax error{near}: {description}", max(position, floor))

    def query(self, lo: int, hi: int) -> exp.Expr:
        """A query (SELECT, VALUES, WITH, set operations, parenthesized) from tokens [lo, hi)."""
        result = self.sqlglot(lo, hi, "a query")
        if isinstance(result, exp.Select) and result.args.get("into") is not None:
            raise self.unsupported("SELECT ... INTO", self.toks[lo])
        if isinstance(result, exp.Query | exp.Values):
            return result
        if isinstance(result, exp.DML):
            raise self.unsupported("WITH ... INSERT/UPDATE/DELETE", self.toks[lo])
        raise self.error("a query (SELECT, VALUES, WITH ...)", self.toks[lo])

    def expr(self, lo: int, hi: int, what: str = "an expression") -> exp.Expr:
        result = self.sqlglot(lo, hi, what)
        if (
            isinstance(result, exp.Query | exp.Values | exp.Command | exp.DDL | exp.DML)
            and not isinstance(result, exp.Subquery)
        ) or isinstance(result, exp.Alias):
            raise self.error(what, self.toks[lo])
        return result

    def expr_here(self, hi: int, what: str = "an expression") -> exp.Expr:
        result = self.expr(self.i, hi, what)
        self.i = hi
        return result

    def expr_list(self, lo: int, hi: int, what: str = "an expression") -> tuple[exp.Expr, ...]:
        return tuple(self.expr(a, b, what) for a, b in self.split_commas(lo, hi))

    def select_list(self, lo: int, hi: int, what: str) -> tuple[exp.Expr, ...]:
        """A target list (`*`, `expr [AS alias]`, ...) such as RETURNING's."""
        result = self.sqlglot(lo, hi, what, prefix="SELECT ")
        if not isinstance(result, exp.Select) or any(
            result.args.get(k) for k in result.args if k != "expressions"
        ):
            raise self.error(what, self.toks[lo])
        return tuple(result.expressions)

    # ------------------------------------------------------------------------------------------
    # Statements

    def parse(self) -> ast.Statement:
        stmt = self.statement()
        self.expect_end()
        return stmt

    def statement(self) -> ast.Statement:
        tok = self.peek()
        if tok.is_op("("):
            return self.select()
        if tok.kind is not TokenKind.IDENT:
            raise self.error(f"a statement ({_STATEMENT_STARTS})")
        handler = self._handlers().get(tok.value)
        if handler is not None:
            return handler()
        if tok.value in _UNSUPPORTED_STATEMENTS:
            raise self.unsupported(_UNSUPPORTED_STATEMENTS[tok.value])
        raise self.error(f"a statement ({_STATEMENT_STARTS})")

    def _handlers(self) -> dict[str, Callable[[], ast.Statement]]:
        return {
            "select": self.select,
            "with": self.select,
            "values": self.select,
            "table": self.select,
            "insert": self.insert,
            "update": self.update,
            "delete": self.delete,
            "create": self.create,
            "drop": self.drop,
            "alter": self.alter,
            "subscribe": self.subscribe,
            "copy": self.copy,
            "begin": self.begin,
            "start": self.begin,
            "commit": self.commit,
            "end": self.commit,
            "rollback": self.rollback,
            "abort": self.rollback,
            "set": self.set,
            "reset": self.reset,
            "show": self.show,
            "explain": self.explain,
            "declare": self.declare,
            "fetch": self.fetch,
            "move": self.move,
            "close": self.close,
            "discard": self.discard,
            "prepare": self.prepare,
            "execute": self.execute,
            "deallocate": self.deallocate,
        }

    # SELECT ----------------------------------------------------------------------------------

    def select(self) -> ast.Select:
        lo, hi = self.i, self.end
        as_of: int | None = None
        at_least = False
        at = self.find_as_of(lo, hi)
        if at is not None:
            self.i = at + 2
            at_least = self.accept_kw("at", "least")
            if not _is_integer(self.peek()):
                raise self.unsupported("AS OF with anything but an integer timestamp")
            as_of, hi = int(self.advance().value), at
            self.expect_end()
        query = self.query(lo, hi)
        self.i = self.end
        return ast.Select(query, as_of, at_least)

    def find_as_of(self, lo: int, hi: int) -> int | None:
        """The index of the last top-level `AS OF` that is not `AS of` naming a column."""
        found: int | None = None
        start = lo
        while (at := self.find_top_level(start, hi, "as", "of")) is not None:
            nxt = self.toks[at + 2] if at + 2 < hi else None
            if (
                at > lo
                and nxt is not None
                and not nxt.is_op(",", ")")
                and not (nxt.kind is TokenKind.IDENT and nxt.value in _AFTER_ALIAS)
            ):
                found = at
            start = at + 2
        return found

    # INSERT / UPDATE / DELETE ----------------------------------------------------------------

    def insert(self) -> ast.Insert:
        self.expect_kw("insert", "into")
        table = self.qualified_name("table name")
        if self.at_kw("as"):
            raise self.unsupported("INSERT ... AS alias")
        columns: tuple[str, ...] = ()
        if self.at_op("(") and not (
            self.peek(1).is_keyword("select", "with", "values", "table") or self.peek(1).is_op("(")
        ):
            columns = self.ident_list()
        if self.at_kw("overriding"):
            raise self.unsupported("INSERT ... OVERRIDING")
        returning_at = self.find_top_level(self.i, self.end, "returning")
        conflict_at = self.find_top_level(self.i, self.end, "on", "conflict")
        if conflict_at is not None:
            raise self.unsupported("INSERT ... ON CONFLICT", self.toks[conflict_at])
        source_end = self.end if returning_at is None else returning_at
        source: ast.InsertSource
        if self.at_kw("default", "values"):
            self.i += 2
            source = ast.DefaultValues()
            if self.i != source_end:
                raise self.error("RETURNING or end of statement")
        else:
            if not (self.at_query()):
                raise self.error("VALUES, a query or DEFAULT VALUES")
            query = self.query(self.i, source_end)
            if (
                isinstance(query, exp.Values)
                and set(k for k, v in query.args.items() if v) == {"expressions"}
                and all(isinstance(row, exp.Tuple) for row in query.expressions)
            ):
                source = ast.ValuesRows(tuple(tuple(row.expressions) for row in query.expressions))
            else:
                source = ast.QuerySource(query)
        self.i = source_end
        returning = self.returning()
        return ast.Insert(table, columns, source, returning)

    def returning(self) -> tuple[exp.Expr, ...]:
        if not self.accept_kw("returning"):
            return ()
        items = self.select_list(self.i, self.end, "RETURNING list")
        self.i = self.end
        return items

    def alias(self, *stops: str) -> str | None:
        if self.accept_kw("as"):
            return self.ident("alias")
        tok = self.peek()
        if tok.kind is TokenKind.QIDENT or (tok.kind is TokenKind.IDENT and tok.value not in stops):
            self.advance()
            return tok.value
        return None

    def where_and_returning(self) -> tuple[exp.Expr | None, tuple[exp.Expr, ...]]:
        where: exp.Expr | None = None
        if self.accept_kw("where"):
            if self.at_kw("current", "of"):
                raise self.unsupported("WHERE CURRENT OF")
            end = self.find_top_level(self.i, self.end, "returning")
            where = self.expr_here(self.end if end is None else end, "a WHERE condition")
        returning = self.returning()
        return where, returning

    def update(self) -> ast.Update:
        self.expect_kw("update")
        if self.at_kw("only"):
            raise self.unsupported("UPDATE ONLY")
        table = self.qualified_name("table name")
        alias = self.alias("set")
        self.expect_kw("set")
        stop = self.end
        for word in ("where", "returning", "from"):
            at = self.find_top_level(self.i, self.end, word)
            while at is not None and word == "from" and self.toks[at - 1].is_keyword("distinct"):
                at = self.find_top_level(at + 1, self.end, word)  # IS [NOT] DISTINCT FROM
            if at is not None and at < stop:
                stop = at
        if self.toks[stop].is_keyword("from"):
            raise self.unsupported("UPDATE ... FROM", self.toks[stop])
        assignments: list[ast.Assignment] = []
        for lo, hi in self.split_commas(self.i, stop):
            self.i = lo
            if self.at_op("("):
                raise self.unsupported("multiple-column UPDATE assignments")
            column = self.ident("column name")
            if self.at_op(".") or self.at_op("["):
                raise self.unsupported("UPDATE of a field or element of a column")
            self.expect_op("=")
            if self.at_kw("default") and self.i + 1 == hi:
                self.i = hi
                value: exp.Expr = exp.Var(this="DEFAULT")
            else:
                value = self.expr_here(hi, "a value")
            assignments.append(ast.Assignment(column, value))
        self.i = stop
        where, returning = self.where_and_returning()
        return ast.Update(table, alias, tuple(assignments), where, returning)

    def delete(self) -> ast.Delete:
        self.expect_kw("delete", "from")
        if self.at_kw("only"):
            raise self.unsupported("DELETE FROM ONLY")
        table = self.qualified_name("table name")
        alias = self.alias("where", "returning", "using")
        if self.at_kw("using"):
            raise self.unsupported("DELETE ... USING")
        where, returning = self.where_and_returning()
        return ast.Delete(table, alias, where, returning)

    # CREATE ----------------------------------------------------------------------------------

    def create(self) -> ast.Statement:
        start = self.peek()
        self.expect_kw("create")
        or_replace = self.accept_kw("or", "replace")
        temporary = self.accept_kw("temporary") or self.accept_kw("temp")
        if self.at_kw("unlogged"):
            raise self.unsupported("CREATE UNLOGGED TABLE")
        if self.at_kw("table"):
            self.only_modifiers(start, or_replace=or_replace, what="CREATE TABLE")
            return self.create_table(temporary)
        if self.at_kw("view"):
            return self.create_view(or_replace, temporary)
        if self.at_kw("materialized", "view"):
            self.only_modifiers(start, temporary=temporary, what="CREATE MATERIALIZED VIEW")
            return self.create_materialized_view(or_replace)
        self.only_modifiers(
            start,
            or_replace=or_replace,
            temporary=temporary,
            what="CREATE " + self.render(self.i, self.i + 1).upper(),
        )
        if self.at_kw("unique"):
            raise self.unsupported("CREATE UNIQUE INDEX")
        if self.at_kw("index") or self.at_kw("default", "index"):
            return self.create_index()
        if self.at_kw("database"):
            return self.create_database()
        if self.at_kw("schema"):
            return self.create_schema()
        if self.at_kw("cluster", "replica"):
            return self.create_cluster_replica()
        if self.at_kw("cluster"):
            return self.create_cluster()
        if self.at_kw("source"):
            return self.create_source()
        if self.at_kw("secret"):
            return self.create_secret()
        if self.at_kw("connection"):
            return self.create_connection()
        for words in _UNSUPPORTED_OBJECTS:
            if self.at_kw(*words):
                raise self.unsupported("CREATE " + " ".join(words).upper(), start)
        raise self.error(
            "TABLE, VIEW, MATERIALIZED VIEW, INDEX, DATABASE, SCHEMA, CLUSTER, SOURCE, "
            "SECRET or CONNECTION after CREATE"
        )

    def only_modifiers(
        self, start: Token, *, what: str, or_replace: bool = False, temporary: bool = False
    ) -> None:
        if or_replace:
            raise self.unsupported(f"CREATE OR REPLACE for {what}", start)
        if temporary:
            raise self.unsupported(f"CREATE TEMPORARY for {what}", start)

    def create_table(self, temporary: bool) -> ast.Statement:
        self.expect_kw("table")
        if_not_exists = self.if_not_exists()
        name = self.qualified_name("table name")
        if self.at_kw("as"):
            raise self.unsupported("CREATE TABLE ... AS")
        if self.at_kw("of") or self.at_kw("partition"):
            raise self.unsupported("CREATE TABLE ... " + self.peek().value.upper())
        if not self.at_op("("):
            if self.accept_kw("from", "source"):
                return self.create_table_from_source(name, (), if_not_exists)
            raise self.error('"(" and column definitions')
        close = self.matching(self.i)
        if self.toks[close + 1].is_keyword("from") and self.toks[close + 2].is_keyword("source"):
            columns = self.ident_list()
            self.expect_kw("from", "source")
            return self.create_table_from_source(name, columns, if_not_exists)
        self.expect_op("(")
        defs: list[ast.ColumnDef] = []
        keys: list[ast.PrimaryKey] = []
        if not self.at_op(")"):
            self.table_element(defs, keys)
            while self.accept_op(","):
                self.table_element(defs, keys)
        self.expect_op(")")
        if self.at_kw("inherits") or self.at_kw("partition"):
            raise self.unsupported("CREATE TABLE ... " + self.peek().value.upper())
        options = self.with_options()
        return ast.CreateTable(
            name, tuple(defs), if_not_exists, temporary, options, primary_keys=tuple(keys)
        )

    def table_element(self, defs: list[ast.ColumnDef], keys: list[ast.PrimaryKey]) -> None:
        """A column definition or a `[CONSTRAINT name] PRIMARY KEY (cols)` table constraint."""
        constraint: str | None = None
        if self.at_kw("constraint") and self.peek(2).is_keyword("primary"):
            self.advance()
            constraint = self.ident("constraint name")
        if self.at_kw("primary", "key"):
            self.expect_kw("primary", "key")
            keys.append(ast.PrimaryKey(self.ident_list(), constraint))
            return
        defs.append(self.column_def())

    def create_table_from_source(
        self, name: ast.QualifiedName, columns: tuple[str, ...], if_not_exists: bool
    ) -> ast.CreateTableFromSource:
        source = self.qualified_name("source name")
        options = self.option_list() if self.at_op("(") else ()
        options += self.with_options()
        return ast.CreateTableFromSource(name, source, columns, options, if_not_exists)

    _CONSTRAINT_WORDS = frozenset(
        _phrases(
            "not, null, constraint, primary, unique, check, references, default, collate, generated"
        )
    )

    def column_def(self) -> ast.ColumnDef:
        tok = self.peek()
        if tok.kind is TokenKind.IDENT and tok.value in (
            "constraint",
            "primary",
            "unique",
            "check",
            "foreign",
            "exclude",
            "like",
        ):
            raise self.unsupported(f"table constraint {tok.value.upper()}")
        name = self.ident("column name")
        type_name = self.type_name()
        nullable = True
        default: exp.Expr | None = None
        primary_key = False
        constraint: str | None = None
        while not (self.at_op(",") or self.at_op(")")):
            if self.at_kw("constraint") and self.peek(2).is_keyword("primary"):
                self.advance()
                constraint = self.ident("constraint name")
            if self.accept_kw("primary", "key"):
                primary_key = True
            elif self.accept_kw("not", "null"):
                nullable = False
            elif self.accept_kw("null"):
                nullable = True
            elif self.accept_kw("default"):
                end = self.expr_end(self._CONSTRAINT_WORDS)
                default = self.expr_here(end, "a DEFAULT expression")
            elif self.peek().kind is TokenKind.IDENT and self.peek().value in (
                "constraint",
                "primary",
                "unique",
                "check",
                "references",
                "generated",
                "collate",
            ):
                raise self.unsupported(f"column constraint {self.peek().value.upper()}")
            else:
                raise self.error('NOT NULL, NULL, DEFAULT, "," or ")"')
        return ast.ColumnDef(name, type_name, nullable, default, primary_key, constraint)

    def view_columns_and_query_start(self) -> tuple[ast.QualifiedName, tuple[str, ...]]:
        name = self.qualified_name("view name")
        columns = self.ident_list() if self.at_op("(") else ()
        return name, columns

    def create_view(self, or_replace: bool, temporary: bool) -> ast.CreateView:
        self.expect_kw("view")
        if_not_exists = self.if_not_exists()
        name, columns = self.view_columns_and_query_start()
        if self.at_kw("with") and self.peek(1).is_op("("):
            raise self.unsupported("CREATE VIEW ... WITH (options)")
        self.expect_kw("as")
        query = self.query(self.i, self.end)
        self.i = self.end
        return ast.CreateView(name, query, columns, or_replace, temporary, if_not_exists)

    def create_materialized_view(self, or_replace: bool) -> ast.CreateMaterializedView:
        self.expect_kw("materialized", "view")
        if_not_exists = self.if_not_exists()
        name, columns = self.view_columns_and_query_start()
        in_cluster = self.in_cluster()
        options = self.with_options()
        self.expect_kw("as")
        query = self.query(self.i, self.end)
        self.i = self.end
        return ast.CreateMaterializedView(
            name, query, columns, in_cluster, or_replace, if_not_exists, options
        )

    def create_index(self) -> ast.CreateIndex:
        default_index = self.accept_kw("default")
        self.expect_kw("index")
        if self.at_kw("concurrently"):
            raise self.unsupported("CREATE INDEX CONCURRENTLY")
        if_not_exists = self.if_not_exists()
        name: str | None = None
        if not default_index and not self.at_kw("on") and not self.at_kw("in", "cluster"):
            name = self.ident("index name")
        in_cluster = self.in_cluster()
        self.expect_kw("on")
        if self.at_kw("only"):
            raise self.unsupported("CREATE INDEX ON ONLY")
        on = self.qualified_name("object name")
        if self.accept_kw("using"):
            method = self.peek()
            if not method.is_keyword("arrangement"):
                raise self.unsupported(f"index method {method.value!r}")
            self.advance()
        keys: tuple[exp.Expr, ...] = ()
        if self.at_op("("):
            close = self.matching(self.i)
            keys = self.expr_list(self.i + 1, close, "an index key expression")
            self.i = close + 1
        elif not default_index:
            raise self.error('"(" and index keys')
        if self.at_kw("include") or self.at_kw("where") or self.at_kw("tablespace"):
            raise self.unsupported("CREATE INDEX ... " + self.peek().value.upper())
        options = self.with_options()
        return ast.CreateIndex(name, on, keys, in_cluster, default_index, if_not_exists, options)

    def create_database(self) -> ast.CreateDatabase:
        self.expect_kw("database")
        if_not_exists = self.if_not_exists()
        name = self.qualified_name("database name", max_parts=1).name
        if not self.at_end():
            raise self.unsupported("CREATE DATABASE options")
        return ast.CreateDatabase(name, if_not_exists)

    def create_schema(self) -> ast.CreateSchema:
        self.expect_kw("schema")
        if_not_exists = self.if_not_exists()
        if self.at_kw("authorization"):
            raise self.unsupported("CREATE SCHEMA AUTHORIZATION")
        name = self.qualified_name("schema name", max_parts=2)
        if not self.at_end():
            raise self.unsupported("CREATE SCHEMA with elements or AUTHORIZATION")
        return ast.CreateSchema(name, if_not_exists)

    def cluster_options(
        self, in_parens: bool
    ) -> tuple[tuple[ast.Option, ...], tuple[ast.ReplicaDef, ...] | None]:
        """Cluster options, where `REPLICAS (r (opts), ...)` is a replica list."""
        options: list[ast.Option] = []
        replicas: tuple[ast.ReplicaDef, ...] | None = None
        if in_parens:
            self.expect_op("(")
            if self.accept_op(")"):
                return (), None
        while True:
            if self.at_kw("replicas"):
                self.advance()
                self.accept_op("=")
                replicas = self.replica_defs()
            else:
                options.append(self.option())
            if not self.accept_op(","):
                break
        if in_parens:
            self.expect_op(")")
        return tuple(options), replicas

    def replica_defs(self) -> tuple[ast.ReplicaDef, ...]:
        self.expect_op("(")
        replicas: list[ast.ReplicaDef] = []
        if not self.at_op(")"):
            while True:
                name = self.ident("replica name")
                options = self.option_list() if self.at_op("(") else ()
                replicas.append(ast.ReplicaDef(name, _size(options), options))
                if not self.accept_op(","):
                    break
        self.expect_op(")")
        return tuple(replicas)

    def create_cluster(self) -> ast.CreateCluster:
        self.expect_kw("cluster")
        name = self.qualified_name("cluster name", max_parts=1).name
        options: tuple[ast.Option, ...] = ()
        replicas: tuple[ast.ReplicaDef, ...] | None = None
        if self.at_op("("):
            options, replicas = self.cluster_options(in_parens=True)
        elif not self.at_end():
            options, replicas = self.cluster_options(in_parens=False)
        factor = ast.options_dict(options).get("replication factor")
        if factor is not None and (not isinstance(factor, int) or isinstance(factor, bool)):
            raise syntax_error("REPLICATION FACTOR must be an integer", self.peek().start + 1)
        return ast.CreateCluster(name, _size(options), factor, replicas, options)

    def create_cluster_replica(self) -> ast.CreateClusterReplica:
        self.expect_kw("cluster", "replica")
        first = self.peek()
        name = self.qualified_name("cluster_name.replica_name", max_parts=2)
        if len(name.parts) != 2:
            raise self.error("cluster_name.replica_name", first)
        if self.at_op("("):
            options = self.option_list()
        else:
            opts: list[ast.Option] = []
            if not self.at_end():
                opts.append(self.option())
                while self.accept_op(","):
                    opts.append(self.option())
            options = tuple(opts)
        return ast.CreateClusterReplica(name.parts[0], name.parts[1], _size(options), options)

    def create_secret(self) -> ast.CreateSecret:
        self.expect_kw("secret")
        if_not_exists = self.if_not_exists()
        name = self.qualified_name("secret name")
        self.expect_kw("as")
        value = self.expr_here(self.end, "the secret value")
        return ast.CreateSecret(name, value, if_not_exists)

    def create_connection(self) -> ast.CreateConnection:
        self.expect_kw("connection")
        if_not_exists = self.if_not_exists()
        name = self.qualified_name("connection name")
        if self.at_kw("for"):
            raise self.unsupported("CREATE CONNECTION ... FOR")
        self.expect_kw("to")
        words: list[str] = []
        while self.peek().kind is TokenKind.IDENT:
            words.append(self.advance().value)
        if not words:
            raise self.error("connection type (POSTGRES, KAFKA, ...)")
        options = self.option_list()
        with_options = self.with_options()
        return ast.CreateConnection(name, " ".join(words), options, if_not_exists, with_options)

    # CREATE SOURCE ---------------------------------------------------------------------------

    def create_source(self) -> ast.CreateSource:
        self.expect_kw("source")
        if_not_exists = self.if_not_exists()
        name = self.qualified_name("source name")
        columns = self.ident_list() if self.at_op("(") else ()
        in_cluster = self.in_cluster()
        self.expect_kw("from")
        connector: ast.SourceConnector
        if self.accept_kw("load", "generator"):
            connector = self.load_generator()
        elif self.accept_kw("webhook"):
            connector = self.webhook()
        elif self.accept_kw("postgres"):
            self.expect_kw("connection")
            connection = self.qualified_name("connection name")
            options = self.option_list() if self.at_op("(") else ()
            connector = ast.PostgresSourceConnector(connection, options, self.source_tables())
        elif self.accept_kw("kafka"):
            self.expect_kw("connection")
            connection = self.qualified_name("connection name")
            options = self.option_list() if self.at_op("(") else ()
            connector = ast.KafkaSourceConnector(connection, options)
        elif self.at_kw("mysql") or self.at_kw("sql", "server"):
            raise self.unsupported("CREATE SOURCE ... FROM " + self.peek().value.upper())
        else:
            raise self.error("LOAD GENERATOR, WEBHOOK, POSTGRES or KAFKA")
        source = ast.CreateSource(name, connector, columns, in_cluster, if_not_exists)
        return self.source_clauses(source)

    def load_generator(self) -> ast.LoadGenerator:
        if self.accept_kw("key", "value"):
            generator = "key value"
        else:
            generator = self.ident("load generator name (COUNTER, AUCTION, ...)")
        options = self.option_list() if self.at_op("(") else ()
        return ast.LoadGenerator(generator, options, self.source_tables())

    def source_tables(self) -> ast.SourceTables | None:
        if self.accept_kw("for", "all", "tables"):
            return ast.ForAllTables()
        if self.accept_kw("for", "schemas"):
            return ast.ForSchemas(self.ident_list("schema name"))
        if not self.accept_kw("for", "tables"):
            return None
        self.expect_op("(")
        tables: list[ast.TableReference] = []
        while True:
            upstream = self.qualified_name("table name")
            alias = self.qualified_name("table name") if self.accept_kw("as") else None
            tables.append(ast.TableReference(upstream, alias))
            if not self.accept_op(","):
                break
        self.expect_op(")")
        return ast.ForTables(tuple(tables))

    def webhook(self) -> ast.Webhook:
        self.expect_kw("body", "format")
        if self.accept_kw("json", "array"):
            body_format = "json array"
        elif self.peek().is_keyword("json", "text", "bytes"):
            body_format = self.advance().value
        else:
            raise self.error("JSON, JSON ARRAY, TEXT or BYTES")
        include_headers: tuple[str, ...] | None = None
        headers: list[ast.WebhookHeader] = []
        check: ast.WebhookCheck | None = None
        while True:
            if self.accept_kw("include", "headers"):
                filters: list[str] = []
                if self.accept_op("("):
                    while True:
                        negated = self.accept_kw("not")
                        filters.append(("!" if negated else "") + self.string("header name"))
                        if not self.accept_op(","):
                            break
                    self.expect_op(")")
                include_headers = tuple(filters)
            elif self.accept_kw("include", "header"):
                header = self.string("header name")
                self.expect_kw("as")
                column = self.ident("column name")
                headers.append(ast.WebhookHeader(header, column, self.accept_kw("bytes")))
            elif self.accept_kw("check"):
                check = self.webhook_check()
            else:
                break
        return ast.Webhook(body_format, include_headers, tuple(headers), check)

    def webhook_check(self) -> ast.WebhookCheck:
        if not self.at_op("("):
            raise self.error('"(" after CHECK')
        close = self.matching(self.i)
        self.advance()
        options: list[ast.WebhookCheckOption] = []
        if self.at_kw("with") and self.peek(1).is_op("("):
            self.advance()
            self.expect_op("(")
            while True:
                secret: ast.QualifiedName | None = None
                kind: str
                if self.accept_kw("headers"):
                    kind = "headers"
                elif self.accept_kw("body"):
                    kind = "body"
                elif self.accept_kw("secret"):
                    kind = "secret"
                    secret = self.qualified_name("secret name")
                else:
                    raise self.error("HEADERS, BODY or SECRET")
                alias = self.ident("alias") if self.accept_kw("as") else None
                is_bytes = self.accept_kw("bytes")
                options.append(
                    ast.WebhookCheckOption(
                        "headers" if kind == "headers" else "body" if kind == "body" else "secret",
                        alias,
                        is_bytes,
                        secret,
                    )
                )
                if not self.accept_op(","):
                    break
            self.expect_op(")")
        expr = self.expr_here(close, "a CHECK expression")
        self.expect_op(")")
        return ast.WebhookCheck(tuple(options), expr)

    def at_source_clause(self) -> bool:
        return (
            self.at_kw("format")
            or self.at_kw("key", "format")
            or self.at_kw("value", "format")
            or self.at_kw("include")
            or self.at_kw("envelope")
            or self.at_kw("expose", "progress")
            or (self.at_kw("with") and self.peek(1).is_op("("))
            or self.at_end()
        )

    def raw_until_clause(self, what: str) -> str:
        lo = self.i
        while not self.at_source_clause():
            if self.at_op("("):
                self.i = self.matching(self.i) + 1
            else:
                self.advance()
        if self.i == lo:
            raise self.error(what)
        return self.render(lo, self.i)

    def source_clauses(self, source: ast.CreateSource) -> ast.CreateSource:
        fmt = source.format
        key_format = source.key_format
        value_format = source.value_format
        include: list[str] = []
        envelope = source.envelope
        expose_progress = source.expose_progress
        options = source.options
        upsert_key, upsert_delete = source.upsert_key, source.upsert_delete
        while not self.at_end():
            if self.accept_kw("format"):
                fmt = self.raw_until_clause("a format")
            elif self.accept_kw("key", "format"):
                key_format = self.raw_until_clause("a key format")
                self.expect_kw("value", "format")
                value_format = self.raw_until_clause("a value format")
            elif self.accept_kw("include"):
                while True:
                    lo = self.i
                    while not (self.at_op(",") or self.at_source_clause()):
                        self.advance()
                    if self.i == lo:
                        raise self.error("an INCLUDE item")
                    include.append(self.render(lo, self.i))
                    if not self.accept_op(","):
                        break
            elif self.accept_kw("envelope"):
                if (
                    self.at_kw("upsert")
                    and self.peek(1).is_op("(")
                    and self.peek(2).is_keyword("key", "delete")
                ):
                    self.advance()
                    envelope = "upsert"
                    upsert_key, upsert_delete = self.upsert_options()
                else:
                    envelope = self.raw_until_clause("an envelope")
            elif self.accept_kw("expose", "progress"):
                self.expect_kw("as")
                expose_progress = self.qualified_name("progress subsource name")
            elif self.at_kw("with") and self.peek(1).is_op("("):
                options = self.with_options()
            else:
                raise self.error("FORMAT, INCLUDE, ENVELOPE, EXPOSE PROGRESS, WITH or end")
        return dataclasses.replace(
            source,
            format=fmt,
            key_format=key_format,
            value_format=value_format,
            include=tuple(include),
            envelope=envelope,
            expose_progress=expose_progress,
            options=options,
            upsert_key=upsert_key,
            upsert_delete=upsert_delete,
        )

    def upsert_options(self) -> tuple[exp.Expr, exp.Expr | None]:
        """`(KEY (expr) [, DELETE WHEN (expr)])` after ENVELOPE UPSERT."""
        self.expect_op("(")
        key: exp.Expr | None = None
        delete: exp.Expr | None = None
        while True:
            if self.accept_kw("key"):
                key = self.parenthesized_expr("a KEY expression")
            elif self.accept_kw("delete", "when"):
                delete = self.parenthesized_expr("a DELETE WHEN expression")
            else:
                raise self.error("KEY (...) or DELETE WHEN (...)")
            if not self.accept_op(","):
                break
        self.expect_op(")")
        if key is None:
            raise self.error("KEY (...) in ENVELOPE UPSERT (...)")
        return key, delete

    def parenthesized_expr(self, what: str) -> exp.Expr:
        if not self.at_op("("):
            raise self.error(f'"(" before {what}')
        close = self.matching(self.i)
        self.advance()
        result = self.expr_here(close, what)
        self.expect_op(")")
        return result

    # DROP / ALTER ----------------------------------------------------------------------------

    _OBJECT_TYPES: tuple[tuple[tuple[str, ...], ast.ObjectType], ...] = (
        (("materialized", "view"), ast.ObjectType.MATERIALIZED_VIEW),
        (("cluster", "replica"), ast.ObjectType.CLUSTER_REPLICA),
        (("database",), ast.ObjectType.DATABASE),
        (("schema",), ast.ObjectType.SCHEMA),
        (("table",), ast.ObjectType.TABLE),
        (("view",), ast.ObjectType.VIEW),
        (("index",), ast.ObjectType.INDEX),
        (("source",), ast.ObjectType.SOURCE),
        (("cluster",), ast.ObjectType.CLUSTER),
        (("secret",), ast.ObjectType.SECRET),
        (("connection",), ast.ObjectType.CONNECTION),
    )

    def object_type(self, verb: str) -> ast.ObjectType:
        start = self.peek()
        for words, object_type in self._OBJECT_TYPES:
            if self.accept_kw(*words):
                return object_type
        for words in _UNSUPPORTED_OBJECTS:
            if self.at_kw(*words):
                raise self.unsupported(f"{verb} " + " ".join(words).upper(), start)
        raise self.error(
            "DATABASE, SCHEMA, TABLE, VIEW, MATERIALIZED VIEW, INDEX, SOURCE, CLUSTER, "
            f"CLUSTER REPLICA, SECRET or CONNECTION after {verb}"
        )

    def object_name(self, object_type: ast.ObjectType) -> ast.QualifiedName:
        first = self.peek()
        if object_type in (ast.ObjectType.DATABASE, ast.ObjectType.CLUSTER):
            return self.qualified_name(f"{object_type} name", max_parts=1)
        if object_type is ast.ObjectType.SCHEMA:
            return self.qualified_name("schema name", max_parts=2)
        if object_type is ast.ObjectType.CLUSTER_REPLICA:
            name = self.qualified_name("cluster_name.replica_name", max_parts=2)
            if len(name.parts) != 2:
                raise self.error("cluster_name.replica_name", first)
            return name
        return self.qualified_name(f"{object_type} name")

    def drop(self) -> ast.Drop:
        self.expect_kw("drop")
        object_type = self.object_type("DROP")
        if object_type is ast.ObjectType.INDEX and self.at_kw("concurrently"):
            raise self.unsupported("DROP INDEX CONCURRENTLY")
        if_exists = self.accept_kw("if", "exists")
        names = [self.object_name(object_type)]
        while self.accept_op(","):
            names.append(self.object_name(object_type))
        cascade = self.accept_kw("cascade")
        if not cascade:
            self.accept_kw("restrict")
        return ast.Drop(object_type, tuple(names), if_exists, cascade)

    def alter(self) -> ast.Statement:
        start = self.peek()
        self.expect_kw("alter")
        if self.accept_kw("system"):
            if self.accept_kw("set"):
                variable = self.variable_name()
                if not (self.accept_kw("to") or self.accept_op("=")):
                    raise self.error('TO or "="')
                return ast.AlterSystemSet(variable, self.set_values())
            if self.accept_kw("reset"):
                if self.accept_kw("all"):
                    return ast.AlterSystemReset(None)
                return ast.AlterSystemReset(self.variable_name())
            raise self.error("SET or RESET after ALTER SYSTEM")
        object_type = self.object_type("ALTER")
        if_exists = self.accept_kw("if", "exists")
        name = self.object_name(object_type)
        if self.accept_kw("rename", "to"):
            return ast.AlterRename(object_type, name, self.ident("new name"), if_exists)
        if self.accept_kw("swap", "with"):
            if object_type not in (ast.ObjectType.SCHEMA, ast.ObjectType.CLUSTER):
                raise self.unsupported(f"ALTER {object_type.upper()} ... SWAP", start)
            return ast.AlterSwap(object_type, name, self.ident(f"{object_type} name"))
        if object_type is ast.ObjectType.CLUSTER:
            if self.accept_kw("set"):
                return ast.AlterCluster(name.name, self.option_list(), (), if_exists)
            if self.accept_kw("reset"):
                names = self.ident_list("option name")
                return ast.AlterCluster(name.name, (), names, if_exists)
        if self.at_end():
            raise self.error("RENAME TO, SWAP WITH, SET or RESET")
        raise self.unsupported(f"ALTER {object_type.upper()} ... {self.peek().value.upper()}")

    # SUBSCRIBE / COPY ------------------------------------------------------------------------

    def subscribe(self) -> ast.Subscribe:
        self.expect_kw("subscribe")
        self.accept_kw("to")
        target: ast.QualifiedName | exp.Expr
        if self.at_op("("):
            close = self.matching(self.i)
            target = self.query(self.i + 1, close)
            self.i = close + 1
        else:
            target = self.qualified_name("object name or (query)")
        envelope: str | None = None
        envelope_key: tuple[str, ...] = ()
        order_by: tuple[exp.Expr, ...] = ()
        if self.accept_kw("envelope"):
            if self.at_kw("upsert") or self.at_kw("debezium"):
                envelope = self.advance().value
            else:
                raise self.error("UPSERT or DEBEZIUM")
            self.expect_op("(")
            self.expect_kw("key")
            envelope_key = self.ident_list()
            self.expect_op(")")
        if self.accept_kw("within", "timestamp", "order", "by"):
            stop = self.end
            for words in (("with",), ("as", "of"), ("up", "to")):
                at = self.find_top_level(self.i, self.end, *words)
                if at is not None and at < stop:
                    stop = at
            result = self.sqlglot(self.i, stop, "an ORDER BY list", prefix="SELECT 1 ORDER BY ")
            order = result.args.get("order") if isinstance(result, exp.Select) else None
            if not isinstance(order, exp.Order):
                raise self.error("an ORDER BY list")
            order_by = tuple(order.expressions)
            self.i = stop
        options = self.with_options()
        as_of: int | None = None
        at_least = False
        up_to: int | None = None
        if self.accept_kw("as", "of"):
            at_least = self.accept_kw("at", "least")
            as_of = self.integer("a timestamp (integer) after AS OF")
        if self.accept_kw("up", "to"):
            up_to = self.integer("a timestamp (integer) after UP TO")
        return ast.Subscribe(
            target, options, as_of, at_least, up_to, envelope, envelope_key, order_by
        )

    def copy(self) -> ast.Copy:
        self.expect_kw("copy")
        target: ast.QualifiedName | ast.Select | ast.Subscribe
        columns: tuple[str, ...] = ()
        if self.at_op("("):
            close = self.matching(self.i)
            inner = _Parser(self.sql, [*self.toks[self.i + 1 : close], self.toks[close]])
            inner.toks[-1] = Token(
                TokenKind.EOF, "", self.toks[close].start, self.toks[close].start
            )
            if inner.at_kw("subscribe"):
                target = inner.subscribe()
            elif inner.at_query():
                target = inner.select()
            else:
                raise inner.error("a query or SUBSCRIBE")
            inner.expect_end('")"')
            self.i = close + 1
        else:
            target = self.qualified_name("table name")
            if self.at_op("("):
                columns = self.ident_list()
        if self.accept_kw("from"):
            direction = "from"
            if not self.accept_kw("stdin"):
                raise self.unsupported("COPY FROM anything but STDIN")
            if not isinstance(target, ast.QualifiedName):
                raise self.error("a table name for COPY ... FROM")
        elif self.accept_kw("to"):
            direction = "to"
            if not self.accept_kw("stdout"):
                raise self.unsupported("COPY TO anything but STDOUT")
        else:
            raise self.error("FROM STDIN or TO STDOUT")
        options: tuple[ast.Option, ...]
        if self.at_op("(") or (self.at_kw("with") and self.peek(1).is_op("(")):
            self.accept_kw("with")
            options = self.option_list()
        else:
            self.accept_kw("with")
            options = self.legacy_copy_options()
        return ast.Copy(target, "from" if direction == "from" else "to", columns, options)

    def legacy_copy_options(self) -> tuple[ast.Option, ...]:
        options: list[ast.Option] = []
        while not self.at_end():
            if self.accept_kw("csv"):
                options.append(ast.Option("format", "csv"))
            elif self.accept_kw("binary"):
                options.append(ast.Option("format", "binary"))
            elif self.accept_kw("header"):
                options.append(ast.Option("header", True))
            elif self.peek().is_keyword("delimiter", "null", "quote", "escape"):
                word = self.advance().value
                self.accept_kw("as")
                options.append(ast.Option(word, self.string(f"a {word.upper()} string")))
            elif self.at_kw("force") or self.at_kw("where"):
                raise self.unsupported("COPY ... " + self.peek().value.upper())
            else:
                raise self.error("COPY option (CSV, BINARY, HEADER, DELIMITER, NULL, ...)")
        return tuple(options)

    # Transactions ----------------------------------------------------------------------------

    def transaction_modes(self) -> tuple[str | None, bool | None, bool | None]:
        isolation: str | None = None
        read_only: bool | None = None
        deferrable: bool | None = None
        first = True
        while not self.at_end():
            if not first:
                self.accept_op(",")
            first = False
            if self.accept_kw("isolation", "level"):
                for words in (
                    ("strict", "serializable"),
                    ("serializable",),
                    ("repeatable", "read"),
                    ("read", "committed"),
                    ("read", "uncommitted"),
                ):
                    if self.accept_kw(*words):
                        isolation = " ".join(words)
                        break
                else:
                    raise self.error(
                        "SERIALIZABLE, STRICT SERIALIZABLE, REPEATABLE READ, READ COMMITTED or "
                        "READ UNCOMMITTED"
                    )
            elif self.accept_kw("read", "only"):
                read_only = True
            elif self.accept_kw("read", "write"):
                read_only = False
            elif self.accept_kw("not", "deferrable"):
                deferrable = False
            elif self.accept_kw("deferrable"):
                deferrable = True
            else:
                raise self.error("ISOLATION LEVEL, READ ONLY, READ WRITE or [NOT] DEFERRABLE")
        return isolation, read_only, deferrable

    def begin(self) -> ast.Begin:
        if self.accept_kw("start"):
            self.expect_kw("transaction")
        else:
            self.expect_kw("begin")
            if not self.accept_kw("work"):
                self.accept_kw("transaction")
        return ast.Begin(*self.transaction_modes())

    def end_of_transaction(self) -> None:
        if self.at_kw("prepared"):
            raise self.unsupported(
                "two-phase commit (" + self.peek(-1).value.upper() + " PREPARED)"
            )
        if self.at_kw("to") or self.at_kw("savepoint"):
            raise self.unsupported("ROLLBACK TO SAVEPOINT")
        if not self.accept_kw("work"):
            self.accept_kw("transaction")
        if self.at_kw("to"):
            raise self.unsupported("ROLLBACK TO SAVEPOINT")
        if self.at_kw("and", "chain"):
            raise self.unsupported("AND CHAIN")
        self.accept_kw("and", "no", "chain")

    def commit(self) -> ast.Commit:
        self.advance()
        self.end_of_transaction()
        return ast.Commit()

    def rollback(self) -> ast.Rollback:
        self.advance()
        self.end_of_transaction()
        return ast.Rollback()

    # SET / RESET / SHOW ----------------------------------------------------------------------

    def variable_name(self) -> str:
        tok = self.peek()
        if tok.kind not in (TokenKind.IDENT, TokenKind.QIDENT):
            raise self.error("configuration parameter name")
        return ".".join(self.qualified_name("configuration parameter name", max_parts=2).parts)

    def set_values(self) -> tuple[str, ...] | None:
        if self.at_kw("default") and (self.peek(1).kind is TokenKind.EOF):
            self.advance()
            return None
        values = [self.set_value()]
        while self.accept_op(","):
            values.append(self.set_value())
        return tuple(values)

    def set_value(self) -> str:
        tok = self.peek()
        if tok.kind in (TokenKind.STRING, TokenKind.IDENT, TokenKind.QIDENT):
            self.advance()
            return tok.value
        if tok.kind is TokenKind.NUMBER:
            self.advance()
            return tok.value
        if tok.is_op("-", "+") and self.peek(1).kind is TokenKind.NUMBER:
            self.advance()
            number = self.advance().value
            return ("-" if tok.value == "-" else "") + number
        raise self.error("a value (string, number or identifier)")

    def set(self) -> ast.Statement:
        self.expect_kw("set")
        if self.accept_kw("session", "characteristics", "as", "transaction"):
            return ast.SetTransaction(*self.transaction_modes(), session=True)
        if self.at_kw("session", "authorization") or self.at_kw("role"):
            raise self.unsupported("SET " + self.render(self.i, min(self.i + 2, self.end)).upper())
        local = False
        if self.accept_kw("local"):
            local = True
        elif (
            self.at_kw("session")
            and not self.peek(1).is_op("=")
            and not self.peek(1).is_keyword("to")
        ):
            self.advance()
        if self.accept_kw("transaction"):
            if self.at_kw("snapshot"):
                raise self.unsupported("SET TRANSACTION SNAPSHOT")
            return ast.SetTransaction(*self.transaction_modes())
        if self.accept_kw("time", "zone"):
            if self.accept_kw("local") or self.accept_kw("default"):
                return ast.Set("timezone", None, local)
            if self.at_kw("interval"):
                raise self.unsupported("SET TIME ZONE INTERVAL")
            return ast.Set("timezone", (self.set_value(),), local)
        if (
            self.at_kw("names")
            and not self.peek(1).is_op("=")
            and not self.peek(1).is_keyword("to")
        ):
            self.advance()
            if self.accept_kw("default") or self.at_end():
                return ast.Set("client_encoding", None, local)
            return ast.Set("client_encoding", (self.set_value(),), local)
        if self.at_kw("schema") and self.peek(1).kind is TokenKind.STRING:
            self.advance()
            return ast.Set("search_path", (self.string(),), local)
        name = self.variable_name()
        if not (self.accept_kw("to") or self.accept_op("=")):
            raise self.error('TO or "="')
        return ast.Set(name, self.set_values(), local)

    def reset(self) -> ast.Reset:
        self.expect_kw("reset")
        if self.accept_kw("all"):
            return ast.Reset(None)
        if self.accept_kw("time", "zone"):
            return ast.Reset("timezone")
        if self.at_kw("session", "authorization") or self.at_kw("role"):
            raise self.unsupported("RESET " + self.peek().value.upper())
        if self.accept_kw("transaction", "isolation", "level"):
            return ast.Reset("transaction_isolation")
        return ast.Reset(self.variable_name())

    _SHOW_OBJECTS: tuple[tuple[tuple[str, ...], str], ...] = (
        (("materialized", "views"), "materialized views"),
        (("cluster", "replicas"), "cluster replicas"),
        (("tables",), "tables"),
        (("views",), "views"),
        (("indexes",), "indexes"),
        (("indices",), "indexes"),
        (("sources",), "sources"),
        (("subsources",), "subsources"),
        (("sinks",), "sinks"),
        (("clusters",), "clusters"),
        (("databases",), "databases"),
        (("schemas",), "schemas"),
        (("secrets",), "secrets"),
        (("connections",), "connections"),
        (("objects",), "objects"),
        (("types",), "types"),
        (("roles",), "roles"),
    )

    def show_filter(self) -> tuple[str | None, exp.Expr | None]:
        if self.accept_kw("like"):
            return self.string("a LIKE pattern"), None
        if self.accept_kw("where"):
            return None, self.expr_here(self.end, "a WHERE condition")
        return None, None

    def show(self) -> ast.Statement:
        self.expect_kw("show")
        if self.accept_kw("all"):
            return ast.Show("all")
        if self.accept_kw("create"):
            object_type = self.object_type("SHOW CREATE")
            return ast.ShowCreate(object_type, self.object_name(object_type))
        if self.accept_kw("columns"):
            if not (self.accept_kw("from") or self.accept_kw("in")):
                raise self.error("FROM")
            table = self.qualified_name("table name")
            like, where = self.show_filter()
            return ast.ShowColumns(table, like, where)
        if self.accept_kw("transaction", "isolation", "level"):
            return ast.Show("transaction_isolation")
        if self.accept_kw("time", "zone"):
            return ast.Show("timezone")
        if self.accept_kw("session", "authorization"):
            return ast.Show("session_authorization")
        if self.at_kw("extended") or self.at_kw("full"):
            raise self.unsupported("SHOW " + self.peek().value.upper())
        for words, plural in self._SHOW_OBJECTS:
            if self.at_kw(*words) and (
                self.peek(len(words)).kind is TokenKind.EOF
                or self.peek(len(words)).is_keyword("from", "in", "on", "like", "where")
            ):
                self.i += len(words)
                return self.show_objects(plural)
        return ast.Show(self.variable_name())

    def show_objects(self, object_type: str) -> ast.ShowObjects:
        from_: ast.QualifiedName | None = None
        on: ast.QualifiedName | None = None
        in_cluster: str | None = None
        while True:
            if self.accept_kw("from"):
                from_ = self.qualified_name("schema name", max_parts=2)
            elif self.accept_kw("on"):
                on = self.qualified_name("object name")
            elif self.at_kw("in", "cluster"):
                in_cluster = self.in_cluster()
            elif self.accept_kw("in"):
                from_ = self.qualified_name("schema name", max_parts=2)
            else:
                break
        like, where = self.show_filter()
        return ast.ShowObjects(object_type, from_, on, in_cluster, like, where)

    # EXPLAIN ---------------------------------------------------------------------------------

    _EXPLAIN_KINDS: tuple[tuple[tuple[str, ...], str], ...] = (
        (("raw", "plan"), "raw plan"),
        (("decorrelated", "plan"), "decorrelated plan"),
        (("locally", "optimized", "plan"), "locally optimized plan"),
        (("optimized", "plan"), "optimized plan"),
        (("physical", "plan"), "physical plan"),
        (("plan",), "optimized plan"),
        (("timestamp",), "timestamp"),
        (("filter", "pushdown"), "filter pushdown"),
    )

    def explain(self) -> ast.Explain:
        self.expect_kw("explain")
        kind = "optimized plan"
        explain_format = "text"
        options: list[ast.Option] = []
        if self.at_op("(") and not (
            self.peek(1).is_keyword("select", "with", "values", "table") or self.peek(1).is_op("(")
        ):
            options.extend(self.option_list())
        while self.at_kw("analyze") or self.at_kw("analyse") or self.at_kw("verbose"):
            word = self.advance().value
            if word != "verbose":
                raise self.unsupported("EXPLAIN ANALYZE")
            options.append(ast.Option("verbose", True))
        for option in options:
            if option.name in ("analyze", "analyse") and option.value is not False:
                raise self.unsupported("EXPLAIN ANALYZE")
            if option.name == "format" and isinstance(option.value, str):
                explain_format = option.value
        for words, name in self._EXPLAIN_KINDS:
            if self.at_kw(*words):
                # `EXPLAIN TIMESTAMP ...` is a kind, but a query may not start with these words
                self.i += len(words)
                kind = name
                break
        options.extend(self.with_options())
        if self.accept_kw("as"):
            if self.accept_kw("verbose", "text"):
                explain_format = "verbose text"
            elif self.peek().is_keyword("text", "json", "dot"):
                explain_format = self.advance().value
            else:
                raise self.error("TEXT, JSON, VERBOSE TEXT or DOT")
        self.accept_kw("for")
        target: ast.Statement | ast.ExplainObject
        if self.accept_kw("materialized", "view"):
            target = ast.ExplainObject(
                ast.ObjectType.MATERIALIZED_VIEW, self.qualified_name("materialized view name")
            )
        elif self.accept_kw("view"):
            target = ast.ExplainObject(ast.ObjectType.VIEW, self.qualified_name("view name"))
        elif self.accept_kw("index"):
            target = ast.ExplainObject(ast.ObjectType.INDEX, self.qualified_name("index name"))
        elif self.at_query() or self.peek().is_keyword(
            "create", "subscribe", "insert", "update", "delete"
        ):
            target = self.statement()
            if not isinstance(
                target,
                ast.Select
                | ast.CreateView
                | ast.CreateMaterializedView
                | ast.CreateIndex
                | ast.Subscribe
                | ast.Insert
                | ast.Update
                | ast.Delete,
            ):
                raise self.unsupported(f"EXPLAIN of {type(target).__name__}", self.toks[0])
        else:
            raise self.error("a query, CREATE VIEW/MATERIALIZED VIEW/INDEX, VIEW, INDEX, ...")
        return ast.Explain(target, kind, explain_format, tuple(options))

    # Cursors, DISCARD, PREPARE ---------------------------------------------------------------

    def declare(self) -> ast.Declare:
        self.expect_kw("declare")
        name = self.ident("cursor name")
        while not self.at_kw("cursor"):
            if self.accept_kw("no", "scroll") or self.accept_kw("insensitive"):
                continue
            if self.accept_kw("asensitive") or self.accept_kw("scroll"):
                continue  # SQL cursors are materialized: every one can scroll
            if self.at_kw("binary"):
                raise self.unsupported("DECLARE ... " + self.peek().value.upper())
            raise self.error("CURSOR")
        self.expect_kw("cursor")
        if self.at_kw("with", "hold"):
            raise self.unsupported("DECLARE ... WITH HOLD")
        self.accept_kw("without", "hold")
        self.expect_kw("for")
        statement: ast.Select | ast.Subscribe
        if self.at_kw("subscribe"):
            statement = self.subscribe()
        elif self.at_query():
            statement = self.select()
        else:
            raise self.error("SELECT or SUBSCRIBE")
        return ast.Declare(name, statement)

    def fetch(self) -> ast.Fetch:
        self.expect_kw("fetch")
        count: int | None = 1
        for word in ("backward", "prior", "absolute", "relative", "first", "last"):
            if self.at_kw(word):
                raise self.unsupported("FETCH " + word.upper())
        if self.accept_kw("next"):
            count = 1
        else:
            forward = self.accept_kw("forward")
            if self.accept_kw("all"):
                count = None
            elif _is_integer(self.peek()):
                count = self.integer()
            elif self.at_op("-"):
                raise self.unsupported("FETCH with a negative count")
            elif forward:
                count = 1
        if not self.accept_kw("from"):
            self.accept_kw("in")
        cursor = self.ident("cursor name")
        options = self.with_options()
        return ast.Fetch(cursor, count, options)

    def move(self) -> ast.Move:
        """`MOVE [FORWARD | BACKWARD | ABSOLUTE | RELATIVE] [n | ALL | NEXT | PRIOR | FIRST |
        LAST] [FROM | IN] cursor` (psycopg's ServerCursor.scroll)."""
        self.expect_kw("move")
        mode, count = "relative", 1
        if self.accept_kw("next"):
            pass
        elif self.accept_kw("prior"):
            count = -1
        elif self.accept_kw("first"):
            mode, count = "absolute", 1
        elif self.accept_kw("last"):
            mode, count = "absolute", -1
        else:
            sign = 1
            if self.accept_kw("absolute"):
                mode = "absolute"
            elif self.accept_kw("backward"):
                sign = -1
            elif not self.accept_kw("forward"):
                self.accept_kw("relative")
            if self.accept_kw("all"):
                count = sign * 2**62
            else:
                negative = self.accept_op("-")
                if _is_integer(self.peek()):
                    count = sign * self.integer() * (-1 if negative else 1)
                else:
                    count = sign
        if not self.accept_kw("from"):
            self.accept_kw("in")
        return ast.Move(self.ident("cursor name"), mode, count)

    def close(self) -> ast.Close:
        self.expect_kw("close")
        if self.accept_kw("all"):
            return ast.Close(None)
        return ast.Close(self.ident("cursor name"))

    def discard(self) -> ast.Discard:
        self.expect_kw("discard")
        if self.accept_kw("all"):
            return ast.Discard("all")
        if self.accept_kw("plans"):
            return ast.Discard("plans")
        if self.accept_kw("sequences"):
            return ast.Discard("sequences")
        if self.accept_kw("temp") or self.accept_kw("temporary"):
            return ast.Discard("temp")
        raise self.error("ALL, PLANS, SEQUENCES or TEMP")

    def prepare(self) -> ast.Prepare:
        self.expect_kw("prepare")
        if self.at_kw("transaction"):
            raise self.unsupported("PREPARE TRANSACTION")
        name = self.ident("prepared statement name")
        types: list[ast.TypeName] = []
        if self.accept_op("("):
            types.append(self.type_name())
            while self.accept_op(","):
                types.append(self.type_name())
            self.expect_op(")")
        self.expect_kw("as")
        statement = self.statement()
        if isinstance(statement, ast.Prepare | ast.Execute | ast.Deallocate):
            raise self.error("a preparable statement", self.toks[0])
        return ast.Prepare(name, statement, tuple(types))

    def execute(self) -> ast.Execute:
        self.expect_kw("execute")
        name = self.ident("prepared statement name")
        params: tuple[exp.Expr, ...] = ()
        if self.at_op("("):
            close = self.matching(self.i)
            params = self.expr_list(self.i + 1, close, "a parameter value")
            self.i = close + 1
        return ast.Execute(name, params)

    def deallocate(self) -> ast.Deallocate:
        self.expect_kw("deallocate")
        self.accept_kw("prepare")
        if self.accept_kw("all"):
            return ast.Deallocate(None)
        return ast.Deallocate(self.ident("prepared statement name"))


def _size(options: tuple[ast.Option, ...]) -> str | None:
    size = ast.options_dict(options).get("size")
    if size is None:
        return None
    return str(size)


def _restore_oid_arrays(root: exp.Expr) -> None:
    """Turn the `_oid`-style array types `_Parser.sqlglot_text` produced back into arrays."""
    for node in list(root.walk()):
        if (
            isinstance(node, exp.DataType)
            and node.this == exp.DataType.Type.USERDEFINED
            and isinstance(node.args.get("kind"), exp.Identifier)
        ):
            name = node.args["kind"].name
            if (
                not node.args["kind"].quoted
                and name.startswith("_")
                and name[1:].lower() in _OID_TYPES
            ):
                element = exp.ObjectIdentifier(this=name[1:].upper())
                node.replace(
                    exp.DataType(this=exp.DataType.Type.ARRAY, expressions=[element], nested=True)
                )


_INTERVAL_UNITS = frozenset(
    {
        "year",
        "years",
        "month",
        "months",
        "day",
        "days",
        "hour",
        "hours",
        "minute",
        "minutes",
        "second",
        "seconds",
    }
)

_PARAM_GLUED = re.compile(r"(\$[0-9]+)(?=[^\s0-9])")


def _space_after_params(text: str) -> str:
    """`$1,$2` -> `$1 ,$2`: sqlglot reads `$1,$` as the start of a dollar-quoted string.

    Not length-preserving: an error position after such a parameter shifts by a character.
    Text inside quotes is left alone.
    """
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    quote: str | None = None
    while i < len(text):
        ch = text[i]
        if quote is not None:
            out.append(ch)
            if ch == quote:
                quote = None
            i += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            out.append(ch)
            i += 1
            continue
        m = _PARAM_GLUED.match(text, i)
        if m is not None:
            out.append(m.group(1) + " ")
            i = m.end(1)
            continue
        out.append(ch)
        i += 1
    return "".join(out)
