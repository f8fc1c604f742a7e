"""The OpenSSH master's generated config, read back by ssh itself (`ssh -G`): tether's settings
first, every value from a user as ssh reads it or refused, and no user's line that turns them
off."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tether.errors import ConfigError, TetherError
from tether.spec import SshOptions
from tether.transports import sshexit
from tether.transports.masterconfig import write_config


def test_tethers_settings_come_before_the_users_config(tmp_path: Path) -> None:
    """For ssh the first value wins: every setting tether relies on precedes the Include."""
    options = SshOptions(
        keepalive_interval=0.5,
        connect_timeout=2.5,
        identity_files=(str(tmp_path / "key"),),
        certificate_files=(str(tmp_path / "key.cert"),),
        ssh_config=str(tmp_path / "user config"),
    )
    path = write_config(tmp_path / "config", options)
    lines = [line.strip() for line in path.read_text().splitlines()]
    include = lines.index(f'Include "{tmp_path / "user config"}"')
    for setting in (
        "BatchMode yes",
        "StrictHostKeyChecking yes",
        "ControlMaster no",
        "ControlPersist no",
        "ClearAllForwardings yes",
        "ServerAliveInterval 1",  # whole seconds, rounded up: never 0, which would be off
        "ConnectTimeout 3",
        f'IdentityFile "{tmp_path / "key"}"',
        f'CertificateFile "{tmp_path / "key.cert"}"',
    ):
        assert lines.index(setting) < include, setting
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def resolved(config: Path, host: str = "db") -> dict[str, str]:
    """What ssh itself makes of a config for a host (`ssh -G`)."""
    done = subprocess.run(
        ["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True
    )
    return dict(line.partition(" ")[::2] for line in done.stdout.splitlines())


def test_the_users_config_cannot_turn_tethers_settings_off(tmp_path: Path) -> None:
    user = tmp_path / "user_config"
    user.write_text(
        "Host db\n  HostName 127.0.0.9\n  Port 2200\n  StrictHostKeyChecking no\n"
        "  BatchMode no\n  ControlMaster auto\n  ControlPersist 10m\n"
        "  ControlPath ~/.ssh/cm-%r@%h:%p\n  LocalForward 127.0.0.1:9999 db:5432\n"
    )
    config = write_config(tmp_path / "config", SshOptions(ssh_config=str(user)))
    seen = resolved(config)
    assert (seen["hostname"], seen["port"]) == ("127.0.0.9", "2200")  # the alias still applies
    assert seen["stricthostkeychecking"] == "true"
    assert seen["batchmode"] == "yes"
    assert seen["controlmaster"] == "false"
    assert seen.get("controlpath", "none") == "none"  # ssh -G omits an unset path
    assert seen["controlpersist"] == "no"
    assert seen["clearallforwardings"] == "yes"
    assert seen["ciphers"].startswith("aes128-gcm@openssh.com,")


def test_the_users_ciphers_win_over_tethers_preference(tmp_path: Path) -> None:
    user = tmp_path / "user_config"
    user.write_text("Ciphers chacha20-poly1305@openssh.com\n")
    config = write_config(tmp_path / "config", SshOptions(ssh_config=str(user)))
    assert resolved(config)["ciphers"] == "chacha20-poly1305@openssh.com"


def test_the_config_is_never_written_through_something_already_there(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "config").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_config(tmp_path / "config", SshOptions())
    assert not target.exists()


@pytest.mark.parametrize("name", ["/tmp/a\nb", "/tmp/a\rb", "/tmp/\x1b[2Jkh", "/tmp/a\x85b"])
def test_a_value_ssh_would_misread_is_refused(tmp_path: Path, name: str) -> None:
    """Even when no parser saw it first (SshOptions built by hand): the writer refuses."""
    with pytest.raises(TetherError, match="control character"):
        write_config(tmp_path / "config", SshOptions(known_hosts=name))
    assert not (tmp_path / "config").exists()


# Paths that ssh would read as something else if written as they are: %-tokens, its own
# escape, config quoting and backslashes, a comment sign, spaces.
ODD_NAMES = ["kh%h", "kh%%", "kh%C", 'a"b', "a'b", "trailing\\", "back\\slash", "sp ace #x"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_known_hosts_path_reaches_ssh_as_it_is(tmp_path: Path, name: str) -> None:
    known_hosts = str(tmp_path / name)
    config = write_config(tmp_path / "config", SshOptions(known_hosts=known_hosts))
    assert resolved(config)["userknownhostsfile"] == known_hosts  # ssh -G expands it


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_certificate_path_reaches_ssh_as_it_is(tmp_path: Path, name: str) -> None:
    """ssh -G leaves CertificateFile as written: expanded as ssh expands it when it opens it."""
    certificate = str(tmp_path / name)
    options = SshOptions(certificate_files=(certificate,))
    config = write_config(tmp_path / "config", options)
    assert sshexit._expanded(resolved(config)["certificatefile"], {}) == certificate


@pytest.mark.parametrize("name", ["id${HOME}", "${X}"])
def test_a_variable_ssh_would_expand_is_refused(tmp_path: Path, name: str) -> None:
    for options in (
        SshOptions(known_hosts=str(tmp_path / name)),
        SshOptions(identity_files=(str(tmp_path / name),)),
        SshOptions(certificate_files=(str(tmp_path / name),)),
    ):
        with pytest.raises(ConfigError, match="environment variable") as raised:
            write_config(tmp_path / "config", options)
        assert raised.value.exit_code == 2


@pytest.mark.parametrize("name", ["conf*", "conf?", "conf[x]", "conf\\", "conf%h", "c${HOME}"])
def test_the_users_config_is_included_as_it_is(tmp_path: Path, name: str) -> None:
    """Include globs: a decoy the pattern would match must not be read instead, or as well."""
    (tmp_path / name).write_text("Host db\n  HostName 127.0.0.7\n")
    for decoy in ("conf-", "confx", "c", "conf"):
        if decoy != name:
            (tmp_path / decoy).write_text("Host db\n  HostName 127.0.0.66\n  Port 66\n")
    config = write_config(tmp_path / "config", SshOptions(ssh_config=str(tmp_path / name)))
    seen = resolved(config)
    assert (seen["hostname"], seen["port"]) == ("127.0.0.7", "22")


# What a user's config sets (first) against each setting tether pins, and what ssh -G shows.
HOSTILE = [
    ("ForkAfterAuthentication yes", "forkafterauthentication", "no"),
    ("SessionType default", "sessiontype", "none"),
    ("StdinNull yes", "stdinnull", "no"),
    ("Tunnel yes", "tunnel", "false"),
    ("RequestTTY force", "requesttty", "false"),
    ("RemoteCommand sleep 600", "remotecommand", None),
    ("LocalCommand sleep 600", "localcommand", None),
    ("PermitLocalCommand yes", "permitlocalcommand", "no"),
    ("ForwardAgent yes", "forwardagent", "no"),
    ("ForwardX11 yes", "forwardx11", "no"),
    ("ForwardX11Trusted yes", "forwardx11trusted", "no"),
    ("GatewayPorts yes", "gatewayports", "no"),
    ("EscapeChar ~", "escapechar", "none"),
    ("AddKeysToAgent ask", "addkeystoagent", "false"),
    ("VisualHostKey yes", "visualhostkey", "no"),
    ("ExitOnForwardFailure no", "exitonforwardfailure", "yes"),
    ("ClearAllForwardings no", "clearallforwardings", "yes"),
    ("BatchMode no", "batchmode", "yes"),
    ("ControlMaster auto", "controlmaster", "false"),
    ("ControlPersist yes", "controlpersist", "no"),
]


@pytest.mark.parametrize(("line", "key", "value"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_setting_tether_pins_wins_over_the_users(
    tmp_path: Path, line: str, key: str, value: str | None
) -> None:
    user = tmp_path / "user_config"
    user.write_text(f"Host *\n  {line}\n")
    seen = resolved(write_config(tmp_path / "config", SshOptions(ssh_config=str(user))))
    assert seen.get(key) == value, seen.get(key)
