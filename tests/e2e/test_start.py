"""`tether start` end to end: the real command through a real OpenSSH sshd."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import EchoServer
from tether import __version__ as tether_version
from tether.record import record_keys
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherProcess, TetherRunner


def start_ssh(tether: TetherRunner, sshd: SshdServer, target: str, *extra: str) -> TetherProcess:
    return tether.spawn("start", "--to", target, *sshd.tether_flags(), "--json", *extra)


def connect(info: dict[str, Any]) -> socket.socket:
    return socket.create_connection((info["local_host"], info["local_port"]), timeout=30)


def test_50mb_each_way_through_sshd(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    info = start_ssh(tether, sshd, echo_server.address).json_line()
    size = 50 * 1024 * 1024
    sent, received = hashlib.sha256(), hashlib.sha256()
    count = 0
    with connect(info) as sock:

        def send() -> None:
            for _ in range(size // (1 << 20)):
                block = os.urandom(1 << 20)
                sent.update(block)
                sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        while chunk := sock.recv(1 << 20):
            received.update(chunk)
            count += len(chunk)
        sender.join(30)
    assert count == size
    assert received.hexdigest() == sent.hexdigest()


def test_100_concurrent_connections(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    info = start_ssh(tether, sshd, echo_server.address).json_line()

    async def one(i: int) -> bool:
        payload = os.urandom(64 * 1024 + i)
        reader, writer = await asyncio.open_connection(info["local_host"], info["local_port"])
        writer.write(payload)
        writer.write_eof()
        echoed = await reader.read()
        writer.close()
        return echoed == payload

    async def all_of_them() -> list[bool]:
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(100))), 60)

    assert all(asyncio.run(all_of_them()))


def test_half_close_through_sshd(tether: TetherRunner, shared_sshd: SshdServer) -> None:
    """The target greets and half-closes; the client then still sends, and the target gets it.

    The asyncssh engine only: OpenSSH's stdio forward ends the whole connection once the
    target has half-closed (a documented difference)."""
    sshd = shared_sshd.through("asyncssh")
    got: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def target() -> None:
            conn, _ = listener.accept()  # the readiness probe
            conn.close()
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"banner")
                conn.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                got.append(data)

        thread = threading.Thread(target=target)
        thread.start()
        port = listener.getsockname()[1]
        info = start_ssh(tether, sshd, f"127.0.0.1:{port}").json_line()
        with connect(info) as sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert data == b"banner"
            sock.sendall(b"after your EOF")
            sock.shutdown(socket.SHUT_WR)
            thread.join(30)
    assert got == [b"after your EOF"]


def test_json_output(tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer) -> None:
    process = start_ssh(tether, sshd, echo_server.address, "--name", "echo")
    info = process.json_line()
    assert list(info) == record_keys()
    assert info["schema"] == 1
    assert (info["name"], info["mode"], info["pid"]) == ("echo", "foreground", process.pid)
    assert (info["target_host"], info["target_port"]) == ("127.0.0.1", echo_server.port)
    assert (info["via"], info["engine"], info["state"]) == (sshd.via, sshd.engine, "ready")
    assert info["local_host"] == "127.0.0.1" and 0 < info["local_port"] < 65536
    # The same record as `tether list --json` shows, but for the live counters.
    (listed,) = tether.list_json()
    live = ("state", "uptime", "ttl_left", "idle_left", "connections_total", "bytes_in")
    assert {k: v for k, v in listed.items() if k not in live} == {
        k: v for k, v in info.items() if k not in live
    }
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0


def test_banner_on_stderr(tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer) -> None:
    process = tether.spawn(
        "start", "--to", echo_server.address, *sshd.tether_flags(), "--foreground", "-p", "0"
    )
    banner = process.wait_stderr("ready on")
    assert f"-> {echo_server.address} via {sshd.via} (id " in banner
    assert f", pid {process.pid})" in banner
    assert process.stdout == ""
    process.send_signal(signal.SIGINT)
    assert process.finish() == 0
    assert "Traceback" not in process.stderr


def test_fg_short_flag_and_direct(tether: TetherRunner, echo_server: EchoServer) -> None:
    process = tether.spawn("start", "--to", echo_server.address, "-fg", "--json")
    info = process.json_line()
    assert info["via"] is None
    with connect(info) as sock:
        sock.sendall(b"direct")
        assert sock.recv(16) == b"direct"
    process.send_signal(signal.SIGHUP)
    assert process.finish() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_pid_file_life_cycle(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path, signum: int
) -> None:
    pid_file = tmp_path / "tunnel.pid"
    process = start_ssh(tether, sshd, echo_server.address, "--pid-file", str(pid_file))
    process.json_line()
    assert pid_file.read_text().strip() == str(process.pid)
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600
    process.send_signal(signum)
    assert process.finish() == 0
    assert not pid_file.exists()


def test_pid_file_not_written_on_failure(tether: TetherRunner, tmp_path: Path) -> None:
    pid_file = tmp_path / "tunnel.pid"
    code, _, _ = tether.run("start", "--to", "127.0.0.1:1", "--pid-file", str(pid_file))
    assert code == 6 and not pid_file.exists()


def test_profile_from_config(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    config = tmp_path / "tether.toml"
    config.write_text(f"""
[defaults]
identity_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"

[tunnels.echo]
to = "127.0.0.1:1"
via = "{sshd.via}"
""")
    process = tether.spawn(
        "start",
        "echo",
        "--target-port",
        str(echo_server.port),
        "--json",
        env={"TETHER_CONFIG": str(config)},
    )
    info = process.json_line()
    assert info["name"] == "echo" and info["target_port"] == echo_server.port
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0


def test_python_dash_m_and_version(tether: TetherRunner) -> None:
    code, out, _ = tether.run("--version")
    assert code == 0 and out == f"tether {tether_version}\n"


def test_stdin_is_never_read(tether: TetherRunner, echo_server: EchoServer) -> None:
    """No TTY: nothing prompts, so a missing target is an immediate usage error."""
    code, _, err = tether.run("start")
    assert code == 2 and err.startswith("tether: error: no target")


def test_pid_file_never_destroys_what_is_there(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("not a pid file\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.pid"
    link.symlink_to(precious)
    for path in (precious, fifo, link, tmp_path):
        code, _, err = tether.run(
            "start", "--to", echo_server.address, "--pid-file", str(path), "--", "true"
        )
        assert code == 2, err
        assert err.startswith(f"tether: error: pid file {path}")
    assert precious.read_text() == "not a pid file\n"
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    assert tether.list_json() == []


def test_stale_pid_file_is_taken_over(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "tunnel.pid"
    pid_file.write_text("4194304\n")  # above any pid this kernel hands out: surely gone
    process = tether.spawn(
        "start", "--to", echo_server.address, "--pid-file", str(pid_file), "--json"
    )
    process.json_line()
    assert pid_file.read_text() == f"{process.pid}\n"
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    assert not pid_file.exists()
