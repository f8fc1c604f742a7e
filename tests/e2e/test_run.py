"""Run mode end to end: exit statuses, signals, the environment, several tunnels at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.process_state import umask
from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import (
    TetherProcess,
    TetherRunner,
    processes_with,
    read_pty_until,
    spawn_on_terminal,
)
from tests.support.waiting import wait_until_sync


@pytest.mark.parametrize("status", [0, 3])
def test_exit_status_passes_through(
    tether: TetherRunner, echo_server: EchoServer, status: int
) -> None:
    code, _, err = tether.run("start", "--to", echo_server.address, "--run", f"exit {status}")
    assert code == status, err
    assert tether.list_json() == []


def test_a_failing_pipeline_needs_pipefail(tether: TetherRunner, echo_server: EchoServer) -> None:
    """What the README says of a cut dump: through /bin/sh the last command's status wins;
    bash with pipefail, after --, gives the failure."""
    pipeline = "exit 3 | cat"
    code, _, err = tether.run("start", "--to", echo_server.address, "--run", pipeline)
    assert code == 0, err
    code, _, err = tether.run(
        "start", "--to", echo_server.address, "--", "bash", "-o", "pipefail", "-c", pipeline
    )
    assert code == 3, err


def test_killed_command_gives_128_plus_n(tether: TetherRunner, echo_server: EchoServer) -> None:
    code, _, _ = tether.run("start", "--to", echo_server.address, "--", "sh", "-c", "kill -9 $$")
    assert code == 137


def test_sigint_reaches_the_command(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    started, got = tmp_path / "started", tmp_path / "got-sigint"
    script = (
        "import os, pathlib, signal, sys, time\n"
        "def on_int(signum, frame):\n"
        f"    pathlib.Path({str(got)!r}).write_text('yes')\n"
        "    signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "signal.signal(signal.SIGINT, on_int)\n"
        f"pathlib.Path({str(started)!r}).write_text('yes')\n"
        "time.sleep(120)\n"
    )
    process = tether.spawn("start", "--to", echo_server.address, "--", sys.executable, "-c", script)
    wait_until_sync(started.exists, "the command to start")
    process.send_signal(signal.SIGINT)
    assert process.finish() == 130
    assert got.read_text() == "yes"
    assert tether.list_json() == []


def test_environment(tether: TetherRunner, echo_server: EchoServer) -> None:
    code, out, err = tether.run(
        "start",
        "--to",
        echo_server.address,
        "--name",
        "my-db.1",
        "--run",
        "env | grep ^TETHER_ | sort",
    )
    assert code == 0, err
    env = dict(line.split("=", 1) for line in out.splitlines())
    port = env["TETHER_PORT"]
    assert env["TETHER_HOST"] == "127.0.0.1"
    assert env["TETHER_ADDR"] == f"127.0.0.1:{port}"
    assert len(env["TETHER_ID"]) == 8
    assert env["TETHER_MY_DB_1_PORT"] == port
    assert env["TETHER_MY_DB_1_ADDR"] == f"127.0.0.1:{port}"
    assert env["TETHER_MY_DB_1_HOST"] == "127.0.0.1"
    # TETHER_RUNTIME_DIR and TETHER_SSH_CONFIG come from the test environment, not from tether.
    assert set(env) - {"TETHER_RUNTIME_DIR", "TETHER_SSH_CONFIG"} == {
        "TETHER_HOST",
        "TETHER_PORT",
        "TETHER_ADDR",
        "TETHER_ID",
        "TETHER_MY_DB_1_HOST",
        "TETHER_MY_DB_1_PORT",
        "TETHER_MY_DB_1_ADDR",
        "TETHER_MY_DB_1_ID",
    }


def test_command_uses_the_tunnel(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    client = (
        "import os, socket; s = socket.create_connection((os.environ['TETHER_HOST'], "
        "int(os.environ['TETHER_PORT']))); s.sendall(b'via run'); s.shutdown(1); "
        "print(s.recv(100).decode())"
    )
    code, out, err = tether.run(
        "start",
        "--to",
        echo_server.address,
        *sshd.tether_flags(),
        "--",
        sys.executable,
        "-c",
        client,
    )
    assert code == 0, err
    assert out.strip() == "via run"


def test_two_profiles_in_one_run(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"""
[defaults]
identity_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"
[tunnels.db]
to = "{echo_server.address}"
via = "{sshd.via}"
[tunnels.cache]
to = "{echo_server.address}"
""")
    lister = f"{sys.executable} -m tether list --json"
    code, out, err = tether.run(
        "start",
        "db",
        "cache",
        "--config",
        str(config),
        "--run",
        f'echo "$TETHER_DB_PORT $TETHER_CACHE_PORT"; {lister}',
    )
    assert code == 0, err
    ports_line, listing = out.split("\n", 1)
    listed = json.loads(listing)
    assert sorted(e["name"] for e in listed) == ["cache", "db"]
    assert {e["mode"] for e in listed} == {"run"}
    by_name = {e["name"]: e for e in listed}
    assert ports_line.split() == [
        str(by_name["db"]["local_port"]),
        str(by_name["cache"]["local_port"]),
    ]
    assert by_name["db"]["via"] == sshd.via and by_name["cache"]["via"] is None
    assert tether.list_json() == []


def test_several_tunnels_leave_the_umask_as_it_was(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    # Their control sockets are made together: once, each start's umask outlived the others',
    # leaving the process at 0177, and its next private directories without their x bit.
    config = tmp_path / "c.toml"
    config.write_text("".join(f'[tunnels.t{n}]\nto = "{echo_server.address}"\n' for n in range(3)))
    code, out, err = tether.run(
        "start", "t0", "t1", "t2", "--config", str(config), "--run", "umask"
    )
    assert code == 0, err
    assert int(out, 8) == umask()  # the command's, which it has from tether, which has ours
    assert tether.list_json() == []


def test_one_failing_profile_leaves_none_open(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[tunnels.good]\nto = "{echo_server.address}"\n[tunnels.bad]\nto = "127.0.0.1:1"\n'
    )
    marker = tmp_path / "ran"
    code, _, err = tether.run(
        "start", "good", "bad", "--config", str(config), "--run", f"touch {marker}"
    )
    assert code == 6 and "cannot connect to 127.0.0.1:1" in err
    assert not marker.exists()
    assert tether.list_json() == []


@pytest.mark.parametrize(
    "args",
    [
        ["--run", "true", "--background"],
        ["--run", "true", "--", "true"],
        ["-fg", "-bg"],
        ["--foreground", "--", "true"],
    ],
)
def test_modes_are_exclusive(
    tether: TetherRunner, echo_server: EchoServer, args: list[str]
) -> None:
    code, _, err = tether.run("start", "--to", echo_server.address, *args)
    assert code == 2 and "mutually exclusive" in err


def test_several_profiles_need_a_command(tether: TetherRunner, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[tunnels.a]\nto = "h:1"\n[tunnels.b]\nto = "h:2"\n')
    code, _, err = tether.run("start", "a", "b", "--config", str(config))
    assert code == 2 and "several profiles need --run or --" in err


def test_missing_command(tether: TetherRunner, echo_server: EchoServer) -> None:
    code, _, err = tether.run("start", "--to", echo_server.address, "--", "/nonexistent/cmd")
    assert code == 127 and "cannot run '/nonexistent/cmd'" in err
    assert tether.list_json() == []


@pytest.fixture
def sleeper(tmp_path: Path) -> str:
    """A copy of sleep under a name of this test's own, so its processes can be found."""
    path = tmp_path / f"sleeper-{uuid.uuid4().hex[:12]}"
    shutil.copy("/bin/sleep", path)
    return str(path)


