"""The sans-IO pieces: SCRAM client against twinstream's own SCRAM server, framing, LSNs."""

from __future__ import annotations

import pytest

from twinstream.pgwire.auth import ScramServer, ScramVerifier
from twinstream.pgwire.errors import PgError
from twinstream.storage.postgres import format_lsn, parse_lsn
from twinstream.storage.postgres.wire import Framer, ScramClient, WireError


def test_scram_client_against_server() -> None:
    server = ScramServer("u", ScramVerifier.from_password("sécret", iterations=4096))
    client = ScramClient("sécret")
    server_first = server.client_first(client.first())
    server_final = server.client_final(client.final(server_first))
    client.verify(server_final)  # the server proved it knows the password too


def test_scram_wrong_password_is_refused() -> None:
    server = ScramServer("u", ScramVerifier.from_password("right", iterations=4096))
    client = ScramClient("wrong")
    server_first = server.client_first(client.first())
    with pytest.raises(PgError) as err:
        server.client_final(client.final(server_first))
    assert err.value.sqlstate == "28P01"


def test_scram_client_rejects_a_wrong_server_signature() -> None:
    server = ScramServer("u", ScramVerifier.from_password("mine", iterations=4096))
    client = ScramClient("mine")
    server_first = server.client_first(client.first())
    client.final(server_first)
    with pytest.raises(WireError):
        client.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")


def test_framer_splits_and_joins() -> None:
    msg = b"d" + (4 + 3).to_bytes(4, "big") + b"abc"
    f = Framer()
    f.feed(msg[:3])
    assert f.next() is None
    f.feed(msg[3:] + msg)
    assert f.next() == (ord("d"), b"abc")
    assert f.next() == (ord("d"), b"abc")
    assert f.next() is None
    f.feed(b"d\x00\x00\x00\x02")
    with pytest.raises(WireError):
        f.next()


def test_lsn_text_roundtrip() -> None:
    for text in ("0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF"):
        assert format_lsn(parse_lsn(text)) == text
    with pytest.raises(ValueError):
        parse_lsn("16B3748")
