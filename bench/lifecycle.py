"""Lifecycle timings: `tether list` with 0 and 50 tunnels, and `start --background` to ready
next to `ssh -f -N -o ExitOnForwardFailure=yes` against the same sshd.

Run with `make bench` (or `PYTHONPATH=. .venv/bin/python bench/lifecycle.py [--runs N]`). Every
figure is the median wall time of whole commands, as a script would see them.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer, require_sshd

TETHER = [sys.executable, "-m", "tether"]


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


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:7.1f} ms"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssh_forward_time(sshd: SshdServer, target: str, env: dict[str, str]) -> float:
    port = free_port()
    control = Path(sshd.directory) / f"cm-{port}"
    argv = [
        "ssh",
        "-F",
        str(sshd.ssh_config),
        "-f",
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ControlMaster=yes",
        "-o",
        f"ControlPath={control}",
        "-L",
        f"127.0.0.1:{port}:{target}",
        "tether-test",
    ]
    seconds = timed(argv, env)
    subprocess.run(
        [
            "ssh",
            "-F",
            str(sshd.ssh_config),
            "-o",
            f"ControlPath={control}",
            "-O",
            "exit",
            "tether-test",
        ],
        env=env,
        capture_output=True,
        check=False,
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per figure (median) [10]")
    parser.add_argument("--tunnels", type=int, default=50, help="tunnels for the full list [50]")
    args = parser.parse_args()
    require_sshd()
    with (
        tempfile.TemporaryDirectory() as tmp,
        SshdServer(Path(tmp) / "sshd") as sshd,
        EchoServer() as echo,
    ):
        env = {**os.environ, "TETHER_RUNTIME_DIR": f"{tmp}/run", "XDG_STATE_HOME": f"{tmp}/st"}
        env.pop("TETHER_CONFIG", None)
        ssh_flags = sshd.tether_flags()
        list_empty = [timed([*TETHER, "list"], env) for _ in range(args.runs)]

        bg, plain = [], []
        for _ in range(args.runs):
            bg.append(timed([*TETHER, "start", "--to", echo.address, *ssh_flags, "-bg"], env))
            timed([*TETHER, "stop", "--all"], env)
            plain.append(ssh_forward_time(sshd, echo.address, env))

        for _ in range(args.tunnels):
            timed([*TETHER, "start", "--to", echo.address, "-bg"], env)
        list_full = [timed([*TETHER, "list"], env) for _ in range(args.runs)]
        list_json = [timed([*TETHER, "list", "--json"], env) for _ in range(args.runs)]
        stop_all = timed([*TETHER, "stop", "--all"], env)

    print(f"\nlifecycle wall times, median of {args.runs} (python {sys.version.split()[0]})")
    print(f"tether list, 0 tunnels                    {median_ms(list_empty)}")
    print(f"tether list, {args.tunnels} tunnels                   {median_ms(list_full)}")
    print(f"tether list --json, {args.tunnels} tunnels            {median_ms(list_json)}")
    print(f"tether start --background (ssh) to ready  {median_ms(bg)}")
    print(f"ssh -f -N -o ExitOnForwardFailure=yes     {median_ms(plain)}")
    ratio = statistics.median(bg) / statistics.median(plain)
    print(f"ratio start --background / ssh -f: {ratio:.2f}x")
    print(f"tether stop --all, {args.tunnels} tunnels             {stop_all * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
