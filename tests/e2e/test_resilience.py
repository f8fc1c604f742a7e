"""Fault injection against the real sshd: restarts, freezes, loss, target outages, load, drain,
lifetime bounds. Every wait has a deadline; figures go to the end-of-run summary."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.servers import BlastServer, EchoServer, echo_once
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherProcess, TetherRunner
from tests.support.waiting import wait_until_sync

FAST_RECONNECT = ("--backoff-initial", "100ms", "--backoff-max", "500ms")


def start(tether: TetherRunner, sshd: SshdServer, target: str, *extra: str) -> TetherProcess:
    return tether.spawn("start", "--to", target, *sshd.tether_flags(), "--json", *extra)


def status(tether: TetherRunner) -> dict[str, Any]:
    (entry,) = tether.list_json()
    return entry


class Prober(threading.Thread):
    """Connects every 50 ms and waits for an echo; records refusals, resets and waits."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.running = True
        self.refused = 0
        self.reset = 0
        self.answered = 0
        self.waits: list[float] = []

    def run(self) -> None:
        while self.running:
            began = time.monotonic()
            try:
                if echo_once(self.port, b"probe") == b"probe":
                    self.answered += 1
                    self.waits.append(time.monotonic() - began)
            except ConnectionRefusedError:
                self.refused += 1
            except OSError:  # reset, broken pipe, ENOTCONN from shutdown(): any drop counts
                self.reset += 1
            left = 0.05 - (time.monotonic() - began)
            if left > 0:
                time.sleep(left)  # pacing the probes, not synchronising on anything


def test_sshd_restart_keeps_the_port_open(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer, figures: dict[str, str]
) -> None:
    # Held for as long as it takes, so that a reset counts a connection cut, not one held past
    # --hold (the hold has tests of its own: test_outage.py).
    info = start(
        tether, own_sshd, echo_server.address, *FAST_RECONNECT, "--hold", "30"
    ).json_line()
    port = info["local_port"]
    prober = Prober(port)
    prober.start()
    wait_until_sync(lambda: prober.answered >= 3, "probes before the restart")
    own_sshd.restart()
    wait_until_sync(lambda: status(tether)["reconnects"] >= 1, "the tunnel to reconnect", 30)
    answered = prober.answered
    wait_until_sync(lambda: prober.answered >= answered + 3, "probes after the restart")
    prober.running = False
    prober.join(30)
    assert prober.refused == 0
    assert prober.reset <= 1  # at most the one connection open at the instant sshd died
    assert status(tether)["state"] == "ready"
    payload = os.urandom(200_000)
    assert echo_once(port, payload) == payload
    figures["longest wait of a local connection during the sshd restart"] = (
        f"{max(prober.waits):.3f} s over {len(prober.waits)} probes, 0 refused"
    )


def test_frozen_sshd_is_detected_within_the_keepalive_bound(
    tether: TetherRunner,
    own_sshd: SshdServer,
    echo_server: EchoServer,
    figures: dict[str, str],
) -> None:
    interval, count = 1, 2
    bound = interval * (count + 1)
    process = start(
        tether,
        own_sshd,
        echo_server.address,
        "--keepalive-interval",
        str(interval),
        "--keepalive-count",
        str(count),
    )
    process.json_line()
    own_sshd.freeze()
    frozen_at = time.monotonic()
    seen: dict[str, Any] = {}

    def lost() -> bool:
        seen.update(status(tether))
        return bool(seen["state"] == "reconnecting")

    try:
        # Timed on the tunnel's own word, as it says it: polling `list` would add a Python
        # start or two of a loaded machine to the figure.
        process.wait_stderr("transport lost", deadline=bound + 2)
        detected = time.monotonic() - frozen_at
        wait_until_sync(lost, "`list` to show the loss")
    finally:
        own_sshd.thaw()
    assert detected <= bound + 1  # the bound, plus what ssh takes to give up and exit
    assert seen["last_error"] == "Server not responding to keepalive"
    figures["frozen-peer detection (interval 1 s, count 2, bound 3 s)"] = f"{detected:.2f} s"


