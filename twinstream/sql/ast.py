"""The statements twinstream accepts, as frozen dataclasses.

Embedded queries and expressions are stock sqlglot expressions parsed with
`read="postgres"` (typed `exp.Expr`); everything around them (the statement "shell") is ours.
Names are `QualifiedName`s whose parts are already normalized: unquoted identifiers folded to
lower case, quoted identifiers kept as written. Identifiers inside sqlglot expressions are
left as sqlglot parsed them (`Identifier.quoted` tells which were quoted).

Sequences are tuples and options are tuples of `Option`, so every statement is hashable and
compares by value. `iter_expressions` and `iter_statements` walk a statement generically.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

from sqlglot import exp

# ----------------------------------------------------------------------------------------------
# Names, types, options


_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_identifier(name: str) -> str:
    """`name` as SQL text: bare when it reads back unchanged, else double-quoted."""
    if _PLAIN_IDENT.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class QualifiedName:
    """A possibly qualified object name: `item`, `schema.item` or `database.schema.item`.

    For clusters, databases and other unqualified objects it has one part; for a cluster
    replica it is `cluster.replica`.
    """

    parts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a QualifiedName needs at least one part")

    @classmethod
    def of(cls, *parts: str) -> QualifiedName:
        return cls(tuple(parts))

    @property
    def name(self) -> str:
        """The last part."""
        return self.parts[-1]

    @property
    def schema(self) -> str | None:
        return self.parts[-2] if len(self.parts) >= 2 else None

    @property
    def database(self) -> str | None:
        return self.parts[-3] if len(self.parts) >= 3 else None

    def __str__(self) -> str:
        return ".".join(quote_identifier(p) for p in self.parts)


@dataclass(frozen=True)
class TypeName:
    """A SQL type, normalized to PostgreSQL's canonical name (`int4`, `float8`, `numeric`,
    `varchar`, `bpchar`, `timestamptz`, ...), with its modifiers (`varchar(10)` -> (10,)) and
    array dimensions (`int[]` -> 1). Unknown names are kept (lower-cased unless quoted,
    schema-qualified names other than pg_catalog keep their schema)."""

    name: str
    modifiers: tuple[int, ...] = ()
    array_dims: int = 0

    def __str__(self) -> str:
        mods = f"({','.join(str(m) for m in self.modifiers)})" if self.modifiers else ""
        return self.name + mods + "[]" * self.array_dims

    @property
    def base(self) -> str:
        """The name without modifiers, with `[]` per array dimension (e.g. `int4[]`)."""
        return self.name + "[]" * self.array_dims


@dataclass(frozen=True)
class SecretRef:
    """`SECRET name` as an option value."""

    name: QualifiedName


OptionValue: TypeAlias = (
    "str | int | float | bool | QualifiedName | SecretRef | tuple[OptionValue, ...] | None"
)


@dataclass(frozen=True)
class Option:
    """One `NAME [=] value` of a `(...)` option list. `name` is lower case, multi-word names
    joined by one space (`replication factor`). A bare flag (`HEADER`, `SNAPSHOT`) has value
    True. Values: strings as str, integers as int, other numbers as float, TRUE/FALSE as bool,
    a bare word as its folded str, a dotted name as QualifiedName, `SECRET x` as SecretRef,
    a parenthesized list as a tuple."""

    name: str
    value: OptionValue = True


def options_dict(options: tuple[Option, ...]) -> dict[str, OptionValue]:
    """The options as a dict (a later duplicate wins)."""
    return {o.name: o.value for o in options}


class ObjectType(enum.StrEnum):
    DATABASE = "database"
    SCHEMA = "schema"
    TABLE = "table"
    VIEW = "view"
    MATERIALIZED_VIEW = "materialized view"
    INDEX = "index"
    SOURCE = "source"
    SINK = "sink"
    CLUSTER = "cluster"
    CLUSTER_REPLICA = "cluster replica"
    SECRET = "secret"
    CONNECTION = "connection"


# ----------------------------------------------------------------------------------------------
# Statements


@dataclass(frozen=True)
class Statement:
    """Base class of all statements."""


# Queries and writes


@dataclass(frozen=True)
class Select(Statement):
    """A query: SELECT, VALUES, TABLE t, WITH ..., a parenthesized query or set operation.

    `query` is a sqlglot `Select`, `Union`/`Intersect`/`Except`, `Subquery` or `Values`.
    `as_of` is Materialize's `AS OF [AT LEAST] <timestamp>` (an integer literal)."""

    query: exp.Expr
    as_of: int | None = None
    as_of_at_least: bool = False


