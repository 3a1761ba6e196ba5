"""A minimal raw PostgreSQL v3 wire client for tests that must see exact bytes: SQLSTATEs of
authentication failures (libpq hides them), garbage input, oversized headers.

Only what tests need: startup, SSLRequest, cleartext/MD5/SCRAM-SHA-256 auth, simple Query,
message reading with a deadline. Every socket operation has a timeout: a hang is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Optional

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class WireError(RuntimeError):
    """The peer closed, timed out, or sent something unexpected."""


@dataclass
class ServerError(Exception):
    """An ErrorResponse ('E'): fields by their one-letter code (C = SQLSTATE, M = message)."""
    fields: dict

    @property
    def sqlstate(self) -> Optional[str]:
        return self.fields.get("C")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")

    def __str__(self) -> str:
        return f"{self.fields.get('S', 'ERROR')} {self.sqlstate}: {self.message}"


def parse_fields(payload: bytes) -> dict:
    """Fields of an ErrorResponse/NoticeResponse body."""
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def startup_packet(params: dict, version: int = PROTOCOL_3_0) -> bytes:
    body = struct.pack("!I", version)
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def cancel_request(pid: int, secret: int) -> bytes:
    return struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, pid, secret)


def parse_negotiate_protocol_version(body: bytes) -> tuple[int, list]:
    """NegotiateProtocolVersion ('v'): (newest supported minor, unrecognised option names)."""
    minor, count = struct.unpack("!II", body[:8])
    names = [n.decode() for n in body[8:].split(b"\0")[:count]]
    return minor, names


@dataclass
class AuthResult:
    kinds: list = field(default_factory=list)       # message types seen, e.g. ['R10','R11','E']
    parameters: dict = field(default_factory=dict)  # ParameterStatus
    backend_key: Optional[tuple] = None             # (pid, secret)
    negotiate: Optional[tuple] = None               # NegotiateProtocolVersion: (minor, names)


class RawPg:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawPg":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise WireError(f"timed out waiting for {n - len(self.buf)} more bytes") from None
            if not chunk:
                raise WireError(f"connection closed by peer (have {len(self.buf)} of {n} bytes)")
            self.buf += chunk

    def read_byte(self) -> bytes:
        self._fill(1)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_message(self, max_len: int = 1 << 20) -> tuple[bytes, bytes]:
        self._fill(5)
        kind = self.buf[:1]
        (length,) = struct.unpack("!I", self.buf[1:5])
        if length < 4 or length > max_len:
            raise WireError(f"server message {kind!r} has bad length {length}")
        self._fill(1 + length)
        body = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return kind, body

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Reads until EOF (or reset); returns what arrived meanwhile. Raises on timeout."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise WireError("connection still open after the error") from None
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def ssl_request(self) -> bytes:
        """Sends SSLRequest, returns the one-byte answer (b'S' or b'N')."""
        self.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
        return self.read_byte()

    def gssenc_request(self) -> bytes:
        """Sends GSSENCRequest, returns the one-byte answer (b'G' or b'N')."""
        self.send(struct.pack("!II", 8, GSSENC_REQUEST_CODE))
        return self.read_byte()

    def startup(self, user: str, password: str, database: str, *,
                version: int = PROTOCOL_3_0, **params) -> AuthResult:
        """Startup + authentication up to ReadyForQuery. Raises ServerError on ErrorResponse
        (with .result holding what was seen before it). `version` is the protocol number sent
        ((major << 16) | minor); parameters that are not identifiers go in as **{"_pq_.x": v}."""
        p = {"user": user, "database": database}
        p.update(params)
        self.send(startup_packet(p, version))
        res = AuthResult()
        scram: Optional[_Scram] = None
        while True:
            kind, body = self.read_message()
            if kind == b"R":
                (code,) = struct.unpack("!I", body[:4])
                res.kinds.append(f"R{code}")
                if code == 0:
                    continue
                if code == 3:
                    self.send(message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    self.send(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    mechs = [m.decode() for m in body[4:].split(b"\0") if m]
                    if "SCRAM-SHA-256" not in mechs:
                        raise WireError(f"no SCRAM-SHA-256 in {mechs}")
                    scram = _Scram(password)
                    first = scram.client_first()
                    self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first))
                                      + first))
                elif code == 11:
                    assert scram is not None
                    self.send(message(b"p", scram.client_final(body[4:])))
                elif code == 12:
                    assert scram is not None
                    scram.verify_server(body[4:])
                else:
                    raise WireError(f"unsupported authentication request {code}")
            elif kind == b"E":
                res.kinds.append("E")
                err = ServerError(parse_fields(body))
                err.result = res  # type: ignore[attr-defined]
                raise err
            elif kind == b"S":
                name, value = body.split(b"\0")[:2]
                res.parameters[name.decode()] = value.decode()
            elif kind == b"K":
                res.backend_key = struct.unpack("!II", body[:8])
            elif kind == b"N":
                continue
            elif kind == b"v":
                res.kinds.append("v")
                res.negotiate = parse_negotiate_protocol_version(body)
            elif kind == b"Z":
                res.kinds.append("Z")
                return res
            else:
                raise WireError(f"unexpected message {kind!r} during startup")

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        """Simple query; returns every message up to and including ReadyForQuery."""
        self.send(message(b"Q", sql.encode() + b"\0"))
        out = []
        while True:
            kind, body = self.read_message()
            out.append((kind, body))
            if kind == b"Z":
                return out

    def read_error(self) -> ServerError:
        """Reads messages until an ErrorResponse and returns it (notices are skipped)."""
        while True:
            kind, body = self.read_message()
            if kind == b"E":
                return ServerError(parse_fields(body))
            if kind not in (b"N", b"S"):
                raise WireError(f"expected ErrorResponse, got {kind!r}")


class _Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) without channel binding, as PostgreSQL
    uses it: the user name in the exchange is empty (the startup packet's counts)."""

    def __init__(self, password: str):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        if not attrs["r"].startswith(self.nonce):
            raise WireError("server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        text = server_final.decode()
        if not text.startswith("v=") or base64.b64decode(text[2:]) != self.server_signature:
            raise WireError(f"bad SCRAM server signature: {text!r}")
