"""Background tunnels, `list` and `stop` across processes, against the real sshd."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import EchoServer, SilentServer
from tests.support.sshd_server import SshdServer
from tether import procs
from tether.cli.plainstart import plain_start
from tests.support.tether_process import TetherRunner, start_of
from tests.support.waiting import wait_until_sync


def runtime_dir(tether: TetherRunner) -> Path:
    return Path(tether.env["TETHER_RUNTIME_DIR"])


def start_background(tether: TetherRunner, *args: str) -> dict[str, object]:
    code, out, err = tether.run("start", *args, "--background", "--json")
    assert code == 0, err
    return dict(json.loads(out))


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_background_list_stop(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "bg.pid"
    info = start_background(
        tether,
        "--to",
        echo_server.address,
        *sshd.tether_flags(),
        "--name",
        "bg-echo",
        "--pid-file",
        str(pid_file),
    )
    pid = int(str(info["pid"]))
    assert pid_file.read_text().strip() == str(pid) and alive(pid)
    with socket.create_connection(("127.0.0.1", int(str(info["local_port"]))), timeout=10) as s:
        s.sendall(b"x" * 1000)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        assert got == b"x" * 1000

    # The client has its answer; the tunnel finishes closing that connection just after.
    wait_until_sync(
        lambda: tether.list_json()[0]["connections_active"] == 0, "the connection to close"
    )
    listed = tether.list_json()
    assert len(listed) == 1
    entry: dict[str, Any] = listed[0]
    assert entry["id"] == info["id"] and entry["name"] == "bg-echo" and entry["pid"] == pid
    assert entry["mode"] == "background" and entry["state"] == "ready"
    assert entry["via"] == sshd.via and entry["target_port"] == echo_server.port
    assert entry["bytes_out"] == 1000 and entry["bytes_in"] == 1000
    assert entry["connections_total"] == 1 and entry["connections_active"] == 0
    assert Path(entry["log_file"]).is_file()
    assert (Path(entry["log_file"]).stat().st_mode & 0o777) == 0o600

    code, table, _ = tether.run("list")
    assert (
        code == 0
        and "bg-echo" in table
        and table.splitlines()[0].split()[:4] == ["ID", "NAME", "MODE", "PID"]
    )
    code, log, _ = tether.run("logs", "bg-echo")
    assert code == 0 and "bg-echo ready on" in log

    control = Path(entry["control"])
    assert control.exists() and (control.stat().st_mode & 0o777) == 0o600
    code, _, err = tether.run("stop", "bg-echo")
    assert code == 0, err
    assert not alive(pid)  # stop returns only after the process has exited
    assert not pid_file.exists() and not control.exists()
    assert not list(runtime_dir(tether).glob("*.json"))
    code, out, _ = tether.run("list")
    assert code == 0 and out.strip() == "No tunnels running"


def test_background_failure_reports_child_error(tether: TetherRunner, sshd: SshdServer) -> None:
    code, out, err = tether.run(
        "start", "--to", "127.0.0.1:1", *sshd.tether_flags(), "--background"
    )
    assert code == 6 and out == ""
    assert err.strip().splitlines() == [
        f"tether: error: cannot connect to 127.0.0.1:1 through {sshd.via}: Connection refused"
    ]
    assert not list(runtime_dir(tether).glob("*.json"))


def test_background_timeout_stops_the_child(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    code, _, err = tether.run(
        "start",
        *silent_server.tether_flags(sshd.known_hosts, sshd.engine),
        "--background",
        "--timeout",
        "1",
    )
    assert code == 7, err
    assert "not ready after 1s" in err
    assert not list(runtime_dir(tether).glob("*.json"))
    assert tether.list_json() == []


def test_sigkilled_background_tunnel_disappears(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    info = start_background(tether, "--to", echo_server.address)
    entry_file = runtime_dir(tether) / f"{info['id']}.json"
    assert entry_file.exists()
    os.kill(int(str(info["pid"])), signal.SIGKILL)
    wait_until_sync(lambda: not alive(int(str(info["pid"]))), "the tunnel to die")
    assert tether.list_json() == []
    assert not entry_file.exists()


def children_of(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_sigkilled_tunnel_takes_its_ssh_with_it(
    tether: TetherRunner, shared_sshd: SshdServer, echo_server: EchoServer
) -> None:
    """SIGKILL gives tether no chance to stop its OpenSSH master: the master must still end,
    and the private directory it leaves is removed by the next master's start."""
    sshd = shared_sshd.through("openssh")
    flags = ["--to", echo_server.address, *sshd.tether_flags(), "--no-share-master"]
    info = start_background(tether, *flags)
    (master,) = children_of(int(str(info["pid"])))
    argv = Path(f"/proc/{master}/cmdline").read_bytes().split(b"\0")
    control = Path(os.fsdecode(argv[argv.index(b"-S") + 1]))
    os.kill(int(str(info["pid"])), signal.SIGKILL)
    wait_until_sync(lambda: not alive(master), "the master to end with its tunnel")
    left = control.parent
    assert left.is_dir() and not control.exists()  # ssh removed its socket; the rest is left
    assert left.parent == Path(tether.env["TMPDIR"])
    # A minute later (the sweep spares directories young enough to be starting)...
    then = left.stat().st_mtime - 120
    os.utime(left, (then, then))
    info = start_background(tether, *flags)
    assert not left.exists()
    code, _, err = tether.run("stop", str(info["id"]))
    assert code == 0, err


