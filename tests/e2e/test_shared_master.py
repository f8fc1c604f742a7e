"""Tunnels through one SSH server share one OpenSSH master (one login), and only safely: against
a real sshd, whose log counts the logins."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer, require_sshd
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync
from tether.transports import mux


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SshdServer]:
    """An sshd of this test's own: its log holds this test's logins only."""
    require_sshd()
    with SshdServer(tmp_path / "sshd", engine="openssh") as sshd:
        yield sshd


def logins(sshd: SshdServer) -> int:
    return sshd.log_path.read_text(errors="replace").count("Accepted publickey")


def start(tether: TetherRunner, *args: str) -> dict[str, object]:
    code, out, err = tether.run("start", *args, "--background", "--json")
    assert code == 0, err
    return dict(json.loads(out))


def echoes(port: object) -> bool:
    with socket.create_connection(("127.0.0.1", int(str(port))), timeout=10) as sock:
        sock.sendall(b"ping")
        return sock.recv(4) == b"ping"


def listed(tether: TetherRunner) -> dict[str, dict[str, object]]:
    return {str(entry["name"]): entry for entry in tether.list_json()}


def master_pids(sshd: SshdServer) -> list[int]:
    """The live `ssh -M` processes that log in to ``sshd``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and b"-M" in argv and str(sshd.port).encode() in argv:
            found.append(int(entry.name))
    return found