def test_sshd_gone_for_good_foreground(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "t.pid"
    process = start(
        tether,
        own_sshd,
        echo_server.address,
        "--max-retries",
        "2",
        "--pid-file",
        str(pid_file),
        *FAST_RECONNECT,
    )
    process.json_line()
    own_sshd.stop()
    assert process.finish() == 10
    assert "transport lost after 2 reconnect attempt(s)" in process.stderr
    assert tether.list_json() == []
    assert not pid_file.exists()


def test_sshd_gone_for_good_run_mode(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    started, got = tmp_path / "started", tmp_path / "got-sigterm"
    script = (
        "import pathlib, signal, sys, time\n"
        "def on_term(signum, frame):\n"
        f"    pathlib.Path({str(got)!r}).write_text('yes')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"pathlib.Path({str(started)!r}).write_text('yes')\n"
        "time.sleep(120)\n"
    )
    process = tether.spawn(
        "start",
        "--to",
        echo_server.address,
        *own_sshd.tether_flags(),
        "--max-retries",
        "2",
        *FAST_RECONNECT,
        "--",
        sys.executable,
        "-c",
        script,
    )
    wait_until_sync(started.exists, "the command to start")
    own_sshd.stop()
    assert process.finish() == 10
    assert got.read_text() == "yes"
    assert tether.list_json() == []


def test_target_down_then_back(tether: TetherRunner, sshd: SshdServer) -> None:
    target = EchoServer()
    target.__enter__()
    target_port = target.port
    info = start(tether, sshd, target.address).json_line()
    port = info["local_port"]
    assert echo_once(port, b"up") == b"up"
    target.close()
    began = time.monotonic()
    try:
        reply = echo_once(port, b"anyone?", timeout=10)
    except ConnectionResetError:
        reply = b""
    assert reply == b"" and time.monotonic() - began < 5  # closed promptly, not left hanging
    entry = status(tether)
    assert entry["state"] == "ready" and "cannot connect" in entry["last_error"]
    with EchoServer(port=target_port):
        assert echo_once(port, b"back") == b"back"


async def _echo_client(port: int, size: int) -> bool:
    payload = os.urandom(size)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    digest = hashlib.sha256()
    received = 0
    while chunk := await reader.read(1 << 20):
        digest.update(chunk)
        received += len(chunk)
    writer.close()
    return received == size and digest.digest() == hashlib.sha256(payload).digest()


def test_200_concurrent_connections_1mb_each_way(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    port = start(tether, sshd, echo_server.address).json_line()["local_port"]

    async def run() -> list[bool]:
        clients = (_echo_client(port, 1_000_000) for _ in range(200))
        return await asyncio.wait_for(asyncio.gather(*clients), 120)

    assert all(asyncio.run(run()))
    wait_until_sync(lambda: status(tether)["connections_active"] == 0, "every relay to close")
    assert status(tether)["connections_total"] == 200


def test_a_client_that_never_reads_stalls_nobody(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    port = start(tether, sshd, echo_server.address).json_line()["local_port"]
    with socket.create_connection(("127.0.0.1", port)) as stuck:
        stuck.setblocking(False)
        block = b"z" * 65536
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sent += stuck.send(block)
        except BlockingIOError:
            pass  # its buffers, and the tunnel's for it, are full: it is stuck now

        async def others() -> list[bool]:
            clients = (_echo_client(port, 1_000_000) for _ in range(5))
            return await asyncio.wait_for(asyncio.gather(*clients), 60)

        assert all(asyncio.run(others()))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_10000_sequential_connections_leak_nothing(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, figures: dict[str, str]
) -> None:
    process = start(tether, sshd, echo_server.address)
    port = process.json_line()["local_port"]
    for _ in range(100):  # warm-up: first-use allocations and caches
        assert echo_once(port, b"w") == b"w"
    wait_until_sync(lambda: status(tether)["connections_active"] == 0, "warm-up to settle")
    fds_before, rss_before = fd_count(process.pid), rss_kib(process.pid)
    for _ in range(10_000):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
    wait_until_sync(lambda: status(tether)["connections_active"] == 0, "every relay to close")
    fds_after, rss_after = fd_count(process.pid), rss_kib(process.pid)
    assert fds_after - fds_before <= 4
    assert rss_after - rss_before < 32 * 1024
    assert status(tether)["connections_total"] == 10_100
    figures["open fds of the tunnel process around 10,000 connections"] = (
        f"{fds_before} before, {fds_after} after (RSS {rss_before} KiB -> {rss_after} KiB)"
    )


def test_stop_during_a_transfer_drains_it(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    process = start(tether, sshd, echo_server.address, "--drain", "10")
    info = process.json_line()
    size, chunk = 20 * 1024 * 1024, 1024 * 1024
    payload = os.urandom(size)
    received = bytearray()
    with socket.create_connection(("127.0.0.1", info["local_port"]), timeout=30) as sock:
        reader = threading.Thread(target=lambda: _read_all(sock, received))
        reader.start()
        sock.sendall(payload[:chunk])
        wait_until_sync(lambda: len(received) >= chunk, "the first MiB to come back")
        stopper = threading.Thread(target=lambda: tether.run("stop", info["id"]))
        stopper.start()
        wait_until_sync(lambda: status(tether)["state"] == "closing", "the drain to begin")
        with socket.socket() as late:  # a stopping tunnel accepts no new connection
            assert late.connect_ex(("127.0.0.1", info["local_port"])) != 0
        sock.sendall(payload[chunk:])
        sock.shutdown(socket.SHUT_WR)
        reader.join(30)
        stopper.join(30)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert process.finish() == 0
    assert tether.list_json() == []


def _read_all(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(1 << 20):
        into += chunk


def test_ttl_fires(tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer) -> None:
    process = start(tether, sshd, echo_server.address, "--ttl", "6s")
    process.json_line()
    entry = status(tether)
    assert entry["ttl_left"] is not None and 0 < entry["ttl_left"] <= 6
    _, table, _ = tether.run("list")
    assert "ttl " in table.splitlines()[1]
    assert process.finish() == 0
    assert "--ttl reached; stopping" in process.stderr
    assert tether.list_json() == []


def test_idle_timeout_fires_only_when_idle(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    process = start(tether, sshd, echo_server.address, "--idle-timeout", "1s")
    port = process.json_line()["local_port"]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        # While a connection is open the idle clock is stopped.
        entry = status(tether)
        assert entry["connections_active"] == 1 and entry["idle_left"] is None
    assert process.finish() == 0
    assert "--idle-timeout reached; stopping" in process.stderr
    assert tether.list_json() == []


def test_reconnect_off_means_lost_at_once(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer
) -> None:
    process = start(tether, own_sshd, echo_server.address, "--no-reconnect")
    process.json_line()
    own_sshd.stop()
    assert process.finish() == 10
    assert "reconnecting is off" in process.stderr


def test_reconnecting_state_is_listed(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer
) -> None:
    start(tether, own_sshd, echo_server.address, "--backoff-initial", "200ms").json_line()
    own_sshd.stop()
    wait_until_sync(lambda: status(tether)["reconnect_attempt"] >= 2, "failed reconnects")
    entry = status(tether)
    assert entry["state"] == "reconnecting" and entry["last_error"]
    _, table, _ = tether.run("list")
    assert "reconnecting (" in table
    own_sshd.start()
    wait_until_sync(lambda: status(tether)["state"] == "ready", "the tunnel to recover", 60)


def test_signal_during_drain_is_graceful(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    process = start(tether, sshd, echo_server.address, "--drain", "30")
    port = process.json_line()["local_port"]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        process.send_signal(signal.SIGTERM)
        wait_until_sync(lambda: status(tether)["state"] == "closing", "the drain to begin")
    # The last connection closed, so the drain ends well before its 30 s.
    assert process.finish(deadline=15) == 0


def test_clients_that_never_read_cannot_exhaust_memory(
    tether: TetherRunner, figures: dict[str, str]
) -> None:
    clients = 300
    with BlastServer(64 * 1024 * 1024) as target:
        process = tether.spawn("start", "--to", target.address, "--json")
        port = process.json_line()["local_port"]
        rss_before = rss_kib(process.pid)
        stuck = []
        try:
            for _ in range(clients):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window
                sock.connect(("127.0.0.1", port))
                stuck.append(sock)
            seen = [-1]

            def stalled() -> bool:
                (entry,) = tether.list_json()
                moved = entry["bytes_in"] != seen[0]
                seen[0] = entry["bytes_in"]
                return entry["connections_active"] == clients and not moved

            wait_until_sync(stalled, "every connection to fill up and stall", deadline=60)
            rss_after = rss_kib(process.pid)
        finally:
            for sock in stuck:
                sock.close()
    grown = rss_after - rss_before
    figures["tunnel memory with 300 clients that never read"] = (
        f"{rss_before} KiB -> {rss_after} KiB (+{grown // 1024} MiB; "
        f"{seen[0] // (1024 * 1024)} MiB taken from the target)"
    )
    assert grown < 96 * 1024, f"the tunnel grew by {grown} KiB"
