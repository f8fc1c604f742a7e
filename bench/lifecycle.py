"""Lifecycle timings, next to OpenSSH's own, in one run.

    PYTHONPATH=. .venv/bin/python bench/lifecycle.py [--runs 10] [--tunnels 100]

Every figure is the median wall time of whole commands, as a script sees them:
- `tether list` with no tunnels and with --tunnels of them (and `--json`), next to a bare
  `python -c pass`; `tether stop` of one of two tunnels next to `tether list` with those two
  running; `tether stop --all` of --tunnels;
- `tether start --background` through sshd to ready: the first tunnel (which starts the shared
  master), one with a master of its own (--no-share-master), next to `ssh -f -N -o
  ExitOnForwardFailure=yes` followed by the same probe (a round trip through the forward to the
  echo target: tether probes the target before it says ready, and ssh -f does not); and the
  second tunnel through the same server (the master shared), next to `ssh -f -N` alone;
- `tether start --run true` through sshd, first (no master running) and next (in a loop: the
  master lingers), next to `ssh -f` + probe + `true` + `ssh -O exit`;
- `tether start --background --reuse` when the tunnel runs already (the answer, no start);
- `with tether.open(...)` in process: ready, one round trip, closed, next to `ssh -f` + probe +
  `ssh -O exit`.
The tether package is byte-compiled first, as an installed package is. Last, the slowest
imports of `tether list` (python -X importtime).
"""

from __future__ import annotations

import argparse
import compileall
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tether
from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer, require_sshd

