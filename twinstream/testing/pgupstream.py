"""Test helpers for PostgreSQL CDC: an upstream database handle and PgConnInfo from a URL."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import psycopg

from twinstream.storage.postgres import PgConnInfo
from twinstream.testing.pgserver import PgServer

__all__ = ["Upstream", "conn_info"]


def conn_info(url: str, *, user: str | None = None, password: str | None = None) -> PgConnInfo:
    """`PgConnInfo` for ``postgres://user@host:port/db`` (`user`/`password` override)."""
    u = urllib.parse.urlsplit(url)
    if u.hostname is None or u.port is None:
        raise ValueError(f"URL {url!r} needs a host and a port")
    return PgConnInfo(
        host=u.hostname,
        port=u.port,
        user=user or urllib.parse.unquote(u.username or "postgres"),
        password=password if password is not None else u.password,
        database=urllib.parse.unquote(u.path.lstrip("/")) or "postgres",
    )


@dataclass
class Upstream:
    """A database on a logical-decoding server, plus an autocommit psycopg connection."""

    server: PgServer
    url: str
    info: PgConnInfo
    sql: psycopg.AsyncConnection[tuple[object, ...]]

    async def execute(self, *statements: str) -> None:
        for statement in statements:
            await self.sql.execute(statement.encode())

    async def one(self, query: str) -> object:
        """The first column of the first row of `query`."""
        row = await (await self.sql.execute(query.encode())).fetchone()
        if row is None:
            raise LookupError(f"no row from {query!r}")
        return row[0]
