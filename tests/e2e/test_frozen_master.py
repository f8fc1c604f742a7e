"""A stopped (SIGSTOP) OpenSSH master, against the real `tether` and sshd: the tether process
stays responsive (list, stop, signals), a client waiting on the master is reset within
MUX_ANSWER_TIMEOUT, and the master is killed and replaced, never left behind."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.support.servers import EchoServer, echo_once
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherProcess, TetherRunner
from tests.support.waiting import wait_until_sync
from tether.transports.mux import MUX_ANSWER_TIMEOUT

# More clients than the master's control socket has backlog (ssh listens with 64): once it is
# full, a blocking connect to it waits in the kernel until the master accepts.
CLIENTS = 80
LIVE = ("ready", "reconnecting")
SLACK = 5.0  # what a loaded machine may add to a bound


def start(tether: TetherRunner, shared_sshd: SshdServer, target: str) -> TetherProcess:
    sshd = shared_sshd.through("openssh")
    # A master of the tunnel's own: these tests find it as the tunnel's child.
    flags = [*sshd.tether_flags(), "--no-share-master"]
    return tether.spawn("start", "--to", target, *flags, "--json", "--backoff-initial", "100ms")


def status(tether: TetherRunner) -> dict[str, Any]:
    (entry,) = tether.list_json()
    return entry


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # [state, ppid, ...]


def masters_of(pid: int) -> list[int]:
    """The tether process's OpenSSH masters: its children running `ssh ... -M`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if fields and int(fields[1]) == pid and b"-M" in argv and b"ssh" in argv[0]:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    fields = _stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def freeze_master(process: TetherProcess) -> int:
    (master,) = masters_of(process.pid)
    os.kill(master, signal.SIGSTOP)
    wait_until_sync(lambda: (_stat(master) or ["?"])[0] == "T", "the master to stop")
    return master


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def clients(process: TetherProcess, port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to the tunnel, each with a byte sent for the master to carry;
    once tether has accepted them all (its descriptors say so: `list` might not answer)."""
    before = open_fds(process.pid)
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(b"x")
            socks.append(sock)
        wait_until_sync(
            lambda: open_fds(process.pid) >= before + count, "tether to accept every client"
        )
        yield socks


def ended(sock: socket.socket) -> bool:
    """Whether the tunnel has ended this connection (a reset, or an EOF) by now."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_list_and_stop_answer_while_the_master_is_stopped(
    tether: TetherRunner, shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    process = start(tether, shared_sshd, echo_server.address)
    info = process.json_line()
    master = freeze_master(process)
    with clients(process, info["local_port"], CLIENTS) as socks:
        began = time.monotonic()
        assert status(tether)["state"] in LIVE
        assert time.monotonic() - began < 3  # an answer, not the 0.5 s wait for an unresponsive one
        began = time.monotonic()
        code, _, err = tether.run("stop", info["id"], deadline=30)
        assert code == 0, err
        assert time.monotonic() - began < MUX_ANSWER_TIMEOUT + SLACK
        assert all(ended(sock) for sock in socks)
    assert process.finish(deadline=10) == 0
    assert gone(master)  # killed, not left stopped
    assert tether.list_json() == []


def test_sigterm_ends_tether_while_the_master_is_stopped(
    tether: TetherRunner, shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    process = start(tether, shared_sshd, echo_server.address)
    info = process.json_line()
    master = freeze_master(process)
    with clients(process, info["local_port"], CLIENTS):
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.finish(deadline=MUX_ANSWER_TIMEOUT + 2 * SLACK) == 0
        assert time.monotonic() - began < MUX_ANSWER_TIMEOUT + SLACK
    assert gone(master)
    assert tether.list_json() == []


def test_a_client_of_a_stopped_master_is_reset_and_the_tunnel_recovers(
    tether: TetherRunner, shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    process = start(tether, shared_sshd, echo_server.address)
    info = process.json_line()
    port = info["local_port"]
    master = freeze_master(process)
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=MUX_ANSWER_TIMEOUT + SLACK) as sock:
        sock.sendall(b"x")
        assert ended(sock)  # a socket timeout here (the client left waiting) fails the test
    waited = time.monotonic() - began
    assert MUX_ANSWER_TIMEOUT - 0.5 < waited < MUX_ANSWER_TIMEOUT + SLACK
    wait_until_sync(lambda: gone(master), "the stopped master to be killed", SLACK)
    wait_until_sync(lambda: status(tether)["reconnects"] >= 1, "the tunnel to reconnect", 30)
    entry = status(tether)
    assert entry["state"] == "ready"
    assert entry["last_error"] == f"ssh master did not answer within {MUX_ANSWER_TIMEOUT:g}s"
    assert echo_once(port, b"served again") == b"served again"
    (new_master,) = masters_of(process.pid)
    assert new_master != master
