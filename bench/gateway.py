"""The gateway, next to the same path built by hand with OpenSSH and to a plain bastion, in one
run, on loopback.

    PYTHONPATH=. .venv/bin/python bench/gateway.py [--starts 50] [--runs 5] [--mib 256]

A gateway of tether's own (`tether gateway relay`, an agent serving a bulk and an echo target)
and three ways to the targets:
- `tether start --via gw://RELAY --to lab/TARGET`: a certificate asked of the relay's signer with
  the user's own key, then the site reached through the relay;
- by hand: `ssh -J` through the same relay to the same site sshd, with a certificate issued
  before the run (no signer on the path), AES-GCM on both hops as tether's config asks;
- a plain bastion: `ssh -L` through one sshd (one hop, one encryption).
Figures:
- start to ready, median and p95 over --starts: `tether start --background` (signer, master,
  probe) next to `ssh -f -N -L` through the hand-built path plus the same probe (one round trip
  to the echo target);
- bulk MB/s each way and round trips per second with 1 and 50 connections (netload.c), medians
  of --runs taken in alternation;
- memory per session on the relay: the PSS of the relay's sshd and its sessions, before and
  after --sessions hand-built sessions, per session.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from bench.lifecycle import free_port, probe
from bench.relays import CIPHER, bulk_server, listening, netload, transfer
from tests.support.sshd_server import SshdServer, require_sshd
from tether.gateway import enrol, keygen, layout, policy, relaybundle
from tether.gateway.hops import known_hosts_line
from tether.gateway.names import RELAY_PRINCIPAL, site_host_alias
from tether.gateway.sshd import strict_base
from tether.gateway.signer import issue
from tether.procs import descendants
from tether.spec import Endpoint

HERE = Path(__file__).resolve().parent
TETHER = [sys.executable, "-m", "tether"]
MEASURES = ("bulk U", "bulk D", "rtt x1", "rtt x50")


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of ``pids``, KiB: shared pages counted once across them."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Gateway:
    """A gateway of tether's own processes, and what a user and the hand-built path need."""

    def __init__(self, work: Path, targets: dict[str, str]) -> None:
        self.work = work
        self.gateway = layout.init(work / "gw")
        self.relay_port, self.signer_port = free_port(), free_port()
        signer = Endpoint("127.0.0.1", self.signer_port)
        self.bundle = relaybundle.add_relay(self.gateway, "r1", [signer])
        enrolled = enrol.add_site(self.gateway, "lab", [Endpoint("127.0.0.1", self.relay_port)])
        self.enrolment = enrolled.path
        self.endpoint_port = enrolled.port
        self.key = keygen.generate(work / "alice", "alice")
        public = Path(f"{self.key}.pub").read_text()
        policy.add_user(self.gateway.policy, "alice", public)
        for name in targets:
            policy.grant(self.gateway.policy, "alice", "lab", name, None)
        self.known_hosts = work / "known_hosts"
        ca = policy.parse_public_key(
            Path(f"{self.gateway.host_ca}.pub").read_text(), what="host CA"
        )
        self.known_hosts.write_text(known_hosts_line(ca))
        self.targets = targets
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        listen = f"127.0.0.1:{self.relay_port}"
        relay_state = self.work / "relay"
        signing = f"127.0.0.1:{self.signer_port}"
        self.procs.append(self._spawn("signer", str(self.gateway.root), "--listen", signing))
        self.relay = self._spawn(
            "relay", str(self.bundle), "--listen", listen, "--state-dir", str(relay_state)
        )
        self.procs.append(self.relay)
        served = [f"--target={name}={where}" for name, where in self.targets.items()]
        state = str(self.work / "agent")
        self.procs.append(self._spawn("agent", str(self.enrolment), *served, "--state-dir", state))
        keys = relay_state / "authorized_keys"
        while "'alice'" not in keys.read_text():
            time.sleep(0.05)

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*TETHER, "gateway", *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        if b'"ready"' not in proc.stdout.readline():
            raise RuntimeError(f"tether gateway {args[0]} did not start")
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    def relay_pids(self) -> list[int]:
        """The relay's sshd and its sessions (tether's own process left out)."""
        return descendants(self.relay.pid)

    def tether_flags(self, target: str) -> list[str]:
        return [
            "--via", f"gw://127.0.0.1:{self.relay_port}", "--to", f"lab/{target}",
            "-i", str(self.key), "--known-hosts", str(self.known_hosts),
        ]  # fmt: skip

    def hand_config(self) -> Path:
        """The hand-built path's ssh config, with a certificate issued now for an hour (one per
        target: a certificate opens one)."""
        public = Path(f"{self.key}.pub").read_text()
        config = self.work / "hand_config"
        lines = []
        for name in self.targets:
            issued = issue(self.gateway, "alice", public, "lab", name, lifetime=timedelta(hours=1))
            cert = self.work / f"hand-{name}-cert.pub"
            cert.write_text(issued.certificate + "\n")
            lines += [
                f"Host {name}.hand",
                "  HostName 127.0.0.1",
                f"  Port {self.endpoint_port}",
                f"  HostKeyAlias {site_host_alias('lab')}",
                f"  ProxyJump {name}.relay",
                f"  CertificateFile {cert}",
                f"Host {name}.relay",
                "  HostName 127.0.0.1",
                f"  Port {self.relay_port}",
                f"  HostKeyAlias {RELAY_PRINCIPAL}",
                f"  CertificateFile {cert}",
            ]
        lines += [
            "Host *",
            f"  IdentityFile {self.key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            f"  Ciphers {CIPHER}",
            "  ExitOnForwardFailure yes",
            "",
        ]
        config.write_text("\n".join(lines))
        return config


