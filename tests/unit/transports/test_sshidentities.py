"""Which keys and certificates a login offers, in OpenSSH's order, and what signs for each: the
plan the asyncssh engine logs in with and both engines explain a refusal from."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from tests.support.sshd_server import keygen
from tether.transports.sshidentities import AgentKey, plan, read_key_file


def blob(path: Path) -> bytes:
    return base64.b64decode(path.read_text().split()[1])


def public(key: Path) -> bytes:
    return blob(Path(f"{key}.pub"))


def sign(authority: Path, key: Path, *options: str, to: Path | None = None) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(authority), "-I", "t", "-n", "root", *options, f"{key}.pub"],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    made = Path(f"{key}-cert.pub")
    if to is not None:
        made.rename(to)
        return to
    return made


def encrypt(key: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-N", "words", "-f", str(key)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return key


def agent_of(*blobs: bytes) -> list[AgentKey]:
    return [AgentKey(i, b, f"agent key {i}") for i, b in enumerate(blobs)]


def test_openssh_order(tmp_path: Path) -> None:
    """CertificateFile first, then the agent's keys that an IdentityFile names, the agent's
    others, and last the files' own keys."""
    ca = keygen(tmp_path / "ca")
    a, b, c = (keygen(tmp_path / name) for name in ("a", "b", "c"))
    c_cert = sign(ca, c, to=tmp_path / "elsewhere.pub")
    stray = keygen(tmp_path / "stray")
    found = plan([str(a), str(b)], [str(c_cert)], agent_of(public(stray), public(b), public(c)))
    offered = [(i.source, i.certificate is not None, i.agent is not None) for i in found.identities]
    assert offered == [
        (str(c_cert), True, True),  # the agent holds c: it signs for the certificate
        (str(b), False, True),
        ("ssh-agent", False, True),  # stray
        ("ssh-agent", False, True),  # c itself
        (str(a), False, False),
    ]
    assert [o.source for o in found.offered] == [str(c_cert)]
    assert found.offered[0].missing is None


def test_a_certificate_beside_each_key_unless_a_certificate_file_is_set(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca")
    key = keygen(tmp_path / "key")
    beside = sign(ca, key)
    found = plan([str(key)], [], [])
    assert [(i.source, i.key_file is not None) for i in found.identities] == [
        (str(key), True),
        (str(beside), True),  # signed for by the key file beside it
    ]
    assert found.identities[1].blob == blob(beside)
    # Any CertificateFile, even one that is missing, and ssh no longer looks beside the keys.
    found = plan([str(key)], [str(tmp_path / "missing-cert.pub")], [])
    assert [i.source for i in found.identities] == [str(key)] and not found.offered


def test_the_agent_signs_for_a_certificate_of_an_encrypted_key(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca")
    key = keygen(tmp_path / "key")
    beside = sign(ca, key)
    encrypt(key)
    found = plan([str(key)], [], agent_of(public(key)))
    (identity,) = [i for i in found.identities if i.certificate is not None]
    assert identity.source == str(beside) and identity.agent is not None
    # Without the agent, nothing can sign: ssh would prompt, and tether never does.
    found = plan([str(key)], [], [])
    assert not found.identities
    (offered,) = found.offered
    assert offered.missing == f"its key {key} is encrypted and not in ssh-agent"
    assert offered.fix == f"load the key into ssh-agent: ssh-add {key}"


def test_a_certificate_of_another_key_is_not_offered(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca")
    key, other = keygen(tmp_path / "key"), keygen(tmp_path / "other")
    sign(ca, other, to=tmp_path / "key-cert.pub")
    found = plan([str(key)], [], [])
    assert [i.source for i in found.identities] == [str(key)]  # the key alone
    (offered,) = found.offered
    assert offered.missing == f"neither {key} nor ssh-agent holds the key it certifies"


def test_identities_only(tmp_path: Path) -> None:
    """Only the agent's keys that an IdentityFile names: one that only a certificate names
    cannot sign for it (as ssh does it)."""
    ca = keygen(tmp_path / "ca")
    key, stray, held = (keygen(tmp_path / name) for name in ("key", "stray", "held"))
    cert = sign(ca, held, to=tmp_path / "held.cert")
    agent = agent_of(public(stray), public(key), public(held))
    found = plan([str(key)], [str(cert)], agent, identities_only=True)
    assert [(i.source, i.agent is not None) for i in found.identities] == [(str(key), True)]
    (offered,) = found.offered
    assert offered.missing is not None and "IdentitiesOnly" in offered.missing
    # Naming the key's public half is enough.
    found = plan([str(key), f"{held}.pub"], [str(cert)], agent, identities_only=True)
    assert found.identities[0].source == str(cert) and found.offered[0].missing is None


def test_certificates_held_by_the_agent(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca")
    key = keygen(tmp_path / "key")
    user = blob(sign(ca, key))
    host = blob(sign(ca, keygen(tmp_path / "host"), "-h"))
    found = plan([], [], agent_of(host, user, public(key)))
    assert [(i.source, i.certificate is not None) for i in found.identities] == [
        ("ssh-agent", True),  # the host certificate is not offered
        ("ssh-agent", False),
    ]
    assert [o.certificate.blob for o in found.offered] == [user]


def test_what_a_key_file_tells_without_its_passphrase(tmp_path: Path) -> None:
    key = keygen(tmp_path / "key")
    expected = public(key)
    plain = read_key_file(str(key))
    assert plain is not None and plain.usable and plain.public == expected
    Path(f"{key}.pub").unlink()
    encrypt(key)
    locked = read_key_file(str(key))  # the OpenSSH format keeps the public key in the clear
    assert locked is not None and locked.encrypted and not locked.usable
    assert locked.public == expected
    pem = tmp_path / "pem"
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", "rsa", "-b", "2048", "-m", "PEM", "-f", str(pem)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    Path(f"{pem}.pub").unlink()
    found = read_key_file(str(pem))
    assert found is not None and found.usable and found.public is None  # known once opened
    encrypt(pem)
    found = read_key_file(str(pem))
    assert found is not None and found.encrypted
    only_public = tmp_path / "public-only.pub"
    only_public.write_text(f"ssh-ed25519 {base64.b64encode(expected).decode()} x\n")
    found = read_key_file(str(only_public))
    assert found is not None and not found.private and found.public == expected
    assert read_key_file(str(tmp_path / "missing")) is None
