"""How many sessions one relay holds: what each costs it, and how many fit in 16 GiB.

    PYTHONPATH=. .venv/bin/python bench/gateway_capacity.py --sessions 500 [--sessions 2000]
        [--batch 50] [--idle 10] [--mib 1] [--logins 100]

A gateway of tether's own (bench/gateway.py: a signer, one relay, an agent serving an echo
target) and, through the one relay, hand-built `ssh -J -N -L` sessions (a certificate issued
before the run: no signer on the path), opened --batch at a time (under the relay's MaxStartups)
up to each --sessions in turn, each carrying a round trip before the next batch. At each count:
- the relay's memory (PSS of its sshd and its sessions) and descriptors, per session, and the
  most any one of its processes holds (the sshd of the agent's link: a socket per session);
- the agent's descriptors per session (its links and the site sshd's sessions);
- the CPU of the relay's tether process (and the `ss` it runs) over --idle seconds, idle;
- CPU per MB moved: --mib MiB echoed through every session at once, the CPU time of every
  relay process (its sshd's sessions and tether) over the bytes the relay carried both ways;
- sessions per 16 GiB: by memory (after 1 GiB for the system, the idle relay and a burst of
  logins as big as MaxStartups lets in, each as --logins half-open logins measured), by
  descriptors (LimitNOFILE per process) and by tasks (TasksMax).
2,000 sessions take about 12 minutes on 2 cores. Local ports are 20000 and up: below the
usual ephemeral range, which ssh's own outgoing connections take from.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench.gateway import Gateway, pss_kib
from bench.lifecycle import probe
from bench.relays import cpu_ticks
from tests.support.sshd_server import require_sshd
from tether.gateway.sshd import strict_base
from tether.gateway.sshdconfig import LOGIN_GRACE, STARTUPS_FULL
from tether.gatewayunits import SESSIONS_NOFILE, SESSIONS_TASKS
from tether.procs import descendants

FIRST_PORT = 20000
GIB = 1024 * 1024  # KiB
RELAY_MEMORY = 16 * GIB
SYSTEM = 1 * GIB  # kept for the system and the relay host's own processes
LISTEN_DEADLINE = 60.0  # for one session's ssh to log in twice and listen, on a loaded machine
CHUNK = 64 * 1024
TICK = os.sysconf("SC_CLK_TCK")


def echo_server(listener: socket.socket) -> None:
    """Echo each connection until its end, a thread each (a process of its own)."""

    def one(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(CHUNK):
                conn.sendall(data)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def descriptors(pids: list[int]) -> tuple[int, int]:
    """Open descriptors of ``pids``: in all, and the most one of them holds."""
    counts = []
    for pid in pids:
        with contextlib.suppress(OSError):
            counts.append(len(os.listdir(f"/proc/{pid}/fd")))
    return sum(counts), max(counts, default=0)


def listens(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` (an ssh -L) listens on ``port`` before LISTEN_DEADLINE; False if it
    exits first."""
    end = time.monotonic() + LISTEN_DEADLINE
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Session:
    port: int
    proc: subprocess.Popen[bytes]


class Sessions:
    """Hand-built sessions through the gateway's relay, each an `ssh -J -N -L`."""

    def __init__(self, gw: Gateway, logs: Path) -> None:
        self.gw, self.logs = gw, logs
        self.hand: Path | None = None  # the ssh config, once the gateway runs
        self.open: list[Session] = []
        self._next_port = FIRST_PORT

    def _spawn(self) -> Session:
        assert self.hand is not None
        while not port_free(self._next_port):
            self._next_port += 1
        port, self._next_port = self._next_port, self._next_port + 1
        log = self.logs / f"ssh-{port}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                ["ssh", "-F", str(self.hand), "-N", "-L",
                 f"127.0.0.1:{port}:{self.gw.targets['echo']}", "echo.hand"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        return Session(port, proc)

    def grow(self, count: int, batch: int) -> None:
        """Open sessions until ``count`` are open, ``batch`` at a time, each carrying a round
        trip; RuntimeError (with what ssh said) if one does not."""
        while len(self.open) < count:
            started = [self._spawn() for _ in range(min(batch, count - len(self.open)))]
            self.open += started
            for session in started:
                if not listens(session.port, session.proc):
                    said = (self.logs / f"ssh-{session.port}.log").read_text(errors="replace")
                    raise RuntimeError(f"session on port {session.port} did not open: {said}")
                probe(session.port)

    def close(self) -> None:
        for session in self.open:
            session.proc.terminate()
        for session in self.open:
            try:
                session.proc.wait(30)
            except subprocess.TimeoutExpired:
                session.proc.kill()
                session.proc.wait()
        self.open = []


