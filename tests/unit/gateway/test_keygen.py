"""ssh-keygen as the gateway drives it: what a certificate holds, and values refused first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tether.errors import UsageError
from tether.gateway import keygen


def test_a_user_certificate_holds_what_was_asked(tmp_path: Path) -> None:
    ca = keygen.generate(tmp_path / "ca", "ca")
    user = keygen.generate(tmp_path / "user", "alice")
    cert = keygen.sign(
        ca,
        tmp_path / "user.pub",
        key_id="alice@lab/db",
        principals=["target:lab/db"],
        validity="+5m",
        serial=42,
    )
    assert cert == tmp_path / "user-cert.pub" and user.exists()
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True
    ).stdout
    assert "user certificate" in shown
    assert 'Key ID: "alice@lab/db"' in shown and "Serial: 42" in shown
    assert shown.split("Principals:")[1].split()[0] == "target:lab/db"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_id", "a b"),
        ("key_id", "-O force-command=x"),
        ("principals", ["a,b"]),
        ("principals", ["a\nb"]),
        ("principals", []),
        ("validity", "+5m -O x"),
        ("serial", -1),
    ],
)
def test_a_hostile_value_never_reaches_ssh_keygen(
    tmp_path: Path, field: str, value: object
) -> None:
    ca = keygen.generate(tmp_path / "ca", "ca")
    keygen.generate(tmp_path / "user", "u")
    fields: dict[str, object] = {
        "key_id": "u",
        "principals": ["p"],
        "validity": "+5m",
        "serial": 1,
        field: value,
    }
    with pytest.raises(UsageError):
        keygen.sign(ca, tmp_path / "user.pub", **fields)  # type: ignore[arg-type]
    assert not (tmp_path / "user-cert.pub").exists()


def test_a_key_is_never_written_over(tmp_path: Path) -> None:
    keygen.generate(tmp_path / "k", "k")
    before = (tmp_path / "k").read_bytes()
    with pytest.raises(UsageError, match="exists already"):
        keygen.generate(tmp_path / "k", "k")
    assert (tmp_path / "k").read_bytes() == before
