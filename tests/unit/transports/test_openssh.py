"""The OpenSSH engine in process, against the real sshd: its command line, its private
directory, forwards, refusals, the master's loss, and what it leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, SilentServer
from tests.support.sshd_server import SshdServer
from tests.support.waiting import wait_until
from tether.errors import (
    HostKeyError,
    TargetUnreachableError,
    TransportUnreachableError,
)
from tether.spec import Endpoint, SshOptions, Via
from tether.transports import master, masterconfig, mux, openssh
from tether.transports.master import Master
from tether.transports.masterconfig import write_config
from tether.transports.openssh import OpenSshTransport


def transport(server: SshdServer, **options: object) -> OpenSshTransport:
    return OpenSshTransport(Via.parse(server.via), server.ssh_options(**options))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_control_path_reaches_ssh_as_it_is(tmp_path: Path) -> None:
    control = tmp_path / "t%h%%" / "control"
    ssh = OpenSshTransport(Via.parse("ssh://db"), SshOptions())
    argv = ssh.ssh_argv(tmp_path / "config", control)
    write_config(tmp_path / "config", SshOptions())
    done = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True, check=True)
    assert f"controlpath {control}" in done.stdout.splitlines()


async def test_forwards_and_leaves_nothing_behind(
    shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    ssh = transport(shared_sshd)
    await ssh.connect()
    master = ssh._master
    assert isinstance(master, Master) and ssh._workdir is not None
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
        assert isinstance(ssh._master, master.Master)  # a bare transport's own
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
        assert isinstance(ssh._master, master.Master)  # a bare transport's own
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
        assert isinstance(ssh._master, master.Master)  # a bare transport's own
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
    assert isinstance(ssh._master, master.Master)  # a bare transport's own
    pid = ssh._master.process.pid
    os.kill(pid, signal.SIGSTOP)
    began = asyncio.get_running_loop().time()
    await ssh.close()
    took = asyncio.get_running_loop().time() - began
    assert not alive(pid)
    assert took < master.STOP_GRACE / 2, f"closing a stopped master took {took:.2f}s"


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
    monkeypatch.setattr(master, "PeerWatch", _Told)
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
    assert openssh.available(), masterconfig.openssh_version()
