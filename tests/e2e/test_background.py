"""Background mode: whole starts or nothing, whatever happens to the parent, the child, the
logs and stdout."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.servers import EchoServer, SilentServer
from tests.support.sshd_server import SshdServer
from tether.modes.background import LOGS_KEPT, prune_logs
from tests.support.tether_process import TetherProcess, TetherRunner, processes_with
from tests.support.waiting import wait_until_sync


def runtime_dir(tether: TetherRunner) -> Path:
    return Path(tether.env["TETHER_RUNTIME_DIR"])


def logs_dir(tether: TetherRunner) -> Path:
    return Path(tether.env["XDG_STATE_HOME"]) / "tether" / "logs"


def start_hanging(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer, marker: str
) -> TetherProcess:
    """A --background start whose child hangs in the SSH handshake, named ``marker``."""
    parent = tether.spawn(
        "start",
        *silent_server.tether_flags(sshd.known_hosts, sshd.engine),
        "--background",
        "--name",
        marker,
        "--timeout",
        "60",
    )
    wait_until_sync(lambda: silent_server.accepted == 1, "the child to connect")
    return parent


def test_killed_parent_takes_the_starting_child_with_it(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    marker = f"orphan-{os.getpid()}"
    parent = start_hanging(tether, silent_server, sshd, marker)
    parent.send_signal(signal.SIGKILL)
    parent.finish()
    # Nobody can ever learn this tunnel's id now, so it must not stay.
    wait_until_sync(lambda: not processes_with(marker), "the child to stop")
    assert tether.list_json() == []
    assert not list(runtime_dir(tether).glob("*.json"))


def test_interrupted_start_leaves_nothing(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    marker = f"bg-interrupted-{os.getpid()}"
    parent = start_hanging(tether, silent_server, sshd, marker)
    assert len(processes_with(marker)) == 2  # the parent and its detached child
    parent.send_signal(signal.SIGINT)
    assert parent.finish() == 130
    wait_until_sync(lambda: not processes_with(marker), "the child to be gone")
    assert tether.own_processes() == []  # nor its ssh (the runner's stop --all would end it)
    assert tether.list_json() == []


def test_child_killed_before_ready_gives_128_plus_n(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    marker = f"killed-child-{os.getpid()}"
    parent = start_hanging(tether, silent_server, sshd, marker)
    (child,) = [p for p in processes_with(marker) if p != parent.pid]
    os.kill(child, signal.SIGKILL)
    assert parent.finish() == 137
    assert "background tunnel was killed by signal 9 before ready" in parent.stderr
    assert tether.list_json() == []
    # Its OpenSSH master went with it (the runner's cleanup checks); the master's directory
    # waits for the next master's sweep, which test_lifecycle shows.
    for left in Path(tether.env["TMPDIR"]).glob("tether-ssh-*"):
        shutil.rmtree(left)


def test_closed_stdout_leaves_no_tunnel(tether: TetherRunner, echo_server: EchoServer) -> None:
    command = tether.command("start", "--to", echo_server.address)
    # With --run the record goes to stderr, since stdout is the command's.
    for mode, closing, errors in (
        (["--background"], ">&-", ["tether: error: cannot write to stdout: Bad file descriptor"]),
        ([], ">&-", ["tether: error: cannot write to stdout: Bad file descriptor"]),
        (["--run", "true"], "2>&-", []),
    ):
        result = subprocess.run(
            ["sh", "-c", f'"$@" --json {closing}', "sh", *command, *mode],
            env=tether.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == errors
        assert tether.list_json() == []


FDS = """import os
for fd in (1, 2):
    try:
        os.fstat(fd)
    except OSError:
        print(f"fd {fd} closed", file=open("fds.txt", "a"))
