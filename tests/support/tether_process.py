"""Running the real `tether` command in subprocesses, with deadlines on every wait."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether.procs import ProcessRef

DEADLINE = 30.0


class TetherProcess:
    """A running `tether` process whose output is read with deadlines, never blocking forever."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._stdout = b""
        self._stderr = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self, timeout: float) -> None:
        streams = [s for s in (self.proc.stdout, self.proc.stderr) if s and not s.closed]
        ready, _, _ = select.select(streams, [], [], max(timeout, 0))
        for stream in ready:
            chunk = os.read(stream.fileno(), 65536)
            if stream is self.proc.stdout:
                self._stdout += chunk
            else:
                self._stderr += chunk
            if not chunk:
                stream.close()

    def said(self, within: float) -> str:
        """Everything on stderr so far, read for up to ``within`` seconds more (for a failure's
        message: the tunnel's own account of what it did)."""
        end = time.monotonic() + within
        while (
            (left := end - time.monotonic()) > 0
            and self.proc.stderr
            and not self.proc.stderr.closed
        ):
            self._pump(min(left, 0.1))
        return self.stderr

    def wait_for(self, predicate: Any, what: str, deadline: float = DEADLINE) -> None:
        """Read output until ``predicate(self)`` holds; fail with the output on a deadline."""
        end = time.monotonic() + deadline
        while not predicate(self):
            left = end - time.monotonic()
            open_streams = [s for s in (self.proc.stdout, self.proc.stderr) if s and not s.closed]
            if left <= 0 or not open_streams:
                raise AssertionError(
                    f"timed out waiting for {what}; exit={self.proc.poll()} "
                    f"stdout={self.stdout!r} stderr={self.stderr!r}"
                )
            self._pump(min(left, 0.5))

    def json_line(self, deadline: float = DEADLINE, *, stderr: bool = False) -> dict[str, Any]:
        """The first JSON object printed on stdout (tether start --json), or on stderr (with
        --run, whose stdout is the command's)."""
        if stderr:
            self.wait_for(lambda p: "}\n" in p.stderr, "a JSON line on stderr", deadline)
            return dict(json.loads(self.stderr.split("\n", 1)[0]))
        self.wait_for(lambda p: b"\n" in p._stdout, "a JSON line on stdout", deadline)
        line = self._stdout.split(b"\n", 1)[0]
        return dict(json.loads(line))

    def wait_stderr(self, text: str, deadline: float = DEADLINE) -> str:
        self.wait_for(lambda p: text in p.stderr, f"{text!r} on stderr", deadline)
        return self.stderr

    def finish(self, deadline: float = DEADLINE) -> int:
        """Wait for exit, collecting all output; returns the exit status."""
        self.wait_for(
            lambda p: all(s is None or s.closed for s in (p.proc.stdout, p.proc.stderr)),
            "the process to close its output",
            deadline,
        )
        return self.proc.wait(timeout=deadline)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    @property
    def stdout(self) -> str:
        return self._stdout.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream and not stream.closed:
                stream.close()


class TetherRunner:
    """Starts `python -m tether` with an isolated environment; kills leftovers on cleanup."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.processes: list[TetherProcess] = []

    @staticmethod
    def command(*args: str) -> list[str]:
        """The argv that runs `tether ARGS` in this interpreter."""
        return [sys.executable, "-m", "tether", *args]

    def spawn(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: int = subprocess.DEVNULL,
        launcher: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
    ) -> TetherProcess:
        """Start `tether ARGS`; ``launcher`` is a command that execs the rest of its argv (in
        the same process) after preparing it, with ``pass_fds`` open."""
        proc = subprocess.Popen(
            [*launcher, *self.command(*args)],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**self.env, **(env or {})},
            cwd=self.workdir,
            pass_fds=pass_fds,
        )
        process = TetherProcess(proc)
        self.processes.append(process)
        return process

    def run(
        self,
        *args: str,
        deadline: float = DEADLINE,
        env: dict[str, str] | None = None,
        launcher: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
    ) -> tuple[int, str, str]:
        """Run to completion; returns (exit status, stdout, stderr)."""
        process = self.spawn(*args, env=env, launcher=launcher, pass_fds=pass_fds)
        code = process.finish(deadline)
        return code, process.stdout, process.stderr

    def list_json(self) -> list[dict[str, Any]]:
        code, out, err = self.run("list", "--json")
        assert code == 0, err
        return list(json.loads(out))

    def own_processes(self) -> list[int]:
        """The processes started with this runner's environment: tether's and its ssh's."""
        marker = f"TETHER_RUNTIME_DIR={self.env['TETHER_RUNTIME_DIR']}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def cleanup(self) -> None:
        """Stop what the test left running; a process of this test's that even `stop --all`
        cannot end is a leak, killed here and reported as the test's error."""
        subprocess.run(
            self.command("stop", "--all", "--timeout", "5"),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        for process in self.processes:
            if process.proc.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.kill()
        # What ends by a signal (an OpenSSH master whose tether was killed) gets a moment.
        deadline = time.monotonic() + 5
        while (leaked := self.own_processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in leaked:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not leaked, f"processes left running after the test: {leaked}"
        left = sorted(p.name for p in Path(self.env["TMPDIR"]).iterdir())
        assert not left, f"files left in TMPDIR after the test: {left}"


def start_of(pid: int) -> int:
    """The start time of process ``pid``, as a registry entry records it."""
    ref = ProcessRef.of(pid)
    assert ref is not None, f"no process {pid}"
    return ref.start


def processes_with(marker: str, *, program: bool = False) -> list[int]:
    """Pids of the live processes whose command line holds ``marker`` (with ``program``: whose
    program, argv[0], is ``marker``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (cmdline.split(b"\0")[0] == marker.encode()) if program else marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def spawn_on_terminal(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start `tether ARGS` as the session leader of a new pseudo-terminal, as a login shell
    would; returns the process and the terminal's master side."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        TetherRunner.command(*args),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    return proc, master


def read_pty_until(fd: int, text: str, deadline: float = 20.0) -> str:
    seen = b""
    end = time.monotonic() + deadline
    while text.encode() not in seen:
        left = end - time.monotonic()
        assert left > 0, f"no {text!r} on the terminal; saw {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 65536)
    return seen.decode(errors="replace")
