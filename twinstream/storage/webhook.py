"""The webhook endpoint: POST /api/webhook/<database>/<schema>/<source> on the public listener.

Answers (Materialize's, except where noted):
- 200 only after the rows are durable (group commit acknowledged them);
- 400 a body that is not valid for the BODY FORMAT (bad JSON, bad UTF-8), or a CHECK that
  fails to evaluate;
- 401 the CHECK evaluated to false or NULL;
- 404 no webhook source by that name;
- 413 a body over MAX_BODY_BYTES;
- 503 + Retry-After on a read-only generation, or a leader that has just been fenced: the
  append did not happen and the sender should retry (the balancer / load balancer moves it
  to the new leader). Materialize answers 500 here; 503 says "retry" to every HTTP client and
  webhook sender, which is what we mean.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import sqlglot
from aiohttp import web
from sqlglot import exp

from twinstream.adapter.duck_errors import translate
from twinstream.adapter.errors import AdapterError
from twinstream.catalog.fence import FenceError
from twinstream.persist.types import Diff, Row
from twinstream.storage.upsert import Record

if TYPE_CHECKING:
    from twinstream.adapter.coordinator import Coordinator

log = logging.getLogger(__name__)

#: Largest accepted request body.
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Seconds a refused sender is asked to wait before retrying.
RETRY_AFTER_S = 1


class WebhookReject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class CheckSpec:
    #: (kind, alias, bytes, secret item id)
    options: tuple[tuple[str, str, bool, str | None], ...]
    expr: str

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> CheckSpec:
        opts = []
        for o in value["options"]:
            kind = str(o["kind"])
            alias = o.get("alias") or kind
            opts.append((kind, str(alias), bool(o.get("bytes")), o.get("secret_id")))
        return cls(tuple(opts), str(value["expr"]))

    def sql(self) -> str:
        """DuckDB SQL evaluating the expression over one row of the request's values."""
        header_aliases = {a for k, a, _b, _s in self.options if k == "headers"}
        tree = sqlglot.parse_one(self.expr, dialect="postgres")

        def as_map_lookup(node: exp.Expr) -> exp.Expr:
            # Materialize's headers are a map: headers->'k' is the header's text.
            if (
                isinstance(node, exp.JSONExtract)
                and isinstance(node.this, exp.Column)
                and node.this.name in header_aliases
            ):
                return exp.JSONExtractScalar(this=node.this, expression=node.expression)
            return node

        tree = tree.transform(as_map_lookup)
        cols = []
        for kind, alias, is_bytes, _secret in self.options:
            typ = "JSON" if kind == "headers" else "BLOB" if is_bytes else "VARCHAR"
            cols.append(f'CAST(? AS {typ}) AS "{alias}"')
        inner = ", ".join(cols) if cols else "1 AS _none"
        return f"SELECT ({tree.sql(dialect='duckdb')}) FROM (SELECT {inner}) AS _webhook"

    def params(self, coord: Coordinator, headers: dict[str, str], body: bytes) -> list[object]:
        out: list[object] = []
        for kind, _alias, is_bytes, secret_id in self.options:
            if kind == "headers":
                out.append(json.dumps(headers))
            elif kind == "body":
                out.append(body if is_bytes else body.decode("utf-8", errors="replace"))
            else:
                ref = coord.index.items_by_id.get(str(secret_id))
                value = "" if ref is None else str(ref.value.get("value", ""))
                out.append(value.encode() if is_bytes else value)
        return out


_DUCK_TYPES = {"jsonb": "JSON", "text": "VARCHAR", "bytea": "BLOB"}


