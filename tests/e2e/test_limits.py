"""Limits end to end: the loopback pair as one reservation, running out of descriptors, a log
that a client connecting in a loop cannot flood, and the descriptor limit of the ssh and sshd
processes that carry many channels."""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path


from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync
from tether.procs import descendants

LOWERED = 256  # tether's soft descriptor limit in the tests of its children's


def test_the_loopback_pair_is_one_reservation(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    first = tether.spawn("start", "--to", echo_server.address, "--json")
    info = first.json_line()
    code, _, err = tether.run(
        "start", "--to", echo_server.address, "--host", "::1", "-p", str(info["local_port"])
    )
    assert code == 3
    assert f"in use by tether tunnel {info['id']}" in err
    (entry,) = tether.list_json()
    assert entry["local_addresses"] == ["127.0.0.1", "::1"]
    first.send_signal(2)
    assert first.finish() == 0


def test_running_out_of_descriptors(tether: TetherRunner, echo_server: EchoServer) -> None:
    # The hard limit too, so tether cannot raise it: it must cope with what it has.
    process = subprocess.Popen(
        [
            "sh",
            "-c",
            'ulimit -n 64 && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "tether",
            "start",
            "--to",
            echo_server.address,
            "--host",
            "127.0.0.1",
            "--json",
        ],
        env=tether.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port = int(json.loads(process.stdout.readline())["local_port"])
        clients = []
        for _ in range(100):  # far more than 64 descriptors allow
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            clients.append(sock)
        # Those that got through keep working, while the rest wait or are reset.
        served = 0
        for sock in clients:
            try:
                sock.sendall(b"x")
                sock.settimeout(0.2)
                served += sock.recv(1) == b"x"
            except OSError:
                continue
            if served == 3:
                break
        assert served == 3
        for sock in clients:
            sock.close()
        # It recovers by itself once descriptors are free again.

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(b"back")
                    sock.shutdown(socket.SHUT_WR)
                    return sock.recv(4) == b"back"
            except OSError:
                return False

        wait_until_sync(answers, "the tunnel to serve again")
        assert process.poll() is None
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    text = err.decode()
    assert process.returncode == 0, text
    assert "Traceback" not in text
    warnings = [line for line in text.splitlines() if line.startswith("tether: warning:")]
    assert any("Too many open files" in line for line in warnings), text
    assert len(warnings) <= 12, text  # a few per kind and interval, not one per attempt


def test_connecting_in_a_loop_cannot_flood_the_log(tether: TetherRunner) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = unused.getsockname()[1]  # bound, never listening: connections are refused
        process = tether.spawn("start", "--to", f"127.0.0.1:{refused}", "--no-probe", "--json")
        port = process.json_line()["local_port"]
        for _ in range(200):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                try:
                    sock.recv(1)
                except ConnectionResetError:
                    pass
        wait_until_sync(lambda: tether.list_json()[0]["connections_total"] == 200, "all 200")
        process.send_signal(signal.SIGTERM)
        assert process.finish() == 0
    refusals = [line for line in process.stderr.splitlines() if "Connection refused" in line]
    assert 1 <= len(refusals) <= 5, process.stderr


def soft_nofile(pid: int) -> int:
    """The soft descriptor limit of ``pid``, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no descriptor limit in /proc/{pid}/limits")


def programs(root: int, name: str) -> list[int]:
    """The processes below ``root`` whose program is ``name``."""
    found = []
    for pid in descendants(root):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_callers_tunnel_raises_its_master_not_the_caller(
    tmp_path: Path, shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    # The Python API runs in the caller's process, whose limits are the caller's: only the
    # OpenSSH master, which carries a socket per connection, is raised.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # A machine whose hard limit is this low cannot show the raise: said, not skipped.
    assert hard == resource.RLIM_INFINITY or hard > LOWERED, f"the hard limit is {hard}"
    sshd = shared_sshd.through("openssh")
    script = f"""
import json, os, resource, sys, tether
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from tests.e2e.test_limits import programs, soft_nofile
with tether.open(
    to={echo_server.address!r}, via={sshd.via!r}, identity_file={str(sshd.client_key)!r},
    known_hosts={str(sshd.known_hosts)!r}, engine="openssh", runtime_dir={str(tmp_path)!r},
    share_master=False,  # the caller's child: a shared master is raised alike, as it starts
):
    masters = programs(os.getpid(), "ssh")
    print(json.dumps([soft_nofile(os.getpid()), [soft_nofile(pid) for pid in masters]]))
"""
    done = subprocess.run(
        ["prlimit", f"--nofile={LOWERED}:{hard}", "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    own, masters = json.loads(done.stdout)
    assert own == LOWERED
    assert masters and all(soft == hard for soft in masters)