TETHER = [sys.executable, "-m", "tether"]
FIRST = "tether start --background, first tunnel"
SECOND = "tether start --background, second (shared)"
OWN = "tether start --background, own master"
LIST_2 = "tether list, 2 tunnels"
STOP_1 = "tether stop (1 of 2 tunnels)"
REUSE = "tether start --reuse, already running"
RUN_FIRST = "tether start --run true, first"
RUN_NEXT = "tether start --run true, next in a loop"
OPEN = "with tether.open(): ready, probe, closed"
SSH_F = "ssh -f -N"
SSH_F_PROBE = "ssh -f -N + probe"
SSH_EXIT = "ssh -O exit"
SSH_RUN = "ssh -f + probe + true + ssh -O exit"
# Ours, the reference, and the goal where there is one.
RATIOS = (
    ("tether list, 0 tunnels", "python -c pass", None),
    (FIRST, SSH_F_PROBE, 1.3),
    (OWN, SSH_F_PROBE, None),
    (SECOND, SSH_F, 0.4),
    (STOP_1, LIST_2, 1.2),
    (STOP_1, SSH_EXIT, None),
    (RUN_FIRST, SSH_RUN, None),
    (RUN_NEXT, SSH_RUN, None),
    (OPEN, SSH_RUN, None),
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(
        argv,
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(port: int) -> None:
    """One round trip through the forward on ``port`` to the echo target."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise RuntimeError("the probe through ssh -L got no echo")


class OpenSsh:
    """`ssh -f -N -L` with a control socket, so that `ssh -O exit` can end it."""

    def __init__(self, sshd: SshdServer, target: str, env: dict[str, str]) -> None:
        self.sshd, self.target, self.env = sshd, target, env
        self.control = Path(sshd.directory) / "cm"

    def _ssh(self, *args: str) -> list[str]:
        return ["ssh", "-F", str(self.sshd.ssh_config), "-o", f"ControlPath={self.control}", *args]

    def start(self) -> tuple[float, float]:
        """Start `ssh -f -N -L` and probe through it: the seconds each took."""
        port = free_port()
        forward = f"127.0.0.1:{port}:{self.target}"
        options = ["-o", "ExitOnForwardFailure=yes", "-o", "ControlMaster=yes"]
        began = time.perf_counter()
        timed(self._ssh("-f", "-N", *options, "-L", forward, "tether-test"), self.env)
        started = time.perf_counter()
        probe(port)
        return started - began, time.perf_counter() - started

    def stop(self) -> None:
        timed(self._ssh("-O", "exit", "tether-test"), self.env)


def median_of(runs: int, once: Callable[[], float]) -> float:
    return statistics.median(once() for _ in range(runs))


def slowest_imports(env: dict[str, str], count: int = 8) -> list[tuple[int, str]]:
    """The modules `tether list` spends most time importing (self time, microseconds)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tether", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit():
            rows.append((int(fields[0]), fields[2].strip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per figure (median) [10]")
    parser.add_argument("--tunnels", type=int, default=100, help="tunnels for list/stop [100]")
    args = parser.parse_args()
    require_sshd()
    compileall.compile_dir(str(Path(tether.__file__).parent), quiet=1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        SshdServer(Path(tmp) / "sshd") as sshd,
        EchoServer() as echo,
    ):
        env = {**os.environ, "TETHER_RUNTIME_DIR": f"{tmp}/run", "XDG_STATE_HOME": f"{tmp}/st"}
        env.pop("TETHER_CONFIG", None)
        through = ["--to", echo.address, *sshd.tether_flags()]
        openssh = OpenSsh(sshd, echo.address, env)
        figures: dict[str, float] = {}
        figures["python -c pass"] = median_of(
            args.runs, lambda: timed([sys.executable, "-c", "pass"], env)
        )
        figures["tether list, 0 tunnels"] = median_of(
            args.runs, lambda: timed([*TETHER, "list"], env)
        )

        api = dict(
            to=echo.address,
            via=sshd.via,
            identity_file=str(sshd.client_key),
            known_hosts=str(sshd.known_hosts),
            ssh_config=str(sshd.ssh_config),
            runtime_dir=f"{tmp}/run",
        )
        stop_all = [*TETHER, "stop", "--all"]  # untimed: no master lingers into the next
        runs_of: dict[str, list[float]] = {}

        def note(name: str, seconds: float) -> None:
            runs_of.setdefault(name, []).append(seconds)

        for _ in range(args.runs):  # alternated, so a slow moment falls on both alike
            timed(stop_all, env)
            note(FIRST, timed([*TETHER, "start", *through, "--background", "--name", "a"], env))
            note(SECOND, timed([*TETHER, "start", *through, "--background", "--name", "b"], env))
            note(LIST_2, timed([*TETHER, "list"], env))
            note(STOP_1, timed([*TETHER, "stop", "b"], env))
            note(REUSE, timed([*TETHER, "start", *through, "--background", "--reuse"], env))
            timed(stop_all, env)
            note(OWN, timed([*TETHER, "start", *through, "--background", "--no-share-master"], env))
            timed(stop_all, env)
            note(RUN_FIRST, timed([*TETHER, "start", *through, "--run", "true"], env))
            note(RUN_NEXT, timed([*TETHER, "start", *through, "--run", "true"], env))
            timed(stop_all, env)
            began = time.perf_counter()
            with tether.open(**api) as opened:
                probe(opened.port)
            note(OPEN, time.perf_counter() - began)
            timed(stop_all, env)
            ssh_f, probed = openssh.start()
            note(SSH_F, ssh_f)
            note(SSH_F_PROBE, ssh_f + probed)
            began = time.perf_counter()
            openssh.stop()
            note(SSH_EXIT, time.perf_counter() - began)
            began = time.perf_counter()
            openssh.start()
            subprocess.run(["true"], check=True)
            openssh.stop()
            note(SSH_RUN, time.perf_counter() - began)
        figures.update((name, statistics.median(seconds)) for name, seconds in runs_of.items())

        for _ in range(args.tunnels):
            timed([*TETHER, "start", "--to", echo.address, "--background"], env)
        many = args.tunnels
        figures[f"tether list, {many} tunnels"] = median_of(
            args.runs, lambda: timed([*TETHER, "list"], env)
        )
        figures[f"tether list --json, {many} tunnels"] = median_of(
            args.runs, lambda: timed([*TETHER, "list", "--json"], env)
        )
        figures[f"tether stop --all, {many} tunnels"] = timed([*TETHER, "stop", "--all"], env)
        imports = slowest_imports(env)

    print(f"\nlifecycle wall times, medians of {args.runs} (python {sys.version.split()[0]})")
    for name, seconds in figures.items():
        print(f"{name:44}{seconds * 1000:8.1f} ms")
    for ours, reference, goal in RATIOS:
        ratio = figures[ours] / figures[reference]
        print(f"ratio {ours} / {reference}: {ratio:.2f}x{f' (goal <= {goal}x)' if goal else ''}")
    print("slowest imports of `tether list` (self time):")
    for micros, module in imports:
        print(f"  {micros / 1000:5.1f} ms  {module}")


if __name__ == "__main__":
    main()
