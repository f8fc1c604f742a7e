"""The OpenSSH engine in process, against the real sshd: its generated config, its private
directory, forwards, refusals, the master's loss, and what it leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, SilentServer
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import processes_with
from tests.support.waiting import wait_until
from tether.errors import (
    ConfigError,
    HostKeyError,
    TargetUnreachableError,
    TetherError,
    TransportUnreachableError,
)
from tether.spec import Endpoint, SshOptions, Via
from tether.transports import mux, openssh, sshexit
from tether.transports.openssh import OpenSshTransport, write_config
from tether.transports.workdir import Workdir


def transport(server: SshdServer, **options: object) -> OpenSshTransport:
    defaults: dict[str, object] = {
        "identity_files": (str(server.client_key),),
        "known_hosts": str(server.known_hosts),
        "ssh_config": str(server.ssh_config),
    }
    return OpenSshTransport(Via.parse(server.via), SshOptions(**{**defaults, **options}))  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


def test_the_control_path_reaches_ssh_as_it_is(tmp_path: Path) -> None:
    control = tmp_path / "t%h%%" / "control"
    ssh = OpenSshTransport(Via.parse("ssh://db"), SshOptions())
    argv = ssh.ssh_argv(tmp_path / "config", control)
    write_config(tmp_path / "config", SshOptions())
    done = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True, check=True)
    assert f"controlpath {control}" in done.stdout.splitlines()


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


async def test_a_master_that_forked_away_is_found_and_ended(shared_sshd: SshdServer) -> None:
    """The safety net under the pinned ForkAfterAuthentication: a master that is no longer
    tether's child (here, by -f on its command line, which beats any config) is found by its
    control socket when tether stops its own, and ended."""
    ssh = transport(shared_sshd)
    workdir = Workdir()
    control = workdir.path / "control"
    try:
        config = write_config(workdir.path / "config", ssh.options)
        argv = ssh.ssh_argv(config, control)
        master = openssh._Master([argv[0], "-f", *argv[1:]], control, None)
        await master.started()
        await wait_until(lambda: master._exited.is_set(), "the forking parent to exit")
        assert master.failure == 0  # it forked: its parent's work is done
        assert processes_with(str(control))  # the forked master serves the socket
        await master.stop()
        assert processes_with(str(control)) == []
    finally:
        for pid in processes_with(str(control)):
            os.kill(pid, signal.SIGKILL)
        workdir.remove()


async def test_a_control_socket_nobody_serves_is_left_alone(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(tmp_path / "control"))  # bound, never listening: a dead master's
        await openssh.end_stray_master(tmp_path / "control")
        await openssh.end_stray_master(tmp_path / "missing")


async def test_forwards_and_leaves_nothing_behind(
    shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    ssh = transport(shared_sshd)
    await ssh.connect()
    master = ssh._master
    assert master is not None and ssh._workdir is not None
    directory = ssh._workdir.path
    pid = master.process.pid
    here, there = socket.socketpair()
    with here, there:
        forwarding = await ssh.forward(Endpoint("127.0.0.1", echo_server.port), there)
        there.close()  # the master holds its own copy now
        loop = asyncio.get_running_loop()
        here.setblocking(False)
        await loop.sock_sendall(here, b"through the master")
        assert await asyncio.wait_for(loop.sock_recv(here, 100), 10) == b"through the master"
        here.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(loop.sock_recv(here, 100), 10) == b""  # the echo's EOF
        assert await asyncio.wait_for(forwarding.ended(), 10)  # by itself, not a death
        forwarding.close()
    await ssh.close()
    assert not alive(pid)
    assert not directory.exists()


async def test_a_forward_cut_by_the_masters_death_says_so(
    shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    ssh = transport(shared_sshd)
    await ssh.connect()
    try:
        assert ssh._master is not None
        here, there = socket.socketpair()
        with here, there:
            forwarding = await ssh.forward(Endpoint("127.0.0.1", echo_server.port), there)
            os.kill(ssh._master.process.pid, signal.SIGKILL)
            assert await asyncio.wait_for(forwarding.ended(), 10) is False
            forwarding.close()
    finally:
        await ssh.close()


async def test_a_refused_target_says_why(shared_sshd: SshdServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused
        ssh = transport(shared_sshd)
        await ssh.connect()
        try:
            with pytest.raises(TargetUnreachableError, match="Connection refused"):
                await ssh.probe(Endpoint("127.0.0.1", port))
            # The master is still up for the next connection.
            assert ssh._master is not None and ssh._master.failure is None
        finally:
            await ssh.close()


async def test_a_master_that_dies_is_reported_lost(shared_sshd: SshdServer) -> None:
    lost: list[str] = []
    ssh = transport(shared_sshd)
    await ssh.connect(on_lost=lost.append)
    try:
        assert ssh._master is not None
        os.kill(ssh._master.process.pid, signal.SIGKILL)
        await wait_until(lambda: bool(lost), "the loss to be reported")
    finally:
        await ssh.close()
    assert lost == ["ssh was killed by SIGKILL"]


async def test_a_stopped_master_is_killed_and_reported_lost(
    shared_sshd: SshdServer, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master that does not answer within the bound is lost: the forward fails at once
    with why, the master is killed (stopped as it is), and its death is the loss."""
    monkeypatch.setattr(mux, "MUX_ANSWER_TIMEOUT", 0.5, raising=False)
    lost: list[str] = []
    ssh = transport(shared_sshd)
    await ssh.connect(on_lost=lost.append)
    try:
        assert ssh._master is not None
        pid = ssh._master.process.pid
        os.kill(pid, signal.SIGSTOP)
        here, there = socket.socketpair()
        with here, there:
            target = Endpoint("127.0.0.1", echo_server.port)
            with pytest.raises(TransportUnreachableError, match=r"did not answer within 0\.5s"):
                await asyncio.wait_for(ssh.forward(target, there), 5)
        await wait_until(lambda: bool(lost), "the loss to be reported", 5)
        assert not alive(pid)
    finally:
        await ssh.close()
    assert lost == ["ssh master did not answer within 0.5s"]