@dataclass(frozen=True)
class ValuesRows:
    """`VALUES (..), (..)` as the source of an INSERT. `DEFAULT` in a row is `exp.Var`."""

    rows: tuple[tuple[exp.Expr, ...], ...]


@dataclass(frozen=True)
class QuerySource:
    """A query as the source of an INSERT (any query other than plain VALUES rows)."""

    query: exp.Expr


@dataclass(frozen=True)
class DefaultValues:
    """`DEFAULT VALUES` as the source of an INSERT."""


InsertSource: TypeAlias = ValuesRows | QuerySource | DefaultValues


@dataclass(frozen=True)
class Insert(Statement):
    table: QualifiedName
    columns: tuple[str, ...]  # empty: all columns in order
    source: InsertSource
    returning: tuple[exp.Expr, ...] = ()


@dataclass(frozen=True)
class Assignment:
    column: str
    value: exp.Expr  # `DEFAULT` is exp.Var(this="DEFAULT")


@dataclass(frozen=True)
class Update(Statement):
    table: QualifiedName
    alias: str | None
    assignments: tuple[Assignment, ...]
    where: exp.Expr | None = None
    returning: tuple[exp.Expr, ...] = ()


@dataclass(frozen=True)
class Delete(Statement):
    table: QualifiedName
    alias: str | None
    where: exp.Expr | None = None
    returning: tuple[exp.Expr, ...] = ()


# DDL


@dataclass(frozen=True)
class ColumnDef:
    name: str
    type: TypeName
    nullable: bool = True
    default: exp.Expr | None = None
    primary_key: bool = False
    #: `CONSTRAINT name PRIMARY KEY` on the column.
    constraint_name: str | None = None


@dataclass(frozen=True)
class PrimaryKey:
    """A table constraint `[CONSTRAINT name] PRIMARY KEY (cols)`."""

    columns: tuple[str, ...]
    name: str | None = None


@dataclass(frozen=True)
class CreateTable(Statement):
    name: QualifiedName
    columns: tuple[ColumnDef, ...]
    if_not_exists: bool = False
    temporary: bool = False
    options: tuple[Option, ...] = ()  # WITH (...)
    primary_keys: tuple[PrimaryKey, ...] = ()  # table constraints (more than one is 42P16)


@dataclass(frozen=True)
class CreateTableFromSource(Statement):
    """`CREATE TABLE t [(cols)] FROM SOURCE src [(REFERENCE = upstream, ...)]`."""

    name: QualifiedName
    source: QualifiedName
    columns: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    if_not_exists: bool = False


@dataclass(frozen=True)
class CreateView(Statement):
    name: QualifiedName
    query: exp.Expr
    columns: tuple[str, ...] = ()
    or_replace: bool = False
    temporary: bool = False
    if_not_exists: bool = False


@dataclass(frozen=True)
class CreateMaterializedView(Statement):
    name: QualifiedName
    query: exp.Expr
    columns: tuple[str, ...] = ()
    in_cluster: str | None = None
    or_replace: bool = False
    if_not_exists: bool = False
    options: tuple[Option, ...] = ()  # WITH (...)


@dataclass(frozen=True)
class CreateIndex(Statement):
    """`CREATE INDEX [name] [IN CLUSTER c] ON obj [USING ARRANGEMENT] (keys)` or
    `CREATE DEFAULT INDEX [IN CLUSTER c] ON obj`; `keys` is empty for a default index
    without explicit keys."""

    name: str | None
    on: QualifiedName
    keys: tuple[exp.Expr, ...] = ()
    in_cluster: str | None = None
    default_index: bool = False
    if_not_exists: bool = False
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class CreateDatabase(Statement):
    name: str
    if_not_exists: bool = False


@dataclass(frozen=True)
class CreateSchema(Statement):
    name: QualifiedName  # `schema` or `database.schema`
    if_not_exists: bool = False


@dataclass(frozen=True)
class ReplicaDef:
    name: str
    size: str | None
    options: tuple[Option, ...] = ()  # all options, SIZE included


