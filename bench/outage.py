"""Outages, next to autossh: what a client sees while the SSH server is gone and once it is back.

    PYTHONPATH=. .venv/bin/python bench/outage.py [--outage 35] [--runs 3]
        [--kinds frozen,link,restart] [--tools tether-openssh,tether-asyncssh,autossh]

Needs root (the link-down outage puts sshd in a network namespace of its own). Three kinds of
outage, each against a fresh sshd: sshd frozen (SIGSTOP to the listener and its sessions, then
SIGCONT); its link down (the namespace's end of a veth pair taken down, then up); sshd restarted
(stopped, then started again on the same port). Each tool goes through each kind --runs times,
the outages --outage seconds long on average and 6 s apart (29, 35 and 41 by default: the server
comes back at different points of a backoff), one run of every tool and kind before the next
run, so that a slow moment of the machine falls on all alike. Each tool forwards a local
port to an echo target behind sshd, with keepalives every 2 s and 2 unanswered ones allowed:
tether (`--keepalive-interval 2 --keepalive-count 2 --timeout 20`, each SSH engine) and autossh
(`-M 0 -o ServerAliveInterval=2 -o ServerAliveCountMax=2`, AUTOSSH_GATETIME=0). Meanwhile a new
client connects every 250 ms and sends a byte. Figures, per outage and tool:
- wait: how long a client that connected 8 s or more into the outage (once the keepalives have
  seen the loss) waited for an answer: its median, and how it ended (served, reset, refused,
  EOF); ">" when every such client was still waiting when the server came back;
- attempt (frozen only): how long one reconnect attempt against the frozen server lasted, as the
  life of each ssh process the tool started during the outage (the OpenSSH engine and autossh;
  the asyncssh engine has no process to time); ">=" when one was still waiting at the return;
- recovery: from the server's return (SIGCONT; the link up; sshd answering again) to the first
  client served, whenever it connected: the median over the runs, and the longest.
A frozen sshd found running again at the end of its outage (something else sent it SIGCONT: on a
shared machine, a signal meant for a pid since reused) voids the run, which is done again.
The tether measured is the one `import tether` finds: put another tree's src first on PYTHONPATH
to measure it (the script prints which).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tether
from tests.support.netns import Netns, NetnsEcho
from tests.support.servers import EchoServer, free_port
from tests.support.sshd_server import SshdServer, require_sshd

KINDS = ("frozen", "link", "restart")
TOOLS = ("tether-openssh", "tether-asyncssh", "autossh")
KEEPALIVE = (2, 2)  # interval, count: the same for every tool
TIMEOUT = 20  # tether's --timeout, as in the report that asked for these figures
CLIENT_EVERY = 0.25
CLIENT_PATIENCE = 60.0  # how long one client waits for anything before it counts as "timeout"
DETECTED = 8.0  # into the outage: the keepalives (2 s x 3) have seen it by then
READY_DEADLINE = 60.0
RECOVERY_DEADLINE = 120.0
RETRIES = 3  # tries of an outage whose sshd something else continued (see Thawed)
STAGGER = 6.0  # seconds between the lengths of the runs' outages


@dataclass
class Client:
    began: float
    ended: float | None = None
    outcome: str = "waiting"


class Clients:
    """A new client every CLIENT_EVERY seconds, each in a thread of its own: connect, send a
    byte, wait for it back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[Client] = []
        self._running = True
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spawn, daemon=True)

    def start(self) -> Clients:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._thread.join(10)

    def _spawn(self) -> None:
        while self._running:
            client = Client(time.monotonic())
            with self._lock:
                self.clients.append(client)
            threading.Thread(target=self._one, args=(client,), daemon=True).start()
            time.sleep(CLIENT_EVERY)  # pacing the load: this is a benchmark, not a test

    def _one(self, client: Client) -> None:
        outcome = "served"
        try:
            with socket.create_connection(("127.0.0.1", self.port), CLIENT_PATIENCE) as sock:
                sock.sendall(b"x")
                if sock.recv(1) != b"x":
                    outcome = "eof"
        except ConnectionRefusedError:
            outcome = "refused"
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        except TimeoutError:
            outcome = "timeout"
        except OSError as exc:
            outcome = f"error {exc.errno}"
        client.ended, client.outcome = time.monotonic(), outcome

    def snapshot(self) -> list[Client]:
        with self._lock:
            return list(self.clients)

    def first_served_after(self, instant: float) -> float | None:
        ends = [
            c.ended
            for c in self.snapshot()
            if c.outcome == "served" and c.ended is not None and c.ended >= instant
        ]
        return min(ends) if ends else None


