"""The pgwire server driven by the real psql client (a subprocess)."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import pytest

from twinstream.pgwire import PgWireServer, ScramSha256Authenticator

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")


async def psql(
    port: int, *args: str, password: str | None = None, stdin: bytes = b""
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "prefer", "LC_ALL": "C.UTF-8"})
    if password is not None:
        env["PGPASSWORD"] = password
    proc = await asyncio.create_subprocess_exec(
        "psql",
        "-X",
        "-w",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "twinstream",
        "-d",
        "twinstream",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_psql_select_1(server: PgWireServer) -> None:
    code, out, err = await psql(server.port, "-c", "select 1")
    assert code == 0, err
    assert out.split() == ["?column?", "----------", "1", "(1", "row)"]


async def test_psql_unaligned_multi_statement_and_errors(server: PgWireServer) -> None:
    code, out, err = await psql(server.port, "-At", "-c", "select 1; select * from gen(3)")
    assert code == 0, err
    assert out.splitlines() == ["1", "1", "2", "3"]
    code, out, err = await psql(server.port, "-c", "select * from nope")
    assert code == 1
    assert 'ERROR:  relation "nope" does not exist' in err


async def test_psql_script_with_copy(server: PgWireServer, db: Any) -> None:
    script = b"copy t from stdin;\n1\tone\n2\t\\N\n\\.\nselect * from t;\ncopy t to stdout;\n"
    code, out, err = await psql(server.port, "-At", "-v", "ON_ERROR_STOP=1", stdin=script)
    assert code == 0, err
    assert db.tables["t"] == [(1, "one"), (2, None)]
    assert out.splitlines() == ["COPY 2", "1|one", "2|", "1\tone", "2\t\\N"]


async def test_psql_scram(db: Any) -> None:
    server = PgWireServer(db.session, authenticator=ScramSha256Authenticator({"twinstream": "pw"}))
    await server.start()
    try:
        code, out, err = await psql(server.port, "-Atc", "select 1", password="pw")
        assert (code, out.strip()) == (0, "1"), err
        code, out, err = await psql(server.port, "-Atc", "select 1", password="nope")
        assert code == 2
        assert 'password authentication failed for user "twinstream"' in err
    finally:
        await server.shutdown()
