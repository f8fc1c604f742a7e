"""OpenSSH user certificates, as both SSH engines read them to say why a login failed: what a
certificate says (its key, principals, validity and CA), read from its wire form (OpenSSH's
PROTOCOL.certkeys) without a library, so that the two engines explain it in the same words."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tether.errors import AuthenticationError, ConfigError, clip
from tether.files import KEY_LIMIT, read_regular

SUFFIX = "-cert-v01@openssh.com"
FOREVER = 2**64 - 1
USER_CERTIFICATE = 1
# How many length-prefixed fields (strings, mpints) each certificate type's key has, between
# the nonce and the serial number.
KEY_FIELDS = {
    "ssh-rsa": 2,  # e, n
    "ssh-dss": 4,  # p, q, g, y
    "ecdsa-sha2-nistp256": 2,  # curve, point
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
    "ssh-ed25519": 1,
    "ssh-ed448": 1,
    "sk-ecdsa-sha2-nistp256": 3,  # curve, point, application
    "sk-ssh-ed25519": 2,  # key, application
}


@dataclass(frozen=True)
class Certificate:
    """What an OpenSSH certificate says; ``blob`` is its wire form, ``key`` the certified
    public key's."""

    blob: bytes
    algorithm: str
    key: bytes
    user: bool  # a user certificate, not a host one
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    authority: str  # the signing CA key's SHA256 fingerprint

    def problem(self, user: str, now: float | None = None) -> tuple[str, str] | None:
        """Why a server must refuse this certificate for ``user``, and what to do about it, as
        far as the certificate tells: out of its validity, or not naming the user (a server
        that maps principals to users with AuthorizedPrincipalsFile may still take it; it is
        the likely cause all the same)."""
        now = time.time() if now is None else now
        if not self.user:
            return "is a host certificate", "sign the key as a user's (ssh-keygen -s without -h)"
        if now < self.valid_after:
            return (
                f"is not valid before {_when(self.valid_after)}",
                "check the clocks of this host and the CA",
            )
        if self.valid_before != FOREVER and now >= self.valid_before:
            return f"expired at {_when(self.valid_before)}", "have the CA sign the key again"
        if self.principals and user not in self.principals:
            return (
                f"is for {_names(self.principals)}, not for user {clip(user)}",
                f"have the CA sign the key for {clip(user)}, or log in as one of its principals",
            )
        return None

    @property
    def summary(self) -> str:
        """Its key ID, principals, validity and CA, in a few words."""
        principals = _names(self.principals) or "any user"
        until = "forever" if self.valid_before == FOREVER else f"until {_when(self.valid_before)}"
        return (
            f"key ID {clip(self.key_id)!r} for {principals}, valid {until}, "
            f"signed by CA {self.authority}"
        )


def parse(blob: bytes) -> Certificate:
    """The certificate in ``blob`` (its wire form); ValueError if it is not one."""
    reader = _Reader(blob)
    algorithm = reader.text()
    base = _plain(algorithm)
    reader.string()  # nonce
    start = reader.offset
    for _ in range(KEY_FIELDS[base]):
        reader.string()
    key = _string(base.encode()) + blob[start : reader.offset]
    reader.uint64()  # serial
    kind = reader.uint32()
    key_id = reader.text()
    principals = _Reader(reader.string())
    names = []
    while not principals.done:
        names.append(principals.text())
    valid_after, valid_before = reader.uint64(), reader.uint64()
    for _ in range(3):  # critical options, extensions, reserved
        reader.string()
    authority = reader.string()
    reader.string()  # signature: the server checks it
    return Certificate(
        blob,
        algorithm,
        key,
        kind == USER_CERTIFICATE,
        key_id,
        tuple(names),
        valid_after,
        valid_before,
        fingerprint(authority),
    )


def from_line(line: bytes) -> Certificate | None:
    """The certificate on a line of a -cert.pub file or of `ssh-add -L` (TYPE BASE64
    [COMMENT]); None if the line holds no certificate."""
    fields = line.split()
    if len(fields) < 2 or not fields[0].endswith(SUFFIX.encode()):
        return None
    try:
        return parse(base64.b64decode(fields[1], validate=True))
    except (ValueError, binascii.Error):
        return None


def read(path: Path) -> Certificate | None:
    """The certificate in the file at ``path``; None if it is missing, unreadable or not a
    certificate (ssh then skips it, and so does tether)."""
    try:
        data = read_regular(path, limit=KEY_LIMIT, what="certificate", error=ConfigError)
    except (FileNotFoundError, ConfigError):
        return None
    lines = data.strip().splitlines()
    return from_line(lines[0]) if lines else None


def fingerprint(blob: bytes) -> str:
    """A key's SHA256 fingerprint as ssh prints it (base64, without padding)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class Offered:
    """A certificate a login could offer: where it came from (its file, or "ssh-agent"), and
    why no key can sign for it, if none can (then it is not offered at all)."""

    source: str
    certificate: Certificate
    missing: str | None = None
    fix: str = "name its key with identity_file, or load it into ssh-agent"

    @property
    def name(self) -> str:
        if self.source == "ssh-agent":
            return f"{clip(self.certificate.key_id)!r} in ssh-agent"
        return self.source


def refusal(via: str, offered: Sequence[Offered], user: str) -> AuthenticationError | None:
    """Why a server refused a login that had certificates to offer, in one line: the first
    certificate out of its validity or for other principals, else the first that no key could
    sign for, else the first the server refused for reasons of its own (its CA is not trusted,
    most likely). None if there were no certificates: "Permission denied" says it all."""
    failed = f"SSH authentication to {via} failed"
    for item in offered:
        found = item.certificate.problem(user)
        if found is not None:
            problem, hint = found
            return AuthenticationError(f"{failed}: certificate {item.name} {problem}", hint=hint)
    for item in offered:
        if item.missing is not None:
            return AuthenticationError(
                f"{failed}: certificate {item.name} cannot be used: {item.missing}",
                hint=item.fix,
                options=("identity_file",),
            )
    if not offered:
        return None
    item = offered[0]
    return AuthenticationError(
        f"{failed}: the server refused certificate {item.name}, {item.certificate.summary}",
        hint="is that CA in the server's TrustedUserCAKeys, for this user?",
    )


def _plain(algorithm: str) -> str:
    """The certified key's algorithm: ssh-ed25519 for ssh-ed25519-cert-v01@openssh.com."""
    if not algorithm.endswith(SUFFIX) or algorithm.removesuffix(SUFFIX) not in KEY_FIELDS:
        raise ValueError(f"not an OpenSSH certificate: {clip(algorithm)!r}")
    return algorithm.removesuffix(SUFFIX)


def _names(principals: tuple[str, ...], most: int = 5) -> str:
    named = ", ".join(str(clip(p)) for p in principals[:most])
    return named + (f" and {len(principals) - most} more" if len(principals) > most else "")


def _when(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{seconds} seconds after 1970"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    """Reads SSH wire types from a blob; ValueError past its end."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.offset = 0

    @property
    def done(self) -> bool:
        return self.offset >= len(self.blob)

    def _take(self, size: int) -> bytes:
        if size > len(self.blob) - self.offset:
            raise ValueError("truncated certificate")
        data = self.blob[self.offset : self.offset + size]
        self.offset += size
        return data

    def uint32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def string(self) -> bytes:
        return self._take(self.uint32())

    def text(self) -> str:
        return self.string().decode("utf-8", errors="replace")
