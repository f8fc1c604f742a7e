"""SOCKS tunnels end to end: the real `tether start --socks`, curl and a small client, direct and
through the real sshd with each engine."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import EchoServer, free_port
from tests.support.socks import (
    HttpServer,
    SocksReplyError,
    read_to_end,
    socks_connect,
    socks_echo,
)
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherProcess, TetherRunner
from tether.socksserve import HANDSHAKE_LIMIT

CURL = shutil.which("curl") or "/usr/bin/curl"


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


def curl(proxy_port: int, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """curl through the proxy, names resolved by the proxy (socks5h)."""
    return subprocess.run(
        [
            CURL,
            "-sS",
            "--max-time",
            "20",
            "--socks5-hostname",
            f"127.0.0.1:{proxy_port}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )


def start_socks(tether: TetherRunner, *flags: str) -> tuple[TetherProcess, dict[str, Any]]:
    process = tether.spawn("start", "--socks", "--json", *flags)
    return process, process.json_line()


def test_curl_through_a_direct_socks_tunnel(tether: TetherRunner, http_server: HttpServer) -> None:
    process, record = start_socks(tether)
    assert (record["socks"], record["allow"], record["via"]) == (True, [], None)
    assert (record["target_host"], record["target_port"], record["name"]) == ("*", 0, "socks")
    for host in ("127.0.0.1", "localhost"):
        done = curl(record["local_port"], http_server.url(host))
        assert done.returncode == 0, done.stderr
        assert done.stdout.encode() == HttpServer.BODY
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0


def test_curl_and_a_client_through_sshd(
    tether: TetherRunner, sshd: SshdServer, http_server: HttpServer, echo_server: EchoServer
) -> None:
    process, record = start_socks(tether, *sshd.tether_flags())
    assert record["engine"] == sshd.engine and record["via"] == sshd.via
    port = record["local_port"]
    # "localhost" is resolved by the SSH server, the far side.
    done = curl(port, http_server.url("localhost"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.encode() == HttpServer.BODY
    payload = os.urandom(3 * 1024 * 1024)
    assert socks_echo(port, "127.0.0.1", echo_server.port, payload) == payload
    listed = tether.list_json()[0]
    assert listed["connections_total"] == 2
    assert listed["bytes_out"] >= len(payload) and listed["bytes_in"] >= len(payload)
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0


def test_denied_targets_are_logged_and_the_tunnel_goes_on(
    tether: TetherRunner, sshd: SshdServer, http_server: HttpServer
) -> None:
    # One host and port allowed: the probe reaches it before ready.
    process, record = start_socks(
        tether, *sshd.tether_flags(), "--allow", f"localhost:{http_server.port}"
    )
    assert record["allow"] == [f"localhost:{http_server.port}"]
    port = record["local_port"]
    denied = curl(port, http_server.url("127.0.0.1"))
    assert denied.returncode != 0
    with pytest.raises(SocksReplyError) as caught:
        socks_connect(port, "localhost", 1)
    assert caught.value.code == 0x02
    process.wait_stderr(f"SOCKS request for 127.0.0.1:{http_server.port} denied")
    allowed = curl(port, http_server.url("localhost"))
    assert allowed.returncode == 0 and allowed.stdout.encode() == HttpServer.BODY, allowed.stderr
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    assert "Traceback" not in process.stderr


def test_garbage_gets_a_close_and_the_tunnel_keeps_serving(
    tether: TetherRunner, http_server: HttpServer
) -> None:
    process, record = start_socks(tether)
    port = record["local_port"]
    for garbage in (b"\x04\x01\x00\x50", b"\x05\x01\x00\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            read_to_end(sock)  # a close (a reset, over unread bytes), or a reply and a close
    process.wait_stderr("SOCKS handshake from 127.0.0.1:")
    done = curl(port, http_server.url())
    assert done.returncode == 0, done.stderr
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    assert "Traceback" not in process.stderr


def test_run_gives_the_command_the_proxy(
    tether: TetherRunner, sshd: SshdServer, http_server: HttpServer
) -> None:
    code, out, err = tether.run(
        "start",
        "--socks",
        *sshd.tether_flags(),
        "--run",
        'echo "$ALL_PROXY $all_proxy $TETHER_SOCKS $TETHER_PORT"; '
        f"{CURL} -sS {http_server.url('localhost')}",
        # A proxy of the user's own must not win over the tunnel.
        env={"all_proxy": "http://127.0.0.1:1", "http_proxy": "", "no_proxy": ""},
    )
    assert code == 0, err
    variables, body = out.split("\n", 1)
    proxy, lower, socks, port = variables.split()
    assert proxy == lower == f"socks5h://127.0.0.1:{port}" and socks == f"127.0.0.1:{port}"
    assert body.encode() == HttpServer.BODY


def test_background_list_and_stop(tether: TetherRunner, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[tunnels.web]\nsocks = true\nallow = ["*.example.com:443", "10.0.0.0/8:*"]\n'
    )
    code, _, err = tether.run("start", "web", "--config", str(config), "--background")
    assert code == 0, err
    (listed,) = tether.list_json()
    assert (listed["name"], listed["mode"], listed["state"]) == ("web", "background", "ready")
    assert listed["allow"] == ["*.example.com:443", "10.0.0.0/8:*"]
    code, table, err = tether.run("list")
    assert "socks5 (*.example.com:443 +1)" in table, table
    code, _, err = tether.run("stop", "web")
    assert code == 0, err
    assert tether.list_json() == []


def test_socks_with_a_target_is_a_usage_error(tether: TetherRunner, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[tunnels.web]\nsocks = true\nto = "db:5432"\n')
    code, _, err = tether.run("start", "web", "--config", str(config))
    assert code == 2
    assert f"{config}: tunnels.web.to: a SOCKS tunnel has no target" in err
    code, _, err = tether.run("start", "--to", "db:5432", "--allow", "db:5432")
    assert code == 2 and "--allow: an allowlist is for a SOCKS tunnel" in err, err
    code, _, err = tether.run("start", "--socks", "--allow", "db")
    assert code == 2 and "--allow: expected HOST:PORT" in err, err
    assert tether.list_json() == []


def test_a_refused_target_per_engine(tether: TetherRunner, sshd: SshdServer) -> None:
    process, record = start_socks(tether, *sshd.tether_flags())
    port, closed = record["local_port"], free_port()
    assert curl(port, f"http://127.0.0.1:{closed}/").returncode != 0
    if sshd.engine == "openssh":
        # As from `ssh -D`: success, then the connection ends with nothing in it.
        with socks_connect(port, "127.0.0.1", closed) as sock:
            assert read_to_end(sock) == b""
    else:
        with pytest.raises(SocksReplyError) as caught:
            socks_connect(port, "127.0.0.1", closed)
        assert caught.value.code == 0x05
    # Either way the tunnel says why, and goes on.
    process.wait_stderr(f"cannot connect to 127.0.0.1:{closed}")
    assert tether.list_json()[0]["state"] == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0


def test_idle_clients_in_their_handshake_never_starve_one_that_talks(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    """More silent connections than handshakes may be under way, and than max_connections:
    they hold no slot, so a client that speaks is served at once, not when they time out."""
    process, info = start_socks(tether, "--max-connections", "8")
    port = int(info["local_port"])
    idle: list[socket.socket] = []
    try:
        for _ in range(HANDSHAKE_LIMIT + 40):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.settimeout(3)  # well within the 10 s handshake deadline the idle ones have
            sock.sendall(b"\x05\x01\x00")
            assert sock.recv(2) == b"\x05\x00"
            sock.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + echo_server.port.to_bytes(2, "big"))
            reply = sock.recv(10)
            assert reply[:2] == b"\x05\x00", reply
            sock.sendall(b"served")
            assert sock.recv(6) == b"served"
        assert process.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.finish()
