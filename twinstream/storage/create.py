"""CREATE SOURCE and CREATE SECRET -> catalog items.

A load-generator source becomes: the source item (COUNTER: it is also the output; AUCTION: a
parent without data), one `subsource` per output table, and `<name>_progress` (the remap
collection, see progress.py). A webhook source is one item whose shard the endpoint appends to.
Every item with data carries `shard_id`; subsources and the progress item name their source in
`parent_id` and are dropped with it. Everything checkable is checked here, with a SQLSTATE.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.sql import ast
from twinstream.storage import generators
from twinstream.storage.progress import PROGRESS_COLUMNS

if TYPE_CHECKING:
    from twinstream.adapter.session import AdapterSession

#: Smallest accepted TICK INTERVAL.
TICK_MIN_MS = 1
_INTERVAL = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(ms|msec|msecs|millisecond|milliseconds|s|sec|secs|second|seconds|"
    r"m|min|mins|minute|minutes)?\s*$",
    re.IGNORECASE,
)
_UNIT_MS = {"ms": 1, "msec": 1, "msecs": 1, "millisecond": 1, "milliseconds": 1}
_UNIT_MS |= {u: 1000 for u in ("s", "sec", "secs", "second", "seconds")}
_UNIT_MS |= {u: 60_000 for u in ("m", "min", "mins", "minute", "minutes")}


def parse_tick_ms(value: object) -> int:
    m = _INTERVAL.match(value) if isinstance(value, str) else None
    if m is None:
        raise AdapterError(
            E.INVALID_PARAMETER_VALUE,
            f"invalid TICK INTERVAL {value!r}: expected an interval such as '100ms' or '1s'",
        )
    ms = float(m.group(1)) * _UNIT_MS[(m.group(2) or "s").lower()]
    if ms < TICK_MIN_MS:
        raise AdapterError(
            E.INVALID_PARAMETER_VALUE, f"TICK INTERVAL must be at least {TICK_MIN_MS} ms"
        )
    return int(ms)


def _unsupported(what: str) -> AdapterError:
    return AdapterError(E.FEATURE_NOT_SUPPORTED, f"{what} is not supported")


async def create_source(
    s: AdapterSession,
    stmt: ast.CreateSource,
    sql: str,
    owner: str,
    place: tuple[str, str, str],
    cluster_id: str,
) -> str:
    envelope = (stmt.envelope or "none").lower()
    if envelope not in ("none", "upsert"):
        raise _unsupported(f"CREATE SOURCE ... ENVELOPE {envelope.upper()}")
    for clause, value in (
        ("FORMAT", stmt.format or stmt.key_format),
        ("INCLUDE", stmt.include),
        ("EXPOSE PROGRESS", stmt.expose_progress),
        ("WITH options", stmt.options),
        ("column names", stmt.columns),
    ):
        if value:
            raise _unsupported(f"CREATE SOURCE ... {clause}")
    common = {"type": "source", "owner": owner, "cluster_id": cluster_id}
    conn = stmt.connector
    if envelope == "upsert" and not isinstance(conn, ast.LoadGenerator | ast.Webhook):
        raise _unsupported("ENVELOPE UPSERT for this kind of source")
    if isinstance(conn, ast.LoadGenerator):
        if stmt.upsert_key is not None:
            raise AdapterError(
                E.SYNTAX_ERROR,
                "ENVELOPE UPSERT (KEY (...)) is for webhooks; a load generator has its own key",
            )
        names, make = _load_generator(conn, place[2], sql, common, upsert=envelope == "upsert")
    elif isinstance(conn, ast.Webhook):
        upsert = None
        if envelope == "upsert":
            if stmt.upsert_key is None:
                raise AdapterError(
                    E.SYNTAX_ERROR,
                    "a webhook source with ENVELOPE UPSERT needs (KEY (expression))",
                )
            upsert = (stmt.upsert_key, stmt.upsert_delete)
        names, make = await _webhook(s, conn, place[2], sql, common, upsert)
    elif isinstance(conn, ast.PostgresSourceConnector):
        from twinstream.storage.pg_source import plan_postgres_source

        names, make = await plan_postgres_source(s, conn, place[2], sql, common)
    else:
        raise _unsupported("CREATE SOURCE ... FROM KAFKA")
    database, schema, _ = place
    refs = await s.coord.create_items(
        database, schema, names, make, if_not_exists=stmt.if_not_exists
    )
    if refs is None:
        s.ctx.notice(f'source "{place[2]}" already exists, skipping')
    return "CREATE SOURCE"


Maker = Any  # Callable[[list[str]], list[dict[str, Any]]]


def _count_option(name: str, value: object, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
        raise AdapterError(
            E.INVALID_PARAMETER_VALUE, f"{name} must be an integer from 1 to {limit}, not {value!r}"
        )
    return value


def _load_generator(
    conn: ast.LoadGenerator, name: str, sql: str, common: dict[str, Any], *, upsert: bool
) -> tuple[list[str], Maker]:
    gen = conn.generator
    if gen not in generators.GENERATORS:
        raise _unsupported(f"LOAD GENERATOR {gen.upper()}")
    keyed = gen in generators.UPSERT_GENERATORS
    if keyed != upsert:
        raise AdapterError(
            E.SYNTAX_ERROR,
            f"LOAD GENERATOR {gen.upper()} requires ENVELOPE UPSERT"
            if keyed
            else f"LOAD GENERATOR {gen.upper()} does not support ENVELOPE UPSERT",
        )
    opts = ast.options_dict(conn.options)
    tick_ms = int(generators.DEFAULT_TICK_S * 1000)
    extra: dict[str, Any] = {}
    for key, value in opts.items():
        if key == "tick interval":
            tick_ms = parse_tick_ms(value)
        elif keyed and key == "keys":
            extra["keys"] = _count_option("KEYS", value, generators.KEY_VALUE_MAX_KEYS)
        elif keyed and key == "batch size":
            extra["batch_size"] = _count_option("BATCH SIZE", value, generators.MAX_BATCH_SIZE)
        else:
            raise _unsupported(f"LOAD GENERATOR option {key.upper()}")
    if keyed and "keys" not in extra:
        raise AdapterError(E.INVALID_PARAMETER_VALUE, f"LOAD GENERATOR {gen.upper()} needs KEYS n")
    if keyed:
        extra.setdefault("batch_size", 1)
        extra["envelope"] = "upsert"
    outputs = generators.GENERATORS[gen].outputs
    single = len(outputs) == 1
    if single:
        if conn.tables is not None:
            raise AdapterError(
                E.SYNTAX_ERROR, f"FOR TABLES / FOR ALL TABLES is not valid for {gen.upper()}"
            )
        chosen = [(outputs[0], name)]
    elif isinstance(conn.tables, ast.ForAllTables):
        chosen = [(o, o.name) for o in outputs]
    elif isinstance(conn.tables, ast.ForTables):
        by_name = {o.name: o for o in outputs}
        chosen = []
        for ref in conn.tables.tables:
            upstream = ref.name.parts[-1]
            if upstream not in by_name:
                raise AdapterError(
                    E.UNDEFINED_TABLE,
                    f"reference to {upstream} not found in source; "
                    f"{gen.upper()} has {', '.join(sorted(by_name))}",
                )
            alias = ref.alias.parts[-1] if ref.alias is not None else upstream
            chosen.append((by_name[upstream], alias))
    else:
        raise AdapterError(
            E.SYNTAX_ERROR,
            f"multi-output source {gen.upper()} requires FOR ALL TABLES or FOR TABLES (...)",
        )
    progress_name = f"{name}_progress"
    names = [name, progress_name] + ([] if single else [alias for _o, alias in chosen])

    def make(ids: list[str]) -> list[dict[str, Any]]:
        root_id, progress_id = ids[0], ids[1]
        out_ids = [root_id] if single else ids[2:]
        root: dict[str, Any] = dict(
            common,
            source_type="load-generator",
            generator=gen,
            tick_ms=tick_ms,
            create_sql=sql,
            dependencies=[],
            outputs={o.name: i for (o, _a), i in zip(chosen, out_ids, strict=True)},
            progress_id=progress_id,
            **extra,
        )
        child = dict(common, parent_id=root_id, dependencies=[root_id], create_sql="")
        values = [
            root,
            dict(
                child,
                source_type="progress",
                columns=PROGRESS_COLUMNS,
                shard_id=f"source-{progress_id}",
            ),
        ]
        if single:
            root.update(columns=outputs[0].columns, shard_id=f"source-{root_id}")
        else:
            for (o, _alias), i in zip(chosen, out_ids, strict=True):
                values.append(
                    dict(child, source_type="subsource", columns=o.columns, shard_id=f"source-{i}")
                )
        return values

    return names, make


_BODY_TYPES = {"json": "jsonb", "json array": "jsonb", "text": "text", "bytes": "bytea"}


async def _webhook(
    s: AdapterSession,
    conn: ast.Webhook,
    name: str,
    sql: str,
    common: dict[str, Any],
    upsert: tuple[exp.Expr, exp.Expr | None] | None,
) -> tuple[list[str], Maker]:
    from twinstream.storage.webhook import CheckSpec, UpsertKeySpec, validate_check

    columns: list[dict[str, Any]] = [
        {"name": "body", "type": _BODY_TYPES[conn.body_format], "nullable": False}
    ]
    if upsert is not None:  # the key first, as Materialize's INCLUDE KEY puts it
        columns.insert(0, {"name": "key", "type": "text", "nullable": False})
    if conn.include_headers is not None:
        columns.append({"name": "headers", "type": "jsonb", "nullable": False})
    for h in conn.headers:
        columns.append({"name": h.column, "type": "bytea" if h.bytes else "text", "nullable": True})
    seen = [c["name"] for c in columns]
    if len(set(seen)) != len(seen):
        raise AdapterError("42701", f"column names of the webhook source collide: {seen}")
    deps: list[str] = []
    check: dict[str, Any] | None = None
    if conn.check is not None:
        options: list[dict[str, Any]] = []
        for opt in conn.check.options:
            entry: dict[str, Any] = {"kind": opt.kind, "alias": opt.alias, "bytes": opt.bytes}
            if opt.kind == "secret":
                assert opt.secret is not None
                ref = s.coord.index.resolve_item(opt.secret.parts, s.database, s.vars.search_path())
                if ref is None or ref.type != "secret":
                    raise AdapterError(E.UNDEFINED_OBJECT, f'unknown secret "{opt.secret}"')
                entry["secret_id"] = ref.id
                entry["alias"] = opt.alias or opt.secret.name
                deps.append(ref.id)
            options.append(entry)
        check = {"options": options, "expr": conn.check.expr.sql(dialect="postgres")}
        await validate_check(s.coord, CheckSpec.from_value(check))
    upsert_value: dict[str, Any] | None = None
    if upsert is not None:
        key, delete = upsert
        upsert_value = {
            "key": key.sql(dialect="postgres"),
            "delete": None if delete is None else delete.sql(dialect="postgres"),
        }
        await UpsertKeySpec.from_value(upsert_value, columns).validate(s.coord)
    value: dict[str, Any] = dict(
        common,
        source_type="webhook",
        body_format=conn.body_format,
        include_headers=None if conn.include_headers is None else list(conn.include_headers),
        header_columns=[[h.header.lower(), h.column, h.bytes] for h in conn.headers],
        check=check,
        columns=columns,
        **({} if upsert_value is None else {"envelope": "upsert", "upsert": upsert_value}),
        create_sql=sql,
        dependencies=deps,
    )

    def make(ids: list[str]) -> list[dict[str, Any]]:
        return [dict(value, shard_id=f"source-{ids[0]}")]

    return [name], make


async def create_secret(
    s: AdapterSession, stmt: ast.CreateSecret, sql: str, owner: str, place: tuple[str, str, str]
) -> str:
    """Secrets live in the catalog (plaintext there: see doc/design/sources.md)."""
    if not isinstance(stmt.value, exp.Literal) or not stmt.value.is_string:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "CREATE SECRET ... AS needs a string literal")
    value = {
        "type": "secret",
        "owner": owner,
        "value": stmt.value.this,
        "create_sql": f"CREATE SECRET {'.'.join(place)} AS '********'",
        "dependencies": [],
    }
    database, schema, name = place
    ref = await s.coord.create_item(database, schema, name, value, if_not_exists=stmt.if_not_exists)
    if ref is None:
        s.ctx.notice(f'secret "{name}" already exists, skipping')
    return "CREATE SECRET"
