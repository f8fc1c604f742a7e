"""The user's OpenSSH setup through real sshd, with each engine: a Host alias on another port,
a jump host, user and host certificates, keys in an agent, and a config of the user's own that
must not interfere with tether's."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, SilentServer, echo_once
from tests.support.sshd_server import SshdServer, certify, keygen, require_sshd
from tests.support.systemd import NotifySocket
from tests.support.tether_process import TetherProcess, TetherRunner, processes_with
from tests.support.waiting import wait_until_sync

THROUGH = b"through the tunnel"


def start(tether: TetherRunner, *args: str, env: dict[str, str] | None = None) -> TetherProcess:
    process = tether.spawn("start", *args, "--json", env=env)
    process.json_line()
    return process


def config_file(path: Path, hosts: dict[str, list[str]]) -> Path:
    """An ssh_config with one Host block per alias."""
    path.write_text(
        "".join(
            f"Host {alias}\n" + "".join(f"  {line}\n" for line in lines)
            for alias, lines in hosts.items()
        )
    )
    path.chmod(0o600)
    return path


def host_lines(server: SshdServer, key: Path, known_hosts: Path) -> list[str]:
    return [
        f"HostName {server.host}",
        f"Port {server.port}",
        f"User {server.user}",
        f"IdentityFile {key}",
        f"UserKnownHostsFile {known_hosts}",
        "IdentitiesOnly yes",
    ]


def test_an_alias_brings_its_port_user_key_and_known_hosts(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    # The fixture's config: Host tether-test, on the server's own port (not 22).
    process = start(
        tether,
        "--to",
        echo_server.address,
        "--via",
        "ssh://tether-test",
        "--ssh-config",
        str(sshd.ssh_config),
        "--engine",
        str(sshd.engine),
    )
    (entry,) = tether.list_json()
    assert entry["via"] == "ssh://tether-test" and entry["engine"] == sshd.engine
    assert echo_once(entry["local_port"], THROUGH) == THROUGH
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0


def test_a_host_key_hint_names_the_real_host_and_port(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = config_file(
        tmp_path / "config", {"db-bastion": host_lines(sshd, sshd.client_key, empty)}
    )
    code, _, err = tether.run(
        "start",
        "--to",
        echo_server.address,
        "--via",
        "ssh://db-bastion",
        "--ssh-config",
        str(config),
        "--engine",
        str(sshd.engine),
    )
    assert code == 5, err
    assert f"host key for [127.0.0.1]:{sshd.port} is not in {empty}" in err
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in err
    assert "SHA256:" in err


@pytest.fixture
def jump_pair(tmp_path: Path) -> Iterator[tuple[SshdServer, SshdServer]]:
    """Two sshd: the jump host, and the host behind it."""
    require_sshd()
    with SshdServer(tmp_path / "jump") as jump, SshdServer(tmp_path / "inner") as inner:
        yield jump, inner


def test_a_jump_host(
    tether: TetherRunner,
    jump_pair: tuple[SshdServer, SshdServer],
    echo_server: EchoServer,
    engine: str,
    tmp_path: Path,
) -> None:
    jump, inner = jump_pair
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(jump.known_hosts.read_text() + inner.known_hosts.read_text())
    config = config_file(
        tmp_path / "config",
        {
            "jump": host_lines(jump, jump.client_key, known_hosts),
            "inner": [*host_lines(inner, inner.client_key, known_hosts), "ProxyJump jump"],
        },
    )
    flags = ["--via", "ssh://inner", "--ssh-config", str(config), "--engine", engine]
    with NotifySocket(str(tmp_path / "notify")) as notify:
        env = {"NOTIFY_SOCKET": notify.env}
        process = start(tether, "--to", echo_server.address, *flags, env=env)
        ready = notify.until(lambda n: n.text.startswith("READY=1"), "READY=1")
    # The jump host's login is part of connecting; then the inner host's own.
    assert [n.text for n in ready[:-1]] == [
        "STATUS=binding the local port",
        "STATUS=connecting to ssh://inner",
        "STATUS=authenticating to ssh://inner",
        f"STATUS=probing {echo_server.address}",
    ]
    (entry,) = tether.list_json()
    assert echo_once(entry["local_port"], THROUGH) == THROUGH
    # tether was told of the inner host only: the jump host's login came from ProxyJump.
    assert "Accepted publickey" in jump.log_path.read_text()
    assert "Accepted publickey" in inner.log_path.read_text()
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    # With the jump host's key unknown, the error and its hint name the jump host, with either
    # engine (asyncssh checks the hop against the known_hosts that ssh_config gives it).
    known_hosts.write_text(inner.known_hosts.read_text())
    code, _, err = tether.run("start", "--to", echo_server.address, *flags)
    assert code == 5, err
    assert f"host key for jump host [127.0.0.1]:{jump.port} is not in {known_hosts}" in err
    assert f"ssh-keyscan -p {jump.port} 127.0.0.1 >> {known_hosts}" in err


def test_a_silent_server_behind_a_jump_host(
    tether: TetherRunner, own_sshd: SshdServer, silent_server: SilentServer, tmp_path: Path
) -> None:
    """Behind a jump host the OpenSSH master has no TCP connection of its own to watch: it is
    "connecting" until logged in, so a silent server shows as one, with either engine."""
    config = config_file(
        tmp_path / "config",
        {
            "jump": host_lines(own_sshd, own_sshd.client_key, own_sshd.known_hosts),
            "silent": [
                "HostName 127.0.0.1",
                f"Port {silent_server.port}",
                f"UserKnownHostsFile {own_sshd.known_hosts}",
                "ProxyJump jump",
            ],
        },
    )
    assert own_sshd.engine is not None
    code, _, err = tether.run(
        "start",
        "--to",
        "127.0.0.1:1",
        *("--via", "ssh://silent", "--ssh-config", str(config), "--engine", own_sshd.engine),
        *("--timeout", "3"),
    )
    assert code == 7, err
    assert "tunnel not ready after 3s (still connecting)" in err
    # Through the jump host: it got that far.
    wait_until_sync(lambda: silent_server.accepted == 1, "the jump host to have connected")
    assert "Accepted publickey" in own_sshd.log_path.read_text()


def test_user_and_host_certificates(
    tether: TetherRunner, echo_server: EchoServer, engine: str, tmp_path: Path
) -> None:
    require_sshd()
    user_ca = keygen(tmp_path / "user_ca")
    host_ca = keygen(tmp_path / "host_ca")
    server_dir = tmp_path / "sshd"
    server_dir.mkdir()
    host_key = keygen(server_dir / "host_ed25519")
    host_cert = certify(host_ca, host_key, identity="host", principals="127.0.0.1", host=True)
    options = (f"TrustedUserCAKeys {user_ca}.pub", f"HostCertificate {host_cert}")
    with SshdServer(server_dir, options=options) as server:
        user_key = keygen(tmp_path / "user_key")  # not in authorized_keys: only its certificate
        certify(user_ca, user_key, identity="tester", principals=server.user, host=False)
        known_hosts = tmp_path / "known_hosts"  # no key of the server's: only its authority
        known_hosts.write_text(f"@cert-authority * {Path(f'{host_ca}.pub').read_text()}")
        process = start(
            tether,
            "--to",
            echo_server.address,
            "--via",
            server.via,
            "-i",
            str(user_key),
            "--known-hosts",
            str(known_hosts),
            "--engine",
            engine,
        )
        (entry,) = tether.list_json()
        assert echo_once(entry["local_port"], THROUGH) == THROUGH
        assert "ED25519-CERT" in server.log_path.read_text()  # the user logged in by certificate
        process.send_signal(signal.SIGTERM)
        assert process.finish() == 0


def test_the_users_own_multiplexing_and_forwards_do_not_interfere(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        forward_port = probe.getsockname()[1]
    control = tmp_path / "cm"
    config = config_file(
        tmp_path / "config",
        {
            "shared": [
                *host_lines(sshd, sshd.client_key, sshd.known_hosts),
                "ControlMaster auto",
                f"ControlPath {control}-%C",
                "ControlPersist 10m",
                f"LocalForward 127.0.0.1:{forward_port} {echo_server.address}",
            ]
        },
    )
    process = start(
        tether,
        "--to",
        echo_server.address,
        "--via",
        "ssh://shared",
        "--ssh-config",
        str(config),
        "--engine",
        str(sshd.engine),
    )
    (entry,) = tether.list_json()
    assert echo_once(entry["local_port"], THROUGH) == THROUGH
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", forward_port))  # the user's LocalForward was not bound
    assert not list(tmp_path.glob("cm-*"))  # and the user's ControlPath was not used
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    assert not processes_with(str(control))  # nothing of ssh persists


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A running ssh-agent holding an encrypted key: (its socket, the key)."""
    key = tmp_path / "encrypted_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret words", "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_until_sync(sock.exists, "the agent's socket")
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho 'secret words'\n")
        askpass.chmod(0o700)
        env = {
            **os.environ,
            "SSH_AUTH_SOCK": str(sock),
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": "none",
        }
        subprocess.run(
            ["ssh-add", str(key)],
            env=env,
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        yield sock, key
    finally:
        agent.terminate()
        agent.wait()


def test_an_encrypted_key_held_by_the_agent(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer, agent: tuple[Path, Path]
) -> None:
    sock, key = agent
    with open(own_sshd.directory / "authorized_keys", "a") as authorized:
        authorized.write(Path(f"{key}.pub").read_text())
    flags = [
        "--to",
        echo_server.address,
        "--via",
        own_sshd.via,
        "-i",
        str(key),
        "--known-hosts",
        str(own_sshd.known_hosts),
        "--engine",
        str(own_sshd.engine),
    ]
    process = start(tether, *flags, env={"SSH_AUTH_SOCK": str(sock)})
    (entry,) = tether.list_json()
    assert echo_once(entry["local_port"], THROUGH) == THROUGH
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    # Without the agent, nothing prompts for the passphrase: the login fails at once.
    code, _, err = tether.run("start", *flags)
    assert code == 5 and "tether never prompts" in err


@pytest.mark.needs_root
def test_an_unresolvable_ssh_server(tether: TetherRunner, engine: str) -> None:
    """In a network namespace of its own, with no route anywhere, no lookup leaves the host.

    It needs root: in a user namespace (what an unprivileged unshare makes) the directories
    that root owns show up owned by nobody, and tether rightly refuses a registry inside them."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare is needed"
    argv = [unshare, "--net", *tether.command("start", "--to", "127.0.0.1:1")]
    argv += ["--via", "ssh://no-such-host.invalid", "--engine", engine]
    done = subprocess.run(argv, env=tether.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done.stderr
    assert "cannot resolve SSH server no-such-host.invalid" in done.stderr
