"""Failover under load: N tunnels through two relays, one relay killed mid-run, every byte checked.

    PYTHONPATH=. .venv/bin/python bench/gateway_failover.py [--tunnels 200] [--holders 4]
        [--rate 1000] [--before 10] [--deadline 180] [--backoff-max 30s]

Needs root: the second relay runs in a network namespace (two relays of one gateway cannot
share a host's loopback). A gateway of tether's own: a signer, relay r1 on loopback, relay r2 in
the namespace, one agent linked to both, serving an echo target. --tunnels tunnels are opened
with the Python API (`tether.open_async`) in --holders processes, half with the via
`gw://r1,r2` and half with `gw://r2,r1`, so that each relay carries half. A load generator keeps
one connection per tunnel busy (messages with a sequence number, --rate in all per second,
each echoed and compared), then relay r1 is killed with its sessions (SIGKILL, as its host
dying would), and the run goes on until every broken connection carries again.

Printed: on the surviving relay's tunnels, connections broken and bytes lost (the goal is 0
for both) and the longest round trip while the other relay failed; on the killed relay's
tunnels, the bytes that were in flight (lost with the relay), connections refused at the local
listeners (the goal is 0: a tunnel keeps its port while it reconnects) and the time from the
break to the first byte echoed through the other relay (median, p95, longest); any byte that
came back wrong; and whether a process was left behind. There is no reference tool to run
beside it: `ssh -L` and autossh have no second relay to fail over to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.lifecycle import free_port
from tests.support.netns import Netns
from tests.support.sshd_server import require_sshd
from tether.gateway import enrol, keygen, layout, policy, relaybundle
from tether.gateway.hops import known_hosts_line
from tether.gateway.sessions import leftovers
from tether.gateway.sshd import strict_base
from tether.procs import descendants
from tether.spec import Endpoint

TETHER = [sys.executable, "-m", "tether"]
MESSAGE = 1024  # bytes per message: a sequence number, the tunnel's index, filler
EXCHANGE_LIMIT = 300.0  # a message unanswered this long counts as a broken connection
START_LIMIT = 60.0


def raise_fd_limit() -> None:
    """This bench's own processes hold a socket or more per tunnel: soft limit up to hard."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the echo target -----------------------------------------------------------------------------
def echo_serve(conn: Connection) -> None:
    raise_fd_limit()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(serve())


