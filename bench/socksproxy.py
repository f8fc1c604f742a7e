"""SOCKS5 proxies on loopback: `tether start --socks` on each path next to `ssh -D`, in one run.

    PYTHONPATH=. .venv/bin/python bench/socksproxy.py [--runs 5] [--mib 256] [--seconds 2]

Proxies: `ssh -D`, tether with the OpenSSH engine and tether with the asyncssh engine, all
against one sshd (aes128-gcm, as for the `ssh -L` rows of bench/relays.py); and tether direct,
which has no reference. Every connection asks its proxy for 127.0.0.1:PORT first (greeting,
then CONNECT, each reply awaited, as curl does). Figures: bulk MB/s each way (the handshake
timed too); round trips per second with 1 and with 50 connections (64-byte messages, the
handshakes before the clock starts); new connections per second (connect, SOCKS handshake,
100-byte echo, close). Medians of --runs, the rates taken in alternation as in relays.py, and
each tether figure as a ratio of `ssh -D`'s. The load is netload.c, compiled here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.relays import (
    CIPHER,
    HERE,
    bulk_server,
    cpu_ticks,
    family,
    free_port,
    listening,
    netload,
    tether,
    transfer,
)
from tests.support.sshd_server import SshdServer, require_sshd

MEASURES = ("bulk U", "bulk D", "rtt x1", "rtt x50", "conn/s")
UNITS = {"bulk U": "MB/s", "bulk D": "MB/s", "rtt x1": "/s", "rtt x50": "/s", "conn/s": "/s"}
REFERENCE = f"ssh -D ({CIPHER})"


class Proxy:
    """A SOCKS5 proxy on one local port: its processes while entered."""

    def __init__(self, name: str, start: Callable[[], tuple[subprocess.Popen[bytes], int]]):
        self.name = name
        self._start = start
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Proxy:
        self.proc, self.port = self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(20)

    def pids(self) -> tuple[list[int], list[int]]:
        """The proxy's own process (ssh -D: with its children), and what tether started."""
        assert self.proc is not None
        if self.name.startswith("tether"):
            return [self.proc.pid], family(self.proc.pid)[1:]
        return family(self.proc.pid), []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per bulk transfer [256]")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median) [5]")
    parser.add_argument("--seconds", type=float, default=2, help="seconds per rate run [2]")
    args = parser.parse_args()
    if not shutil.which("gcc"):
        sys.exit("bench: gcc is needed; install it with: apt-get install gcc")
    require_sshd()
    work = Path(tempfile.mkdtemp(prefix="tether-bench-socks-"))
    tool = work / "netload"
    subprocess.run(["gcc", "-O2", "-o", str(tool), str(HERE / "netload.c")], check=True)
    os.environ["TETHER_RUNTIME_DIR"] = str(work / "run")
    os.environ["TETHER_SSH_CONFIG"] = str(work / "empty_ssh_config")
    (work / "empty_ssh_config").write_text("")
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    bulk_port = listener.getsockname()[1]
    bulk = multiprocessing.Process(target=bulk_server, args=(listener,), daemon=True)
    bulk.start()
    echo_port = free_port()
    echo = subprocess.Popen([str(tool), "serve", str(echo_port)], stdout=subprocess.PIPE)
    assert echo.stdout is not None and echo.stdout.readline().strip() == b"ready"
    try:
        with SshdServer(work / "sshd") as sshd:
            proxies = proxies_of(sshd)
            results, cpu = measure(proxies, tool, bulk_port, echo_port, args)
    finally:
        echo.terminate()
        bulk.terminate()
        shutil.rmtree(work, ignore_errors=True)
    report(proxies, results, cpu, args)


