"""The OpenSSH engine: the bytes move inside OpenSSH's own ssh, run as a private ControlMaster.

tether starts `ssh -M -N` with a control socket of its own and feeds it each accepted socket
through the mux protocol (mux.py): the master forwards it to the target with the speed, the
config and the keys of `ssh -L`, and tether never touches the bytes. tether keeps the listener,
readiness, reconnects, drain and the counts (TCP_INFO, see handoff.py).

The master gets its options from a generated config file that sets them under `Host *` before
it includes the user's own config (and the system's, which `-F` would otherwise drop): for ssh
the first value wins, and unlike `-o`, a config file reaches ProxyJump hops too. So host keys are
always checked, nothing prompts, and a user's ControlMaster, ControlPersist or LocalForward
lines cannot make this ssh (or a hop) share, outlive or bind anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from tether import paths
from tether.errors import ConfigError, TransportUnreachableError, describe
from tether.procs import Pinned, ProcessRef
from tether.spec import Endpoint, SshOptions, Via
from tether.transports import mux, sshexit
from tether.transports.base import Forwarding, HandoffTransport, LossCallback, PhaseCallback
from tether.transports.peerwatch import PeerWatch
from tether.transports.sshsetup import check_files, target_error
from tether.transports.workdir import Workdir

log = logging.getLogger("tether")

MIN_VERSION = (7, 6)  # stdio forwarding through the mux socket
# How often a starting master is asked whether it is up (and, until then, whether its server
# has spoken). It has no event to wait on: the mux socket appears once it has logged in, and it
# may exit instead.
READY_POLL = 0.01
STOP_GRACE = 3.0
# A refused forward's reason is on the master's stderr, not in its reply; it comes at once.
REASON_WAIT = 0.2
STDERR_KEPT = 40
# What ssh -G names when the server is reached through something else: no address to watch.
PROXIES = ("proxyjump", "proxycommand")
# A traced master (tether diagnose) says a hundred lines before it is up; its failure is read
# from all of them.
STDERR_KEPT_TRACED = 1000
PF_EXITING = 0x4  # include/linux/sched.h: the process is exiting
HAVE_PROCFS = os.path.exists("/proc/self/stat")
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
_OPEN_FAILED = re.compile(r"channel \d+: open failed: (?:connect failed: )?(.*)")
# The master's words for a peer gone silent, said the way the asyncssh engine says it.
_SILENT = re.compile(r"Timeout, server .* not responding")


# What a service manager passes to tether's own process (sd_notify, the watchdog, socket
# activation): never ssh's, nor a ProxyCommand's, to act on.
SERVICE_MANAGER_VARIABLES = frozenset(
    ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
)


def master_environ() -> dict[str, str]:
    """The master's environment: tether's, less what the service manager gave tether."""
    return {k: v for k, v in os.environ.items() if k not in SERVICE_MANAGER_VARIABLES}


@functools.cache
def openssh_version() -> tuple[int, int] | None:
    """The (major, minor) version of the ssh on PATH, or None if there is none."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    try:
        done = subprocess.run(
            [ssh, "-V"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stderr + done.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else None


@functools.cache
def parent_death_wrapper() -> list[str]:
    """The command that makes the master receive SIGTERM if tether dies without stopping it
    (SIGKILL, a crash), so that no ssh outlives its tunnel: util-linux's setpriv, where it
    knows --pdeathsig (2.33 and later). Nothing where it does not."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    wrapper = [setpriv, "--pdeathsig", "TERM", "--"]
    try:
        done = subprocess.run(
            [*wrapper, "true"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return wrapper if done.returncode == 0 else []


def available() -> bool:
    version = openssh_version()
    return version is not None and version >= MIN_VERSION


class _Forwarding:
    """The control connection of one forward: it closes when the forward is over, and when
    the master dies."""

    def __init__(self, control: socket.socket, master: _Master) -> None:
        self.control = control
        self.master = master

    async def ended(self) -> bool:
        await mux.forward_ended(self.control)
        return not self.master.exiting()

    def close(self) -> None:
        self.control.close()


class OpenSshTransport(HandoffTransport):
    """Each local connection is handed to a private OpenSSH ControlMaster."""

    engine = "openssh"

    def __init__(
        self, via: Via, options: SshOptions, *, trace: Callable[[str], None] | None = None
    ) -> None:
        self.via = via
        self.options = options
        self.label = str(via)
        # tether diagnose: the master logs at DEBUG1 (its own connection only, not a
        # ProxyJump hop's) and each line of it goes to ``trace`` as it comes.
        self._trace = trace
        self._master: _Master | None = None
        self._workdir: Workdir | None = None
        self._address: tuple[str, int] | None = None
        self._address_known = False

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        await self.close()  # a reconnect replaces what is left of the old master
        check_files(self.options)
        self._workdir = Workdir()
        config = write_config(self._workdir.path / "config", self.options)
        control = self._workdir.path / "control"
        argv = [*parent_death_wrapper(), *self.ssh_argv(config, control)]
        master = _Master(argv, control, on_lost, on_line=self._trace)
        self._master = master
        try:
            await master.started(
                None if on_phase is None else functools.partial(on_phase, "authenticating")
            )
        except BaseException:
            await self.close()
            raise
        if master.failure is not None:  # it exited before its socket answered
            try:
                resolved = await sshexit.resolve(self.ssh_argv(config, Path("/nonexistent")))
                error = await sshexit.startup_error(master.stderr_text(), resolved, self.label)
            finally:
                await self.close()
            raise error

    async def server_address(self) -> tuple[str, int] | None:
        """Asked once of `ssh -G`, with the master's own config and arguments."""
        if not self._address_known:
            self._address = await self._resolve_address()
            self._address_known = True
        return self._address

    async def _resolve_address(self) -> tuple[str, int] | None:
        try:
            workdir = Workdir()
        except OSError:
            return None
        try:
            config = write_config(workdir.path / "config", self.options)
            resolved = await sshexit.resolve(self.ssh_argv(config, Path("/nonexistent")))
        except (OSError, ConfigError):
            return None
        finally:
            workdir.remove()
        if any(sshexit.first(resolved, key, "none") != "none" for key in PROXIES):
            return None
        hostname = sshexit.first(resolved, "hostname", "")
        try:
            port = int(sshexit.first(resolved, "port", ""))
        except ValueError:
            return None
        return (hostname, port) if hostname else None

    def ssh_argv(self, config: Path, control: Path) -> list[str]:
        """The master's command line, with its generated ``config`` and ``control`` socket."""
        # -F is read as it is; -S is token- and variable-expanded as ControlPath is.
        argv = [shutil.which("ssh") or "ssh", "-F", str(config), "-M"]
        argv += ["-S", _tokens_escaped(str(control), "TMPDIR")]
        argv += ["-N", "-T"]
        # On the command line, these are the main connection's alone: not a hop's.
        level = "DEBUG1" if self._trace is not None else "INFO"
        argv += ["-o", "ControlPersist=no", "-o", f"LogLevel={level}"]
        if self.via.port_given:
            argv += ["-p", str(self.via.port)]
        if self.via.user:
            argv += ["-l", self.via.user]
        return [*argv, "--", self.via.host]

    async def forward(self, target: Endpoint, sock: socket.socket) -> Forwarding:
        master = self._master
        if master is None or master.failure is not None:
            raise TransportUnreachableError(f"SSH master for {self.via} is not running")
        try:
            inbox = await mux.start_forward(str(master.control), target.host, target.port, sock)
        except mux.Unanswered:
            # Stopped or hung: it is lost, and its death (by SIGKILL, which even a stopped
            # process cannot ignore) is what the tunnel reconnects from.
            silent = f"did not answer within {mux.MUX_ANSWER_TIMEOUT:g}s"
            master.unresponsive(silent)
            raise TransportUnreachableError(f"SSH master for {self.via} {silent}") from None
        except (OSError, mux.MuxError) as exc:
            reason = exc.reason if isinstance(exc, mux.MuxError) else describe(exc)
            raise TransportUnreachableError(
                f"SSH master for {self.via} does not answer: {reason}"
            ) from None
        control = inbox.sock
        try:
            await mux.forward_opened(inbox)
        except mux.MuxError as exc:
            control.close()
            if master.failure is not None:
                raise TransportUnreachableError(f"SSH master for {self.via} exited") from None
            reason = await master.open_failure(exc.reason)
            raise target_error(target, self.label, reason) from None
        except BaseException:
            control.close()
            raise
        return _Forwarding(control, master)

    async def close(self) -> None:
        master, self._master = self._master, None
        if master is not None:
            await master.stop()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            workdir.remove()


def _seconds(value: float) -> int:
    """ssh takes whole seconds; a fraction rounds up, so that 0.5 is never 0 (off)."""
    return math.ceil(value)


# From 8.7, ssh reads a config line as shell-like words: a backslash escapes a quote or another
# backslash. Before, both are literal, and a quoted value cannot hold a quote.
ESCAPES_FROM = (8, 7)
_GLOB = re.compile(r"([\\*?\[\]])")


def _quoted(value: str, what: str) -> str:
    """``value`` as one double-quoted word of a config line, read back by ssh as it is."""
    if not value.isprintable():  # a line break would end the line; no control char belongs
        raise ConfigError(f"{what}: cannot pass {value!r} to ssh: it holds a control character")
    if _newer_than(ESCAPES_FROM):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if '"' in value:
        raise ConfigError(f"{what}: cannot pass {value!r} to ssh: it holds a quote")
    return f'"{value}"'


def _newer_than(version: tuple[int, int]) -> bool:
    """Whether the ssh on PATH is ``version`` or later (an unknown one counts as new)."""
    found = openssh_version()
    return found is None or found >= version


def _tokens_escaped(value: str, what: str = "path") -> str:
    """A path as ssh reads it where it expands %-tokens and ${VARIABLES} (IdentityFile,
    CertificateFile, UserKnownHostsFile, ControlPath and -S): "%" is written "%%"; "${" has no
    escape."""
    if "${" in value:
        raise ConfigError(
            f"{what}: cannot pass {value!r} to ssh: it holds '${{', which ssh would expand "
            "as an environment variable",
            hint="rename the file or the directory, or use --engine asyncssh",
        )
    return value.replace("%", "%%")


def _glob_escaped(value: str) -> str:
    """A path as ssh's Include reads it: a glob(3) pattern, so *, ?, [, ] and the backslash
    itself are escaped with a backslash. (OpenSSH 9.2 expands neither %-tokens nor variables
    in Include.)"""
    return _GLOB.sub(r"\\\1", value)


# Every ssh_config(5) directive (OpenSSH 9.2) was reviewed for what it does to the master's
# process or session shape: whether it can fork, bind, run a command, open a session, prompt or
# outlive the tunnel. PINNED are set first under `Host *` (so for every hop too); the rest are
# the user's, for these reasons:
# - they choose where and how to connect or log in, and run nothing that outlives the login:
#   Hostname, Port, User, ProxyJump, ProxyCommand (ssh ends it with the connection),
#   ProxyUseFdpass (the proxy hands over its socket and exits), Match exec, KnownHostsCommand
#   (runs and exits once per host key lookup: a user's way of listing host keys), Canonical*,
#   AddressFamily, BindAddress, BindInterface, ConnectionAttempts, IdentityAgent, IdentityFile,
#   IdentitiesOnly, CertificateFile, PKCS11Provider, SecurityKeyProvider, the GSSAPI* and
#   Hostbased* settings, EnableSSHKeysign, PreferredAuthentications, PubkeyAuthentication,
#   NumberOfPasswordPrompts and KbdInteractiveDevices (no prompt: BatchMode), the algorithm
#   lists, RequiredRSASize, RekeyLimit, Compression, IPQoS, TCPKeepAlive;
# - host-key checking that StrictHostKeyChecking yes makes strict: UserKnownHostsFile,
#   GlobalKnownHostsFile, HostKeyAlias, CheckHostIP, HashKnownHosts, RevokedHostKeys,
#   VerifyHostKeyDNS, NoHostAuthenticationForLocalhost, FingerprintHash;
# - they act on a session or a forward only, and there is neither (-N, ClearAllForwardings):
#   SendEnv, SetEnv, TunnelDevice, ForwardX11Timeout, XAuthLocation, PermitRemoteOpen,
#   StreamLocalBindMask, StreamLocalBindUnlink;
# - logging: LogLevel (on the command line), LogVerbose, SyslogFacility; IgnoreUnknown, Include.
PINNED = (
    "BatchMode yes",  # nothing prompts
    "StrictHostKeyChecking yes",
    "UpdateHostKeys no",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "AddKeysToAgent no",  # "ask" prompts, and the user's agent is not tether's to change
    "VisualHostKey no",  # its picture would be the last words of a failed start
    # No process but the master: it neither forks into the background (its parent would exit
    # as if it failed) nor runs a command here or there.
    "PermitLocalCommand no",
    "LocalCommand none",
    "RemoteCommand none",
    # No session (-N -T for the main connection; a hop's `ssh -W` is a stdio forward): no
    # terminal, escape character, agent, X11 or tun device.
    "RequestTTY no",
    "EscapeChar none",
    "ForwardAgent no",
    "ForwardX11 no",
    "ForwardX11Trusted no",
    "Tunnel no",
    # Binds nothing: no LocalForward, RemoteForward or DynamicForward of the user's.
    "ClearAllForwardings yes",
    "GatewayPorts no",
    "ExitOnForwardFailure yes",
    # The main connection's -M and -S come first; every hop neither shares nor persists.
    "ControlMaster no",
    "ControlPath none",
    "ControlPersist no",
)
# What OpenSSH 8.7 named (-f, -N and -n as settings); an older ssh would refuse the words.
PINNED_SINCE_8_7 = (
    "ForkAfterAuthentication no",
    "SessionType none",
    # A hop's stdio forward reads its stdin: it must not be /dev/null.
    "StdinNull no",
)


def write_config(path: Path, options: SshOptions) -> Path:
    """The master's config: tether's settings first, then the user's and the system's."""
    lines = [
        "# Written by tether for one tunnel. For ssh the first value of a setting wins.",
        "Host *",
        *(f"  {setting}" for setting in PINNED),
        *(f"  {setting}" for setting in PINNED_SINCE_8_7 if _newer_than((8, 7))),
        f"  ServerAliveInterval {_seconds(options.keepalive_interval)}",
        f"  ServerAliveCountMax {options.keepalive_count_max}",
    ]
    if options.connect_timeout:
        lines.append(f"  ConnectTimeout {_seconds(options.connect_timeout)}")
    # Each path means exactly the file check_files checked, or is refused (exit 2).
    for identity in options.identity_files:
        escaped = _tokens_escaped(identity, "identity_file")
        lines.append(f"  IdentityFile {_quoted(escaped, 'identity_file')}")
    for certificate in options.certificate_files:
        escaped = _tokens_escaped(certificate, "certificate_file")
        lines.append(f"  CertificateFile {_quoted(escaped, 'certificate_file')}")
    if options.known_hosts:
        escaped = _tokens_escaped(options.known_hosts, "known_hosts")
        lines.append(f"  UserKnownHostsFile {_quoted(escaped, 'known_hosts')}")
    user_config = _glob_escaped(options.ssh_config or paths.ssh_config())
    lines += ["Match all", f"Include {_quoted(user_config, 'ssh_config')}"]
    lines.append("Include /etc/ssh/ssh_config")
    # Last, so only a default: ssh_config's own Ciphers wins. AES-GCM first, as in the asyncssh
    # engine (AES instructions make it the fastest; ssh's own order puts ChaCha20 first).
    lines += ["Host *", f"  Ciphers {','.join(CIPHERS)}", ""]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
    return path


class _Master:
    """A running `ssh -M`: its process, its stderr, and its control socket."""

    _unanswered: str | None = None  # why it was killed as unresponsive, if it was

    def __init__(
        self,
        argv: list[str],
        control: Path,
        on_lost: LossCallback | None,
        *,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.control = control
        self.failure: int | None = None  # its exit status, once it has exited
        self._on_lost = on_lost
        self._on_line = on_line
        self._kept = STDERR_KEPT if on_line is None else STDERR_KEPT_TRACED
        self._ready = False
        self._stopping = False
        self._stderr: list[str] = []
        self._partial = b""
        self._new_line = asyncio.Event()
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        try:
            pid = os.posix_spawnp(
                argv[0],
                argv,
                master_environ(),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_end, 2),
                ],
                # A session of its own: Ctrl-C on tether's terminal must not reach it.
                setsid=True,
                # Python ignores these, and a helper thread (the shell's loop) blocks signals:
                # ssh starts with the defaults, or SIGTERM and its parent-death signal would
                # wait forever.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                setsigmask=(),
            )
        except OSError as exc:
            os.close(read_end)
            raise TransportUnreachableError(f"cannot start ssh: {describe(exc)}") from None
        finally:
            os.close(write_end)
        self.process = Pinned.child(pid)
        self._stderr_fd = read_end
        os.set_blocking(read_end, False)
        self._loop.add_reader(read_end, self._read_stderr)
        self._loop.add_reader(self.process.fd, self._on_exit)

    async def started(self, on_heard: Callable[[], None] | None = None) -> None:
        """Return once the master answers on its control socket, or has exited.

        ``on_heard`` is called once the SSH server has spoken to the master (its version line:
        the handshake and the login follow), and at the latest when the master answers. Until
        then a server that accepted the connection and hangs is still being connected to.
        """
        watch = PeerWatch(self.process.pid) if on_heard is not None and HAVE_PROCFS else None
        try:
            while not self._exited.is_set():
                with contextlib.suppress(OSError, mux.MuxError):
                    await mux.alive(str(self.control))
                    self._ready = True
                    # What it said while starting explains a failed start only; a later exit
                    # is explained by what comes after.
                    self._stderr = []
                    if on_heard is not None:
                        on_heard()  # logged in: it has heard the server, seen or not
                    return
                # Without a TCP socket of its own (a ProxyCommand or ProxyJump), the master
                # stays "connecting" until it answers; where the kernel cannot tell (None), it
                # is "authenticating" at once, as before there was a way to see it.
                if on_heard is not None and (watch is None or watch.heard() is not False):
                    on_heard()
                    on_heard = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._exited.wait(), READY_POLL)
        finally:
            if watch is not None:
                watch.close()

    def unresponsive(self, reason: str) -> None:
        """Count a master that does not answer as lost: kill it (a stopped one too); its exit,
        seen as any other, reports the loss with ``reason``."""
        if self._exited.is_set() or self._stopping or self._unanswered is not None:
            return
        log.debug("ssh master %d: %s; killing it", self.process.pid, reason)
        self._unanswered = reason
        self.process.signal(signal.SIGKILL)

    def exiting(self) -> bool:
        """Whether the master is dying or dead. It closes its descriptors (the forwards' control
        connections among them) before it becomes a zombie, so the kernel's PF_EXITING flag,
        set before either, is what tells a death from a forward that ended."""
        if self._exited.is_set():
            return True
        if not HAVE_PROCFS:  # only a death already seen counts
            return False
        try:  # once per connection: os calls, not pathlib, keep it cheap
            fd = os.open(f"/proc/{self.process.pid}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 1024)
            finally:
                os.close(fd)
            flags = int(stat.rpartition(b")")[2].split()[6])
        except (OSError, ValueError, IndexError):
            return True
        return bool(flags & PF_EXITING)

    def stderr_text(self) -> str:
        """What it said, less the debug lines of a traced master: a failure reads the same
        with tracing or without."""
        return "\n".join(line for line in self._stderr if not line.startswith("debug"))

    async def open_failure(self, fallback: str) -> str:
        """Why the master refused a forward, as its stderr says ("connect failed: ...")."""
        for _ in range(2):
            for line in reversed(self._stderr):
                found = _OPEN_FAILED.search(line)
                if found:
                    self._stderr.remove(line)
                    return found.group(1).strip()
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), REASON_WAIT)
        return fallback

    def _read_stderr(self) -> None:
        try:
            chunk = os.read(self._stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self._stderr_fd)
            return
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if line:
                log.debug("ssh: %s", line)
                self._stderr = [*self._stderr[-self._kept :], line]
                if self._on_line is not None:
                    self._on_line(line)
        self._new_line.set()

    def _on_exit(self) -> None:
        self._loop.remove_reader(self.process.fd)
        self._read_stderr()  # what is left in the pipe explains the exit
        _, status = os.waitpid(self.process.pid, 0)
        self.process.close()
        self.failure = os.waitstatus_to_exitcode(status)
        self._exited.set()
        if self._ready and not self._stopping and self._on_lost is not None:
            self._on_lost(self._loss_reason())

    def _loss_reason(self) -> str:
        if self._unanswered is not None:
            return f"ssh master {self._unanswered}"
        status = self.failure or 0
        if status < 0:
            return f"ssh was killed by {signal.Signals(-status).name}"
        said = [
            line
            for line in self._stderr
            if not _OPEN_FAILED.search(line) and not line.startswith("Authenticated to ")
        ]
        if not said:
            return f"ssh exited with status {status}"
        if _SILENT.search(said[-1]):
            return "Server not responding to keepalive"
        return said[-1]

    async def stop(self) -> None:
        """End the master (its forwards go with it) and reap it."""
        self._stopping = True
        if not self._exited.is_set():
            self.process.signal(signal.SIGTERM)
            # A stopped master (SIGSTOP, a debugger) acts on SIGTERM only once it runs again.
            self.process.signal(signal.SIGCONT)
            try:
                await asyncio.wait_for(self._exited.wait(), STOP_GRACE)
            except TimeoutError:
                self.process.signal(signal.SIGKILL)
                await self._exited.wait()
        with contextlib.suppress(OSError):
            self._loop.remove_reader(self._stderr_fd)
            os.close(self._stderr_fd)
        await end_stray_master(self.control)