def echo_through(port: int, size: int) -> int:
    """Send ``size`` bytes through the session on ``port`` and read them back; bytes read."""
    block = b"x" * CHUNK
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:

        def send() -> None:
            left = size
            while left:
                left -= sock.send(block[: min(left, CHUNK)])
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got = 0
        while data := sock.recv(CHUNK):
            got += len(data)
        sender.join()
    return got


def cpu_per_mb(gw: Gateway, sessions: Sessions, mib: int) -> tuple[float, float]:
    """``mib`` MiB echoed through every session at once: ms of the relay's CPU per MB it
    carried (each way counted), and the MB."""
    size = mib * 1024 * 1024
    pids = [gw.relay.pid, *gw.relay_pids()]
    before = cpu_ticks(pids)
    pool = ThreadPoolExecutor(max_workers=16)
    try:
        got = sum(pool.map(lambda s: echo_through(s.port, size), sessions.open))
    finally:
        # Interrupted: what is under way ends when its session's ssh does.
        pool.shutdown(wait=False, cancel_futures=True)
    if got != size * len(sessions.open):
        raise RuntimeError(f"echoed {got} bytes of {size * len(sessions.open)}")
    spent = (cpu_ticks(pids) - before) / TICK
    moved = 2 * got / 1e6  # to the target and back, through the relay
    return 1000 * spent / moved, moved


def half_open_logins(gw: Gateway, count: int) -> float:
    """KiB of the relay per login in progress: ``count`` connections that said hello and then
    nothing (what MaxStartups bounds), each an sshd process until LoginGraceTime."""
    before = pss_kib(gw.relay_pids())
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", gw.relay_port), timeout=10)
            sock.sendall(b"SSH-2.0-capacity\r\n")
            sock.recv(256)  # sshd's greeting: its process for this login has started
            socks.append(sock)
        deadline = time.monotonic() + LOGIN_GRACE / 2
        while len(gw.relay_pids()) < count + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        return (pss_kib(gw.relay_pids()) - before) / count
    finally:
        for sock in socks:
            sock.close()


def idle_cpu(pid: int, seconds: float) -> float:
    """% of one core ``pid`` (and the children it reaped meanwhile) used over ``seconds``."""
    before = cpu_ticks([pid])
    time.sleep(seconds)
    return 100 * (cpu_ticks([pid]) - before) / TICK / seconds


@dataclass(frozen=True)
class Measure:
    sessions: int
    opened_in: float  # s
    relay_kib: float  # per session, before any bytes moved
    relay_kib_moved: float  # per session, after (their buffers grown)
    relay_fds: float  # per session
    busiest_fds: float  # per session, in the one relay process that holds most
    relay_tasks: float  # processes per session
    agent_fds: float  # per session
    agent_kib: float  # per session (the site sshd's sessions and the links), after bytes moved
    idle_cpu: float  # % of a core, the relay's tether
    ms_per_mb: float
    moved_mb: float


@dataclass(frozen=True)
class Idle:
    relay_kib: int
    relay_fds: int
    relay_tasks: int
    agent_fds: int
    agent_kib: int


def idle_state(gw: Gateway) -> Idle:
    relay, agent = gw.relay_pids(), descendants(gw.procs[-1].pid)
    return Idle(
        pss_kib(relay), descriptors(relay)[0], len(relay), descriptors(agent)[0], pss_kib(agent)
    )


def measure(
    gw: Gateway, sessions: Sessions, idle: Idle, began: float, args: argparse.Namespace
) -> Measure:
    n = len(sessions.open)
    opened_in = time.monotonic() - began
    relay, agent = gw.relay_pids(), descendants(gw.procs[-1].pid)
    fresh = pss_kib(relay)
    fds, busiest = descriptors(relay)
    cpu = idle_cpu(gw.relay.pid, args.idle)
    ms, moved = cpu_per_mb(gw, sessions, args.mib)
    return Measure(
        sessions=n,
        opened_in=opened_in,
        relay_kib=(fresh - idle.relay_kib) / n,
        relay_kib_moved=(pss_kib(relay) - idle.relay_kib) / n,
        relay_fds=(fds - idle.relay_fds) / n,
        busiest_fds=busiest / n,
        relay_tasks=(len(relay) - idle.relay_tasks) / n,
        agent_fds=(descriptors(agent)[0] - idle.agent_fds) / n,
        agent_kib=(pss_kib(agent) - idle.agent_kib) / n,
        idle_cpu=cpu,
        ms_per_mb=ms,
        moved_mb=moved,
    )