# -- the tunnels: opened with the Python API, a share per holder process --------------------------
def hold(settings: dict[str, Any], indices: list[int], conn: Connection) -> None:
    raise_fd_limit()
    logging.basicConfig(
        filename=Path(settings["runtime_dir"]).parent / f"holder-{indices[0]}.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_hold(settings, indices, conn))


async def _hold(settings: dict[str, Any], indices: list[int], conn: Connection) -> None:
    import tether

    gate = asyncio.Semaphore(settings["parallel"])
    stop = asyncio.Event()
    opened: asyncio.Queue[int] = asyncio.Queue()
    ports: dict[int, tuple[int, str]] = {}
    errors: dict[int, str] = {}

    async def one(index: int) -> None:
        released = False
        await gate.acquire()
        try:
            async with tether.open_async(
                runtime_dir=settings["runtime_dir"],
                name=f"t{index}",
                via=settings["vias"][index % 2],
                to="lab/echo",
                identity_file=settings["key"],
                known_hosts=settings["known_hosts"],
                backoff_max=settings["backoff_max"],
                timeout=settings["timeout"],
            ) as tunnel:
                gate.release()
                released = True
                # Where it went: a relay that failed its start hands the tunnel to the other.
                # (The transport is not public API; a bench may look.)
                transport = tunnel._hosted.tunnel.transport
                address = await transport.server_address()
                ports[index] = (tunnel.port, "r1" if address == settings["r1"] else "r2")
                opened.put_nowait(index)
                await stop.wait()
        except Exception as exc:  # a start that failed, or a tunnel lost for good
            errors[index] = f"{type(exc).__name__}: {exc}"
            opened.put_nowait(index)
        finally:
            if not released:
                gate.release()

    tasks = [asyncio.create_task(one(index)) for index in indices]
    for _ in indices:
        await opened.get()
    conn.send((ports, dict(errors)))
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    stop.set()
    await asyncio.gather(*tasks)
    conn.send(errors)


# -- the load: one connection per tunnel, every byte checked -------------------------------------
@dataclass
class Flow:
    index: int
    port: int
    relay: str  # the relay it went through at its start
    sent: int = 0
    echoed: int = 0
    in_flight_lost: int = 0
    breaks: int = 0
    refused: int = 0
    wrong: int = 0
    gaps: list[float] = field(default_factory=list)
    longest_after_kill: float = 0.0
    broken_since: float | None = None
    events: list[tuple[float, str]] = field(default_factory=list)  # each break: when, why


async def connect(
    flow: Flow, stop: asyncio.Event
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", flow.port)
        except ConnectionRefusedError:
            flow.refused += 1
            if stop.is_set():
                raise
            await asyncio.sleep(0.05)


async def run_flow(flow: Flow, interval: float, killed: list[float], stop: asyncio.Event) -> None:
    sequence = 0
    filler = bytes(MESSAGE - 12)
    await asyncio.sleep(random.uniform(0, interval))  # spread the flows over the interval
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await connect(flow, stop)
            while not stop.is_set():
                message = struct.pack("!QI", sequence, flow.index) + filler
                began = time.monotonic()
                writer.write(message)
                flow.sent += len(message)
                echoed = await asyncio.wait_for(reader.readexactly(len(message)), EXCHANGE_LIMIT)
                if echoed != message:
                    flow.wrong += 1
                    raise ConnectionError("a message came back changed")
                now = time.monotonic()
                flow.echoed += len(message)
                sequence += 1
                if killed and began >= killed[0]:
                    flow.longest_after_kill = max(flow.longest_after_kill, now - began)
                if flow.broken_since is not None:
                    flow.gaps.append(now - flow.broken_since)
                    flow.broken_since = None
                # Wait for the next message, watching the connection: an end seen here is a
                # break with nothing in flight.
                try:
                    unasked = await asyncio.wait_for(reader.read(1), interval)
                except TimeoutError:
                    continue
                if unasked:
                    flow.wrong += 1
                raise ConnectionError("the tunnel ended the connection")
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            if stop.is_set() and flow.broken_since is None:
                return
            flow.events.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            flow.breaks += 1
            flow.in_flight_lost += flow.sent - flow.echoed
            flow.sent = flow.echoed
            if flow.broken_since is None:
                flow.broken_since = time.monotonic()
        finally:
            if writer is not None:
                writer.close()


async def load(
    flows: list[Flow], args: argparse.Namespace, kill: Callable[[], None]
) -> tuple[float, float]:
    """Run the flows, kill relay r1 after --before seconds, and run on until every broken flow
    carries again (or --deadline); the kill's instant and how long the recovery took."""
    interval = len(flows) / args.rate
    killed: list[float] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_flow(flow, interval, killed, stop)) for flow in flows]
    await asyncio.sleep(args.before)
    broken = [flow.index for flow in flows if flow.breaks]
    if broken:
        raise RuntimeError(f"{len(broken)} connection(s) broke before the kill: {broken[:10]}")
    killed.append(time.monotonic())
    # In a thread: finding a relay's hundreds of sessions and killing them takes seconds on a
    # loaded machine, and the flows must run (and see their breaks) meanwhile.
    await asyncio.to_thread(kill)
    done = time.monotonic()
    deadline = killed[0] + args.deadline
    # Done once no flow is broken, after the killed relay's flows have broken (each at once:
    # its relay's sockets close with it) or a few seconds have passed since the kill.
    while time.monotonic() < deadline:
        settled = all(f.breaks for f in flows if f.relay == "r1") or time.monotonic() > done + 5
        if settled and not any(f.broken_since is not None for f in flows):
            break
        await asyncio.sleep(0.2)
    recovered = time.monotonic() - killed[0]
    await asyncio.sleep(args.after)  # traffic on both groups after the recovery, still checked
    stop.set()
    # A flow still waiting for its echo past the deadline is left broken, as counted.
    _, waiting = await asyncio.wait(tasks, timeout=interval + 10)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return killed[0], recovered


