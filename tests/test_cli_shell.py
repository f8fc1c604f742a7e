"""`tether shell` in batch mode: start, list and stop, seen from other processes too."""

from __future__ import annotations

import subprocess

from servers import EchoServer
from tether_process import TetherRunner


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
