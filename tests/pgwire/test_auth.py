"""SCRAM-SHA-256: the sans-IO exchange against RFC 7677's test vector, and real clients."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import pytest

from twinstream.pgwire import PgError, PgWireServer, ScramSha256Authenticator
from twinstream.pgwire.auth import ScramServer, ScramVerifier

# RFC 7677, section 3
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_server(password: str = "pencil", *, valid: bool = True) -> ScramServer:
    verifier = ScramVerifier.from_password(password, salt=SALT, iterations=4096)
    return ScramServer("user", verifier, valid=valid, server_nonce=SERVER_NONCE)


def test_rfc7677_vector() -> None:
    server = rfc_server()
    assert server.client_first(CLIENT_FIRST) == SERVER_FIRST
    assert server.client_final(CLIENT_FINAL) == SERVER_FINAL


def test_wrong_password_and_unknown_user_fail_alike() -> None:
    for server in (rfc_server("not pencil"), rfc_server(valid=False)):
        server.client_first(CLIENT_FIRST)
        with pytest.raises(PgError) as info:
            server.client_final(CLIENT_FINAL)
        assert (info.value.sqlstate, info.value.severity) == ("28P01", "FATAL")


@pytest.mark.parametrize(
    ("first", "final"),
    [
        (b"p=tls-server-end-point,,n=user,r=abc", None),  # channel binding: no TLS here
        (b"n,a=admin,n=user,r=abc", None),  # authzid
        (b"x,,n=user,r=abc", None),
        (b"n,,r=abc", None),
        (b"garbage", None),
        (CLIENT_FIRST, CLIENT_FINAL.replace(b"c=biws", b"c=eSws")),  # gs2 header mismatch
        (CLIENT_FIRST, CLIENT_FINAL.replace(b"r=rOpr", b"r=XXpr")),  # nonce mismatch
        (CLIENT_FIRST, b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"),
        (CLIENT_FIRST, CLIENT_FINAL[:-10] + b"!!!!!!!!!!"),
    ],
)
def test_malformed_exchanges(first: bytes, final: bytes | None) -> None:
    server = rfc_server()
    with pytest.raises(PgError) as info:
        server.client_first(first)
        assert final is not None
        server.client_final(final)
    assert info.value.severity == "FATAL"
    assert info.value.sqlstate in ("08P01", "0A000")


@pytest.fixture
async def scram_server(db: Any) -> Any:
    server = PgWireServer(
        db.session,
        authenticator=ScramSha256Authenticator({"alice": "correct horse", "bob": "pässwörd"}),
    )
    await server.start()
    yield server
    await server.shutdown()


def scram_dsn(server: PgWireServer, user: str, password: str) -> str:
    return (
        f"host=127.0.0.1 port={server.port} user={user} password='{password}' dbname=d "
        "sslmode=disable connect_timeout=5"
    )


async def test_psycopg_scram(scram_server: PgWireServer) -> None:
    for user, password in (("alice", "correct horse"), ("bob", "pässwörd")):
        dsn = scram_dsn(scram_server, user, password) + " channel_binding=disable"
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            assert await (await conn.execute("select 1")).fetchone() == (1,)
    for user, password in (("alice", "wrong"), ("nobody", "correct horse")):
        with pytest.raises(psycopg.OperationalError) as info:
            await psycopg.AsyncConnection.connect(scram_dsn(scram_server, user, password))
        assert f'password authentication failed for user "{user}"' in str(info.value)
    # libpq's require_auth sees that the server asked for SCRAM
    dsn = scram_dsn(scram_server, "alice", "correct horse") + " require_auth=scram-sha-256"
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert not conn.closed