# -- the gateway ----------------------------------------------------------------------------------
class Gateway:
    """A signer, relay r1 here, relay r2 in ``netns``, an agent linked to both."""

    def __init__(self, work: Path, netns: Netns, echo: str) -> None:
        self.work = work
        self.netns = netns
        self.echo = echo
        self.gateway = layout.init(work / "gw")
        self.signer = Endpoint(netns.local_address, free_port())
        self.listens = {
            "r1": Endpoint("127.0.0.1", free_port()),
            "r2": Endpoint(netns.peer_address, 2222),
        }
        self.bundles = {
            name: relaybundle.add_relay(self.gateway, name, [self.signer]) for name in self.listens
        }
        self.enrolment = enrol.add_site(
            self.gateway, "lab", list(self.listens.values()), port=free_port()
        ).path
        self.key = keygen.generate(work / "alice", "alice")
        policy.add_user(self.gateway.policy, "alice", Path(f"{self.key}.pub").read_text())
        policy.grant(self.gateway.policy, "alice", "lab", "echo", None)
        ca = policy.parse_public_key(
            Path(f"{self.gateway.host_ca}.pub").read_text(), what="host CA"
        )
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(known_hosts_line(ca))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def state(self, relay: str) -> Path:
        return self.work / f"relay-{relay}"

    def start(self) -> None:
        self._spawn("signer", [], "signer", str(self.gateway.root), "--listen", str(self.signer))
        for name, listen in self.listens.items():
            launcher = self.netns.launcher if name == "r2" else []
            self._spawn(
                name, launcher, "relay", str(self.bundles[name]), "--listen", str(listen),
                "--state-dir", str(self.state(name)),
            )  # fmt: skip
        self._spawn(
            "agent", [], "agent", str(self.enrolment), f"--target=echo={self.echo}",
            "--state-dir", str(self.work / "agent"),
        )  # fmt: skip
        for name in self.listens:
            keys, announced = (
                self.state(name) / "authorized_keys",
                self.state(name) / "sites" / "lab.json",
            )
            until(partial(knows, keys), f"{name} to know alice")
            until(announced.exists, f"the agent to link to {name}")

    def _spawn(self, name: str, launcher: list[str], *args: str) -> None:
        out = self.work / f"{name}.out"
        with out.open("wb") as sink, (self.work / f"{name}.err").open("wb") as errors:
            self.procs[name] = subprocess.Popen(
                [*launcher, *TETHER, "gateway", *args, "--json"],
                stdout=sink, stderr=errors, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            # Its record, printed once ready (an agent is ready once one of its links is up).
            until(lambda: b"\n" in out.read_bytes(), f"the {name} to be ready")
        except RuntimeError as exc:
            said = (self.work / f"{name}.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; it said:\n{said}") from None

    def kill(self, name: str) -> int:
        """SIGKILL relay ``name`` with its sshd and every session, as its host dying would."""
        relay = self.procs[name]
        doomed = {relay.pid, *descendants(relay.pid), *leftovers(self.listens[name].port)}
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        relay.wait(30)
        for pid in leftovers(self.listens[name].port):  # sessions accepted in the instant
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(doomed)

    def issued(self) -> int:
        """Certificates the signer has issued so far, as its audit log says."""
        return sum(b'"event": "issued"' in line for line in self.gateway.audit.open("rb"))

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def knows(keys: Path) -> bool:
    return keys.exists() and "'alice'" in keys.read_text()


def until(condition: Callable[[], bool], what: str, limit: float = START_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def established(pid: int, port: int) -> int:
    """Established TCP connections to local ``port`` in the network namespace of ``pid``."""
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "01":
                count += 1
    return count


def left_behind(work: Path) -> list[int]:
    """Processes still running whose command line names the bench's directory."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if str(work).encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                continue
    return found


def available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


# -- the run ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tunnels", type=int, default=200, help="tunnels [200]")
    parser.add_argument("--holders", type=int, default=4, help="processes holding them [4]")
    parser.add_argument("--parallel", type=int, default=6, help="starts at once per holder [6]")
    parser.add_argument(
        "--rate", type=float, default=1000, help="messages per second, all flows [1000]"
    )
    parser.add_argument(
        "--before", type=float, default=10, help="seconds of load before the kill [10]"
    )
    parser.add_argument("--after", type=float, default=5, help="seconds of load after recovery [5]")
    parser.add_argument(
        "--deadline", type=float, default=180, help="longest wait for recovery [180]"
    )
    parser.add_argument(
        "--backoff-max", default="30s", help="the tunnels' longest reconnect delay [30s]"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and state")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (the second relay runs in a network namespace)")
    require_sshd()
    base = strict_base()
    if base is None:
        sys.exit("bench: no directory sshd's StrictModes accepts (XDG_RUNTIME_DIR, ~)")
    raise_fd_limit()
    # SIGTERM ends the run as Ctrl-C does: through the cleanup below (the bench's own process).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix=".tether-bench-failover-", dir=base))
    spawn = multiprocessing.get_context("spawn")
    echo_end, echo_there = spawn.Pipe()
    echo = spawn.Process(target=echo_serve, args=(echo_there,), daemon=True)
    holders: list[tuple[Any, Connection]] = []
    gw: Gateway | None = None
    free_before = available_mib()
    try:
        echo.start()
        echo_port = echo_end.recv()
        with Netns() as netns:
            gw = Gateway(work, netns, f"127.0.0.1:{echo_port}")
            gw.start()
            vias = [
                "gw://" + ",".join(str(gw.listens[r]) for r in order)
                for order in (("r1", "r2"), ("r2", "r1"))
            ]
            settings = {
                "runtime_dir": str(work / "run"), "vias": vias, "key": str(gw.key),
                "known_hosts": str(gw.known_hosts), "backoff_max": args.backoff_max,
                "timeout": "120s", "parallel": args.parallel,
                "r1": (gw.listens["r1"].host, gw.listens["r1"].port),
            }  # fmt: skip
            began = time.monotonic()
            for share in range(args.holders):
                ours, theirs = spawn.Pipe()
                indices = list(range(share, args.tunnels, args.holders))
                holder = spawn.Process(target=hold, args=(settings, indices, theirs))
                holder.start()
                holders.append((holder, ours))
            ports: dict[int, tuple[int, str]] = {}
            failed: dict[int, str] = {}
            for _, conn in holders:
                opened, errors = conn.recv()
                ports.update(opened)
                failed.update(errors)
            opening = time.monotonic() - began
            if failed:
                first = min(failed)
                raise RuntimeError(
                    f"{len(failed)} tunnel(s) failed to open; t{first}: {failed[first]}"
                )
            used_mib = free_before - available_mib()
            flows = [Flow(i, *ports[i]) for i in sorted(ports)]
            on_r1 = established(os.getpid(), gw.listens["r1"].port)
            on_r2 = established(gw.procs["r2"].pid, gw.listens["r2"].port)
            killed: list[int] = []
            issued_before: list[int] = []

            def kill() -> None:
                assert gw is not None
                issued_before.append(gw.issued())
                killed.append(gw.kill("r1"))

            kill_at, recovered = asyncio.run(load(flows, args, kill))
            lost_later: dict[int, str] = {}
            for _, conn in holders:
                with contextlib.suppress(OSError):  # a holder that died: said below
                    conn.send("stop")
            for share, (holder, conn) in enumerate(holders):
                try:
                    lost_later.update(conn.recv())
                except (EOFError, OSError):
                    holder.join(10)
                    why = f"its holder process ended early (exit code {holder.exitcode})"
                    print(f"holder {share}: {why}")
                    lost_later.update(
                        {i: why for i in range(share, args.tunnels, args.holders) if i in ports}
                    )
                holder.join(120)
            issued_after = gw.issued() - issued_before[0]
            gw.stop()
            stray = left_behind(work)
            for pid in stray[:5]:
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    print(f"left behind: {pid} {command[:200].decode(errors='replace')}")
        report(
            args, flows, opening, used_mib, on_r1, on_r2, killed[0], kill_at, recovered,
            issued_after, lost_later, stray,
        )  # fmt: skip
    finally:
        for holder, _ in holders:
            if holder.is_alive():
                holder.kill()
        if gw is not None:
            gw.stop()
        if echo.is_alive():
            echo_end.send("stop")
            echo.join(10)
        for pid in left_behind(work):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"median {statistics.median(values):.2f} s, p95 {p95:.2f} s, longest {values[-1]:.2f} s"


def report(
    args: argparse.Namespace,
    flows: list[Flow],
    opening: float,
    used_mib: int,
    on_r1: int,
    on_r2: int,
    killed: int,
    kill_at: float,
    recovered: float,
    issued_after: int,
    lost_later: dict[int, str],
    stray: list[int],
) -> None:
    survivors = [f for f in flows if f.relay == "r2"]
    moved = [f for f in flows if f.relay == "r1"]
    total = sum(f.echoed for f in flows)
    print(
        f"gateway failover: {len(flows)} tunnels through two relays, backoff max {args.backoff_max}"
    )
    print(
        f"  opened in {opening:.0f} s by {args.holders} processes of the Python API; "
        f"{used_mib} MiB of memory in use for them (clients, relays, site)"
    )
    print(
        f"  TCP sessions before the kill: r1 {on_r1}, r2 {on_r2} "
        "(each: its tunnels and the agent's link)"
    )
    print(
        f"  load: {total / 1e6:.1f} MB echoed and checked, "
        f"{args.rate:.0f} messages of {MESSAGE} B per second"
    )
    broken = sum(f.broken_since is not None for f in flows)
    ended = (
        f"{broken} flows still broken at the deadline," if broken else "every flow carried again"
    )
    print(f"  relay r1 killed ({killed} processes); {ended} {recovered:.1f} s later")
    print(
        f"  placed at their start: r1 {len(moved)}, r2 {len(survivors)} "
        "(half the vias name each relay first)"
    )
    print(f"  surviving relay r2, {len(survivors)} tunnels:")
    print(
        f"    connections broken {sum(f.breaks for f in survivors)}, "
        f"bytes lost {sum(f.in_flight_lost for f in survivors)} (goal 0 and 0)"
    )
    longest = max((f.longest_after_kill for f in survivors), default=0.0)
    print(f"    longest round trip after the kill {longest * 1000:.0f} ms")
    print(f"  killed relay r1, {len(moved)} tunnels:")
    print(
        f"    connections broken {sum(f.breaks for f in moved)} (each held one reset after the "
        "hold, 3 s, while its tunnel reconnected); bytes sent and never echoed (in flight at "
        f"the kill, or sent before the break was seen): {sum(f.in_flight_lost for f in moved)}"
    )
    print(f"    refused at the local listeners: {sum(f.refused for f in flows)} (goal 0)")
    back = sum(1 for f in moved if f.gaps and f.broken_since is None)
    print(f"    carried again by the end: {back} of {len(moved)}")
    print(f"    break to first byte through r2: {spread([g for f in moved for g in f.gaps])}")
    print(f"    certificates issued after the kill: {issued_after} (a reconnect keeps its own)")
    print(
        f"  bytes that came back wrong: {sum(f.wrong for f in flows)}; "
        f"tunnels lost for good: {len(lost_later)}; processes left behind: {len(stray)}"
    )
    for flow in survivors:
        for instant, why in flow.events[:3]:
            print(f"    t{flow.index} broke {instant - kill_at:+.2f} s after the kill: {why}")
    if lost_later:
        first = min(lost_later)
        print(f"    t{first}: {lost_later[first]}")


if __name__ == "__main__":
    main()