"""


def test_a_stream_tether_does_not_write_at_start_may_be_closed(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    """Only a start whose announcement cannot be written fails: with its record on stdout, a
    start with stderr closed runs, and its --ttl warning (on stderr, lost) does not end it
    as an internal error; the banner on stderr needs no stdout. A command gets the streams
    as they were given to tether."""
    (tether.workdir / "fds.py").write_text(FDS)
    command = tether.command("start", "--to", echo_server.address)
    for flags, closing, out in (
        (["--json", "--ttl", "1s"], "2>&-", '"state": "ready"'),
        (["--ttl", "1s"], ">&-", ""),
        (["--ttl", "1s", "--", sys.executable, "fds.py"], ">&-", ""),
    ):
        result = subprocess.run(
            ["sh", "-c", f'"$@" {closing}', "sh", *command, *flags],
            env=tether.env,
            cwd=tether.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (flags, result.stderr)
        assert out in result.stdout and "Traceback" not in result.stderr
    assert (tether.workdir / "fds.txt").read_text() == "fd 1 closed\n"
    assert tether.list_json() == []


def test_broken_stdout_leaves_no_tunnel(tether: TetherRunner, echo_server: EchoServer) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # whoever was to read the JSON is gone: `| true` that already exited
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tether",
                "start",
                "--to",
                echo_server.address,
                "--background",
                "--json",
            ],
            env=tether.env,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "tether: error: cannot write to stdout: Broken pipe"
    ]
    assert tether.list_json() == []


def test_concurrent_background_starts_all_succeed(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    logs = logs_dir(tether)
    logs.mkdir(parents=True, mode=0o700)
    for index in range(60):  # more than are kept, so every start prunes
        (logs / f"{index:08x}.log").write_text("old\n")
    starters = [
        tether.spawn("start", "--to", echo_server.address, "--background", "--json")
        for _ in range(8)
    ]
    codes = [starter.finish() for starter in starters]
    assert codes == [0] * 8, [s.stderr for s in starters]
    assert len(tether.list_json()) == 8


def test_a_start_keeps_the_newest_logs_counting_its_own(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    logs = logs_dir(tether)
    logs.mkdir(parents=True, mode=0o700)
    for index in range(LOGS_KEPT + 10):
        old = logs / f"{index:08x}.log"
        old.write_text("old\n")
        os.utime(old, (index, index))  # distinct ages: the oldest go first
    code, out, err = tether.run("start", "--to", echo_server.address, "--background", "--json")
    assert code == 0, err
    kept = {path.name for path in logs.glob("*.log")}
    assert len(kept) == LOGS_KEPT, len(kept)
    assert f"{json.loads(out)['id']}.log" in kept
    assert f"{LOGS_KEPT + 9:08x}.log" in kept and f"{9:08x}.log" not in kept


def test_pruning_copes_with_vanishing_logs(tmp_path: Path) -> None:
    for index in range(5):
        (tmp_path / f"{index:08x}.log").write_text("old\n")
    (tmp_path / "deadbeef.log").symlink_to(tmp_path / "gone")  # stat() fails, as for a log
    prune_logs(tmp_path, live_ids=set(), keep=2)  # another start removed under our feet
    assert len(list(tmp_path.glob("*.log"))) == 3  # the 2 newest and the dangling one


def test_log_lines_are_timestamped(tether: TetherRunner, echo_server: EchoServer) -> None:
    code, out, err = tether.run("start", "--to", echo_server.address, "--background", "--json")
    assert code == 0, err
    info = json.loads(out)
    code, log, _ = tether.run("logs", info["id"])
    assert code == 0 and "ready on" in log
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")
    assert log.splitlines() and all(stamp.match(line) for line in log.splitlines()), log


def test_an_unsafe_log_directory_is_refused(tether: TetherRunner, echo_server: EchoServer) -> None:
    logs = logs_dir(tether)
    logs.mkdir(parents=True)
    logs.chmod(0o777)
    code, _, err = tether.run("start", "--to", echo_server.address, "--background")
    assert code == 2
    assert f"log directory {logs} is group- or world-writable" in err
    assert tether.list_json() == []


def test_the_detached_tunnel_holds_nothing_its_starter_passed_down(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    """A pipe the starter inherited (a make jobserver's, a test runner's) ends when the starter
    does, not when the tunnel does: whoever waits for its end must not wait for the tunnel."""
    read_end, write_end = os.pipe()
    try:
        code, _, err = tether.run(
            "start", "--to", echo_server.address, "--background", pass_fds=(write_end,)
        )
        assert code == 0, err
        os.close(write_end)
        write_end = -1
        readable, _, _ = select.select([read_end], [], [], 30)
        assert readable and os.read(read_end, 1) == b""  # EOF: no process holds it any more
        (tunnel,) = tether.list_json()
        assert tunnel["state"] == "ready"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert tether.run("stop", "--all")[0] == 0
