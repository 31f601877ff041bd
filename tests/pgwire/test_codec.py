"""Pure codec tests (no sockets): message roundtrips both ways, chunking, limits, garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinstream.pgwire import messages as m
from twinstream.pgwire.codec import BackendParser, FrontendParser
from twinstream.pgwire.errors import MessageDecodeError, ProtocolViolation
from twinstream.pgwire.limits import MAX_MESSAGE_BYTES

names = st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=20)
blobs = st.binary(max_size=64)
u32 = st.integers(0, 2**32 - 1)
i16 = st.integers(-(2**15), 2**15 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
formats = st.lists(st.sampled_from([0, 1]), max_size=4).map(tuple)
kinds = st.sampled_from(["S", "P"])

typed_frontend = st.one_of(
    st.builds(m.Query, names),
    st.builds(m.Parse, names, names, st.lists(u32, max_size=5).map(tuple)),
    st.builds(
        m.Bind,
        names,
        names,
        formats,
        st.lists(st.one_of(st.none(), blobs), max_size=5).map(tuple),
        formats,
    ),
    st.builds(m.Describe, kinds, names),
    st.builds(m.Execute, names, st.integers(0, 2**31 - 1)),
    st.builds(m.Close, kinds, names),
    st.just(m.Sync()),
    st.just(m.Flush()),
    st.just(m.Terminate()),
    st.builds(m.CopyData, blobs),
    st.just(m.CopyDone()),
    st.builds(m.CopyFail, names),
    st.builds(m.PasswordMessage, names),
)

field_descriptions = st.builds(
    m.FieldDescription, names, u32, i16, i32, st.sampled_from([0, 1]), u32, i16
)
backend_messages = st.one_of(
    st.just(m.AuthenticationOk()),
    st.just(m.AuthenticationCleartextPassword()),
    st.builds(m.AuthenticationMD5Password, st.binary(min_size=4, max_size=4)),
    st.builds(
        m.AuthenticationSASL, st.lists(names.filter(bool), min_size=1, max_size=3).map(tuple)
    ),
    st.builds(m.AuthenticationSASLContinue, blobs),
    st.builds(m.AuthenticationSASLFinal, blobs),
    st.builds(m.ParameterStatus, names, names),
    st.builds(m.BackendKeyData, u32, u32),
    st.builds(m.ReadyForQuery, st.sampled_from(["I", "T", "E"])),
    st.builds(m.RowDescription, st.lists(field_descriptions, max_size=4).map(tuple)),
    st.builds(m.DataRow, st.lists(st.one_of(st.none(), blobs), max_size=6).map(tuple)),
    st.builds(m.CommandComplete, names),
    st.just(m.EmptyQueryResponse()),
    st.builds(
        m.ErrorResponse,
        st.sampled_from(["ERROR", "FATAL"]),
        st.text("0123456789ABCDEFP", min_size=5, max_size=5),
        names,
        st.one_of(st.none(), names),
        st.one_of(st.none(), names),
        st.one_of(st.none(), st.integers(1, 1000)),
    ),
    st.builds(m.NoticeResponse, st.just("NOTICE"), st.just("00000"), names),
    st.just(m.ParseComplete()),
    st.just(m.BindComplete()),
    st.just(m.CloseComplete()),
    st.just(m.NoData()),
    st.builds(m.ParameterDescription, st.lists(u32, max_size=5).map(tuple)),
    st.just(m.PortalSuspended()),
    st.builds(m.CopyInResponse, st.sampled_from([0, 1]), formats),
    st.builds(m.CopyOutResponse, st.sampled_from([0, 1]), formats),
    st.builds(m.CopyData, blobs),
    st.just(m.CopyDone()),
    st.builds(m.NotificationResponse, u32, names, names),
    st.builds(
        m.NegotiateProtocolVersion, st.integers(0, 5), st.lists(names, max_size=3).map(tuple)
    ),
)


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    out.append(data[pos:])
    return out


@given(st.lists(typed_frontend, max_size=8), st.lists(st.integers(1, 7), max_size=30))
def test_frontend_roundtrip_in_any_chunking(
    msgs: list[m.FrontendMessage], sizes: list[int]
) -> None:
    startup = m.StartupMessage({"user": "u", "database": "d"})
    data = startup.encode() + b"".join(x.encode() for x in msgs)
    parser = FrontendParser()
    got: list[m.FrontendMessage] = []
    for chunk in chunks(data, sizes):
        parser.feed(chunk)
        got.extend(parser)
    assert got == [startup, *msgs]
    assert parser.buffered == 0


@given(st.lists(backend_messages, max_size=8), st.lists(st.integers(1, 7), max_size=30))
def test_backend_roundtrip_in_any_chunking(msgs: list[m.BackendMessage], sizes: list[int]) -> None:
    data = b"".join(x.encode() for x in msgs)
    parser = BackendParser()
    got: list[m.BackendMessage] = []
    for chunk in chunks(data, sizes):
        parser.feed(chunk)
        got.extend(parser)
    assert got == msgs


@settings(max_examples=300)
@given(st.binary(max_size=200), st.booleans())
def test_garbage_never_raises_anything_but_protocol_violation(data: bytes, startup: bool) -> None:
    parser = FrontendParser(startup=startup)
    parser.feed(data)
    try:
        while parser.next_message() is not None:
            pass
    except ProtocolViolation:
        pass


@given(st.sampled_from(["password", "sasl_initial", "sasl"]), blobs)
def test_password_message_kinds(kind: str, data: bytes) -> None:
    parser = FrontendParser(startup=False)
    parser.password_kind = kind  # type: ignore[assignment]
    msg: m.FrontendMessage
    if kind == "sasl_initial":
        msg = m.SASLInitialResponse("SCRAM-SHA-256", data)
    elif kind == "sasl":
        msg = m.SASLResponse(data)
    else:
        msg = m.PasswordMessage(data.hex())
    parser.feed(msg.encode())
    assert parser.next_message() == msg


def test_startup_packets() -> None:
    parser = FrontendParser()
    parser.feed(m.SSLRequest().encode() + m.GSSENCRequest().encode())
    assert list(parser) == [m.SSLRequest(), m.GSSENCRequest()]
    assert parser.in_startup
    parser.feed(m.CancelRequest(0xFFFFFFFF, 12345).encode())
    assert parser.next_message() == m.CancelRequest(0xFFFFFFFF, 12345)
    parser.feed(m.StartupMessage({"user": "ü"}).encode())
    assert parser.next_message() == m.StartupMessage({"user": "ü"})
    assert not parser.in_startup
    # The wire bytes of a few messages, as documented in PostgreSQL's protocol chapter.
    assert m.SSLRequest().encode() == bytes.fromhex("0000000804d2162f")
    assert m.Sync().encode() == b"S\x00\x00\x00\x04"
    assert m.ReadyForQuery("I").encode() == b"Z\x00\x00\x00\x05I"
    assert (
        m.DataRow((b"1", None)).encode()
        == b"D\x00\x00\x00\x0f\x00\x02\x00\x00\x00\x011\xff\xff\xff\xff"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x07abc",  # startup length < 8
        struct.pack("!i", 10_001) + b"\x00" * 8,  # startup packet > 10000 bytes
        m.StartupMessage({"user": "u"}).encode()[:-1] + b"x",  # missing final NUL
    ],
)
def test_bad_startup_packets(data: bytes) -> None:
    parser = FrontendParser()
    parser.feed(data)
    with pytest.raises(ProtocolViolation):
        parser.next_message()


def test_limits_are_checked_before_the_body_arrives() -> None:
    parser = FrontendParser(startup=False)
    parser.feed(b"Q" + struct.pack("!i", MAX_MESSAGE_BYTES + 1))
    with pytest.raises(ProtocolViolation, match="invalid message length"):
        parser.next_message()
    parser = FrontendParser(startup=False)
    parser.feed(b"S" + struct.pack("!i", 20_000))  # Sync is a small message
    with pytest.raises(ProtocolViolation):
        parser.next_message()
    parser = FrontendParser(startup=False, max_message_bytes=100)
    parser.feed(m.Query("x" * 100).encode())
    with pytest.raises(ProtocolViolation):
        parser.next_message()
    parser = FrontendParser(startup=False)
    parser.feed(b"?\x00\x00\x00\x04")
    with pytest.raises(ProtocolViolation, match="invalid frontend message type 63"):
        parser.next_message()


def test_content_errors_are_recoverable() -> None:
    parser = FrontendParser(startup=False)
    parser.feed(m.frame(b"Q", b"\xff\0") + m.frame(b"D", b"X\0") + m.frame(b"S", b"x"))
    parser.feed(m.frame(b"E", b"p\0\0") + m.Sync().encode())
    for code, kind in (("22021", "Q"), ("08P01", "D"), ("08P01", "S"), ("08P01", "E")):
        with pytest.raises(MessageDecodeError) as info:
            parser.next_message()
        assert (info.value.sqlstate, info.value.message_type) == (code, kind)
    assert parser.next_message() == m.Sync()


def test_encoders_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        m.Query("a\0b").encode()
    with pytest.raises(ValueError):
        m.BackendKeyData(-1, 0).encode()
    with pytest.raises(ValueError):
        m.ReadyForQuery("X").encode()  # type: ignore[arg-type]