class Children:
    """The ssh processes whose parent is ``pid``: when each was first and last seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, list[float]] = {}
        self._running = True
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        self._thread.join(10)

    def _watch(self) -> None:
        while self._running:
            now = time.monotonic()
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                except OSError:
                    continue
                name = stat[stat.find("(") + 1 : stat.rfind(")")]
                ppid = int(stat.rpartition(")")[2].split()[1])
                if ppid == self.pid and name == "ssh":
                    self.seen.setdefault(int(entry.name), [now, now])[1] = now
            time.sleep(0.02)  # the sampling period of a lifetime measured to ~20 ms

    def lifetimes(self, after: float, before: float) -> tuple[list[float], float | None]:
        """Lives of the processes started after ``after`` that ended before ``before``, and
        the age at ``before`` of one started after ``after`` still alive then (if any)."""
        ended, running = [], None
        for first, last in self.seen.values():
            if first <= after:
                continue
            if last < before - 0.1:
                ended.append(last - first)
            elif first < before:
                running = before - first
        return ended, running


class Tool:
    """A forwarder under test: started through sshd to the echo target, stopped at the end."""

    name = ""
    watch_children = True

    def start(self, sshd: SshdServer, target: str, env: dict[str, str]) -> int:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def notes(self) -> str:
        return ""


class Tether(Tool):
    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.name = f"tether-{engine}"
        self.watch_children = engine == "openssh"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []

    def argv(self, sshd: SshdServer, target: str) -> list[str]:
        interval, count = KEEPALIVE
        return [
            sys.executable, "-m", "tether", "start", "--to", target,
            *sshd.through(self.engine).tether_flags(),
            "--keepalive-interval", str(interval), "--keepalive-count", str(count),
            "--timeout", str(TIMEOUT), "--json",
        ]  # fmt: skip

    def start(self, sshd: SshdServer, target: str, env: dict[str, str]) -> int:
        self._proc = subprocess.Popen(
            self.argv(sshd, target),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        threading.Thread(target=self._read_stderr, daemon=True).start()
        line = _read_line(self._proc.stdout, READY_DEADLINE)
        if not line:
            raise RuntimeError(f"{self.name} did not get ready: {''.join(self._stderr)}")
        return int(json.loads(line)["local_port"])

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace"))

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None:
            _end(self._proc)

    def notes(self) -> str:
        said = [line.strip() for line in self._stderr if "attempt" in line and "failed" in line]
        timed_out = [line for line in said if "timed out" in line]
        return (timed_out or said or [""])[0].partition("failed: ")[2]


class Autossh(Tool):
    name = "autossh"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, sshd: SshdServer, target: str, env: dict[str, str]) -> int:
        port = free_port()
        interval, count = KEEPALIVE
        argv = [
            "autossh", "-M", "0", "-N", "-F", str(sshd.ssh_config),
            "-o", f"ServerAliveInterval={interval}", "-o", f"ServerAliveCountMax={count}",
            "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{port}:{target}", "tether-test",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv,
            env={**env, "AUTOSSH_GATETIME": "0"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_DEADLINE
        while not _echoes(port):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError("autossh did not forward the port")
            time.sleep(0.05)  # polling the forward: autossh has no readiness to wait on
        return port

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None:
            _end(self._proc)


def _read_line(stream: object, deadline: float) -> str:
    import select

    fd = stream.fileno()  # type: ignore[attr-defined]
    data = b""
    end = time.monotonic() + deadline
    while b"\n" not in data:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            return ""
        chunk = os.read(fd, 65536)
        if not chunk:
            return ""
        data += chunk
    return data.split(b"\n", 1)[0].decode()


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stopped(pid: int | None) -> bool:
    """Whether process ``pid`` is stopped (by a signal): 'T' in /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return False
    return stat.rpartition(")")[2].split()[0] == "T"