async def test_a_stopped_master_is_closed_at_once(shared_sshd: SshdServer) -> None:
    """Closing does not wait out the kill's grace for a master that cannot act on SIGTERM."""
    ssh = transport(shared_sshd)
    await ssh.connect()
    assert ssh._master is not None
    pid = ssh._master.process.pid
    os.kill(pid, signal.SIGSTOP)
    began = asyncio.get_running_loop().time()
    await ssh.close()
    took = asyncio.get_running_loop().time() - began
    assert not alive(pid)
    assert took < openssh.STOP_GRACE / 2, f"closing a stopped master took {took:.2f}s"


async def test_a_failed_start_cleans_up(
    shared_sshd: SshdServer, tmp_path: Path, own_tempdir: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    ssh = transport(shared_sshd, known_hosts=str(empty))
    with pytest.raises(HostKeyError, match="SHA256:"):
        await ssh.connect()
    assert ssh._master is None
    assert list(own_tempdir.iterdir()) == []


async def test_authenticating_once_the_server_has_spoken(
    shared_sshd: SshdServer, silent_server: SilentServer
) -> None:
    phases: list[str] = []
    ssh = transport(shared_sshd)
    await ssh.connect(phases.append)
    await ssh.close()
    assert phases == ["authenticating"]
    # A server that accepts and never speaks: the master stays connecting.
    silent = OpenSshTransport(Via("ssh", "127.0.0.1", silent_server.port), SshOptions())
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await silent.connect(phases.append)
    finally:
        await silent.close()
    assert phases == ["authenticating"]
    await wait_until(lambda: silent_server.accepted == 1, "the master to have connected")


class _Told:
    """Stands in for PeerWatch: always gives the same answer."""

    answer: bool | None = None

    def __init__(self, pid: int) -> None:
        pass

    def heard(self) -> bool | None:
        return self.answer

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("answer", "silent_phases"), [(None, ["authenticating"]), (False, [])])
async def test_when_the_connection_cannot_be_seen(
    shared_sshd: SshdServer,
    silent_server: SilentServer,
    monkeypatch: pytest.MonkeyPatch,
    answer: bool | None,
    silent_phases: list[str],
) -> None:
    """Where the kernel cannot tell (None), "authenticating" comes at once, as it did before it
    could be seen; with no connection to see (False: behind a ProxyCommand), once logged in.
    Never an error, and never twice."""
    monkeypatch.setattr(_Told, "answer", answer)
    monkeypatch.setattr(openssh, "PeerWatch", _Told)
    phases: list[str] = []
    ssh = transport(shared_sshd)
    await ssh.connect(phases.append)
    await ssh.close()
    assert phases == ["authenticating"]
    phases.clear()
    silent = OpenSshTransport(Via("ssh", "127.0.0.1", silent_server.port), SshOptions())
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await silent.connect(phases.append)
    finally:
        await silent.close()
    assert phases == silent_phases


def test_openssh_is_found() -> None:
    """The suite runs the OpenSSH engine; a machine without ssh >= 7.6 must fail here, loudly."""
    assert shutil.which("ssh") is not None
    assert openssh.available(), openssh.openssh_version()


async def test_the_server_address_is_where_ssh_config_leads(tmp_path: Path) -> None:
    """What the outage watch connects to: ssh -G's HostName and Port; nothing behind a jump host
    or a ProxyCommand, where tether has no direct way to the server."""
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
        found = await OpenSshTransport(via, SshOptions(ssh_config=str(config))).server_address()
        assert found == address, host
