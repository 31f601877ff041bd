"""Authentication: trust, cleartext password, and SCRAM-SHA-256 (RFC 5802 / RFC 7677).

An `Authenticator` talks to the client through an `AuthChannel` (send a backend message,
receive the next password-type message) and raises a FATAL `PgError` to refuse; returning
means success (the server then sends AuthenticationOk). SCRAM is implemented here with hashlib
and hmac; `ScramServer` is the sans-IO exchange, usable without sockets.

Passwords are given as a mapping user → password or a callable (sync or async) returning the
password or None (unknown user). For an unknown user SCRAM still runs a full exchange against a
random verifier, so that the answer does not reveal whether the user exists (as PostgreSQL).
No channel binding (there is no TLS): SCRAM-SHA-256-PLUS is not offered and `p=` is refused.
SASLprep is approximated by NFKC normalization of non-ASCII passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import os
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from twinstream.pgwire import messages as m
from twinstream.pgwire.errors import PgError, SqlState
from twinstream.pgwire.limits import SCRAM_ITERATIONS, SCRAM_NONCE_BYTES

__all__ = [
    "AuthChannel",
    "Authenticator",
    "CleartextPasswordAuthenticator",
    "PasswordLookup",
    "ScramServer",
    "ScramSha256Authenticator",
    "ScramVerifier",
    "TrustAuthenticator",
]

PasswordLookup = (
    Mapping[str, str] | Callable[[str], str | None] | Callable[[str], Awaitable[str | None]]
)
SCRAM_SHA_256 = "SCRAM-SHA-256"


class AuthChannel(Protocol):
    async def send(self, message: m.BackendMessage) -> None:
        """Send (and flush) one authentication request."""

    async def receive(
        self, kind: Literal["password", "sasl_initial", "sasl"]
    ) -> m.PasswordMessage | m.SASLInitialResponse | m.SASLResponse:
        """The client's next message, read as `kind` (anything else is a protocol violation)."""


class Authenticator(ABC):
    @abstractmethod
    async def authenticate(self, user: str, channel: AuthChannel) -> None:
        """Return to accept `user`; raise a FATAL PgError (28P01, 28000) to refuse."""


class TrustAuthenticator(Authenticator):
    """Everyone is who they say they are."""

    async def authenticate(self, user: str, channel: AuthChannel) -> None:
        return None


def password_failed(user: str) -> PgError:
    return PgError(
        SqlState.INVALID_PASSWORD,
        f'password authentication failed for user "{user}"',
        severity="FATAL",
    )


async def lookup_password(passwords: PasswordLookup, user: str) -> str | None:
    if isinstance(passwords, Mapping):
        return passwords.get(user)
    got = passwords(user)
    if inspect.isawaitable(got):
        return await got
    return got


class CleartextPasswordAuthenticator(Authenticator):
    """AuthenticationCleartextPassword: the password crosses the wire as is."""

    def __init__(self, passwords: PasswordLookup) -> None:
        self._passwords = passwords

    async def authenticate(self, user: str, channel: AuthChannel) -> None:
        await channel.send(m.AuthenticationCleartextPassword())
        msg = await channel.receive("password")
        assert isinstance(msg, m.PasswordMessage)
        expected = await lookup_password(self._passwords, user)
        if expected is None or not hmac.compare_digest(msg.password.encode(), expected.encode()):
            raise password_failed(user)


