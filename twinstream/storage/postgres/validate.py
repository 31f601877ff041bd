"""Up-front checks for CREATE SOURCE: can we connect, is logical decoding on, does the
publication exist and contain the tables, can every table be replicated (REPLICA IDENTITY
FULL), may this role replicate and read them. Returns the tables as `UpstreamTable`s, which
pin each table's OID and columns for the replicator."""

from __future__ import annotations

from collections.abc import Sequence

from twinstream.storage.postgres.connection import UpstreamConnection, quote_literal
from twinstream.storage.postgres.model import Column, PgConnInfo, SourceError, UpstreamTable
from twinstream.storage.postgres.pgoutput import sql_type_for

__all__ = ["describe_tables", "validate"]


async def validate(
    info: PgConnInfo,
    publication: str,
    tables: Sequence[tuple[str, str]] | None = None,
) -> list[UpstreamTable]:
    """Check that `tables` ((schema, name) pairs; None = all the publication's tables) can be
    replicated through `publication`; return them in the order asked (or by name).

    Raises `SourceError` naming the first problem found.
    """
    conn = await UpstreamConnection.connect(info, replication=False)
    try:
        return await describe_tables(conn, publication, tables)
    finally:
        await conn.close()


async def describe_tables(
    conn: UpstreamConnection,
    publication: str,
    tables: Sequence[tuple[str, str]] | None,
) -> list[UpstreamTable]:
    """`validate` over an open (non-replication or replication=database) session."""
    (wal_level,) = (await conn.query("SHOW wal_level"))[0]
    if wal_level != "logical":
        raise SourceError(
            "wal_level",
            f"upstream {conn.where} has wal_level={wal_level}; logical replication needs "
            "wal_level=logical (set it in postgresql.conf and restart the server)",
        )
    (can_replicate,) = (
        await conn.query(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
        )
    )[0]
    if can_replicate != "t":
        raise SourceError(
            "permission",
            f"role {conn.info.user!r} may not replicate: ALTER ROLE ... WITH REPLICATION",
        )
    lit = quote_literal(publication)
    pub = await conn.query(
        f"SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = {lit}"
    )
    if not pub:
        raise SourceError(
            "missing_publication",
            f"publication {publication!r} does not exist in database {conn.info.database!r} "
            f"on {conn.where}",
        )
    missing_ops = [
        op for op, on in zip(("INSERT", "UPDATE", "DELETE"), pub[0], strict=True) if on != "t"
    ]
    if missing_ops:
        raise SourceError(
            "missing_publication",
            f"publication {publication!r} does not publish {', '.join(missing_ops)}; "
            "every change must be published for the source to stay correct",
        )
    version = int(conn.parameters.get("server_version", "0").split(".")[0] or 0)
    attnames = "pt.attnames" if version >= 15 else "NULL::name[]"
    published = await conn.query(
        f"SELECT c.oid, n.nspname, c.relname, c.relreplident, {attnames}, "
        "has_table_privilege(c.oid, 'SELECT') "
        "FROM pg_publication_tables pt "
        "JOIN pg_namespace n ON n.nspname = pt.schemaname "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
        f"WHERE pt.pubname = {lit} ORDER BY n.nspname, c.relname"
    )
    by_name = {(r[1] or "", r[2] or ""): r for r in published}
    if tables is None:
        wanted = list(by_name)
    else:
        wanted = list(dict.fromkeys(tables))
        for schema, name in wanted:
            if (schema, name) not in by_name:
                exists = await conn.query(
                    f"SELECT to_regclass({quote_literal(_qualify(schema, name))}) IS NOT NULL"
                )
                why = "is not in" if exists[0][0] == "t" else "does not exist, so it is not in"
                raise SourceError(
                    "missing_table",
                    f"table {schema}.{name} {why} publication {publication!r} "
                    f"(ALTER PUBLICATION {publication} ADD TABLE {schema}.{name})",
                )
    if not wanted:
        return []
    oids = ", ".join(str(by_name[w][0]) for w in wanted)
    columns = await conn.query(
        "SELECT a.attrelid, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), "
        "a.attnotnull FROM pg_attribute a "
        f"WHERE a.attrelid IN ({oids}) AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attgenerated = '' ORDER BY a.attrelid, a.attnum"
    )
    keys = await conn.query(
        "SELECT i.indrelid, a.attname FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        f"WHERE i.indisprimary AND i.indrelid IN ({oids}) "
        "ORDER BY i.indrelid, array_position(i.indkey::int2[], a.attnum)"
    )
    cols_of: dict[str, list[Column]] = {}
    for relid, attname, typoid, typname, notnull in columns:
        assert relid is not None and attname is not None and typoid is not None
        cols_of.setdefault(relid, []).append(
            Column(attname, int(typoid), typname or "", sql_type_for(int(typoid)), notnull != "t")
        )
    keys_of: dict[str, list[str]] = {}
    for relid, attname in keys:
        assert relid is not None and attname is not None
        keys_of.setdefault(relid, []).append(attname)

    result: list[UpstreamTable] = []
    for schema, name in wanted:
        oid, _, _, replident, col_list, can_select = by_name[(schema, name)]
        assert oid is not None
        qualified = f"{schema}.{name}"
        pk = keys_of.get(oid, [])
        if can_select != "t":
            raise SourceError(
                "permission", f"role {conn.info.user!r} may not SELECT from {qualified}"
            )
        if replident != "f":
            if not pk:
                raise SourceError(
                    "no_primary_key",
                    f"table {qualified} has no primary key and REPLICA IDENTITY is not FULL, "
                    "so upstream cannot replicate its updates and deletes: "
                    f"ALTER TABLE {qualified} REPLICA IDENTITY FULL",
                )
            raise SourceError(
                "replica_identity",
                f"table {qualified} must have REPLICA IDENTITY FULL so that updates and "
                f"deletes carry the old row: ALTER TABLE {qualified} REPLICA IDENTITY FULL",
            )
        cols = cols_of.get(oid, [])
        if col_list:
            listed = set(_parse_name_array(col_list))
            if len(listed) != len(cols):
                raise SourceError(
                    "missing_publication",
                    f"publication {publication!r} publishes only some columns of {qualified}; "
                    "a column list is not supported (REPLICA IDENTITY FULL needs all columns)",
                )
        result.append(UpstreamTable(schema, name, int(oid), tuple(cols), tuple(pk)))
    return result


def _qualify(schema: str, name: str) -> str:
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'


def _parse_name_array(text: str) -> list[str]:
    """``{a,"b c"}`` → ["a", "b c"] (PostgreSQL array text output of names)."""
    body = text.strip()[1:-1]
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(body):
        ch = body[i]
        if quoted:
            if ch == "\\" and i + 1 < len(body):
                i += 1
                cur.append(body[i])
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if body:
        out.append("".join(cur))
    return out