def nofile(pid: int) -> tuple[str, str]:
    """The soft and hard limits on open files of process ``pid``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError(f"no open-file limit for {pid}")


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_tunnels_through_one_server_log_in_once(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer
) -> None:
    flags = ["--to", echo_server.address, *server.tether_flags()]
    first = start(tether, *flags, "--name", "a")
    second = start(tether, *flags, "--name", "b")
    assert echoes(first["local_port"]) and echoes(second["local_port"])
    assert logins(server) == 1
    (master,) = master_pids(server)
    # It carries a socket per connection of every tunnel: its descriptor limit is raised.
    soft, hard = nofile(master)
    assert soft == hard
    # The master is no tunnel's child: it must outlive the one that started it.
    assert Path(f"/proc/{master}/stat").read_text().rpartition(")")[2].split()[1] != str(
        first["pid"]
    )
    entries = listed(tether)
    assert entries["a"]["ssh_master"] == entries["b"]["ssh_master"]
    assert isinstance(entries["a"]["ssh_master"], str)
    code, table, _ = tether.run("list")
    assert code == 0 and table.count(f"[master {entries['a']['ssh_master']}]") == 2

    # The first tunnel's end leaves the second's master (and its forwards) alone.
    code, _, err = tether.run("stop", "a")
    assert code == 0, err
    assert echoes(second["local_port"]) and master_pids(server) == [master]
    assert logins(server) == 1


def test_different_ssh_options_never_share(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    flags = ["--to", echo_server.address, *server.tether_flags()]
    other_hosts = tmp_path / "known_hosts_copy"
    shutil.copy(server.known_hosts, other_hosts)
    start(tether, *flags, "--name", "plain")
    start(tether, *flags, "--name", "keepalive", "--keepalive-interval", "7s")
    start(tether, *flags, "--name", "hosts", "--known-hosts", str(other_hosts))
    start(tether, *flags, "--name", "own", "--no-share-master")
    assert logins(server) == 4
    masters = [entry["ssh_master"] for entry in listed(tether).values()]
    assert len(set(masters)) == 4 and masters.count(None) == 1
    assert len(master_pids(server)) == 4


def test_a_lost_shared_master_reconnects_every_tunnel_on_it(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer
) -> None:
    flags = ["--to", echo_server.address, *server.tether_flags()]
    tunnels = [start(tether, *flags, "--name", name) for name in ("a", "b", "c")]
    (master,) = master_pids(server)
    os.kill(master, signal.SIGKILL)

    def all_back() -> bool:
        entries = listed(tether).values()
        return all(e["state"] == "ready" and e["reconnects"] == 1 for e in entries)

    wait_until_sync(all_back, "every tunnel to reconnect", deadline=30)
    assert all(echoes(tunnel["local_port"]) for tunnel in tunnels)
    (again,) = master_pids(server)  # they met on one new master: one login, not three
    assert again != master and logins(server) == 2
    assert len({entry["ssh_master"] for entry in listed(tether).values()}) == 1


def test_no_master_outlives_its_tunnels_and_linger_even_after_sigkill(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer
) -> None:
    flags = ["--to", echo_server.address, *server.tether_flags(), "--master-linger", "2s"]
    tunnels = [start(tether, *flags, "--name", name) for name in ("a", "b")]
    (master,) = master_pids(server)
    os.kill(int(str(tunnels[0]["pid"])), signal.SIGKILL)
    assert echoes(tunnels[1]["local_port"])  # one tunnel left: the master stays
    os.kill(int(str(tunnels[1]["pid"])), signal.SIGKILL)
    # Nothing of tether's is left to end it: ssh's ControlPersist does, after the linger.
    wait_until_sync(lambda: not alive(master), "the master to end after its linger", 2 + 8)
    assert not master_pids(server)


def test_a_run_loop_logs_in_once_and_stop_all_ends_the_lingering_master(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer
) -> None:
    flags = ["--to", echo_server.address, *server.tether_flags()]
    for _ in range(3):
        code, _, err = tether.run("start", *flags, "--run", "true")
        assert code == 0, err
    assert logins(server) == 1
    (master,) = master_pids(server)  # lingering, for the next
    code, _, err = tether.run("stop", "--all")
    assert code == 0, err
    wait_until_sync(lambda: not alive(master), "stop --all to end the idle master")


@pytest.mark.needs_root
def test_another_user_cannot_use_the_master(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer
) -> None:
    """The directory keeps others out; and were it opened, ssh itself refuses them."""
    start(tether, "--to", echo_server.address, *server.tether_flags())
    (master,) = master_pids(server)
    argv = Path(f"/proc/{master}/cmdline").read_bytes().split(b"\0")
    control = Path(os.fsdecode(argv[argv.index(b"-S") + 1]))
    assert control.parent.stat().st_mode & 0o777 == 0o700
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(5)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('denied'); sys.exit()\n"
        "try:\n"
        "    s.sendall(bytes.fromhex(sys.argv[2]))\n"
        "    print('answered' if s.recv(100) else 'closed')\n"
        "except (ConnectionResetError, BrokenPipeError):\n"
        "    print('closed')\n"
    )
    hello = (mux.HELLO + mux._packet(mux.MUX_C_ALIVE_CHECK, mux._u32(1))).hex()

    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    def as_nobody(path: Path, user: list[str] = nobody) -> str:
        done = subprocess.run(
            [*user, "/usr/bin/python3", "-c", script, str(path), hello],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout.strip() or done.stderr

    assert as_nobody(control) == "denied"
    # Were the socket open to all (a hard link in a directory anyone may enter, mode 0777),
    # ssh checks the peer's uid itself: it closes the connection without an answer.
    open_dir = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(open_dir, 0o711)
        os.link(control, open_dir / "control")
        os.chmod(open_dir / "control", 0o777)
        assert as_nobody(open_dir / "control") == "closed"
        assert as_nobody(open_dir / "control", user=[]) == "answered"  # the same, as its user
    finally:
        os.chmod(control, 0o600)
        shutil.rmtree(open_dir)
    (entry,) = tether.list_json()
    assert entry["state"] == "ready" and echoes(entry["local_port"])


def test_a_stopped_shared_master_is_killed_and_every_tunnel_on_it_recovers(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer
) -> None:
    """A master that does not answer (SIGSTOP) is lost for all: the tunnel whose client waited
    on it kills it, and each tunnel on it reconnects to one new master."""
    flags = ["--to", echo_server.address, *server.tether_flags()]
    tunnels = [start(tether, *flags, "--name", name) for name in ("a", "b")]
    (master,) = master_pids(server)
    os.kill(master, signal.SIGSTOP)
    with socket.create_connection(("127.0.0.1", int(str(tunnels[0]["local_port"]))), 30) as sock:
        sock.sendall(b"x")
        sock.settimeout(mux.MUX_ANSWER_TIMEOUT + 10)
        try:
            assert sock.recv(1) == b""  # reset or closed: never an answer, never left waiting
        except ConnectionResetError:
            pass
    wait_until_sync(lambda: not alive(master), "the stopped master to be killed")

    def all_back() -> bool:
        entries = listed(tether).values()
        return all(e["state"] == "ready" and e["reconnects"] == 1 for e in entries)

    wait_until_sync(all_back, "both tunnels to reconnect", deadline=30)
    assert listed(tether)["a"]["last_error"] == (
        f"ssh master did not answer within {mux.MUX_ANSWER_TIMEOUT:g}s"
    )
    assert all(echoes(tunnel["local_port"]) for tunnel in tunnels)
    (again,) = master_pids(server)
    assert again != master and logins(server) == 2


def test_a_stopped_idle_master_is_replaced_not_left_behind(
    tether: TetherRunner, server: SshdServer, echo_server: EchoServer
) -> None:
    """A lingering master that no tunnel holds and that does not answer (SIGSTOP: its linger
    cannot end it) is killed by the next start, which logs in anew."""
    flags = ["--to", echo_server.address, *server.tether_flags(), "--master-linger", "60s"]
    start(tether, *flags, "--name", "a")
    (master,) = master_pids(server)
    code, _, err = tether.run("stop", "a")
    assert code == 0, err
    os.kill(master, signal.SIGSTOP)
    second = start(tether, *flags, "--name", "b")
    assert echoes(second["local_port"])
    wait_until_sync(lambda: not alive(master), "the stopped master to be killed")
    assert master_pids(server) != [master] and logins(server) == 2