@contextmanager
def tether_tunnel(flags: list[str]) -> Iterator[int]:
    proc = subprocess.Popen(
        [*TETHER, "start", *flags, "--json", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        yield int(json.loads(proc.stdout.readline())["local_port"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@contextmanager
def ssh_forward(argv: list[str], target: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [*argv[:-1], "-N", "-L", f"127.0.0.1:{port}:{target}", argv[-1]],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def start_to_ready(gw: Gateway, hand: Path, starts: int) -> dict[str, list[float]]:
    """Alternated: one tether start, one hand-built start, each to ready and then ended."""
    env = {**os.environ}
    times: dict[str, list[float]] = {"tether start --background": [], "ssh -f -J + probe": []}
    echo = gw.targets["echo"]
    for _ in range(starts):
        began = time.perf_counter()
        done = subprocess.run(
            [*TETHER, "start", *gw.tether_flags("echo"), "--background", "--json"],
            capture_output=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        times["tether start --background"].append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"tether start failed: {done.stderr.decode()}")
        record = json.loads(done.stdout)
        subprocess.run([*TETHER, "stop", record["id"]], check=True, capture_output=True)
        port = free_port()
        control = gw.work / "hand.ctl"
        began = time.perf_counter()
        # Its background process keeps what it inherits: no pipe for run() to wait on.
        subprocess.run(
            ["ssh", "-F", str(hand), "-f", "-N", "-M", "-S", str(control),
             "-L", f"127.0.0.1:{port}:{echo}", "echo.hand"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        probe(port)
        times["ssh -f -J + probe"].append(time.perf_counter() - began)
        subprocess.run(
            ["ssh", "-F", str(hand), "-S", str(control), "-O", "exit", "echo.hand"],
            capture_output=True,
        )
    return times


def rates(
    gw: Gateway, hand: Path, bastion: SshdServer, tool: Path, args: argparse.Namespace
) -> dict[str, dict[str, list[float]]]:
    size = args.mib * 1024 * 1024
    bulk, echo = gw.targets["bulk"], gw.targets["echo"]
    bastion_argv = ["ssh", "-F", str(bastion.ssh_config), "-c", CIPHER, "tether-test"]
    paths: dict[str, Callable[[str, str], object]] = {
        "tether gw://": lambda name, target: tether_tunnel(gw.tether_flags(name)),
        "ssh -J (by hand)": lambda name, target: ssh_forward(
            ["ssh", "-F", str(hand), f"{name}.hand"], target
        ),
        f"bastion ssh -L ({CIPHER})": lambda name, target: ssh_forward(bastion_argv, target),
    }
    results: dict[str, dict[str, list[float]]] = {n: {m: [] for m in MEASURES} for n in paths}
    for _ in range(args.runs):
        for name, opened in paths.items():
            with opened("echo", echo) as port:  # type: ignore[attr-defined]
                results[name]["rtt x1"].append(netload(tool, "rtt", port, 1, args.seconds))
                results[name]["rtt x50"].append(netload(tool, "rtt", port, 50, args.seconds))
    for name, opened in paths.items():
        with opened("bulk", bulk) as port:  # type: ignore[attr-defined]
            transfer(port, "U", size // 8)  # warm-up
            for _ in range(args.runs):
                for mode in ("U", "D"):
                    results[name][f"bulk {mode}"].append(transfer(port, mode, size))
    return results


def memory_per_session(gw: Gateway, hand: Path, sessions: int) -> tuple[float, int, int]:
    """KiB of the relay's processes per session, from ``sessions`` hand-built ones."""
    time.sleep(1)  # let the relay's sessions from before end
    before = pss_kib(gw.relay_pids())
    echo = gw.targets["echo"]
    procs = []
    ports = []
    try:
        for _ in range(sessions):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    ["ssh", "-F", str(hand), "-N", "-L", f"127.0.0.1:{port}:{echo}", "echo.hand"],
                    stdin=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        for port, proc in zip(ports, procs, strict=True):
            listening(port, proc)
            probe(port)
        after = pss_kib(gw.relay_pids())
        count = len(gw.relay_pids())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    return (after - before) / sessions, before, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=50, help="starts timed [50]")
    parser.add_argument("--runs", type=int, default=5, help="runs per rate (median) [5]")
    parser.add_argument("--mib", type=int, default=256, help="MiB per bulk transfer [256]")
    parser.add_argument("--seconds", type=float, default=2, help="seconds per rate run [2]")
    parser.add_argument("--sessions", type=int, default=50, help="sessions for memory [50]")
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        sys.exit("bench: gcc is needed (apt-get install gcc)")
    require_sshd()
    base = strict_base()
    if base is None:
        sys.exit("bench: no directory sshd's StrictModes accepts (XDG_RUNTIME_DIR, ~)")
    work = Path(tempfile.mkdtemp(prefix=".tether-bench-gw-", dir=base))
    tool = work / "netload"
    subprocess.run(["gcc", "-O2", "-o", str(tool), str(HERE / "netload.c")], check=True)
    os.environ["TETHER_RUNTIME_DIR"] = str(work / "run")
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    bulk = multiprocessing.Process(target=bulk_server, args=(listener,), daemon=True)
    bulk.start()
    echo_port = free_port()
    echo = subprocess.Popen([str(tool), "serve", str(echo_port)], stdout=subprocess.PIPE)
    assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"
    targets = {"bulk": f"127.0.0.1:{listener.getsockname()[1]}", "echo": f"127.0.0.1:{echo_port}"}
    gw = Gateway(work, targets)
    try:
        gw.start()
        hand = gw.hand_config()
        starts = start_to_ready(gw, hand, args.starts)
        with SshdServer(work / "bastion") as bastion:
            results = rates(gw, hand, bastion, tool, args)
        per_session, before, processes = memory_per_session(gw, hand, args.sessions)
    finally:
        gw.stop()
        echo.terminate()
        bulk.terminate()
        shutil.rmtree(work, ignore_errors=True)
    report(starts, results, per_session, before, processes, args)


def report(
    starts: dict[str, list[float]],
    results: dict[str, dict[str, list[float]]],
    per_session: float,
    before: int,
    processes: int,
    args: argparse.Namespace,
) -> None:
    print(f"\nstart to ready through the gateway, {args.starts} starts each, alternated (ms):")
    stats = {}
    for name, values in starts.items():
        ordered = sorted(values)
        p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
        stats[name] = (statistics.median(values), p95)
        print(f"  {name:28} median {stats[name][0] * 1000:7.0f}   p95 {p95 * 1000:7.0f}")
    (ours, theirs) = stats.values()
    ratio = f"median {ours[0] / theirs[0]:.2f}x, p95 {ours[1] / theirs[1]:.2f}x"
    print(f"  ratio tether / by hand: {ratio}")
    medians = {n: {m: statistics.median(v) for m, v in r.items()} for n, r in results.items()}
    print(
        f"\nthrough the gateway: medians of {args.runs}; bulk {args.mib} MiB (U = to the "
        f"target, D = back), MB/s; round trips per second over {args.seconds:g}s"
    )
    print(f"{'path':32}" + "".join(f"{m:>12}" for m in MEASURES))
    for name, row in medians.items():
        print(f"{name:32}" + "".join(f"{row[m]:12.0f}" for m in MEASURES))
    names = list(medians)
    for reference in names[1:]:
        ratios = "  ".join(
            f"{m} {medians[names[0]][m] / medians[reference][m]:.2f}x" for m in MEASURES
        )
        print(f"ratio {names[0]} / {reference}: {ratios}")
    print(
        f"\nrelay memory: {per_session:.0f} KiB PSS per session ({args.sessions} sessions; "
        f"the idle relay {before} KiB; {processes} relay processes with them)"
    )


if __name__ == "__main__":
    main()
