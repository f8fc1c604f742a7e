"""Run a real OpenSSH sshd on a loopback port with per-run keys for end-to-end tests."""

from __future__ import annotations

import copy
import dataclasses
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import pytest

from tether.procs import descendants, halt_tree, halted

from tether.spec import SshOptions

SSHD_PATH = "/usr/sbin/sshd"
HOST = "127.0.0.1"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def require_sshd() -> str:
    """sshd's path, once it can run here: as root it refuses to start without its privilege
    separation directory, which Debian's package leaves to its service (never started in a
    container), so a test's sshd, or a gateway's that tether starts, needs it made first."""
    if not os.access(SSHD_PATH, os.X_OK):
        pytest.fail(
            "OpenSSH sshd not found at /usr/sbin/sshd; "
            "install it with: sudo apt-get install openssh-server"
        )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    return SSHD_PATH


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def keygen(path: Path) -> Path:
    """A new ed25519 key without a passphrase at ``path`` (and ``path``.pub)."""
    _keygen(path)
    return path


def certify(authority: Path, key: Path, *, identity: str, principals: str, host: bool) -> Path:
    """Sign ``key``.pub with the CA key ``authority``; returns the certificate's path."""
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(authority),
            "-I",
            identity,
            "-n",
            principals,
            *(["-h"] if host else []),
            f"{key}.pub",
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return Path(f"{key}-cert.pub")


def _keygen(path: Path) -> None:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", "tether-test", "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
        )


def stop_tree(root: int) -> list[int]:
    """SIGSTOP ``root`` and every process below it (procs.halt_tree); those below. A test that
    needs the whole tree stopped fails if it cannot be."""
    below = halt_tree(root)
    if not all(halted(pid) for pid in [root, *below]):
        raise RuntimeError(f"sshd's processes did not all stop: {[root, *below]}")
    return below


class SshdServer:
    """A throwaway sshd on 127.0.0.1 that authorizes only a freshly generated client key."""

    def __init__(
        self,
        directory: Path,
        *,
        engine: str | None = None,
        options: tuple[str, ...] = (),
        host: str = HOST,
        launcher: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.engine = engine  # what tether_flags() asks tether to use
        self.options = options  # more sshd_config lines (a CA, a host certificate)
        self.host_key = self.directory / "host_ed25519"
        self.host = host  # where it listens: loopback, or an address in a network namespace
        # A command that execs the rest of its argv in the same process (`ip netns exec NS`),
        # so that the pid signalled is sshd's own.
        self.launcher = tuple(launcher)
        # sshd authenticates the real uid; $USER can lie under sudo or in containers.
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.client_key = self.directory / "client_ed25519"
        self.wrong_key = self.directory / "wrong_ed25519"
        self.known_hosts = self.directory / "known_hosts"
        self.ssh_config = self.directory / "ssh_config"
        self.log_path = self.directory / "sshd.log"
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SshdServer.start() has not been called yet")
        return self._port

    def through(self, engine: str) -> SshdServer:
        """This same server, with tether_flags() asking for ``engine``."""
        view = copy.copy(self)
        view.engine = engine
        return view

    def tether_flags(self) -> list[str]:
        """`tether start` flags that go through this server with its per-run key and hosts."""
        flags = [
            "--via",
            self.via,
            "-i",
            str(self.client_key),
            "--known-hosts",
            str(self.known_hosts),
            "--ssh-config",
            str(self.ssh_config),
        ]
        return [*flags, "--engine", self.engine] if self.engine else flags

    def ssh_options(self, **changes: object) -> SshOptions:
        """An SSH engine's options that go through this server with its per-run key and hosts."""
        options = SshOptions(
            identity_files=(str(self.client_key),),
            known_hosts=str(self.known_hosts),
            ssh_config=str(self.ssh_config),
        )
        return dataclasses.replace(options, **changes)  # type: ignore[arg-type]

    @property
    def via(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        sshd = require_sshd()
        if self.pid is not None:
            return
        if self._port is None:
            # Chosen once so restart() comes back on the address clients already know.
            self._port = _free_port()
            self._write_files()
        with open(self.log_path, "ab") as log:
            # Absolute path is mandatory: sshd re-execs itself for every connection.
            self._proc = subprocess.Popen(
                [*self.launcher, sshd, "-D", "-e", "-f", str(self.directory / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._frozen = False
        self._wait_ready()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # sshd leaves live sessions running when the listener exits; kill them so a
        # restart drops established connections like a real server restart would. The tree is
        # stopped whole first: a session's monitor forks its post-login child just after the
        # login succeeds, and a child forked after a snapshot of the tree would outlive it.
        sessions = stop_tree(proc.pid)
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # The listener is killed stopped, not woken to end: woken, it could still accept what
        # waits in its backlog (a client's connection, tether's watch of the server) and fork
        # a child that greets it, which would tell the client the server is back as it goes.
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        self._frozen = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """Stop the listener and every session: to clients, the peer went silent."""
        stop_tree(self._running())
        self._frozen = True

    def thaw(self) -> None:
        root = self._running()
        for pid in [root, *descendants(root)]:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._frozen = False

    def _running(self) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("sshd is not running")
        return self._proc.pid

    def _write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        host_key = self.host_key
        authorized_keys = self.directory / "authorized_keys"
        for key in (host_key, self.client_key, self.wrong_key):
            _keygen(key)
        authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        key_type, key_blob = Path(f"{host_key}.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {key_type} {key_blob}\n")
        sshd_options = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {host_key}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "StrictModes no",  # tmp_path permissions are not sshd's business here
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "AllowTcpForwarding yes",
            "PermitRootLogin prohibit-password",
            "LogLevel VERBOSE",
            (
                "Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
                "chacha20-poly1305@openssh.com,aes128-ctr"
            ),
            # The defaults (10:30:100, 10 sessions) drop connections in forwarding load tests.
            "MaxStartups 200:30:300",
            "MaxSessions 200",
            *self.options,
        ]
        (self.directory / "sshd_config").write_text("\n".join(sshd_options) + "\n")
        client_options = [
            f"HostName {self.host}",
            f"Port {self.port}",
            f"User {self.user}",
            f"IdentityFile {self.client_key}",
            f"UserKnownHostsFile {self.known_hosts}",
            "StrictHostKeyChecking yes",
            "BatchMode yes",
            "IdentitiesOnly yes",
        ]
        self.ssh_config.write_text(
            "Host tether-test\n" + "".join(f"  {o}\n" for o in client_options)
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"sshd exited during startup:\n{self._log_text()}")
            if self._banner_seen():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd not ready within {READY_TIMEOUT}s:\n{self._log_text()}")

    def _banner_seen(self) -> bool:
        # A bare TCP connect can succeed before sshd is serving; the banner proves it is.
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                data = b""
                while b"\n" not in data:
                    chunk = sock.recv(256)
                    if not chunk:
                        return False
                    data += chunk
                return data.startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no sshd log>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