def _saslprep(password: str) -> bytes:
    if password.isascii():
        return password.encode()
    return unicodedata.normalize("NFKC", password).encode()


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class ScramVerifier:
    """What a server stores for SCRAM: salt, iterations, StoredKey, ServerKey."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
    ) -> ScramVerifier:
        salt = os.urandom(16) if salt is None else salt
        salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            salt, iterations, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")
        )

    @classmethod
    def impossible(cls) -> ScramVerifier:
        """A verifier no proof matches (unknown user): the exchange looks normal, then fails."""
        return cls(os.urandom(16), SCRAM_ITERATIONS, os.urandom(32), os.urandom(32))


class ScramServer:
    """The server side of one SCRAM-SHA-256 exchange (sans-IO).

    `client_first(data)` → server-first-message; `client_final(data)` → server-final-message.
    Both raise PgError: 08P01 for a malformed exchange, 28P01 for a wrong password.
    """

    def __init__(
        self,
        user: str,
        verifier: ScramVerifier,
        *,
        valid: bool = True,
        server_nonce: str | None = None,
    ) -> None:
        self._user = user
        self._verifier = verifier
        self._valid = valid
        self._server_nonce = server_nonce or _b64(os.urandom(SCRAM_NONCE_BYTES))
        self._gs2_header = b""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    @staticmethod
    def _malformed(why: str) -> PgError:
        return PgError(
            SqlState.PROTOCOL_VIOLATION,
            f"malformed SCRAM message ({why})",
            severity="FATAL",
        )

    def client_first(self, data: bytes) -> bytes:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise self._malformed("not UTF-8") from None
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise self._malformed("no GS2 header")
        cbind, authzid, bare = parts
        if cbind.startswith("p="):
            raise PgError(
                SqlState.PROTOCOL_VIOLATION,
                "channel binding is not supported without SSL",
                severity="FATAL",
            )
        if cbind not in ("n", "y"):
            raise self._malformed("bad channel binding flag")
        if authzid:
            raise PgError(
                SqlState.FEATURE_NOT_SUPPORTED,
                "client uses authorization identity, but it is not supported",
                severity="FATAL",
            )
        attrs = bare.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise self._malformed("expected n= and r=")
        client_nonce = attrs[1][2:]
        if not client_nonce or not all(0x21 <= ord(c) <= 0x7E and c != "," for c in client_nonce):
            raise self._malformed("bad nonce")
        self._gs2_header = f"{cbind},{authzid},".encode()
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        v = self._verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        return self._server_first.encode()

    def client_final(self, data: bytes) -> bytes:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise self._malformed("not UTF-8") from None
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise self._malformed("no proof")
        attrs = without_proof.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            raise self._malformed("expected c= and r=")
        try:
            cbind_data = base64.b64decode(attrs[0][2:], validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise self._malformed("bad base64") from None
        if cbind_data != self._gs2_header:
            raise self._malformed("channel binding data does not match")
        if attrs[1][2:] != self._nonce:
            raise self._malformed("nonce does not match")
        if len(proof) != 32:
            raise self._malformed("bad proof length")
        auth_message = ",".join(
            (self._client_first_bare, self._server_first, without_proof)
        ).encode()
        v = self._verifier
        signature = _hmac(v.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key)
        if not (ok and self._valid):
            raise password_failed(self._user)
        return f"v={_b64(_hmac(v.server_key, auth_message))}".encode()


class ScramSha256Authenticator(Authenticator):
    """SCRAM-SHA-256 against plain passwords (verifiers are derived once per password)."""

    def __init__(self, passwords: PasswordLookup, *, iterations: int = SCRAM_ITERATIONS) -> None:
        self._passwords = passwords
        self._iterations = iterations
        self._verifiers: dict[tuple[str, str], ScramVerifier] = {}

    def _verifier(self, user: str, password: str) -> ScramVerifier:
        key = (user, password)
        verifier = self._verifiers.get(key)
        if verifier is None:
            verifier = ScramVerifier.from_password(password, iterations=self._iterations)
            self._verifiers[key] = verifier
        return verifier

    async def authenticate(self, user: str, channel: AuthChannel) -> None:
        password = await lookup_password(self._passwords, user)
        if password is None:
            server = ScramServer(user, ScramVerifier.impossible(), valid=False)
        else:
            server = ScramServer(user, self._verifier(user, password))
        await channel.send(m.AuthenticationSASL((SCRAM_SHA_256,)))
        first = await channel.receive("sasl_initial")
        assert isinstance(first, m.SASLInitialResponse)
        if first.mechanism != SCRAM_SHA_256:
            raise PgError(
                SqlState.PROTOCOL_VIOLATION,
                "client selected an invalid SASL authentication mechanism",
                severity="FATAL",
            )
        if first.data is None:
            raise PgError(
                SqlState.PROTOCOL_VIOLATION, "malformed SCRAM message (empty)", severity="FATAL"
            )
        await channel.send(m.AuthenticationSASLContinue(server.client_first(first.data)))
        final = await channel.receive("sasl")
        assert isinstance(final, m.SASLResponse)
        await channel.send(m.AuthenticationSASLFinal(server.client_final(final.data)))
