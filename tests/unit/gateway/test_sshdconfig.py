"""The relay's generated sshd config: accepted by sshd itself, and no value can add a line."""

from __future__ import annotations

import pwd
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.sshd_server import require_sshd
from tether.errors import UsageError
from tether.gateway import layout
from tether.gateway.sshdconfig import relay_principals, signer_keys, site_principals, sshd_config
from tether.spec import Endpoint


ANNOUNCE = ["/usr/bin/python3", "-m", "tether", "gateway", "announce", "/gw"]


def config_for(gateway: layout.Gateway, tmp_path: Path, **changes: object) -> str:
    fields: dict[str, object] = {
        "listen": Endpoint("127.0.0.1", 2222),
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "host_key": gateway.signer_key,
        "host_certificate": gateway.signer_certificate,
        "user_ca": Path(f"{gateway.user_ca}.pub"),
        "principals": tmp_path / "principals",
        **changes,
    }
    return sshd_config(**fields)  # type: ignore[arg-type]


def test_sshd_accepts_the_config(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    config = tmp_path / "sshd_config"
    config.write_text(config_for(gateway, tmp_path))
    (tmp_path / "principals").write_text(relay_principals({"lab": 40001}, ANNOUNCE))
    checked = subprocess.run(
        [require_sshd(), "-t", "-f", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    shown = subprocess.run(
        [require_sshd(), "-T", "-f", str(config), "-C", "user=x,host=h,addr=127.0.0.1"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for line in (
        "permittty no",
        "x11forwarding no",
        "allowagentforwarding no",
        "permittunnel no",
        "allowstreamlocalforwarding no",
        "passwordauthentication no",
        "authorizedkeysfile none",
        "clientaliveinterval 5",
        # A burst of logins (a relay restarted under thousands of tunnels) is mostly let in.
        "maxstartups 200:30:1000",
        "logingracetime 20",
        "maxsessions 10",  # sshd's default: it does not count forwarded channels
    ):
        assert line in shown, line


def test_each_site_scopes_its_agent_and_its_clients() -> None:
    lines = relay_principals({"lab": 40001, "edge": 40002}, ANNOUNCE).splitlines()
    assert (
        "restrict,command=\"'/usr/bin/python3' '-m' 'tether' 'gateway' 'announce' '/gw' 'lab'\","
        'port-forwarding,permitlisten="127.0.0.1:40001",permitopen="nowhere.invalid:1" site:lab'
    ) in lines
    no_shell = 'restrict,command="/bin/false",port-forwarding'
    assert f'{no_shell},permitopen="127.0.0.1:40001" via:lab' in lines
    assert f'{no_shell},permitopen="127.0.0.1:40002" via:edge' in lines
    assert all(line.startswith(("#", "restrict,")) for line in lines)


@pytest.mark.parametrize(
    "changes",
    [
        {"user": "root\nPermitRootLogin yes"},
        {"user": "-oFoo"},
        {"principals": Path('/tmp/a"b')},
        {"host_key": Path("/tmp/key\nPasswordAuthentication yes")},
    ],
)
def test_a_hostile_value_adds_no_line(tmp_path: Path, changes: dict[str, object]) -> None:
    gateway = layout.Gateway(tmp_path)
    with pytest.raises(UsageError):
        config_for(gateway, tmp_path, **changes)


@pytest.mark.parametrize("sites", [{"lab\nx": 1}, {"Lab": 1}, {"lab": 0}, {"lab": 70000}])
def test_a_bad_site_is_refused(sites: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        relay_principals(sites, ANNOUNCE)


def test_a_sites_clients_open_their_target_only() -> None:
    lines = site_principals(
        "lab", {"db": Endpoint("db.internal", 5432), "v6": Endpoint("fd00::5", 80)}
    ).splitlines()
    assert (
        'restrict,command="/bin/false",port-forwarding,permitopen="db.internal:5432",'
        'permitlisten="nowhere.invalid:1" target:lab/db'
    ) in lines
    assert any('permitopen="[fd00::5]:80"' in line for line in lines)
    with pytest.raises(UsageError):
        site_principals("lab", {"db": Endpoint('h" x', 1)})


def test_a_users_key_may_only_ask_for_a_certificate() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQ6EOaTwWyasL+lWPWkjnlX2ZShGJsW+DQHtxY2MAHM"
    lines = signer_keys({"alice": key}, ["/usr/bin/python3", "-m", "tether"]).splitlines()
    assert lines[1] == f"restrict,command=\"'/usr/bin/python3' '-m' 'tether' 'alice'\" {key}"
    for hostile in (['/a"b'], ["/a'b"], ["/a$(x)"], ["/a\nb"]):
        with pytest.raises(UsageError):
            signer_keys({"alice": key}, hostile)