def test_ten_parallel_starts_one_wins(tether: TetherRunner, echo_server: EchoServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    racers = [
        tether.spawn("start", "--to", echo_server.address, "-p", str(port), "--json")
        for _ in range(10)
    ]
    losers = []
    for racer in racers:
        racer.wait_for(
            lambda p: p.stdout.endswith("\n") or "error:" in p.stderr, "ready or an error"
        )
        if racer.stdout:
            winner = racer
        else:
            losers.append(racer)
    assert len(losers) == 9
    for loser in losers:
        assert loser.finish() == 3
        assert "in use by" in loser.stderr
    assert any(f"tether tunnel {winner.json_line()['id']}" in loser.stderr for loser in losers)
    winner.send_signal(signal.SIGTERM)
    assert winner.finish() == 0


def test_port_of_another_program(tether: TetherRunner, echo_server: EchoServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        code, _, err = tether.run(
            "start", "--to", echo_server.address, "--background", "-p", str(holder.getsockname()[1])
        )
    assert code == 3 and "in use by another program" in err


def test_stop_by_port_and_all(tether: TetherRunner, echo_server: EchoServer) -> None:
    a = start_background(tether, "--to", echo_server.address, "--name", "same")
    b = start_background(tether, "--to", echo_server.address, "--name", "same")
    code, _, err = tether.run("stop", "same")
    assert code == 2 and "matches 2 tunnels" in err
    assert str(a["id"]) in err and str(b["id"]) in err
    code, _, err = tether.run("stop", str(a["local_port"]))
    assert code == 0, err
    assert [e["id"] for e in tether.list_json()] == [b["id"]]
    code, _, _ = tether.run("stop", "--all")
    assert code == 0 and tether.list_json() == []


def test_unknown_tunnel(tether: TetherRunner) -> None:
    code, _, err = tether.run("stop", "nosuch")
    assert code == 8 and "no running tunnel matches 'nosuch'" in err
    code, _, err = tether.run("stop")
    assert code == 2 and "--all" in err
    code, _, err = tether.run("logs", "nosuch")
    assert code == 8


def forge(tether: TetherRunner, pid: int, entry_id: str = "f0f0f0f0") -> Path:
    directory = runtime_dir(tether)
    directory.mkdir(mode=0o700, exist_ok=True)
    entry = {
        "id": entry_id,
        "name": "forged",
        "pid": pid,
        "proc_start": start_of(pid),
        "lock_id": "0:0",
        "mode": "background",
        "local_host": "127.0.0.1",
        "local_port": 1,
        "local_addresses": ["127.0.0.1"],
        "target_host": "x",
        "target_port": 1,
        "via": None,
        "engine": None,
        "started": "2026-01-01T00:00:00Z",
        "log_file": None,
        "control": str(directory / f"{entry_id}.sock"),
    }
    (directory / f"{entry_id}.json").write_text(json.dumps(entry))
    return directory / f"{entry_id}.lock"


def test_forged_entry_never_gets_a_signal(tether: TetherRunner) -> None:
    victim = subprocess.Popen(["sleep", "300"])
    try:
        # A stale-looking forgery (nobody holds its lock) is just removed.
        forge(tether, victim.pid).write_text("")
        code, _, err = tether.run("stop", "forged")
        assert code == 8, err
        # A forgery whose lock is held, but not by the pid it names, is refused.
        lock = forge(tether, victim.pid)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            code, _, err = tether.run("stop", "forged")
            assert code == 9 and "not verified" in err
            code, _, err = tether.run("stop", "--all")
            assert code == 9
        finally:
            os.close(fd)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_corrupt_entry_warns_and_is_removed(tether: TetherRunner) -> None:
    directory = runtime_dir(tether)
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / "0badc0de.json").write_text("{oops")
    code, out, err = tether.run("list")
    assert code == 0 and out.strip() == "No tunnels running"
    assert "warning: removed corrupt registry entry" in err
    assert not (directory / "0badc0de.json").exists()


def test_unsafe_registry_is_refused(tether: TetherRunner) -> None:
    directory = runtime_dir(tether)
    directory.mkdir(mode=0o700)
    directory.chmod(0o777)
    code, _, err = tether.run("list")
    assert code == 2 and f"registry directory {directory} is group- or world-writable" in err


def heavy_loaded(tether: TetherRunner, argv: list[str], heavy: tuple[str, ...]) -> str:
    """Which of ``heavy`` a `tether ARGV` (run in a process of its own, to success) loaded."""
    probe = (
        "import sys\n"
        "from tether.cli import main\n"
        f"sys.argv = ['tether', *{argv!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "loaded = set(sys.modules) | {m.split('.')[0] for m in sys.modules}\n"
        f"print(sorted(loaded & {set(heavy)!r}), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=tether.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stderr


# Top-level packages, and the modules of tether a listing has no use for (what a tunnel is).
LIGHT = ("asyncssh", "rich", "click", "asyncio", "tether.spec", "tether.tunnel")


@pytest.mark.parametrize(
    ("argv", "heavy"),
    [
        # The plain forms skip click and the engine.
        (["list"], LIGHT),
        (["ls", "--json"], LIGHT),
        (["--debug", "list"], ("asyncssh", "rich")),
        (["list", "--json", "--help"], ("asyncssh", "rich")),
        (["stop", "--missing-ok", "no-such-tunnel"], LIGHT),
        (["stop", "--all"], LIGHT),
        (["stop", "--all", "--timeout", "5s"], ("asyncssh", "rich")),
    ],
)
def test_list_and_stop_import_only_what_they_need(
    tether: TetherRunner, argv: list[str], heavy: tuple[str, ...]
) -> None:
    said = heavy_loaded(tether, argv, heavy)
    assert said.strip().splitlines()[-1] == "[]", said


def test_a_plain_background_start_loads_neither_click_nor_asyncio(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    """Its parent parses without click and waits without an event loop: the child loads the
    rest, once it has begun what takes longest (prelogin.py). With no config file, nothing
    parses TOML either."""
    argv = ["start", "--to", echo_server.address, "--background", "--name", "light"]
    said = heavy_loaded(tether, argv, ("click", "asyncio", "asyncssh", "rich", "tomllib"))
    assert said.strip().splitlines()[-1] == "[]", said
    assert [entry["name"] for entry in tether.list_json()] == ["light"]
    assert tether.run("stop", "light")[0] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--to", "no-port", "--background"],
        ["--to", "127.0.0.1:1", "--via", "ftp://h", "--background"],
        ["no-such-profile", "--background"],
        ["--to", "127.0.0.1:1", "--reuse"],
        ["a", "b", "--background"],
    ],
)
def test_start_fails_alike_with_and_without_the_parser(
    tether: TetherRunner, args: list[str]
) -> None:
    """A plain start skips click: its errors and exit codes are those of the parsed form (a
    flag given twice, with the default, makes it go through click)."""
    twice = ["--timeout", "30s", "--timeout", "30s"]
    assert plain_start(args) is not None and plain_start([*args, *twice]) is None
    plain = tether.run("start", *args)
    parsed = tether.run("start", *args, *twice)
    assert plain == parsed
    assert plain[0] != 0 and plain[2].count("\n") == 1 and "Traceback" not in plain[2], plain


@pytest.mark.parametrize(
    "args",
    [["no-such-tunnel"], ["--all", "--missing-ok", "--bogus"], ["-"], [""], ["--all", "x", "y"]],
)
def test_stop_answers_alike_with_and_without_the_parser(
    tether: TetherRunner, args: list[str]
) -> None:
    """The plain form (no option with a value) skips click: its output, errors and exit codes
    are those of the parsed form (--timeout makes it go through click)."""
    plain = tether.run("stop", *args)
    parsed = tether.run("stop", *args, "--timeout", "5s")
    assert plain == parsed
    assert plain[0] != 0 and plain[2].count("\n") == 1 and "Traceback" not in plain[2], plain


def test_stop_all_stops_what_it_can_and_reports_the_rest(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    real = start_background(tether, "--to", echo_server.address)
    victim = subprocess.Popen(["sleep", "300"])
    lock = forge(tether, victim.pid)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, but not by the pid the entry names
    try:
        code, _, err = tether.run("stop", "--all")
        assert code == 9
        assert f"tether: stopped {real['id']}" in err
        assert "refusing to stop f0f0f0f0: pid" in err
        assert not alive(int(str(real["pid"])))
        assert victim.poll() is None
    finally:
        os.close(fd)
        victim.kill()
        victim.wait()


@pytest.mark.parametrize("copied_lock_id", [False, True])
def test_a_hard_link_to_a_live_lock_is_a_stale_forgery(
    tether: TetherRunner, echo_server: EchoServer, copied_lock_id: bool
) -> None:
    real = start_background(tether, "--to", echo_server.address)
    directory = runtime_dir(tether)
    real_lock = directory / f"{real['id']}.lock"
    forged_lock = forge(tether, int(str(real["pid"])))
    if copied_lock_id:  # the forger copied every field it can read, as well
        forged_entry = directory / "f0f0f0f0.json"
        st = real_lock.stat()
        entry = json.loads(forged_entry.read_text())
        entry["lock_id"] = f"{st.st_dev}:{st.st_ino}"
        forged_entry.write_text(json.dumps(entry))
    os.link(real_lock, forged_lock)  # the lock is held, by that very pid
    # Not a live tunnel: not listed (nor shown as unresponsive), and removed on the way.
    code, out, err = tether.run("list", "--json")
    assert code == 0, err
    assert [e["id"] for e in json.loads(out)] == [real["id"]]
    assert "removed registry entry f0f0f0f0" in err
    assert not forged_lock.exists() and not (directory / "f0f0f0f0.json").exists()
    assert real_lock.stat().st_nlink == 1 and alive(int(str(real["pid"])))
    # Forged again, a stop removes it the same way, signalling nobody.
    forge(tether, int(str(real["pid"])))
    os.link(real_lock, forged_lock)
    code, _, err = tether.run("stop", "forged")
    assert code == 8, err
    assert not forged_lock.exists() and alive(int(str(real["pid"])))
    code, _, err = tether.run("stop", str(real["id"]))
    assert code == 0, err


def test_odd_files_in_the_registry_break_nothing(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    directory = runtime_dir(tether)
    directory.mkdir(mode=0o700)
    (directory / "0000000a.json").mkdir()
    os.mkfifo(directory / "0000000b.json")
    (directory / "0000000c.json").symlink_to(directory / "nowhere")
    (directory / ".0000000d.json").write_text("{")  # a dotfile: not an entry
    (directory / "notes.json").write_text("{")  # not an entry's name
    (directory / "0000000e.json").write_text("{corrupt")
    code, out, err = tether.run("list", deadline=20)
    assert code == 0 and out.strip() == "No tunnels running"
    assert err.count("removed corrupt registry entry") == 1
    info = start_background(tether, "--to", echo_server.address)
    code, out, err = tether.run("list")
    assert code == 0 and str(info["id"]) in out and "warning" not in err  # warned once only
    code, _, err = tether.run("stop", "--all")
    assert code == 0, err
    assert (directory / "0000000a.json").is_dir()  # directories are left alone
    left = {p.name for p in directory.iterdir()}
    assert {"0000000b.json", "0000000c.json", "0000000e.json"}.isdisjoint(left)


def test_a_registry_inside_a_directory_others_can_swap_is_refused(
    tether: TetherRunner, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable and not sticky: anyone could rename our directory
    code, _, err = tether.run("list", env={"TETHER_RUNTIME_DIR": str(shared / "run")})
    assert code == 2
    assert f"is inside {shared}, which others can write to" in err
    shared.chmod(0o1777)  # as /tmp is: safe
    code, _, err = tether.run("list", env={"TETHER_RUNTIME_DIR": str(shared / "run")})
    assert code == 0, err


def test_an_unresponsive_tunnel_costs_list_and_stop_one_bounded_wait(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    frozen = [start_background(tether, "--to", echo_server.address) for _ in range(3)]
    for info in frozen:
        os.kill(int(str(info["pid"])), signal.SIGSTOP)
    try:
        listed = tether.list_json()
        assert [e["state"] for e in listed] == ["unresponsive"] * 3
        code, _, err = tether.run("stop", "--all", "--timeout", "1")
        assert code == 9
        assert "did not exit within 1s" in err and "(and" not in err.split(";")[0]
    finally:
        for info in frozen:
            os.kill(int(str(info["pid"])), signal.SIGCONT)
    # The SIGTERM that stop sent is delivered once they run again.
    pids = [int(str(info["pid"])) for info in frozen]
    wait_until_sync(lambda: not any(alive(pid) for pid in pids), "the tunnels to exit")


def test_stop_of_a_frozen_tunnel_says_it_stops_once_it_runs_again(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    info = start_background(tether, "--to", echo_server.address)
    pid = int(str(info["pid"]))
    os.kill(pid, signal.SIGSTOP)
    try:
        code, _, err = tether.run("stop", "--timeout", "3", str(info["id"]))
        # Not stopped yet, so a failure; but the failure says what will still happen.
        assert code == 9, err
        assert f"tunnel {info['id']} (pid {pid}) did not answer and did not exit within 3s" in err
        assert "(it is frozen); it was sent SIGTERM and stops when it runs again" in err
        assert alive(pid) and [e["id"] for e in tether.list_json()] == [info["id"]]
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until_sync(lambda: not alive(pid), "the tunnel to act on the SIGTERM it was sent")
    assert tether.list_json() == []


def test_a_held_registry_lock_bounds_start_by_its_timeout_and_signals(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    directory = runtime_dir(tether)
    directory.mkdir(mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another start, stuck while it holds the lock
    try:
        code, _, err = tether.run("start", "--to", echo_server.address, "--timeout", "1")
        assert code == 7 and "not ready after 1s (still binding)" in err
        waiting = tether.spawn("start", "--to", echo_server.address, "--timeout", "60")
        wait_until_sync(lambda: os.getpid() in procs.flock_holders(directory / ".lock"), "lock")
        wait_until_sync(
            lambda: (
                waiting.pid in lock_waiters(directory / ".lock") or waiting.proc.poll() is not None
            ),
            "the start to wait for the lock",
        )
        waiting.send_signal(signal.SIGTERM)
        assert waiting.finish() == 128 + signal.SIGTERM
    finally:
        os.close(fd)


def lock_waiters(path: Path) -> set[int]:
    """Pids that have the registry lock open, read from /proc/*/fd: those waiting for it."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == str(path) for fd in (entry / "fd").iterdir()):
                found.add(int(entry.name))
        except OSError:
            continue
    return found