@dataclass(frozen=True)
class UpsertKeySpec:
    """ENVELOPE UPSERT (KEY (expr) [, DELETE WHEN (expr)]) of a webhook source: both
    expressions are evaluated over one row of the source's value columns (all but `key`)."""

    key: str
    delete: str | None
    #: (name, DuckDB type) of the value columns, in row order
    columns: tuple[tuple[str, str], ...]

    @classmethod
    def from_value(cls, value: dict[str, Any], columns: list[dict[str, Any]]) -> UpsertKeySpec:
        cols = tuple((str(c["name"]), _DUCK_TYPES[str(c["type"])]) for c in columns[1:])
        delete = value.get("delete")
        return cls(str(value["key"]), None if delete is None else str(delete), cols)

    def sql(self) -> str:
        key = sqlglot.parse_one(self.key, dialect="postgres").sql(dialect="duckdb")
        delete = "NULL"
        if self.delete is not None:
            delete = sqlglot.parse_one(self.delete, dialect="postgres").sql(dialect="duckdb")
        inner = ", ".join(f'CAST(? AS {t}) AS "{n}"' for n, t in self.columns)
        return f"SELECT CAST(({key}) AS VARCHAR), ({delete}) FROM (SELECT {inner}) AS _webhook"

    async def evaluate(self, coord: Coordinator, rows: list[Row]) -> list[tuple[object, bool]]:
        """(key, is a delete) per row; AdapterError if an expression fails."""
        query = self.sql()
        out: list[tuple[object, bool]] = []
        cur = coord.engine.cursor()
        try:
            for row in rows:
                try:
                    res = await coord.engine.query(cur, query, list(row))
                except duckdb.Error as e:
                    raise translate(e) from None
                key, delete = res.rows[0]
                if delete is not None and not isinstance(delete, bool):
                    raise AdapterError("42804", "DELETE WHEN expression must return boolean")
                out.append((key, delete is True))
        finally:
            cur.close()
        return out

    async def validate(self, coord: Coordinator) -> None:
        """Plan and run both expressions once over a sample row, so unknown columns (42703),
        functions (42883) and a non-boolean DELETE WHEN (42804) fail at CREATE SOURCE."""
        try:
            self.sql()
        except sqlglot.errors.SqlglotError as e:
            raise AdapterError("42601", f"invalid UPSERT expression: {e}") from None
        sample: dict[str, object] = {"JSON": "{}", "VARCHAR": "", "BLOB": b""}
        await self.evaluate(coord, [tuple(sample[t] for _n, t in self.columns)])


async def _evaluate(coord: Coordinator, spec: CheckSpec, params: list[object]) -> object:
    cur = coord.engine.cursor()
    try:
        res = await coord.engine.query(cur, spec.sql(), params)
    except duckdb.Error as e:
        raise translate(e) from None
    finally:
        cur.close()
    return res.rows[0][0] if res.rows else None


async def validate_check(coord: Coordinator, spec: CheckSpec) -> None:
    """Plan and run the CHECK once over empty values (unknown columns, functions, types fail
    here with their SQLSTATE instead of on every request)."""
    try:
        spec.sql()
    except sqlglot.errors.SqlglotError as e:
        raise AdapterError("42601", f"invalid CHECK expression: {e}") from None
    result = await _evaluate(coord, spec, spec.params(coord, {}, b""))
    if result is not None and not isinstance(result, bool):
        raise AdapterError("42804", "CHECK expression must return boolean")


def _decode_body(fmt: str, body: bytes) -> list[Any]:
    """The body's values per row (one row, or several for NDJSON / JSON ARRAY)."""
    if fmt == "bytes":
        return [body]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookReject(400, "request body is not valid UTF-8") from None
    if fmt == "text":
        return [text]
    try:
        value = json.loads(text)
        values = [value]
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            values = [json.loads(line) for line in lines]  # newline-delimited JSON
        except ValueError as e:
            raise WebhookReject(400, f"request body is not valid JSON: {e}") from None
        if not values:
            raise WebhookReject(400, "request body is not valid JSON: empty") from None
    if fmt == "json array" and len(values) == 1 and isinstance(values[0], list):
        values = list(values[0])
    return [json.dumps(v) for v in values]