def _echoes(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 2) as sock:
            sock.sendall(b"x")
            return sock.recv(1) == b"x"
    except OSError:
        return False


class Thawed(Exception):
    """The frozen sshd ran again before the end of the outage: something else sent it SIGCONT
    (on a shared machine, a signal meant for a pid since reused), and the run measured no
    outage."""


@dataclass
class Sample:
    """What one outage showed of one tool."""

    waits: list[float]  # clients that came DETECTED s or more into it and were answered
    outcomes: dict[str, int]  # how those were answered
    held: float | None  # if none was: how long the oldest of them had waited at the return
    attempts: list[float]  # lives of the ssh processes that began and ended within it
    attempt_running: float | None  # the age of one begun within it and alive at the return
    recovery: float | None  # from the return to the first client served (None: not within)
    notes: str


@dataclass
class Result:
    """One tool through one kind of outage, over several runs."""

    kind: str
    tool: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def wait(self) -> str:
        waits = [w for s in self.samples for w in s.waits]
        outcomes: dict[str, int] = {}
        for sample in self.samples:
            for outcome, count in sample.outcomes.items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        if waits:
            ways = "/".join(sorted(outcomes, key=lambda o: -outcomes[o]))
            return f"{statistics.median(waits):.2f} s {ways}"
        held = [s.held for s in self.samples if s.held is not None]
        return f"> {min(held):.1f} s (held)" if held else "-"

    @property
    def attempt(self) -> str:
        lives = [life for s in self.samples for life in s.attempts]
        if lives:
            return f"{statistics.median(lives):.2f} s (median of {len(lives)})"
        running = [s.attempt_running for s in self.samples if s.attempt_running is not None]
        if running:
            return f">= {max(running):.1f} s (still waiting at the return)"
        return "-"

    @property
    def recovery(self) -> str:
        times = [s.recovery for s in self.samples if s.recovery is not None]
        missed = len(self.samples) - len(times)
        if not times:
            return f"> {RECOVERY_DEADLINE:g} s"
        text = f"{statistics.median(times):.2f} s (max {max(times):.2f})"
        return text + (f", {missed} over {RECOVERY_DEADLINE:g} s" if missed else "")

    @property
    def notes(self) -> str:
        return next((s.notes for s in self.samples if s.notes), "")


@contextmanager
def servers(kind: str, directory: Path) -> Iterator[tuple[SshdServer, str, Netns | None]]:
    """sshd and an echo target behind it: in a network namespace for the link outage."""
    with ExitStack() as stack:
        if kind == "link":
            netns = stack.enter_context(Netns())
            echo = stack.enter_context(NetnsEcho(netns))
            sshd = SshdServer(directory, host=netns.peer_address, launcher=netns.launcher)
            yield stack.enter_context(sshd), echo.address, netns
        else:
            local = stack.enter_context(EchoServer())
            yield stack.enter_context(SshdServer(directory)), local.address, None


def outage(kind: str, sshd: SshdServer, netns: Netns | None) -> tuple[Callable[[], None], ...]:
    if kind == "frozen":
        return sshd.freeze, sshd.thaw
    if kind == "restart":
        return sshd.stop, sshd.start
    assert netns is not None
    return netns.link_down, netns.link_up


