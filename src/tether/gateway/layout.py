"""A gateway's directory: where its keys, certificates, policy and audit log live, and its
creation (`tether gateway init`).

    DIR/                  0700
      ca/user_ca(.pub)    signs users' keys (for one target), agents' and relays' login keys
      ca/host_ca(.pub)    signs the signer's, the relays' and the sites' host keys: what
                          clients trust
      ca/KIND_ca-N(.pub)  a later generation of a CA, and ca/rollover.json which of them are
                          trusted and which signs (cas.py)
      signer/host_ed25519(.pub, -cert.pub)
                          the signer's host key, certified for SIGNER_PRINCIPAL (relays check it)
      signer/run/         the signer's generated sshd files (signerhost.py)
      policy.toml         who may reach which target (policy.py)
      serial              the last certificate serial issued (serials.py)
      revoked.krl         the certificates revoked before their end (an agent's, a site's)
      audit.jsonl         every grant, revoke, issuance, refusal and session (audit.py)
      audit-STAMP.jsonl   the log's segments, moved aside at its size (audit.py)
      enrolments/SITE.toml
                          what `site add` wrote for a site (enrol.py)
      relays/RELAY.toml   what `relays add` wrote for a relay (relaybundle.py)
      status/RELAY.json   what each relay last said of itself to a signer (feed.py)

The CA's keys stay here, with the signers: a relay gets only its own keys and the CAs' public
halves, so a relay taken over can verify access but never grant it.

Private keys are 0600 and every directory 0700, whatever the umask: ssh-keygen creates files
with the process's umask, so each directory is made private before anything is written in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tether.errors import UsageError, describe
from tether.files import write_atomic, write_private
from tether.gateway import cas, keygen
from tether.gateway.cas import SIGNER_CERT_VALIDITY
from tether.gateway.names import SIGNER_PRINCIPAL
from tether.gateway.policy import EMPTY_POLICY


@dataclass(frozen=True)
class Gateway:
    """The files of the gateway at ``root``."""

    root: Path

    @property
    def user_ca(self) -> Path:
        """The user CA's key that signs now (its public half beside it, .pub)."""
        return cas.signing_key(self.root, "user")

    @property
    def host_ca(self) -> Path:
        """The host CA's key that signs now (its public half beside it, .pub)."""
        return cas.signing_key(self.root, "host")

    def trusted(self, kind: cas.Kind) -> list[str]:
        """The public keys of ``kind``'s CA trusted now: two during a rollover."""
        return cas.trusted_keys(self.root, kind)

    @property
    def signer_key(self) -> Path:
        return self.root / "signer" / "host_ed25519"

    @property
    def signer_certificate(self) -> Path:
        return self.root / "signer" / "host_ed25519-cert.pub"

    @property
    def signer_run(self) -> Path:
        """The signer's generated sshd files."""
        return self.root / "signer" / "run"

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"

    @property
    def serial(self) -> Path:
        return self.root / "serial"

    @property
    def revoked(self) -> Path:
        return self.root / "revoked.krl"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def enrolments(self) -> Path:
        return self.root / "enrolments"

    @property
    def relays(self) -> Path:
        return self.root / "relays"

    @property
    def status(self) -> Path:
        return self.root / "status"

    @classmethod
    def existing(cls, directory: Path) -> Gateway:
        """The gateway in ``directory``, which must be one (its policy and CAs are there)."""
        gateway = cls(Path(os.path.abspath(directory)))
        for needed in (gateway.policy, gateway.serial, gateway.user_ca, gateway.host_ca):
            if not needed.is_file():
                raise UsageError(
                    f"{directory}: not a gateway ({needed.name} is missing)",
                    hint="create one with: tether gateway init DIR",
                )
        return gateway


def init(directory: Path) -> Gateway:
    """Create a gateway in ``directory`` (made if missing; if it exists it must be empty)."""
    gateway = Gateway(Path(os.path.abspath(directory)))
    created = _private_directory(gateway.root)
    try:
        for sub in (gateway.root / "ca", gateway.signer_key.parent):
            _private_directory(sub)
        keygen.generate(cas.key_path(gateway.root, "user", 1), "tether-gateway-user-ca")
        keygen.generate(cas.key_path(gateway.root, "host", 1), "tether-gateway-host-ca")
        keygen.generate(gateway.signer_key, "tether-gateway-signer")
        keygen.sign(
            gateway.host_ca,
            gateway.signer_key.with_name(gateway.signer_key.name + ".pub"),
            key_id="signer",
            principals=[SIGNER_PRINCIPAL],
            validity=SIGNER_CERT_VALIDITY,
            serial=1,
            host=True,
        )
        write_atomic(gateway.policy, EMPTY_POLICY, 0o600)
        write_private(gateway.serial, "1\n")
        keygen.empty_revocations(gateway.revoked)
        for sub in (gateway.enrolments, gateway.relays, gateway.status):
            _private_directory(sub)
    except BaseException:
        _empty(gateway.root, remove_root=created)
        raise
    return gateway


def _private_directory(path: Path) -> bool:
    """Make ``path`` a private (0700) directory of this user; one that exists must be empty.
    Whether it was created."""
    created = True
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        created = False
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {describe(exc)}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{path}: not a directory of its own ({describe(exc)})") from None
    try:
        if os.fstat(fd).st_uid != os.getuid():
            raise UsageError(f"{path}: belongs to another user")
        if os.listdir(fd):
            raise UsageError(
                f"{path}: not empty; a gateway is created in a new or empty directory",
                hint="choose another directory; an existing gateway is never overwritten",
            )
        os.fchmod(fd, 0o700)  # mkdir's mode passed through the umask
    finally:
        os.close(fd)
    return created


def _empty(root: Path, *, remove_root: bool) -> None:
    """Undo a failed init: what it wrote below ``root`` (which was empty or new)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    if remove_root:
        os.rmdir(root)
