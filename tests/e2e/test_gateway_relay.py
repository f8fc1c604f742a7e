"""A relay's sshd, as tether generates it, against real OpenSSH clients: each certificate can do
exactly what its principal says and nothing else, and clients check the relay's host key
through the gateway's host CA."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, free_port
from tests.support.sshd_server import require_sshd, stop_tree
from tests.support.strict_dirs import strict_tmp
from tests.support.waiting import wait_until_sync
from tether.gateway import keygen, layout
from tether.gateway.names import RELAY_PRINCIPAL
from tether.gateway.relayconfig import principals_file, sshd_config
from tether.spec import Endpoint

@dataclass
class Relay:
    gateway: layout.Gateway
    port: int
    site_port: int
    user: str
    known_hosts: Path
    work: Path

    def argv(self, key: Path) -> list[str]:
        """ssh to the relay with ``key`` (and its KEY-cert.pub), checking the relay's host
        certificate against the gateway's host CA only; the host argument is the caller's."""
        options = {
            "CertificateFile": f"{key}-cert.pub",
            "IdentitiesOnly": "yes",
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "HostKeyAlias": RELAY_PRINCIPAL,
            "ExitOnForwardFailure": "yes",
        }
        argv = ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(self.port), "-l", self.user]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return argv

    def ssh(self, key: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv(key), *args], input=stdin, capture_output=True, text=True, timeout=20
        )


def certified(relay: Relay, name: str, principals: list[str], validity: str = "+5m") -> Path:
    key = keygen.generate(relay.work / name, name)
    keygen.sign(
        relay.gateway.user_ca,
        relay.work / f"{name}.pub",
        key_id=name,
        principals=principals,
        validity=validity,
        serial=7,
    )
    return key


@pytest.fixture
def relay() -> Iterator[Relay]:
    with strict_tmp() as work:
        yield from _relay(work)


def _relay(tmp_path: Path) -> Iterator[Relay]:
    gateway = layout.init(tmp_path / "gw")
    user = pwd.getpwuid(os.getuid()).pw_name
    port, site_port = free_port(), free_port()
    config = tmp_path / "sshd_config"
    principals = tmp_path / "principals"
    principals.write_text(principals_file({"lab": site_port}))
    principals.chmod(0o600)
    config.write_text(
        sshd_config(
            listen=Endpoint("127.0.0.1", port),
            user=user,
            host_key=gateway.relay_key,
            host_certificate=gateway.relay_certificate,
            user_ca=Path(f"{gateway.user_ca}.pub"),
            principals=principals,
        )
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    known_hosts = tmp_path / "known_hosts"
    ca = Path(f"{gateway.host_ca}.pub").read_text().strip()
    known_hosts.write_text(f"@cert-authority {RELAY_PRINCIPAL} {ca}\n")
    log = open(tmp_path / "sshd.log", "wb")
    proc = subprocess.Popen(
        [require_sshd(), "-D", "-e", "-f", str(config)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until_sync(lambda: _answers(port) or proc.poll() is not None, "the relay to listen")
        assert proc.poll() is None, (tmp_path / "sshd.log").read_text()
        yield Relay(gateway, port, site_port, user, known_hosts, tmp_path)
    finally:
        for pid in stop_tree(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        log.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


@pytest.fixture
def agent_serving(relay: Relay, echo_server: EchoServer) -> Iterator[Path]:
    """An agent of site lab listening on its endpoint, forwarding to the echo server."""
    agent = certified(relay, "agent", ["site:lab"])
    forward = f"127.0.0.1:{relay.site_port}:{echo_server.address}"
    proc = subprocess.Popen(
        [*relay.argv(agent), "-N", "-R", forward, "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_sync(
            lambda: _listens(relay.site_port) or proc.poll() is not None, "the agent's endpoint"
        )
        if proc.poll() is not None:
            assert proc.stderr is not None
            said = proc.stderr.read()
            log = (relay.work / "sshd.log").read_text()
            raise AssertionError(f"the agent's ssh -R failed: {said}\nsshd: {log}")
        yield agent
    finally:
        proc.terminate()
        proc.wait()


def test_a_client_reaches_its_site_through_the_agent(relay: Relay, agent_serving: Path) -> None:
    client = certified(relay, "client", ["via:lab"])
    done = relay.ssh(client, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1", stdin="hello\n")
    assert done.stdout == "hello\n", done.stderr


def test_a_client_opens_nothing_but_its_sites_endpoint(
    relay: Relay, agent_serving: Path, echo_server: EchoServer
) -> None:
    client = certified(relay, "client", ["via:lab"])
    for target in (echo_server.address, f"127.0.0.1:{relay.port}"):
        done = relay.ssh(client, "-W", target, "127.0.0.1", stdin="hello\n")
        assert done.returncode != 0 and done.stdout == "", target
        assert "administratively prohibited" in done.stderr, done.stderr


def test_an_agent_listens_nowhere_else_and_opens_nothing(
    relay: Relay, echo_server: EchoServer
) -> None:
    agent = certified(relay, "agent", ["site:lab"])
    other = free_port()
    done = relay.ssh(agent, "-N", "-R", f"127.0.0.1:{other}:{echo_server.address}", "127.0.0.1")
    assert done.returncode != 0 and not _listens(other), done.stderr
    done = relay.ssh(agent, "-W", echo_server.address, "127.0.0.1", stdin="x")
    assert done.returncode != 0 and done.stdout == ""


def test_another_sites_agent_cannot_take_the_endpoint(
    relay: Relay, echo_server: EchoServer
) -> None:
    intruder = certified(relay, "intruder", ["site:edge"])
    forward = f"127.0.0.1:{relay.site_port}:{echo_server.address}"
    done = relay.ssh(intruder, "-N", "-R", forward, "127.0.0.1")
    assert done.returncode != 0 and not _listens(relay.site_port), done.stderr


@pytest.mark.parametrize("args", [["true"], ["-t", "sh"]], ids=["command", "pty"])
def test_no_certificate_gets_a_shell(relay: Relay, args: list[str]) -> None:
    for key in (certified(relay, "agent", ["site:lab"]), certified(relay, "client", ["via:lab"])):
        done = relay.ssh(key, *args, "127.0.0.1")
        assert done.returncode != 0, (key, done.stdout)


def test_refused_without_a_known_principal_or_in_date_certificate(relay: Relay) -> None:
    for key in (
        certified(relay, "nobody", ["site:other", "lab"]),
        certified(relay, "expired", ["via:lab"], validity="-10m:-5m"),
    ):
        done = relay.ssh(key, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1")
        assert "Permission denied" in done.stderr, (key, done.stderr)
    plain = keygen.generate(relay.work / "plain", "plain")  # a key with no certificate
    done = relay.ssh(plain, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1")
    assert "Permission denied" in done.stderr, done.stderr


def test_a_relay_outside_the_gateway_is_not_trusted(relay: Relay, tmp_path: Path) -> None:
    """The same address with another host CA's certificate: refused, never trusted on first use."""
    other = layout.init(tmp_path / "other")
    ca = Path(f"{other.host_ca}.pub").read_text().strip()
    relay.known_hosts.write_text(f"@cert-authority {RELAY_PRINCIPAL} {ca}\n")
    client = certified(relay, "client", ["via:lab"])
    done = relay.ssh(client, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1")
    assert done.returncode == 255 and "Host key verification failed" in done.stderr, done.stderr


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