def measure(kind: str, tool: Tool, seconds: float, env: dict[str, str], tmp: Path) -> Sample:
    with servers(kind, tmp / f"{kind}-{tool.name}") as (sshd, target, netns):
        port = tool.start(sshd, target, env)
        children = Children(tool.pid) if tool.watch_children else None
        clients = Clients(port).start()
        try:
            begin, end = outage(kind, sshd, netns)
            began = time.monotonic()
            begin()
            time.sleep(seconds)  # the outage's length: the scenario, not a synchronisation
            if kind == "frozen" and not _stopped(sshd.pid):
                raise Thawed(sshd.log_path.read_text(errors="replace").splitlines()[-3:])
            end()
            back = time.monotonic()
            deadline = back + RECOVERY_DEADLINE
            while (served := clients.first_served_after(back)) is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            clients.stop()
            if children is not None:
                children.stop()
            tool.stop()
    during = [c for c in clients.snapshot() if began + DETECTED <= c.began < back]
    waits: list[float] = []
    outcomes: dict[str, int] = {}
    for c in during:
        if c.ended is not None and c.ended < back:
            waits.append(c.ended - c.began)
            outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    held = back - during[0].began if during and not waits else None
    lives: list[float] = []
    running = None
    if kind == "frozen" and children is not None:
        lives, running = children.lifetimes(began, back)
    recovery = served - back if served is not None else None
    return Sample(waits, outcomes, held, lives, running, recovery, tool.notes())


def measure_retried(kind: str, name: str, seconds: float, env: dict[str, str], tmp: Path) -> Sample:
    for run in range(1, RETRIES + 1):
        try:
            return measure(kind, make_tool(name), seconds, env, tmp / f"try{run}")
        except Thawed as exc:
            print(f"{kind} {name}: sshd was continued during the outage ({exc}); once more")
    raise RuntimeError(f"{kind} {name}: sshd was continued during the outage {RETRIES} times")


def make_tool(name: str) -> Tool:
    return Autossh() if name == "autossh" else Tether(name.removeprefix("tether-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=35.0, help="seconds of outage [35]")
    parser.add_argument("--kinds", default=",".join(KINDS), help="frozen,link,restart")
    parser.add_argument("--tools", default=",".join(TOOLS), help=",".join(TOOLS))
    parser.add_argument("--runs", type=int, default=3, help="outages of each kind per tool [3]")
    args = parser.parse_args()
    require_sshd()
    if os.geteuid() != 0:
        sys.exit("bench/outage.py needs root (network namespaces)")
    kinds = [k for k in args.kinds.split(",") if k]
    tools = [t for t in args.tools.split(",") if t]
    for name in (*kinds, *tools):
        if name not in (*KINDS, *TOOLS):
            sys.exit(f"unknown outage or tool: {name}")
    print(f"tether from {Path(tether.__file__).parent}", flush=True)
    # Staggered, so that the server returns at different points of a tool's backoff.
    lengths = [args.outage + STAGGER * (run - (args.runs - 1) / 2) for run in range(args.runs)]
    results = [Result(kind, name) for kind in kinds for name in tools]
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "ssh_config"
        empty.write_text("")
        env = {
            **os.environ,
            "TETHER_RUNTIME_DIR": f"{tmp}/run",
            "XDG_STATE_HOME": f"{tmp}/state",
            "TETHER_SSH_CONFIG": str(empty),
        }
        env.pop("TETHER_CONFIG", None)
        for run, seconds in enumerate(lengths):
            for result in results:  # one run of each, then the next: alike for a slow moment
                where = Path(tmp) / f"run{run}"
                sample = measure_retried(result.kind, result.tool, seconds, env, where)
                result.samples.append(sample)
                took = "none" if sample.recovery is None else f"{sample.recovery:.2f} s"
                print(
                    f"{result.kind:8} {result.tool:16} outage {seconds:4.0f} s, recovery {took}",
                    flush=True,
                )
    shown = ", ".join(f"{seconds:g}" for seconds in lengths)
    print(f"\noutages of {shown} s, keepalive {KEEPALIVE[0]} s x {KEEPALIVE[1]}")
    header = ("outage", "tool", "client's wait", "one attempt (frozen)", "to first served")
    print(f"| {' | '.join(header)} |")
    print(f"|{'---|' * len(header)}")
    for r in results:
        print(f"| {r.kind} | {r.tool} | {r.wait} | {r.attempt} | {r.recovery} |")
    for r in results:
        if r.notes:
            print(f"{r.kind} {r.tool}: a failed attempt said: {r.notes}")


if __name__ == "__main__":
    main()