def proxies_of(sshd: SshdServer) -> list[Proxy]:
    def ssh_d() -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        proc = subprocess.Popen(
            [
                *("ssh", "-F", str(sshd.ssh_config), "-N", "-c", CIPHER),
                *("-o", "ExitOnForwardFailure=yes", "-D", f"127.0.0.1:{port}", "tether-test"),
            ]
        )
        listening(port, proc)
        return proc, port

    def through(*flags: str) -> Callable[[], tuple[subprocess.Popen[bytes], int]]:
        return lambda: tether("--socks", *flags)

    ssh_flags = sshd.tether_flags()
    return [
        Proxy(REFERENCE, ssh_d),
        Proxy("tether openssh --socks", through(*ssh_flags, "--engine", "openssh")),
        Proxy("tether asyncssh --socks", through(*ssh_flags, "--engine", "asyncssh")),
        Proxy("tether direct --socks", through()),
    ]


def measure(
    proxies: list[Proxy], tool: Path, bulk_port: int, echo_port: int, args: argparse.Namespace
) -> tuple[dict[str, dict[str, list[float]]], dict[str, tuple[float, float]]]:
    size = args.mib * 1024 * 1024
    results: dict[str, dict[str, list[float]]] = {
        p.name: {m: [] for m in MEASURES} for p in proxies
    }
    for _ in range(args.runs):
        for proxy in proxies:
            with proxy:
                rows = results[proxy.name]
                rows["rtt x1"].append(netload(tool, "rtt", proxy.port, 1, args.seconds, echo_port))
                rows["rtt x50"].append(
                    netload(tool, "rtt", proxy.port, 50, args.seconds, echo_port)
                )
                rows["conn/s"].append(netload(tool, "accept", proxy.port, args.seconds, echo_port))
    cpu: dict[str, tuple[float, float]] = {}
    for proxy in proxies:
        with proxy:
            transfer(proxy.port, "U", size // 8, bulk_port)  # warm-up: windows open
            own, helpers = proxy.pids()
            ticks, helper_ticks, began = cpu_ticks(own), cpu_ticks(helpers), time.perf_counter()
            for _ in range(args.runs):
                for mode in ("U", "D"):
                    results[proxy.name][f"bulk {mode}"].append(
                        transfer(proxy.port, mode, size, bulk_port)
                    )
            scale = os.sysconf("SC_CLK_TCK") * (time.perf_counter() - began) / 100
            cpu[proxy.name] = (
                (cpu_ticks(own) - ticks) / scale,
                (cpu_ticks(helpers) - helper_ticks) / scale,
            )
    return results, cpu


def report(
    proxies: list[Proxy],
    results: dict[str, dict[str, list[float]]],
    cpu: dict[str, tuple[float, float]],
    args: argparse.Namespace,
) -> None:
    medians = {
        name: {m: statistics.median(v) for m, v in rows.items()} for name, rows in results.items()
    }
    print(
        f"\nSOCKS5 proxies on loopback: medians of {args.runs}; bulk {args.mib} MiB per transfer "
        f"(U = client to target, D = target to client); rates over {args.seconds:g}s runs; "
        "CPU: the proxy's process during the bulk runs (+ssh: tether's OpenSSH master)"
    )
    print(f"{'proxy':30}" + "".join(f"{m:>12}" for m in MEASURES) + f"{'CPU':>7}{'+ssh':>6}")
    for proxy in proxies:
        row = medians[proxy.name]
        own, helpers = cpu[proxy.name]
        print(
            f"{proxy.name:30}"
            + "".join(f"{row[m]:12.0f}" for m in MEASURES)
            + f"{own:6.0f}%"
            + (f"{helpers:5.0f}%" if helpers >= 0.5 else "")
        )
    print(f"{'(units)':30}" + "".join(f"{UNITS[m]:>12}" for m in MEASURES))
    for ours in ("tether openssh --socks", "tether asyncssh --socks"):
        ratios = "  ".join(f"{m} {medians[ours][m] / medians[REFERENCE][m]:.2f}x" for m in MEASURES)
        print(f"ratio {ours} / {REFERENCE}: {ratios}")


if __name__ == "__main__":
    main()