@dataclass(frozen=True)
class CreateCluster(Statement):
    """`CREATE CLUSTER c (SIZE = 'x', REPLICATION FACTOR = n, ...)` (managed) or
    `CREATE CLUSTER c REPLICAS (r1 (SIZE 'x'), ...)` (unmanaged). `options` has every option
    as written (SIZE and REPLICATION FACTOR included)."""

    name: str
    size: str | None = None
    replication_factor: int | None = None
    replicas: tuple[ReplicaDef, ...] | None = None  # None: no REPLICAS clause
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class CreateClusterReplica(Statement):
    cluster: str
    name: str
    size: str | None = None
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class ForAllTables:
    pass


@dataclass(frozen=True)
class TableReference:
    """`upstream [AS local]` in `FOR TABLES (...)`."""

    name: QualifiedName
    alias: QualifiedName | None = None


@dataclass(frozen=True)
class ForTables:
    tables: tuple[TableReference, ...]


@dataclass(frozen=True)
class ForSchemas:
    schemas: tuple[str, ...]


SourceTables: TypeAlias = ForAllTables | ForTables | ForSchemas


@dataclass(frozen=True)
class LoadGenerator:
    """`LOAD GENERATOR name [(options)] [FOR ALL TABLES | FOR TABLES (...)]`; `generator` is
    lower case (`counter`, `auction`, `marketing`, `tpch`, `key value`, `clock`, `datums`)."""

    generator: str
    options: tuple[Option, ...] = ()
    tables: SourceTables | None = None


@dataclass(frozen=True)
class WebhookHeader:
    """`INCLUDE HEADER 'name' AS column [BYTES]`."""

    header: str
    column: str
    bytes: bool = False


@dataclass(frozen=True)
class WebhookCheckOption:
    """One of `HEADERS [AS alias] [BYTES]`, `BODY [AS alias] [BYTES]`, `SECRET s [AS alias]
    [BYTES]` in `CHECK (WITH (...) expr)`. `kind` is `headers`, `body` or `secret`."""

    kind: Literal["headers", "body", "secret"]
    alias: str | None = None
    bytes: bool = False
    secret: QualifiedName | None = None


@dataclass(frozen=True)
class WebhookCheck:
    options: tuple[WebhookCheckOption, ...]
    expr: exp.Expr


@dataclass(frozen=True)
class Webhook:
    """`WEBHOOK BODY FORMAT fmt [INCLUDE HEADERS [(...)]] [INCLUDE HEADER ...] [CHECK (...)]`.

    `body_format` is `json`, `json array`, `text` or `bytes`. `include_headers` is None when
    absent, else the filter list: each entry a header name, prefixed `!` for `NOT 'name'`
    (empty: all headers)."""

    body_format: str
    include_headers: tuple[str, ...] | None = None
    headers: tuple[WebhookHeader, ...] = ()
    check: WebhookCheck | None = None


@dataclass(frozen=True)
class PostgresSourceConnector:
    """`POSTGRES CONNECTION c (PUBLICATION 'p', ...) [FOR ALL TABLES | FOR TABLES (...) |
    FOR SCHEMAS (...)]`."""

    connection: QualifiedName
    options: tuple[Option, ...] = ()
    tables: SourceTables | None = None


@dataclass(frozen=True)
class KafkaSourceConnector:
    connection: QualifiedName
    options: tuple[Option, ...] = ()


SourceConnector: TypeAlias = (
    LoadGenerator | Webhook | PostgresSourceConnector | KafkaSourceConnector
)


@dataclass(frozen=True)
class CreateSource(Statement):
    """`CREATE SOURCE [IF NOT EXISTS] name [(cols)] [IN CLUSTER c] FROM <connector> ...`.

    Format, INCLUDE and ENVELOPE clauses are kept as raw lower-case text (`format`: e.g.
    `json`, `key_format`/`value_format` for `KEY FORMAT .. VALUE FORMAT ..`, `include`: one
    entry per item, e.g. `key as k`, `envelope`: e.g. `upsert`, `debezium`, `none`), except
    `ENVELOPE UPSERT (KEY (...) ...)`, whose expressions are parsed (`upsert_key`)."""

    name: QualifiedName
    connector: SourceConnector
    columns: tuple[str, ...] = ()
    in_cluster: str | None = None
    if_not_exists: bool = False
    format: str | None = None
    key_format: str | None = None
    value_format: str | None = None
    include: tuple[str, ...] = ()
    envelope: str | None = None
    expose_progress: QualifiedName | None = None
    options: tuple[Option, ...] = ()  # WITH (...)
    #: `ENVELOPE UPSERT (KEY (expr) [, DELETE WHEN (expr)])` (ours, for webhooks): the key
    #: and delete expressions over the source's columns; `envelope` is then `upsert`.
    upsert_key: exp.Expr | None = None
    upsert_delete: exp.Expr | None = None


