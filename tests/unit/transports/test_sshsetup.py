"""What both SSH engines check and say alike: ssh_config's owner and mode as ssh checks them, a
target the SSH server cannot resolve, a login without a key, a host certificate's CA; and where
ssh_config leads them."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from tether.errors import ConfigError
from tether.spec import Endpoint, SshOptions, Via
from tether.transports.asyncssh import AsyncSshTransport
from tether.transports.openssh import OpenSshTransport
from tether.transports.sshsetup import (
    KeyProblem,
    check_files,
    config_problem,
    login_refused,
    target_error,
)


def stat_of(mode: int, uid: int, gid: int) -> os.stat_result:
    """A stat result of a regular file with this mode and owner (no such file is needed)."""
    return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def test_config_problem_is_what_ssh_refuses() -> None:
    me = os.getuid()
    gid = os.getgid()
    assert config_problem(stat_of(0o600, me, gid), me) is None
    assert config_problem(stat_of(0o644, 0, 0), me) is None  # root's: ssh takes it
    assert config_problem(stat_of(0o644, me + 1, gid), me) == (
        f"owned by uid {me + 1}, neither you nor root"
    )
    assert config_problem(stat_of(0o606, me, gid), me) == "writable by every user (mode 0606)"


def test_a_group_may_write_it_only_when_the_owner_is_its_only_member() -> None:
    """Debian's ssh lets a user private group write a config (its only member is the owner):
    root's own group, on Debian; nogroup, which nobody and others have as theirs, is not
    root's alone."""
    nogroup = grp.getgrnam("nogroup").gr_gid
    assert pwd.getpwnam("nobody").pw_gid == nogroup
    assert config_problem(stat_of(0o664, 0, 0), 0) is None
    assert config_problem(stat_of(0o664, 0, nogroup), 0) == (
        "writable by group nogroup (mode 0664)"
    )


def test_check_files_refuses_a_world_writable_ssh_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("")
    config.chmod(0o646)
    with pytest.raises(ConfigError) as refused:
        check_files(SshOptions(ssh_config=str(config)))
    assert str(refused.value) == (
        f"ssh_config: bad owner or permissions on {config}: writable by every user (mode 0646) "
        f"(chmod go-w {config})"
    )
    config.chmod(0o600)
    check_files(SshOptions(ssh_config=str(config)))


def test_a_target_the_server_cannot_resolve() -> None:
    error = target_error(Endpoint("db.invalid", 5432), "ssh://b", "Name or service not known")
    assert error.kind == "unreachable" and error.exit_code == 6
    assert str(error) == (
        "cannot connect to db.invalid:5432 through ssh://b: the SSH server cannot resolve "
        "db.invalid: Name or service not known (check the name: the SSH server looks it up, "
        "so it must resolve there; try getent hosts db.invalid on the server)"
    )
    refused = target_error(Endpoint("db", 1), "ssh://b", "Connection refused", "refused")
    assert str(refused) == "cannot connect to db:1 through ssh://b: Connection refused"
    assert refused.kind == "refused" and refused.hint is None


def test_an_encrypted_key_outside_the_agent() -> None:
    error = login_refused("ssh://b", "Permission denied", "/k/my key", agent=True)
    assert error.exit_code == 5
    assert (
        error.hint
        == "load it into ssh-agent: ssh-add '/k/my key'; tether never prompts for a passphrase"
    )
    without = login_refused("ssh://b", "Permission denied", "/k/id", agent=False)
    assert without.hint is not None and 'eval "$(ssh-agent)" && ssh-add /k/id' in without.hint


def test_a_host_certificate_suggests_its_authority_not_the_bare_key() -> None:
    error = KeyProblem("unknown", "h", 2222, "/kh", "SHA256:k", authority="SHA256:ca").error()
    assert error.message == (
        "host key for [h]:2222 is not in /kh (server offers SHA256:k, with a host certificate "
        "signed by CA SHA256:ca)"
    )
    assert error.hint is not None and "ssh-keyscan" not in error.hint
    assert '@cert-authority [h]:2222 $(cat CA.pub)" >> /kh' in error.hint


@pytest.mark.parametrize("engine", [OpenSshTransport, AsyncSshTransport])
async def test_the_server_address_is_where_ssh_config_leads(
    tmp_path: Path, engine: type[OpenSshTransport | AsyncSshTransport]
) -> None:
    """What the outage watch connects to, as each engine reads ssh_config (the OpenSSH engine
    asks `ssh -G`): HostName and Port; nothing behind a jump host or a ProxyCommand, where
    tether has no direct way to the server."""
    config = tmp_path / "config"
    config.write_text(
        "Host alias\n  HostName 127.0.0.2\n  Port 2222\n"
        "Host jumped\n  ProxyJump alias\n"
        "Host piped\n  ProxyCommand nc %h %p\n"
    )
    for host, address in (
        ("alias", ("127.0.0.2", 2222)),
        ("plain.example", ("plain.example", 22)),
        ("jumped", None),
        ("piped", None),
    ):
        via = Via.parse(f"ssh://{host}")
        found = await engine(via, SshOptions(ssh_config=str(config))).server_address()
        assert found == address, host