async def end_stray_master(control: Path) -> None:
    """End the master that still serves ``control`` though tether's own child is gone: one
    that forked into the background (ForkAfterAuthentication, whatever made ssh do it) is
    adopted by init, and would run, logged in, for ever. It says its pid over the control
    socket; it is ended only if it is this user's ssh, started with this very socket."""
    try:
        if not stat.S_ISSOCK(os.lstat(control).st_mode):
            return
        pid = await asyncio.wait_for(mux.alive(str(control)), STOP_GRACE)
    except (OSError, mux.MuxError, TimeoutError):
        return  # nobody serves it: the usual case
    ref = ProcessRef.of(pid)
    pinned = ref.pin() if ref is not None else None
    if pinned is None:
        return
    with pinned:
        if not _is_master_of(pid, control):
            return
        log.warning("ssh left a master running in the background (pid %d): ending it", pid)
        pinned.signal(signal.SIGTERM)
        if not await _exits(pinned, STOP_GRACE):
            pinned.signal(signal.SIGKILL)
            await _exits(pinned, STOP_GRACE)


def _is_master_of(pid: int, control: Path) -> bool:
    """Whether process ``pid`` is an ssh whose command line names ``control`` (after -S)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    wanted = os.fsencode(_tokens_escaped(str(control)))
    named = any(a == b"-S" and b == wanted for a, b in itertools.pairwise(argv))
    return os.path.basename(argv[0]) == b"ssh" and named


async def _exits(pinned: Pinned, timeout: float) -> bool:
    """Whether the pinned process (not tether's child: nothing to reap) exits in time."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pinned.fd, readable)
    try:
        await asyncio.wait_for(gone, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pinned.fd)
    return True


__all__ = ["OpenSshTransport", "available", "openssh_version", "write_config"]