def start_with_sleepers(tether: TetherRunner, sleeper: str, *args: str) -> TetherProcess:
    """A --run line whose shell waits on one sleeper and has another in the background: dash
    execs neither, so ending only the shell would leave both behind."""
    process = tether.spawn("start", *args, "--json", "--run", f"{sleeper} 300 & {sleeper} 301")
    wait_until_sync(lambda: len(processes_with(sleeper, program=True)) == 2, "both sleepers to run")
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_ends_the_whole_command(
    tether: TetherRunner, echo_server: EchoServer, sleeper: str, signum: int
) -> None:
    process = start_with_sleepers(tether, sleeper, "--to", echo_server.address)
    process.send_signal(signum)
    assert process.finish() == 128 + signum  # the shell's own death by that signal
    assert processes_with(sleeper, program=True) == []
    assert tether.list_json() == []


def test_tether_stop_ends_the_whole_command(
    tether: TetherRunner, echo_server: EchoServer, sleeper: str
) -> None:
    process = start_with_sleepers(tether, sleeper, "--to", echo_server.address)
    tunnel_id = process.json_line(stderr=True)["id"]
    code, _, err = tether.run("stop", tunnel_id)
    assert code == 0, err
    assert process.finish() == 128 + signal.SIGTERM
    assert processes_with(sleeper, program=True) == []


