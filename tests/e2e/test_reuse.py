"""`start --reuse` finds the ready tunnel that does what is asked, or starts exactly one;
`stop --missing-ok` lets a cleanup step succeed when there is nothing to stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, free_port
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner


def reuse(tether: TetherRunner, *args: str) -> dict[str, object]:
    code, out, err = tether.run("start", *args, "--background", "--reuse", "--json")
    assert code == 0, err
    return dict(json.loads(out))


def test_a_second_start_reuses_the_ready_tunnel(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    args = ("--to", echo_server.address, *sshd.tether_flags(), "--name", "db")
    first = reuse(tether, *args)
    second = reuse(tether, *args)
    assert second["id"] == first["id"] and second["pid"] == first["pid"]
    assert second["state"] == "ready"
    port = int(str(second["local_port"]))
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    assert [t["id"] for t in tether.list_json()] == [first["id"]]
    code, _, err = tether.run("start", *args, "--background", "--reuse")
    assert code == 0 and err.startswith(f"tether: db already running on 127.0.0.1:{port}"), err
    assert f"(id {first['id']}, pid {first['pid']})" in err
    code, _, err = tether.run("stop", "db")
    assert code == 0, err


def test_a_different_tunnel_is_not_reused(tether: TetherRunner, echo_server: EchoServer) -> None:
    first = reuse(tether, "--to", echo_server.address)
    # Another name, another fixed port, another target: each is another tunnel.
    others = [
        reuse(tether, "--to", echo_server.address, "--name", "other"),
        reuse(tether, "--to", echo_server.address, "--port", str(free_port())),
        reuse(tether, "--to", f"localhost:{echo_server.port}"),
    ]
    ids = {first["id"], *(o["id"] for o in others)}
    assert len(ids) == 4
    assert len(tether.list_json()) == 4
    assert tether.run("stop", "--all")[0] == 0


def test_concurrent_reuse_starts_end_with_one_tunnel(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    command = [sys.executable, "-m", "tether", "start", "--to", echo_server.address]
    starts = [
        subprocess.Popen(
            [*command, "--background", "--reuse", "--json"],
            env=tether.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    records = []
    for start in starts:
        out, err = start.communicate(timeout=60)
        assert start.returncode == 0, err
        records.append(json.loads(out))
    assert len({r["id"] for r in records}) == 1
    assert len(tether.list_json()) == 1
    assert tether.run("stop", "--all")[0] == 0


def test_reuse_in_the_foreground_prints_the_record_and_exits(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    holder = tether.spawn("start", "--to", echo_server.address, "--json", "--reuse")
    held = holder.json_line()
    code, out, err = tether.run("start", "--to", echo_server.address, "--json", "--reuse")
    assert code == 0, err
    assert json.loads(out)["id"] == held["id"]
    assert tether.run("stop", str(held["id"]))[0] == 0
    assert holder.finish() == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--reuse"], "--reuse needs --background or --json"),
        (["--reuse", "--json", "--run", "true"], "--reuse cannot go with --run"),
        (["--reuse", "--background", "--pid-file", "t.pid"], "--reuse cannot go with --pid-file"),
    ],
)
def test_reuse_refuses_what_it_cannot_honour(
    tether: TetherRunner, echo_server: EchoServer, flags: list[str], message: str
) -> None:
    code, _, err = tether.run("start", "--to", echo_server.address, *flags)
    assert code == 2
    assert err.startswith(f"tether: error: {message}")
    assert tether.list_json() == []


def test_stop_missing_ok(tether: TetherRunner, echo_server: EchoServer, tmp_path: Path) -> None:
    code, _, err = tether.run("stop", "nothing-here")
    assert code == 8 and "no running tunnel matches 'nothing-here'" in err
    code, _, err = tether.run("stop", "nothing-here", "--missing-ok")
    assert code == 0
    assert err.strip() == "tether: no running tunnel matches 'nothing-here'; nothing to stop"
    # What does run is still stopped.
    record = reuse(tether, "--to", echo_server.address, "--name", "db")
    code, _, err = tether.run("stop", "db", "nothing-here", "--missing-ok")
    assert code == 0, err
    assert f"stopped {record['id']}" in err
    assert tether.list_json() == []
    assert not list(Path(tether.env["TETHER_RUNTIME_DIR"]).glob(".reuse-*"))