def report(measures: list[Measure], idle: Idle, login_kib: float) -> None:
    rows: list[tuple[str, str]] = [
        ("opened in (s, batches, cumulative)", "{m.opened_in:.0f}"),
        ("relay PSS per session (KiB)", "{m.relay_kib:.0f}"),
        ("  after moving bytes", "{m.relay_kib_moved:.0f}"),
        ("relay fds per session", "{m.relay_fds:.1f}"),
        ("  in its busiest process", "{m.busiest_fds:.2f}"),
        ("relay processes per session", "{m.relay_tasks:.2f}"),
        ("agent fds per session", "{m.agent_fds:.1f}"),
        ("agent PSS per session, after (KiB)", "{m.agent_kib:.0f}"),
        ("relay tether CPU, idle (% core)", "{m.idle_cpu:.1f}"),
        ("relay CPU per MB moved (ms)", "{m.ms_per_mb:.2f}"),
        ("  MB moved", "{m.moved_mb:.0f}"),
    ]
    print(f"\none relay, hand-built sessions through it (idle relay: {idle.relay_kib} KiB PSS)")
    print(f"{'sessions':38}" + "".join(f"{m.sessions:>12}" for m in measures))
    for name, shape in rows:
        print(f"{name:38}" + "".join(f"{shape.format(m=m):>12}" for m in measures))
    last = measures[-1]
    burst = STARTUPS_FULL * login_kib
    # Sized by the sessions that have carried bytes: a relay's do.
    memory = (RELAY_MEMORY - SYSTEM - idle.relay_kib - burst) / last.relay_kib_moved
    by_fds = SESSIONS_NOFILE / last.busiest_fds
    by_tasks = SESSIONS_TASKS / last.relay_tasks
    print(f"\nsessions per 16 GiB relay, from {last.sessions} sessions:")
    print(
        f"  by memory  {memory:8.0f}  (16 GiB - 1 GiB system - idle relay - a burst of "
        f"{STARTUPS_FULL} logins at {login_kib:.0f} KiB = {burst / GIB:.1f} GiB; "
        "per session after moving bytes)"
    )
    print(f"  by fds     {by_fds:8.0f}  (LimitNOFILE={SESSIONS_NOFILE} in the busiest process)")
    print(f"  by tasks   {by_tasks:8.0f}  (TasksMax={SESSIONS_TASKS})")
    print(f"  the least  {min(memory, by_fds, by_tasks):8.0f}  (the goal: 5000)")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """End the gateway's processes, the agent first (each stops its own ssh and sshd)."""
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A directory sshd's StrictModes accepts, removed after, whatever happened."""
    base = strict_base()
    if base is None:
        sys.exit("bench: no directory sshd's StrictModes accepts (XDG_RUNTIME_DIR, ~)")
    work = Path(tempfile.mkdtemp(prefix=".tether-bench-capacity-", dir=base))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, action="append", help="sessions [500]")
    parser.add_argument("--batch", type=int, default=50, help="sessions opened at once [50]")
    parser.add_argument("--idle", type=float, default=10, help="seconds of idle CPU [10]")
    parser.add_argument("--mib", type=int, default=1, help="MiB echoed per session [1]")
    parser.add_argument("--logins", type=int, default=100, help="half-open logins [100]")
    args = parser.parse_args()
    counts = sorted(set(args.sessions or [500]))
    require_sshd()
    with workspace() as work:
        os.environ["TETHER_RUNTIME_DIR"] = str(work / "run")
        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        echo = multiprocessing.Process(target=echo_server, args=(listener,), daemon=True)
        echo.start()
        # Cleaned up as after Ctrl-C (the echo process keeps the defaults), run in the background
        # too, where a shell leaves SIGINT ignored.
        signal.signal(signal.SIGTERM, _interrupted)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        gw = Gateway(work, {"echo": f"127.0.0.1:{listener.getsockname()[1]}"})
        logs = work / "logs"
        logs.mkdir()
        sessions = Sessions(gw, logs)
        try:
            gw.start()
            sessions.hand = gw.hand_config()
            # One first session, alone, to see the path work; then the relay as it was.
            alone = len(gw.relay_pids())
            sessions.grow(1, 1)
            sessions.close()
            deadline = time.monotonic() + 30
            while len(gw.relay_pids()) > alone and time.monotonic() < deadline:
                time.sleep(0.1)
            idle = idle_state(gw)
            login_kib = half_open_logins(gw, args.logins)
            measures = []
            began = time.monotonic()
            for count in counts:
                sessions.grow(count, args.batch)
                print(f"{count} sessions open", file=sys.stderr, flush=True)
                measures.append(measure(gw, sessions, idle, began, args))
        finally:
            sessions.close()
            stop(gw.procs)
            echo.terminate()
            echo.join()
    report(measures, idle, login_kib)


if __name__ == "__main__":
    main()
