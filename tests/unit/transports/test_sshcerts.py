"""OpenSSH certificates read without a library: what ssh-keygen wrote is what tether reads, and a
refused certificate is explained by the first thing wrong with it."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from tests.support.sshd_server import keygen
from tether.errors import AuthenticationError
from tether.transports import sshcerts
from tether.transports.sshcerts import FOREVER, Certificate, Offered


def sign(authority: Path, key: Path, *options: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(authority), "-I", "ops-42", *options, f"{key}.pub"],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return Path(f"{key}-cert.pub")


def fingerprint(public_key: Path) -> str:
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return listed.split()[1]


def certificate(**changes: object) -> Certificate:
    fields: dict[str, object] = {
        "blob": b"",
        "algorithm": "ssh-ed25519-cert-v01@openssh.com",
        "key": b"k",
        "user": True,
        "key_id": "ops-42",
        "principals": ("deploy",),
        "valid_after": 0,
        "valid_before": FOREVER,
        "authority": "SHA256:ca",
    }
    return Certificate(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_what_ssh_keygen_signs_is_read_back(tmp_path: Path, kind: str) -> None:
    authority = keygen(tmp_path / "ca")
    key = tmp_path / f"id_{kind}"
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", kind, "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    path = sign(authority, key, "-n", "deploy,root", "-V", "20300101000000:20300102000000")
    cert = sshcerts.read(path)
    assert cert is not None
    assert cert.algorithm.startswith(path.read_text().split()[0])
    assert cert.key == base64.b64decode(Path(f"{key}.pub").read_text().split()[1])
    assert cert.blob == base64.b64decode(path.read_text().split()[1])
    assert cert.user and cert.key_id == "ops-42" and cert.principals == ("deploy", "root")
    # ssh-keygen reads -V in local time: the window is a day long, whatever the zone.
    assert cert.valid_before - cert.valid_after == 86400
    assert cert.authority == fingerprint(Path(f"{authority}.pub"))


def test_a_host_certificate_and_a_certificate_for_anyone(tmp_path: Path) -> None:
    authority = keygen(tmp_path / "ca")
    host = sshcerts.read(sign(authority, keygen(tmp_path / "host"), "-h", "-n", "db"))
    anyone = sshcerts.read(sign(authority, keygen(tmp_path / "user")))
    assert host is not None and not host.user
    assert anyone is not None and anyone.principals == () and anyone.valid_before == FOREVER
    assert anyone.problem("root") is None  # no principals: the server's rules decide


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMdwGqXkTFJxN1ovyG4o0nBZ5u5JQvm4mzl7wz1gg0Aq x\n",
        b"ssh-ed25519-cert-v01@openssh.com not-base64!\n",
        b"ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t\n",
    ],
    ids=["empty", "a plain key", "not base64", "truncated"],
)
def test_what_is_not_a_certificate_is_none(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "x-cert.pub"
    path.write_bytes(text)
    assert sshcerts.read(path) is None
    assert sshcerts.read(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"user": False}, "is a host certificate"),
        ({"valid_after": 2_000}, "is not valid before 1970-01-01 00:33:20 UTC"),
        ({"valid_before": 500}, "expired at 1970-01-01 00:08:20 UTC"),
        ({"principals": ("deploy", "ops")}, "is for deploy, ops, not for user root"),
        (
            {"principals": tuple(f"p{i}" for i in range(7))},
            "is for p0, p1, p2, p3, p4 and 2 more, not for user root",
        ),
    ],
)
def test_what_makes_a_server_refuse_a_certificate(changes: dict[str, object], words: str) -> None:
    found = certificate(**changes).problem("root", now=1_000)
    assert found is not None and found[0] == words


def test_a_good_certificate_has_no_problem() -> None:
    assert certificate(principals=("root",), valid_before=2_000).problem("root", 1_000) is None
    assert certificate(principals=("root",), valid_before=1_000).problem("root", 1_000)


def test_a_refusal_names_the_first_certificate_with_a_problem() -> None:
    good = Offered("/k/good-cert.pub", certificate(principals=("root",)))
    keyless = Offered("/k/keyless-cert.pub", certificate(principals=("root",)), "no key here")
    expired = Offered("/k/old-cert.pub", certificate(principals=("root",), valid_before=1))
    error = sshcerts.refusal("ssh://db", [good, keyless, expired], "root")
    assert isinstance(error, AuthenticationError) and error.exit_code == 5
    assert error.message.startswith(
        "SSH authentication to ssh://db failed: certificate /k/old-cert.pub expired at 1970-"
    )
    error = sshcerts.refusal("ssh://db", [good, keyless], "root")
    assert error is not None
    assert error.message.endswith("certificate /k/keyless-cert.pub cannot be used: no key here")
    error = sshcerts.refusal("ssh://db", [good], "root")
    assert error is not None and "the server refused certificate /k/good-cert.pub" in error.message
    assert "signed by CA SHA256:ca" in error.message and "TrustedUserCAKeys" in str(error)
    assert sshcerts.refusal("ssh://db", [], "root") is None


def test_a_certificate_of_the_agent_is_named_by_its_key_id() -> None:
    held = Offered("ssh-agent", certificate(key_id="ops\x1b[2J", valid_before=1))
    error = sshcerts.refusal("ssh://db", [held], "root")
    assert error is not None
    assert "certificate 'ops\\x1b[2J' in ssh-agent expired" in error.message