@pytest.mark.parametrize("bound", ["--ttl", "--idle-timeout"])
def test_a_lifetime_bound_ends_the_whole_command(
    tether: TetherRunner, echo_server: EchoServer, sleeper: str, bound: str
) -> None:
    process = start_with_sleepers(tether, sleeper, "--to", echo_server.address, bound, "1s")
    assert process.finish() == 128 + signal.SIGTERM
    assert f"{bound} reached" in process.stderr
    assert processes_with(sleeper, program=True) == []


def test_a_lost_transport_ends_the_whole_command(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer, sleeper: str
) -> None:
    process = start_with_sleepers(
        tether, sleeper, "--to", echo_server.address, *own_sshd.tether_flags(), "--no-reconnect"
    )
    own_sshd.stop()
    assert process.finish() == 10
    assert processes_with(sleeper, program=True) == []


def test_what_the_command_leaves_behind_is_ended(
    tether: TetherRunner, echo_server: EchoServer, sleeper: str
) -> None:
    code, _, err = tether.run("start", "--to", echo_server.address, "--run", f"{sleeper} 300 &")
    assert code == 0, err
    assert processes_with(sleeper, program=True) == []


def test_a_command_deaf_to_sigterm_is_killed_after_the_grace(
    tether: TetherRunner, echo_server: EchoServer, sleeper: str
) -> None:
    # The trap makes the shell and, by inheritance, the sleeper ignore SIGTERM.
    process = tether.spawn(
        "start", "--to", echo_server.address, "--run", f"trap '' TERM; {sleeper} 300"
    )
    wait_until_sync(lambda: len(processes_with(sleeper, program=True)) == 1, "the sleeper to run")
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 128 + signal.SIGKILL
    assert "did not end within 5s of SIGTERM; killing it" in process.stderr
    assert processes_with(sleeper, program=True) == []


SIGINT_SCRIPT = """
import signal, sys, time
def interrupted(signum, frame):
    print("command got SIGINT", flush=True)
    sys.exit(7)
signal.signal(signal.SIGINT, interrupted)
print("command ready", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("form", ["--run", "--"])
def test_ctrl_c_on_a_terminal_reaches_the_command(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path, form: str
) -> None:
    script = tmp_path / "interruptible.py"
    script.write_text(SIGINT_SCRIPT)
    command = (
        ["--run", f"{sys.executable} {script}"]
        if form == "--run"
        else ["--", sys.executable, str(script)]
    )
    proc, master = spawn_on_terminal(["start", "--to", echo_server.address, *command], tether.env)
    try:
        read_pty_until(master, "command ready")
        os.write(master, b"\x03")  # what Ctrl-C types
        read_pty_until(master, "command got SIGINT")
        # 7 is the command's own status: it handled the interrupt and nobody killed it.
        assert proc.wait(timeout=30) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert tether.list_json() == []


def test_names_that_share_variables_are_refused(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    target = echo_server.address
    config.write_text(f'[tunnels.x-1]\nto = "{target}"\n[tunnels."x.1"]\nto = "{target}"\n')
    code, _, err = tether.run("start", "x-1", "x.1", "--config", str(config), "--run", "true")
    assert code == 2
    assert "would share the variables TETHER_X_1_*" in err
    assert tether.list_json() == []
