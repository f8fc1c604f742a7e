"""`tether shell` in batch mode: start, list and stop, seen from other processes too."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from servers import EchoServer
from tether_process import TetherRunner, read_pty_until


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
