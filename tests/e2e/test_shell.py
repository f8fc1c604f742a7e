"""`tether shell` in batch mode: start, list and stop, seen from other processes too."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherProcess, TetherRunner, read_pty_until


def test_batch_start_list_stop(tether: TetherRunner, echo_server: EchoServer) -> None:
    shell = tether.spawn("shell", stdin=subprocess.PIPE)
    assert shell.proc.stdin is not None

    def send(line: str) -> None:
        assert shell.proc.stdin is not None
        shell.proc.stdin.write(line.encode() + b"\n")
        shell.proc.stdin.flush()

    send(f"start --to {echo_server.address} --name in-shell --background")
    shell.wait_stderr("in-shell ready on")
    assert "--background is not needed here" in shell.stderr
    listed = tether.list_json()  # another process sees it
    assert [(e["name"], e["mode"], e["pid"]) for e in listed] == [("in-shell", "shell", shell.pid)]
    send("list")
    shell.wait_for(lambda p: "in-shell" in p.stdout, "the shell's own list")
    send("stop in-shell")
    shell.wait_stderr("stopped")
    assert tether.list_json() == []
    send(f"start --to {echo_server.address} --name second")
    shell.wait_stderr("second ready on")
    shell.proc.stdin.close()  # EOF: the shell leaves and closes its tunnels
    assert shell.finish() == 0
    assert tether.list_json() == []
    assert "tether>" not in shell.stdout  # no prompt without a TTY


def test_stop_from_another_process(tether: TetherRunner, echo_server: EchoServer) -> None:
    shell = tether.spawn("shell", stdin=subprocess.PIPE)
    assert shell.proc.stdin is not None
    shell.proc.stdin.write(f"start --to {echo_server.address} --name remote\n".encode())
    shell.proc.stdin.flush()
    shell.wait_stderr("remote ready on")
    code, _, err = tether.run("stop", "remote")
    assert code == 0, err
    # The tunnel is gone once stop returns, and the shell itself goes on.
    assert tether.list_json() == []
    assert shell.proc.poll() is None
    shell.proc.stdin.close()
    assert shell.finish() == 0


def test_batch_errors_set_the_status(tether: TetherRunner) -> None:
    shell = tether.spawn("shell", stdin=subprocess.PIPE)
    assert shell.proc.stdin is not None
    shell.proc.stdin.write(b"bogus\nhelp\n")
    shell.proc.stdin.close()
    assert shell.finish() == 2
    assert "unknown command 'bogus'" in shell.stderr and "commands:" in shell.stdout


def test_interactive_prompt(tether: TetherRunner, echo_server: EchoServer) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "shell"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=tether.env,
    )
    os.close(slave)
    try:
        read_pty_until(master, "tether> ")
        os.write(master, b"help\n")
        read_pty_until(master, "commands:")
        os.write(master, f"start --to {echo_server.address} --name tty\n".encode())
        read_pty_until(master, "tty ready on")
        assert [e["mode"] for e in tether.list_json()] == ["shell"]
        os.write(master, b"exit\n")
        assert proc.wait(timeout=30) == 0
        assert tether.list_json() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def start_shell(tether: TetherRunner) -> tuple[TetherProcess, Callable[[str], None]]:
    shell = tether.spawn("shell", stdin=subprocess.PIPE)

    def send(line: str) -> None:
        assert shell.proc.stdin is not None
        shell.proc.stdin.write(line.encode() + b"\n")
        shell.proc.stdin.flush()

    return shell, send


def test_bad_lines_never_take_the_shell_down(tether: TetherRunner, echo_server: EchoServer) -> None:
    shell, send = start_shell(tether)
    send(f"start --to {echo_server.address} --name kept")
    shell.wait_stderr("kept ready on")
    for line in (
        "start --to a..b:1",
        f"start --to {'x' * 64}.example:1",
        "start --to db:1 --via ssh://%ff@h",
        f"start --to {echo_server.address} --pid-file shell.pid",
        "stop ²",
    ):
        send(line)
    send(f"start --to {echo_server.address} --name after")
    shell.wait_stderr("after ready on")
    assert "Traceback" not in shell.stderr
    assert "--pid-file is not available in the shell" in shell.stderr
    assert sorted(e["name"] for e in tether.list_json()) == ["after", "kept"]
    assert shell.proc.stdin is not None
    shell.proc.stdin.close()
    assert shell.finish() == 8  # the last failed line's status: `stop ²` matched nothing
    assert tether.list_json() == []


def test_stopping_one_of_two_leaves_the_other(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    shell, send = start_shell(tether)
    send(f"start --to {echo_server.address} --name one")
    send(f"start --to {echo_server.address} --name two")
    shell.wait_stderr("two ready on")
    code, _, err = tether.run("stop", "one")  # deadlocked on Python 3.12.1 and 3.13.0
    assert code == 0, err
    assert [e["name"] for e in tether.list_json()] == ["two"]
    send("stop two")
    shell.wait_stderr("stopped")
    assert shell.proc.poll() is None and tether.list_json() == []
    assert shell.proc.stdin is not None
    shell.proc.stdin.close()
    assert shell.finish() == 0


def test_sighup_closes_the_shells_tunnels(tether: TetherRunner, echo_server: EchoServer) -> None:
    shell, send = start_shell(tether)
    send(f"start --to {echo_server.address} --name hup")
    shell.wait_stderr("hup ready on")
    shell.send_signal(signal.SIGHUP)  # the terminal went away
    assert shell.finish() == 128 + signal.SIGHUP
    assert tether.list_json() == []
    assert not list(Path(tether.env["TETHER_RUNTIME_DIR"]).glob("*.json"))


def blocked_signals(status: Path) -> set[int]:
    """The signals a thread or process blocks, from /proc's SigBlk mask."""
    mask = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status.read_text(), re.M)[1], 16)  # type: ignore[index]
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def test_signals_reach_the_prompt_and_never_stay_blocked_in_ssh(
    tether: TetherRunner, shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    """Only the prompt's thread may take SIGHUP, SIGTERM and SIGINT (elsewhere they would wait
    for a line of input); and the OpenSSH master, started from the loop's thread, must not
    inherit that thread's mask, or SIGTERM would never stop it."""
    sshd = shared_sshd.through("openssh")
    shell, send = start_shell(tether)
    # A master of the tunnel's own, the shell loop thread's child (a shared one is no one's).
    flags = " ".join([*sshd.tether_flags(), "--no-share-master"])
    send(f"start --to {echo_server.address} --name masked {flags}")
    shell.wait_stderr("masked ready on")
    prompt = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    tasks = Path(f"/proc/{shell.pid}/task")
    for task in tasks.iterdir():
        blocked = blocked_signals(task / "status")
        if int(task.name) == shell.pid:
            assert not blocked & prompt
        else:
            assert prompt <= blocked, task.name
    # Each thread lists the children it started: the master is the loop thread's.
    (master,) = [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]
    assert blocked_signals(Path(f"/proc/{master}/status")) == set()
    shell.send_signal(signal.SIGHUP)
    assert shell.finish() == 128 + signal.SIGHUP
    assert tether.list_json() == []


def test_an_unresponsive_shell_is_never_killed_by_stop(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    shell, send = start_shell(tether)
    send(f"start --to {echo_server.address} --name first")
    send(f"start --to {echo_server.address} --name second")
    shell.wait_stderr("second ready on")
    shell.send_signal(signal.SIGSTOP)
    try:
        code, _, err = tether.run("stop", "first", "--timeout", "1")
    finally:
        shell.send_signal(signal.SIGCONT)
    assert code == 9 and "lives in tether shell pid" in err
    # Nothing was signalled: the shell and both its tunnels go on.
    assert sorted(e["name"] for e in tether.list_json()) == ["first", "second"]
    assert shell.proc.poll() is None
    assert shell.proc.stdin is not None
    shell.proc.stdin.close()
    assert shell.finish() == 0


def test_a_closed_stdin_ends_the_shell_with_one_error(tether: TetherRunner) -> None:
    result = subprocess.run(
        ["sh", "-c", '"$@" <&-', "sh", sys.executable, "-m", "tether", "shell"],
        env=tether.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["tether: error: cannot read stdin: Bad file descriptor"]
