"""`tether gateway init`: what it writes, with which modes, and what it refuses."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tether.errors import UsageError
from tether.gateway import layout
from tether.gateway.names import SIGNER_PRINCIPAL
from tether.gateway.policy import load


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_init_writes_private_keys_a_certified_signer_and_an_empty_policy(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a common umask: what init writes must not depend on it
    try:
        gateway = layout.init(tmp_path / "gw")
    finally:
        os.umask(old)
    private = (gateway.root, gateway.user_ca.parent, gateway.signer_key.parent, gateway.relays)
    for directory in private:
        assert mode(directory) == 0o700, directory
    for secret in (gateway.user_ca, gateway.host_ca, gateway.signer_key, gateway.policy):
        assert mode(secret) == 0o600, secret
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(gateway.signer_certificate)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "host certificate" in shown
    # The signer's certificate passes for a signer only: never for a relay or a site.
    assert shown.split("Principals:")[1].split()[0] == SIGNER_PRINCIPAL
    ca_key = Path(f"{gateway.host_ca}.pub").read_text().split()[1]
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{gateway.host_ca}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert ca_key and f"Signing CA: ED25519 {fingerprint}" in shown
    policy = load(gateway.policy)
    assert (policy.users, policy.sites, policy.grants, policy.relays) == ({}, {}, (), {})


def test_init_takes_an_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    layout.init(empty)
    assert mode(empty) == 0o700
    assert (empty / "policy.toml").is_file()


@pytest.mark.parametrize("what", ["a file", "a gateway", "a symlink"])
def test_init_never_overwrites(tmp_path: Path, what: str) -> None:
    target = tmp_path / "gw"
    if what == "a file":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    elif what == "a gateway":
        layout.init(target)
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    contents = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UsageError):
        layout.init(target)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == contents


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_init_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """What init wrote goes; a directory that was there (empty) stays, a new one goes."""
    target = tmp_path / "gw"
    if existing:
        target.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # ssh-keygen cannot be found
    with pytest.raises(UsageError, match="ssh-keygen not found"):
        layout.init(target)
    assert target.exists() == existing
    assert not existing or list(target.iterdir()) == []
