"""DDL statements -> coordinator calls. Returns the CommandComplete tag."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp

from twinstream.adapter import errors as E
from twinstream.adapter.errors import AdapterError
from twinstream.adapter.indexes import check_indexable, key_columns
from twinstream.adapter.mviews import lower_for_create, mirror_type
from twinstream.adapter.names import ItemRef
from twinstream.adapter.temporary import TEMP_SCHEMA_ALIASES, is_temporary_id
from twinstream.adapter.timeouts import MS_SETTINGS, format_ms, parse_ms
from twinstream.adapter.types import lookup
from twinstream.deployment.params import ParamError
from twinstream.deployment.params import validate as validate_param
from twinstream.sql import ast
from twinstream.storage.create import create_secret, create_source
from twinstream.storage.pg_source import create_connection

if TYPE_CHECKING:
    from twinstream.adapter.session import AdapterSession

_DDL = (
    ast.CreateTable,
    ast.CreateView,
    ast.CreateMaterializedView,
    ast.CreateIndex,
    ast.CreateDatabase,
    ast.CreateSchema,
    ast.CreateCluster,
    ast.CreateClusterReplica,
    ast.Drop,
    ast.AlterSystemSet,
    ast.AlterSystemReset,
    ast.CreateSource,
    ast.CreateSecret,
    ast.CreateConnection,
)

_ITEM_TYPES = {
    ast.ObjectType.TABLE: "table",
    ast.ObjectType.VIEW: "view",
    ast.ObjectType.MATERIALIZED_VIEW: "materialized_view",
    ast.ObjectType.INDEX: "index",
    ast.ObjectType.SOURCE: "source",
    ast.ObjectType.SECRET: "secret",
    ast.ObjectType.CONNECTION: "connection",
    ast.ObjectType.SINK: "sink",
}

DEFAULT_REPLICA_SIZE = "1"


def is_ddl(stmt: ast.Statement) -> bool:
    return isinstance(stmt, _DDL)


def _place(s: AdapterSession, name: ast.QualifiedName) -> tuple[str, str, str]:
    """(database, schema, item) for a new item: the first search_path schema by default."""
    database = name.database or s.database
    if name.schema is not None:
        return database, name.schema, name.name
    for schema in s.vars.search_path():
        if (database, schema) in s.coord.index.schemas:
            return database, schema, name.name
    raise AdapterError(E.UNDEFINED_SCHEMA, "no schema has been selected to create in")


def _owner(s: AdapterSession) -> str:
    for r_id, v in s.coord.catalog.state.entries("role").items():
        if v["name"] == s.ctx.user:
            return r_id
    return s.ctx.user


def _cluster_id(s: AdapterSession, name: str | None) -> str:
    cname = name or s.vars.get("cluster")
    c_id = s.coord.index.clusters.get(cname)
    if c_id is None:
        raise AdapterError(E.UNDEFINED_OBJECT, f'unknown cluster "{cname}"')
    return c_id


def _wants_temporary(name: ast.QualifiedName, temporary: bool) -> bool:
    """CREATE TEMPORARY, or a plain CREATE into `mz_temp`/`pg_temp` (as in PostgreSQL)."""
    if name.schema is not None and name.schema in TEMP_SCHEMA_ALIASES:
        return True
    if temporary and name.schema is not None:
        raise AdapterError("42P16", "cannot create temporary relation in non-temporary schema")
    return temporary


def _only_temporary(s: AdapterSession, stmt: ast.Statement) -> bool:
    """The statement creates or drops temporary items only (nothing durable)."""
    if isinstance(stmt, ast.CreateTable | ast.CreateView):
        return _wants_temporary(stmt.name, stmt.temporary)
    if isinstance(stmt, ast.Drop) and stmt.object_type in _ITEM_TYPES:
        path = s.vars.search_path()
        refs = [s.coord.index.resolve_item(n.parts, s.database, path) for n in stmt.names]
        return all(r is not None and is_temporary_id(r.id) for r in refs)
    return False


def _refuse_temporary_inputs(deps: list[ItemRef], what: str) -> None:
    for dep in deps:
        if is_temporary_id(dep.id):
            raise AdapterError(
                E.FEATURE_NOT_SUPPORTED,
                f'{what} cannot depend on temporary {dep.type} "{dep.name}"',
            )


async def execute_ddl(s: AdapterSession, stmt: ast.Statement, sql: str) -> str:
    if s.coord.config.read_only and not _only_temporary(s, stmt):
        raise E.read_only_error()
    coord = s.coord
    owner = _owner(s)
    if isinstance(stmt, ast.CreateTable):
        return await _create_table(s, stmt, sql, owner)
    if isinstance(stmt, ast.CreateView | ast.CreateMaterializedView):
        return await _create_view(s, stmt, sql, owner)
    if isinstance(stmt, ast.CreateIndex):
        return await _create_index(s, stmt, sql, owner)
    if isinstance(stmt, ast.CreateSource):
        place = _place(s, stmt.name)
        return await create_source(s, stmt, sql, owner, place, _cluster_id(s, stmt.in_cluster))
    if isinstance(stmt, ast.CreateSecret):
        return await create_secret(s, stmt, sql, owner, _place(s, stmt.name))
    if isinstance(stmt, ast.CreateConnection):
        return await create_connection(s, stmt, owner, _place(s, stmt.name))
    if isinstance(stmt, ast.CreateDatabase):
        if not await coord.create_database(
            stmt.name, if_not_exists=stmt.if_not_exists, owner=owner
        ):
            s.ctx.notice(f'database "{stmt.name}" already exists, skipping')
        return "CREATE DATABASE"
    if isinstance(stmt, ast.CreateSchema):
        database = stmt.name.database or (
            stmt.name.parts[0] if len(stmt.name.parts) == 2 else s.database
        )
        if not await coord.create_schema(
            database, stmt.name.name, if_not_exists=stmt.if_not_exists, owner=owner
        ):
            s.ctx.notice(f'schema "{stmt.name.name}" already exists, skipping')
        return "CREATE SCHEMA"
    if isinstance(stmt, ast.CreateCluster):
        return await _create_cluster(s, stmt, owner)
    if isinstance(stmt, ast.CreateClusterReplica):
        await coord.create_cluster_replica(
            stmt.cluster, stmt.name, stmt.size or DEFAULT_REPLICA_SIZE
        )
        return "CREATE CLUSTER REPLICA"
    if isinstance(stmt, ast.Drop):
        return await _drop(s, stmt)
    if isinstance(stmt, ast.AlterSystemSet):
        value = None if stmt.values is None else ", ".join(stmt.values)
        if value is not None:
            try:
                validate_param(stmt.name.lower(), value)
            except ParamError as e:
                raise AdapterError(E.INVALID_PARAMETER_VALUE, str(e)) from None
            if stmt.name.lower() in MS_SETTINGS:  # a session default: 22023 as SET gives
                value = format_ms(parse_ms(stmt.name.lower(), value))
        await coord.set_system_parameter(stmt.name.lower(), value)
        return "ALTER SYSTEM"
    if isinstance(stmt, ast.AlterSystemReset):
        if stmt.name is None:
            for name in list(coord.catalog.state.system_parameters()):
                await coord.set_system_parameter(name, None)
        else:
            await coord.set_system_parameter(stmt.name.lower(), None)
        return "ALTER SYSTEM"
    raise AssertionError(f"not DDL: {type(stmt).__name__}")


async def _create_table(s: AdapterSession, stmt: ast.CreateTable, sql: str, owner: str) -> str:
    database, schema, name = _place(s, stmt.name)
    seen: set[str] = set()
    columns: list[dict[str, Any]] = []
    for col in stmt.columns:
        if col.name in seen:
            raise AdapterError("42701", f'column "{col.name}" specified more than once')
        seen.add(col.name)
        if col.type.array_dims:
            raise AdapterError(E.FEATURE_NOT_SUPPORTED, f"array column {col.name} is not supported")
        type_text = str(col.type)
        lookup(type_text)
        if col.type.name in ("serial", "bigserial", "smallserial"):
            raise AdapterError(
                E.FEATURE_NOT_SUPPORTED,
                f"column {col.name}: serial types are not supported (no sequences)",
            )
        columns.append(
            {
                "name": col.name,
                "type": type_text,
                "nullable": col.nullable,
                "default": None if col.default is None else col.default.sql(dialect="postgres"),
            }
        )
    if not columns:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "tables without columns are not supported")
    value: dict[str, Any] = {
        "type": "table",
        "columns": columns,
        "create_sql": sql,
        "owner": owner,
        "dependencies": [],
    }
    primary_key = _primary_key(stmt, name)
    if primary_key is not None:
        for stored in columns:  # PostgreSQL: key columns are NOT NULL
            if stored["name"] in primary_key["columns"]:
                stored["nullable"] = False
        value["primary_key"] = primary_key
    if _wants_temporary(stmt.name, stmt.temporary):
        ref = await s.coord.create_temp_item(
            s.conn_id, database, name, value, if_not_exists=stmt.if_not_exists
        )
    else:
        ref = await s.coord.create_item(
            database, schema, name, value, if_not_exists=stmt.if_not_exists
        )
    if ref is None:
        s.ctx.notice(f'relation "{name}" already exists, skipping')
    return "CREATE TABLE"


def _primary_key(stmt: ast.CreateTable, table: str) -> dict[str, Any] | None:
    """The table's PRIMARY KEY (column or table constraint) as stored in the catalog:
    {"name": "<table>_pkey", "columns": [...]}."""
    keys = [ast.PrimaryKey((c.name,), c.constraint_name) for c in stmt.columns if c.primary_key]
    keys += stmt.primary_keys
    if not keys:
        return None
    if len(keys) > 1:
        raise AdapterError("42P16", f'multiple primary keys for table "{table}" are not allowed')
    key = keys[0]
    names = {c.name for c in stmt.columns}
    for col in key.columns:
        if col not in names:
            raise AdapterError(E.UNDEFINED_COLUMN, f'column "{col}" named in key does not exist')
    if len(set(key.columns)) != len(key.columns):
        raise AdapterError("42701", "column appears twice in primary key constraint")
    return {"name": key.name or f"{table}_pkey", "columns": list(key.columns)}


async def _create_view(
    s: AdapterSession,
    stmt: ast.CreateView | ast.CreateMaterializedView,
    sql: str,
    owner: str,
) -> str:
    database, schema, name = _place(s, stmt.name)
    is_mv = isinstance(stmt, ast.CreateMaterializedView)
    if is_mv and schema in TEMP_SCHEMA_ALIASES:
        raise AdapterError(E.FEATURE_NOT_SUPPORTED, "materialized views cannot be temporary")
    if is_mv:
        # Lower first: an unsupported construct is 0A000 and nothing is created.
        lowered, lowered_names = lower_for_create(
            s.coord.index, stmt.query, s.database, s.vars.search_path()
        )
    plan = s.plan(stmt.query)
    duck_sql = plan.duck_sql
    res = await s.coord.engine.query(s.cursor, f"SELECT * FROM ({duck_sql}) AS _q LIMIT 0")
    names = [n for n, _oid in res.columns]
    if stmt.columns:
        if len(stmt.columns) != len(names):
            raise AdapterError(
                "42601", f"view has {len(names)} columns but {len(stmt.columns)} names were given"
            )
        renames = ", ".join(f'"{o}" AS "{n}"' for o, n in zip(names, stmt.columns, strict=True))
        duck_sql = f"SELECT {renames} FROM ({duck_sql}) AS _q"
        names = list(stmt.columns)
    value: dict[str, Any] = {
        "type": "materialized_view" if is_mv else "view",
        "create_sql": sql,
        "query": stmt.query.sql(dialect="postgres"),
        "duck_sql": duck_sql,
        "owner": owner,
        "dependencies": [d.id for d in plan.dependencies],
        "columns": [{"name": n, "type": "text", "nullable": True} for n in names],
    }
    if is_mv:
        assert isinstance(stmt, ast.CreateMaterializedView)
        value["cluster_id"] = _cluster_id(s, stmt.in_cluster)
        # Maintained by a dataflow into an output shard (the coordinator allocates it).
        value["names"] = lowered_names
        value["columns"] = [
            {"name": n, "type": mirror_type(t), "nullable": True}
            for n, t in zip(stmt.columns or lowered.columns, lowered.types, strict=True)
        ]
    temporary = isinstance(stmt, ast.CreateView) and _wants_temporary(stmt.name, stmt.temporary)
    if is_mv:
        _refuse_temporary_inputs(plan.dependencies, "a materialized view")
    elif not temporary and any(is_temporary_id(d.id) for d in plan.dependencies):
        # PostgreSQL: a view over a temporary relation is itself temporary
        s.ctx.notice(f'view "{name}" will be a temporary view')
        temporary = True
    if temporary:
        ref = await s.coord.create_temp_item(
            s.conn_id,
            database,
            name,
            value,
            if_not_exists=stmt.if_not_exists,
            or_replace=stmt.or_replace,
        )
    else:
        ref = await s.coord.create_item(
            database,
            schema,
            name,
            value,
            if_not_exists=stmt.if_not_exists,
            or_replace=stmt.or_replace,
        )
    if ref is None:
        s.ctx.notice(f'relation "{name}" already exists, skipping')
    return "CREATE MATERIALIZED VIEW" if is_mv else "CREATE VIEW"


async def _create_index(s: AdapterSession, stmt: ast.CreateIndex, sql: str, owner: str) -> str:
    on = s.resolve(stmt.on)
    _refuse_temporary_inputs([on], "an index")
    if on.type not in ("table", "view", "materialized_view", "source"):
        raise AdapterError(E.WRONG_OBJECT_TYPE, f'cannot create an index on {on.type} "{on.name}"')
    keys = [k.sql(dialect="postgres") for k in stmt.keys]
    if stmt.default_index or not keys:
        keys = [c["name"] for c in on.columns]
        key_cols = tuple(range(len(keys)))
    else:
        key_cols = key_columns(on, keys)
    # Maintained as an arrangement on the cluster: check before anything is created.
    check_indexable(s.coord.index, on)
    name = stmt.name or f"{on.name}_{'primary' if stmt.default_index else '_'.join(keys)}_idx"
    value: dict[str, Any] = {
        "type": "index",
        "create_sql": sql,
        "owner": owner,
        "on_id": on.id,
        "keys": keys,
        "key_columns": list(key_cols),
        "cluster_id": _cluster_id(s, stmt.in_cluster),
        "dependencies": [on.id],
    }
    ref = await s.coord.create_item(
        on.database, on.schema, name, value, if_not_exists=stmt.if_not_exists
    )
    if ref is None:
        s.ctx.notice(f'index "{name}" already exists, skipping')
    return "CREATE INDEX"


async def _create_cluster(s: AdapterSession, stmt: ast.CreateCluster, owner: str) -> str:
    size = stmt.size or DEFAULT_REPLICA_SIZE
    if stmt.replicas is not None:
        replicas = [(r.name, r.size or size) for r in stmt.replicas]
    else:
        factor = 1 if stmt.replication_factor is None else stmt.replication_factor
        replicas = [(f"r{i + 1}", size) for i in range(factor)]
    await s.coord.create_cluster(stmt.name, size=size, replicas=replicas, owner=owner)
    return "CREATE CLUSTER"


async def _drop(s: AdapterSession, stmt: ast.Drop) -> str:
    coord = s.coord
    kind = stmt.object_type
    tag = f"DROP {kind.value.upper()}"
    for name in stmt.names:
        if kind is ast.ObjectType.DATABASE:
            if name.name not in coord.index.databases:
                if stmt.if_exists:
                    s.ctx.notice(f'database "{name.name}" does not exist, skipping')
                    continue
                raise AdapterError(E.UNDEFINED_DATABASE, f'database "{name.name}" does not exist')
            if name.name == s.database:
                raise AdapterError("55006", "cannot drop the currently open database")
            await coord.drop_database(name.name, cascade=stmt.cascade)
        elif kind is ast.ObjectType.SCHEMA:
            database = name.parts[0] if len(name.parts) == 2 else s.database
            if (database, name.name) not in coord.index.schemas:
                if stmt.if_exists:
                    s.ctx.notice(f'schema "{name.name}" does not exist, skipping')
                    continue
                raise AdapterError(E.UNDEFINED_SCHEMA, f'schema "{name.name}" does not exist')
            await coord.drop_schema(database, name.name, cascade=stmt.cascade)
        elif kind is ast.ObjectType.CLUSTER:
            await coord.drop_cluster(name.name, if_exists=stmt.if_exists, cascade=stmt.cascade)
        elif kind is ast.ObjectType.CLUSTER_REPLICA:
            if len(name.parts) != 2:
                raise AdapterError(E.SYNTAX_ERROR, "DROP CLUSTER REPLICA needs cluster.replica")
            await coord.drop_cluster_replica(name.parts[0], name.parts[1], if_exists=stmt.if_exists)
        else:
            ref = coord.index.resolve_item(name.parts, s.database, s.vars.search_path())
            want = _ITEM_TYPES[kind]
            if ref is None:
                word = kind.value
                if stmt.if_exists:
                    s.ctx.notice(f'{word} "{name}" does not exist, skipping')
                    continue
                raise AdapterError(E.UNDEFINED_TABLE, f'{word} "{name}" does not exist')
            if ref.type != want:
                raise AdapterError(E.WRONG_OBJECT_TYPE, f'"{ref.name}" is not a {kind.value}')
            parent = coord.index.items_by_id.get(str(ref.value.get("parent_id")))
            if parent is not None:
                raise AdapterError(
                    E.DEPENDENT_OBJECTS,
                    f'cannot drop subsource "{ref.name}": it belongs to source "{parent.name}"',
                    hint=f'DROP SOURCE "{parent.name}" drops it too.',
                )
            await coord.drop_items([ref], cascade=stmt.cascade)
    return tag


def describe_item(ref: ItemRef) -> str:
    return str(ref.value.get("create_sql", ""))


def column_expr(name: str) -> exp.Expr:
    return exp.column(name, quoted=True)