@dataclass(frozen=True)
class CreateSecret(Statement):
    name: QualifiedName
    value: exp.Expr
    if_not_exists: bool = False


@dataclass(frozen=True)
class CreateConnection(Statement):
    """`CREATE CONNECTION name TO POSTGRES (HOST 'h', PORT 5432, USER 'u', PASSWORD SECRET s,
    DATABASE 'd', ...) [WITH (VALIDATE = false)]`; `connection_type` is lower case
    (`postgres`, `kafka`, `ssh tunnel`, ...)."""

    name: QualifiedName
    connection_type: str
    options: tuple[Option, ...]
    if_not_exists: bool = False
    with_options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class Drop(Statement):
    object_type: ObjectType
    names: tuple[QualifiedName, ...]
    if_exists: bool = False
    cascade: bool = False


@dataclass(frozen=True)
class AlterRename(Statement):
    """`ALTER <type> [IF EXISTS] name RENAME TO new_name`."""

    object_type: ObjectType
    name: QualifiedName
    new_name: str
    if_exists: bool = False


@dataclass(frozen=True)
class AlterSwap(Statement):
    """Materialize's `ALTER {SCHEMA|CLUSTER} a SWAP WITH b`."""

    object_type: ObjectType
    name: QualifiedName
    other: str


@dataclass(frozen=True)
class AlterCluster(Statement):
    """`ALTER CLUSTER [IF EXISTS] c SET (options)` or `... RESET (names)`."""

    name: str
    set_options: tuple[Option, ...] = ()
    reset_options: tuple[str, ...] = ()
    if_exists: bool = False


@dataclass(frozen=True)
class AlterSystemSet(Statement):
    name: str
    values: tuple[str, ...] | None  # None: DEFAULT


@dataclass(frozen=True)
class AlterSystemReset(Statement):
    name: str | None  # None: ALL


# SUBSCRIBE, COPY, cursors


@dataclass(frozen=True)
class Subscribe(Statement):
    """`SUBSCRIBE [TO] {name | (query)} [ENVELOPE ...] [WITHIN TIMESTAMP ORDER BY ...]
    [WITH (SNAPSHOT, PROGRESS, ...)] [AS OF [AT LEAST] n] [UP TO n]`."""

    target: QualifiedName | exp.Expr
    options: tuple[Option, ...] = ()
    as_of: int | None = None
    as_of_at_least: bool = False
    up_to: int | None = None
    envelope: str | None = None  # "upsert" or "debezium"
    envelope_key: tuple[str, ...] = ()
    order_by: tuple[exp.Expr, ...] = ()  # WITHIN TIMESTAMP ORDER BY; sqlglot Ordered nodes


@dataclass(frozen=True)
class Copy(Statement):
    """`COPY t [(cols)] FROM STDIN [WITH (...)]`, `COPY t [(cols)] TO STDOUT [WITH (...)]` or
    `COPY (query | SUBSCRIBE ...) TO STDOUT [WITH (...)]`. Options are normalized to the
    parenthesized form: legacy `CSV` becomes `format = 'csv'`, `BINARY` `format = 'binary'`,
    `HEADER` `header = True`."""

    target: QualifiedName | Select | Subscribe
    direction: Literal["from", "to"]
    columns: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class Declare(Statement):
    name: str
    statement: Select | Subscribe


@dataclass(frozen=True)
class Fetch(Statement):
    cursor: str
    count: int | None = 1  # None: ALL
    options: tuple[Option, ...] = ()  # WITH (TIMEOUT = '1s')


@dataclass(frozen=True)
class Move(Statement):
    """MOVE: reposition a cursor. `absolute` counts from the start (negative: from the end)."""

    cursor: str
    mode: str = "relative"  # relative | absolute
    count: int = 1


@dataclass(frozen=True)
class Close(Statement):
    name: str | None  # None: ALL


# Transactions and session


@dataclass(frozen=True)
class Begin(Statement):
    """BEGIN / START TRANSACTION; `isolation` is lower case (`serializable`,
    `strict serializable`, `repeatable read`, `read committed`, `read uncommitted`)."""

    isolation: str | None = None
    read_only: bool | None = None
    deferrable: bool | None = None


@dataclass(frozen=True)
class SetTransaction(Statement):
    """`SET TRANSACTION ...`, or `SET SESSION CHARACTERISTICS AS TRANSACTION ...` (session)."""

    isolation: str | None = None
    read_only: bool | None = None
    deferrable: bool | None = None
    session: bool = False


