"""Bulk throughput on loopback: tether next to socat (direct) and OpenSSH `ssh -L` (SSH).

Run with `make bench` (or `PYTHONPATH=. .venv/bin/python bench/throughput.py [--mib N] [--runs N]`).
Every relay carries the same bytes between the same client and server processes; the figure is
the median of several runs, in MB/s (10^6 bytes per second), and each tether figure is printed
as a ratio of its reference tool's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from tests.support.sshd_server import SshdServer, require_sshd

CHUNK = 1 << 20
CIPHER = "aes128-gcm@openssh.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(listener: socket.socket) -> None:
    """Per connection: 'U' + size = client uploads, we count; 'D' + size = we send size bytes."""
    block = memoryview(bytearray(CHUNK))
    while True:
        conn, _ = listener.accept()
        with conn:
            header = conn.recv(9, socket.MSG_WAITALL)
            mode, size = header[:1], int.from_bytes(header[1:], "big")
            if mode == b"U":
                got = 0
                while n := conn.recv_into(block):
                    got += n
                conn.sendall(got.to_bytes(8, "big"))
            else:
                left = size
                while left:
                    left -= conn.send(block[: min(left, CHUNK)])
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)


def transfer(port: int, mode: str, size: int) -> float:
    """One transfer through the relay on ``port``; returns MB/s."""
    block = memoryview(bytearray(CHUNK))
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(mode.encode() + size.to_bytes(8, "big"))
        if mode == "U":
            left = size
            while left:
                left -= sock.send(block[: min(left, CHUNK)])
            sock.shutdown(socket.SHUT_WR)
            got = int.from_bytes(sock.recv(8, socket.MSG_WAITALL), "big")
        else:
            got = 0
            while n := sock.recv_into(block):
                got += n
    elapsed = time.perf_counter() - began
    if got != size:
        raise RuntimeError(f"transfer lost bytes: {got} of {size}")
    return size / elapsed / 1e6


def wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"relay exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {deadline}s")


@contextmanager
def relay(argv: list[str], port: int, json_ready: bool = False) -> Iterator[int]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        if json_ready:
            assert proc.stdout is not None
            port = json.loads(proc.stdout.readline())["local_port"]
        else:
            wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def measure(port: int, mode: str, size: int, runs: int) -> float:
    transfer(port, mode, size // 8)  # warm-up: SSH windows open, caches fill
    return statistics.median(transfer(port, mode, size) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB per transfer [512]")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median) [5]")
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    if not shutil.which("socat"):
        sys.exit("bench: socat not found; install it with: apt-get install socat")
    require_sshd()

    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    server_port = listener.getsockname()[1]
    target = f"127.0.0.1:{server_port}"
    server = multiprocessing.Process(target=serve, args=(listener,), daemon=True)
    server.start()
    tether = [sys.executable, "-m", "tether", "start", "--json", "--no-probe"]

    with tempfile.TemporaryDirectory() as tmp, SshdServer(Path(tmp)) as sshd:
        ssh_flags = sshd.tether_flags()
        socat_port, ssh_port = free_port(), free_port()
        relays: dict[str, Callable[[], AbstractContextManager[int]]] = {
            "none (client to server)": lambda: _no_relay(server_port),
            "socat -b 262144": lambda: relay(
                [
                    "socat",
                    "-b",
                    "262144",
                    f"TCP-LISTEN:{socat_port},bind=127.0.0.1,reuseaddr,fork",
                    f"TCP:{target}",
                ],
                socat_port,
            ),
            "tether direct": lambda: relay([*tether, "--to", target], 0, json_ready=True),
            f"ssh -L ({CIPHER})": lambda: relay(
                [
                    "ssh",
                    "-F",
                    str(sshd.ssh_config),
                    "-N",
                    "-c",
                    CIPHER,
                    "-o",
                    "ExitOnForwardFailure=yes",
                    "-L",
                    f"127.0.0.1:{ssh_port}:{target}",
                    "tether-test",
                ],
                ssh_port,
            ),
            "tether ssh": lambda: relay([*tether, "--to", target, *ssh_flags], 0, json_ready=True),
        }
        results: dict[str, dict[str, float]] = {}
        for name, make in relays.items():
            with make() as port:
                results[name] = {m: measure(port, m, size, args.runs) for m in ("U", "D")}
    server.terminate()

    print(
        f"\nloopback bulk throughput, {args.mib} MiB per transfer, median of {args.runs}"
        f" (MB/s; U = client to target, D = target to client)"
    )
    print(f"{'relay':34} {'U MB/s':>9} {'D MB/s':>9}")
    for name, figures in results.items():
        print(f"{name:34} {figures['U']:9.0f} {figures['D']:9.0f}")
    for ours, ref, floor in (
        ("tether direct", "socat -b 262144", 0.8),
        ("tether ssh", f"ssh -L ({CIPHER})", 0.6),
    ):
        for m in ("U", "D"):
            ratio = results[ours][m] / results[ref][m]
            verdict = "ok" if ratio >= floor else f"BELOW the {floor}x floor"
            print(f"ratio {ours} / {ref} [{m}]: {ratio:.2f}x ({verdict})")


@contextmanager
def _no_relay(port: int) -> Iterator[int]:
    yield port


if __name__ == "__main__":
    main()
