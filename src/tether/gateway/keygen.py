"""Keys and certificates, made by OpenSSH's own ssh-keygen: ed25519 keys, and certificates that
a CA signs for one key with a key id, principals, a validity and a serial.

Every argument is either a path tether chose or a value checked first (names.py), and comes
after the option that takes it, so nothing here can be read as another option.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tether.errors import KeygenError, UsageError, describe, shown

TIMEOUT = 30.0
# What a key id and a principal may hold: they are logged by sshd and written in principals
# files, so no space, quote, comma or control character.
_FIELD = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,200}\Z")
_VALIDITY = re.compile(r"[+-]?[0-9A-Za-z]{1,20}(:[+-]?[0-9A-Za-z]{1,20})?\Z")


def ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise UsageError("ssh-keygen not found", hint="install openssh-client")
    return found


def generate(path: Path, comment: str) -> Path:
    """A new ed25519 key without a passphrase at ``path`` (0600) and ``path``.pub; nothing may
    be there already."""
    for existing in (path, path.with_name(path.name + ".pub")):
        if existing.exists() or existing.is_symlink():
            raise UsageError(f"{existing}: exists already; not overwritten")
    _run(["-q", "-t", "ed25519", "-N", "", "-C", _field(comment, "comment"), "-f", str(path)])
    return path


def sign(
    ca: Path,
    public_key: Path,
    *,
    key_id: str,
    principals: list[str],
    validity: str,
    serial: int,
    host: bool = False,
) -> Path:
    """Sign ``public_key`` (a KEY.pub file) with the CA's private key ``ca``; the certificate is
    KEY-cert.pub beside it, replaced if it is there."""
    if not principals:
        raise UsageError("a certificate needs at least one principal")
    if not _VALIDITY.match(validity):
        raise UsageError(f"validity: not an ssh-keygen interval: {shown(validity)}")
    if not 0 <= serial < 2**64:
        raise UsageError(f"serial: out of range: {serial}")
    argv = ["-q", "-s", str(ca), "-I", _field(key_id, "key id")]
    if host:
        argv.append("-h")
    names = ",".join(_field(p, "principal") for p in principals)
    argv += ["-n", names, "-V", validity, "-z", str(serial), str(public_key)]
    _run(argv)
    name = public_key.name.removesuffix(".pub")
    return public_key.with_name(f"{name}-cert.pub")


def certified(
    path: Path,
    comment: str,
    ca: Path,
    *,
    key_id: str,
    principals: list[str],
    validity: str,
    serial: int,
    host: bool = False,
) -> tuple[str, str]:
    """A new key at ``path`` (as ``generate``), certified by ``ca`` (as ``sign``): the private
    key's text and the certificate's line ("TYPE BASE64", without its comment)."""
    generate(path, comment)
    certificate = sign(
        ca,
        path.with_name(path.name + ".pub"),
        key_id=key_id,
        principals=principals,
        validity=validity,
        serial=serial,
        host=host,
    )
    kind, blob = certificate.read_text().split()[:2]
    return path.read_text(), f"{kind} {blob}"


def _field(value: str, what: str) -> str:
    if not _FIELD.match(value):
        raise UsageError(f"{what}: cannot go into a certificate: {shown(value)}")
    return value


def _run(args: list[str]) -> None:
    try:
        done = subprocess.run(
            [ssh_keygen(), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KeygenError(f"ssh-keygen failed: {describe(exc)}") from None
    if done.returncode != 0:
        said = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise KeygenError(f"ssh-keygen failed: {shown(said)}")


def empty_revocations(krl: Path) -> Path:
    """A new key revocation list (KRL) that revokes nothing, for sshd's RevokedKeys."""
    _run(["-k", "-f", str(krl)])
    return krl


def revoke(krl: Path, ca_public: Path, serials: list[int]) -> None:
    """Add the certificates of ``ca_public`` with these ``serials`` to the KRL at ``krl``."""
    if any(not 0 < serial < 2**64 for serial in serials):
        raise UsageError(f"serials: out of range: {serials}")
    spec = krl.with_name(f".{krl.name}.spec")
    spec.write_text("".join(f"serial: {serial}\n" for serial in serials))
    try:
        _run(["-k", "-u", "-f", str(krl), "-s", str(ca_public), str(spec)])
    finally:
        spec.unlink(missing_ok=True)
