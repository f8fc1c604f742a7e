"""A shared master's login begun before the event loop: taken over by the engine, and killed,
its lock let go, when no tunnel takes it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, SilentServer
from tests.support.sshd_server import SshdServer
from tests.support.waiting import wait_until_sync
from tether import masters
from tether.spec import Endpoint, SshOptions, TunnelSpec, Via
from tether.transports import prelogin
from tether.transports.openssh import OpenSshTransport


@pytest.fixture
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A short registry directory (its masters' sockets fit in it), whose masters are ended
    after the test."""
    path = tmp_path_factory.mktemp("run") / "r"
    path.mkdir(mode=0o700)
    yield path
    prelogin.abandon()
    masters.end_all(masters.place(path))


def logins(server: SshdServer) -> int:
    return server.log_path.read_text(errors="replace").count("Accepted publickey")


def lock_is_free(runtime: Path) -> bool:
    locks = list(masters.place(runtime).glob("*.lock"))
    assert len(locks) == 1
    fd = os.open(locks[0], os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


async def test_the_engine_takes_over_a_begun_login_and_logs_in_once(
    shared_sshd: SshdServer, echo_server: EchoServer, runtime: Path
) -> None:
    via, options = Via.parse(shared_sshd.via), shared_sshd.ssh_options()
    spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port), via=via, ssh=options)
    before = logins(shared_sshd)
    prelogin.begin([spec], runtime)
    assert len(prelogin._begun) == 1 and len(prelogin._asked) == 1
    assert not lock_is_free(runtime)  # held while the login goes on
    first = OpenSshTransport(via, options)
    first.runtime = runtime
    await first.connect()
    try:
        assert first.shared_master is not None
        assert not prelogin._begun and not prelogin._asked  # taken, and ssh -G's answer too
        assert logins(shared_sshd) == before + 1
        assert lock_is_free(runtime)
        # The next start finds the master running: nothing to begin, but ssh -G's answer is
        # kept for its engine, which leases the same master.
        prelogin.begin([spec], runtime)
        assert not prelogin._begun and len(prelogin._asked) == 1
        second = OpenSshTransport(via, options)
        second.runtime = runtime
        await second.connect()
        assert second.shared_master == first.shared_master and not prelogin._asked
        await second.close()
        assert logins(shared_sshd) == before + 1
    finally:
        await first.close()


async def test_the_engine_finds_the_begun_login_even_if_a_file_changed_meanwhile(
    shared_sshd: SshdServer, echo_server: EchoServer, runtime: Path, tmp_path: Path
) -> None:
    """The key counts the state of known_hosts; the engine takes the key the start made, so
    an edit in between does not strand the begun login (and its lock) beside a new one."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_bytes(shared_sshd.known_hosts.read_bytes())
    via = Via.parse(shared_sshd.via)
    options = shared_sshd.ssh_options(known_hosts=str(known_hosts))
    spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port), via=via, ssh=options)
    before = logins(shared_sshd)
    prelogin.begin([spec], runtime)
    assert len(prelogin._begun) == 1
    with known_hosts.open("a") as edited:
        edited.write("\n")
    ssh = OpenSshTransport(via, options)
    ssh.runtime = runtime
    await ssh.connect()
    try:
        assert not prelogin._begun
        assert logins(shared_sshd) == before + 1
    finally:
        await ssh.close()


def test_a_login_no_tunnel_took_is_killed_and_its_lock_let_go(
    silent_server: SilentServer, tmp_path: Path, runtime: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    via = Via.parse(f"ssh://u@127.0.0.1:{silent_server.port}")
    spec = TunnelSpec(
        target=Endpoint("127.0.0.1", 1), via=via, ssh=SshOptions(known_hosts=str(known_hosts))
    )
    prelogin.begin([spec], runtime)
    (begun,) = prelogin._begun.values()
    # Until its exec has set up its arguments, the new process has no command line to find.
    found = lambda: masters.serving([begun.paths.control]) == [begun.pid]  # noqa: E731
    wait_until_sync(found, "the begun ssh among the processes")
    prelogin.abandon()
    assert masters.serving([begun.paths.control]) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(begun.pid, os.WNOHANG)  # reaped
    assert lock_is_free(runtime)


def test_nothing_is_begun_where_the_engine_would_not_share(
    silent_server: SilentServer, tmp_path: Path, runtime: Path
) -> None:
    via = Via.parse(f"ssh://u@127.0.0.1:{silent_server.port}")
    target = Endpoint("127.0.0.1", 1)
    prelogin.begin(
        [
            TunnelSpec(target=target),  # direct
            TunnelSpec(target=target, via=via, ssh=SshOptions(share_master=False)),
            TunnelSpec(target=target, via=via, ssh=SshOptions(engine="asyncssh")),
            # A key file that is not there: the engine says so (exit 2), and nothing logs in.
            TunnelSpec(
                target=target, via=via, ssh=SshOptions(identity_files=(str(tmp_path / "no"),))
            ),
        ],
        runtime,
    )
    assert not prelogin._begun
    assert masters.running(masters.place(runtime)) == []