def _filter_headers(spec: list[str] | None, headers: dict[str, str]) -> dict[str, str]:
    if spec is None:
        return {}
    allow = {h.lower() for h in spec if not h.startswith("!")}
    deny = {h[1:].lower() for h in spec if h.startswith("!")}
    return {k: v for k, v in headers.items() if (not allow or k in allow) and k not in deny}


async def append(
    coord: Coordinator, database: str, schema: str, name: str, headers: dict[str, str], body: bytes
) -> int:
    """Validate and durably append one request; returns the number of rows."""
    ref = coord.index.items.get((database, schema, name))
    if ref is None or ref.value.get("source_type") != "webhook":
        raise WebhookReject(404, f"no webhook source named {database}.{schema}.{name}")
    if coord.config.read_only:
        raise WebhookReject(503, "this generation is read-only; retry against the leader")
    v = ref.value
    if v.get("check"):
        spec = CheckSpec.from_value(v["check"])
        try:
            ok = await _evaluate(coord, spec, spec.params(coord, headers, body))
        except AdapterError as e:
            raise WebhookReject(400, f"failed to evaluate the CHECK: {e.message}") from None
        if ok is not True:
            raise WebhookReject(401, "failed to validate the request")
    bodies = _decode_body(str(v["body_format"]), body)
    extra: list[object] = []
    if v.get("include_headers") is not None:
        extra.append(json.dumps(_filter_headers(list(v["include_headers"]), headers)))
    for header, _column, is_bytes in v.get("header_columns", []):
        got = headers.get(str(header))
        extra.append(None if got is None else got.encode() if is_bytes else got)
    rows: list[Row] = [(b, *extra) for b in bodies]
    try:
        if v.get("envelope") == "upsert":
            await _upsert(coord, ref.id, v, rows)
        else:
            await coord.write({ref.id: [(r, 1) for r in rows]})
    except FenceError:
        raise WebhookReject(503, "this generation has been fenced; retry") from None
    except AdapterError as e:
        if e.sqlstate == "25006":
            raise WebhookReject(503, "this generation is read-only; retry") from None
        raise
    return len(rows)


async def _upsert(coord: Coordinator, item_id: str, v: dict[str, Any], rows: list[Row]) -> None:
    """Key every row (400 if its key is NULL or an expression fails), then upsert them in
    request order through the source's serialized writer."""
    spec = UpsertKeySpec.from_value(dict(v["upsert"]), list(v["columns"]))
    try:
        keyed = await spec.evaluate(coord, rows)
    except AdapterError as e:
        raise WebhookReject(400, f"failed to evaluate the UPSERT key: {e.message}") from None
    records: list[Record] = []
    for (key, delete), row in zip(keyed, rows, strict=True):
        if key is None:
            raise WebhookReject(400, "the UPSERT key evaluated to NULL")
        records.append((key, None if delete else (key, *row)))
    writer = coord.storage.upsert_writer(item_id)
    if writer is None:  # not started yet (just created, or promotion in progress)
        raise WebhookReject(503, "the webhook source is not ready; retry")

    async def write(diffs: list[tuple[Row, Diff]]) -> int:
        return await coord.write({item_id: diffs})

    await writer.upsert(records, write)


def webhook_routes(app: web.Application, coord: Coordinator) -> None:
    async def handle(request: web.Request) -> web.Response:
        m = request.match_info
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = await request.read()
            await append(coord, m["database"], m["schema"], m["name"], headers, body)
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"body over {MAX_BODY_BYTES} bytes")
        except WebhookReject as e:
            extra = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None
            return web.Response(status=e.status, text=e.message, headers=extra)
        except Exception as e:
            log.exception("webhook append failed")
            return web.Response(status=500, text=f"internal error: {e}")
        return web.Response(status=200)

    app.router.add_post("/api/webhook/{database}/{schema}/{name}", handle)