@dataclass(frozen=True)
class Commit(Statement):
    pass


@dataclass(frozen=True)
class Rollback(Statement):
    pass


@dataclass(frozen=True)
class Set(Statement):
    """`SET [SESSION|LOCAL] name {TO|=} value, ...`. Names are lower case (`SET TIME ZONE` is
    `timezone`, `SET NAMES` is `client_encoding`, `SET SCHEMA` is `search_path`). Each value
    is its text: a string literal's contents, a number as written, an identifier folded
    (quoted: kept). `values` is None for `DEFAULT` (and `SET TIME ZONE LOCAL`)."""

    name: str
    values: tuple[str, ...] | None
    local: bool = False


@dataclass(frozen=True)
class Reset(Statement):
    name: str | None  # None: ALL


@dataclass(frozen=True)
class Show(Statement):
    """`SHOW name`; `SHOW ALL` has name `all`; `SHOW TRANSACTION ISOLATION LEVEL` is
    `transaction_isolation`, `SHOW TIME ZONE` is `timezone`."""

    name: str


@dataclass(frozen=True)
class ShowObjects(Statement):
    """`SHOW TABLES|VIEWS|MATERIALIZED VIEWS|INDEXES|SOURCES|SINKS|CLUSTERS|CLUSTER REPLICAS|
    DATABASES|SCHEMAS|SECRETS|CONNECTIONS|OBJECTS|TYPES|ROLES [FROM x] [ON obj]
    [IN CLUSTER c] [LIKE 'p' | WHERE expr]`; `object_type` is the lower-case plural as written
    (`indices` is `indexes`)."""

    object_type: str
    from_: QualifiedName | None = None
    on: QualifiedName | None = None
    in_cluster: str | None = None
    like: str | None = None
    where: exp.Expr | None = None


@dataclass(frozen=True)
class ShowColumns(Statement):
    table: QualifiedName
    like: str | None = None
    where: exp.Expr | None = None


@dataclass(frozen=True)
class ShowCreate(Statement):
    object_type: ObjectType
    name: QualifiedName


@dataclass(frozen=True)
class Discard(Statement):
    target: Literal["all", "plans", "sequences", "temp"]


# EXPLAIN, PREPARE


@dataclass(frozen=True)
class ExplainObject:
    """`EXPLAIN ... VIEW v` / `MATERIALIZED VIEW mv` / `INDEX i`: an existing object."""

    object_type: ObjectType
    name: QualifiedName


@dataclass(frozen=True)
class Explain(Statement):
    """`EXPLAIN [kind] [WITH (options)] [AS format] [FOR] target`.

    `kind`: `optimized plan` (the default, also for bare `PLAN`), `raw plan`,
    `decorrelated plan`, `locally optimized plan`, `physical plan`, `timestamp`,
    `filter pushdown`. `format`: `text`, `json`, `verbose text` or `dot`. PostgreSQL-style
    `EXPLAIN (FORMAT JSON, VERBOSE) q` and `EXPLAIN VERBOSE q` land in `options`."""

    target: Statement | ExplainObject
    kind: str = "optimized plan"
    format: str = "text"
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class Prepare(Statement):
    name: str
    statement: Statement
    param_types: tuple[TypeName, ...] = ()


@dataclass(frozen=True)
class Execute(Statement):
    name: str
    params: tuple[exp.Expr, ...] = ()


@dataclass(frozen=True)
class Deallocate(Statement):
    name: str | None  # None: ALL


# ----------------------------------------------------------------------------------------------
# Generic walks


def iter_expressions(node: object) -> Iterator[exp.Expr]:
    """Every sqlglot expression held directly by `node` or by the dataclasses, tuples and
    options under it (nested statements included), in field order. Only roots are yielded;
    walk them with sqlglot's `.walk()` for their sub-expressions."""
    if isinstance(node, exp.Expr):
        yield node
    elif isinstance(node, tuple):
        for item in node:
            yield from iter_expressions(item)
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            yield from iter_expressions(getattr(node, f.name))


def iter_statements(stmt: Statement) -> Iterator[Statement]:
    """`stmt` and every statement nested in it (EXPLAIN, DECLARE, PREPARE, COPY targets)."""
    yield stmt
    for f in dataclasses.fields(stmt):
        value = getattr(stmt, f.name)
        if isinstance(value, Statement):
            yield from iter_statements(value)
