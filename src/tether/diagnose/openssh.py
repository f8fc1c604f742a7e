"""The OpenSSH engine's side of a diagnosis: `ssh -G` with the tunnel's generated config, and the
tunnel's own master, traced at DEBUG1, whose lines tell the host key and the login."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

from tether.diagnose.engine import EngineProbe, pick
from tether.diagnose.network import Peer, first_bytes
from tether.diagnose.report import Step
from tether.spec import DEFAULT_SSH_PORT, Endpoint, SshOptions, Via
from tether.transports import sshexit
from tether.transports.masterconfig import openssh_version, write_config
from tether.transports.openssh import OpenSshTransport
from tether.transports.sshsetup import check_files
from tether.transports.workdir import Workdir

# What `ssh -G` prints that decides where and how the tunnel connects.
SHOWN = ("hostname", "port", "user", "proxyjump", "proxycommand", "hostkeyalias")
LISTED = ("identityfile", "certificatefile", "userknownhostsfile")

# The lines of a master at LogLevel DEBUG1 that a diagnosis reads (OpenSSH 7.6 to 9.x).
_KEX = re.compile(r"^debug1: kex: algorithm: (\S+)")
_HOST_KEY = re.compile(r"^debug1: Server host (?:key|certificate): (\S+) (SHA256:[A-Za-z0-9+/=]+)")
_KNOWN = re.compile(r"^debug1: Host '(.+)' is known and matches the (\S+) host (key|certificate)")
_FOUND = re.compile(r"^debug1: Found (CA key|key) in (.+):(\d+)$")
_METHODS = re.compile(r"^debug1: Authentications that can continue: (\S+)")
_OFFERING = re.compile(r"^debug1: (?:Offering public key|Trying private key): (.+)$")
_ACCEPTS = re.compile(r"^debug1: Server accepts key: (.+)$")
_AUTHENTICATED = re.compile(r'^Authenticated to .* using "([^"]+)"')


class Trace:
    """What the traced master has said so far about the host key and the login."""

    def __init__(self, verified: asyncio.Event) -> None:
        self.facts: dict[str, Any] = {}
        self.offered: list[str] = []
        self.verified = verified

    def line(self, text: str) -> None:
        if found := _KEX.match(text):
            self.facts["kex"] = found.group(1)
        elif found := _HOST_KEY.match(text):
            self.facts.update(algorithm=found.group(1), fingerprint=found.group(2))
        elif found := _KNOWN.match(text):
            self.facts.update(known_as=found.group(1), certificate=found.group(3) == "certificate")
        elif found := _FOUND.match(text):
            key = "known_hosts_ca" if found.group(1) == "CA key" else "known_hosts"
            self.facts[key] = {"file": found.group(2), "line": int(found.group(3))}
            self.verified.set()
        elif found := _METHODS.match(text):
            self.facts.setdefault("methods_offered", found.group(1).split(","))
            self.verified.set()  # ssh logs in only once the host key passed
        elif found := _OFFERING.match(text):
            self.offered.append(found.group(1))
        elif found := _ACCEPTS.match(text):
            self.facts["key"] = found.group(1)
        elif found := _AUTHENTICATED.match(text):
            self.facts["method"] = found.group(1)
            self.verified.set()


class OpenSshProbe(EngineProbe):
    """Runs the tunnel's own master (same argv, same generated config), traced."""

    engine = "openssh"

    def __init__(self, via: Via, options: SshOptions) -> None:
        super().__init__(via, options)
        self.trace = Trace(self.verified)
        self.transport: OpenSshTransport = OpenSshTransport(via, options, trace=self.trace.line)

    async def prepare(self) -> None:
        """`ssh -G` as the master will run, and which host the first TCP connection goes to."""
        check_files(self.options)
        workdir = Workdir()
        try:
            config = write_config(workdir.path / "config", self.options)
            argv = self.transport.ssh_argv(config, workdir.path / "control")
            self.ssh_config = await effective_config(argv)
            jump = self.ssh_config.get("proxyjump")
            if jump:
                first = jump.split(",")[0]
                hop = await effective_config([argv[0], "-F", str(config), *_hop_args(first)])
                first_host = _hop_args(first)[-1]
                label = "ssh://" + first.removeprefix("ssh://")
                self.hop = _peer(hop, label, first_host, DEFAULT_SSH_PORT)
                self.note = (
                    f"ProxyJump {jump}: resolve, tcp and banner concern the first jump host "
                    f"({first}); host_key and auth concern {self.via.host} itself"
                )
            elif self.ssh_config.get("proxycommand"):
                self.note = (
                    "a ProxyCommand reaches the server: ssh makes no TCP connection of its "
                    "own, so resolve, tcp and banner are not run"
                )
            else:
                self.hop = _peer(self.ssh_config, str(self.via), self.via.host, self.via.port)
        finally:
            workdir.remove()
        version = openssh_version()
        if version:
            self.ssh_config["ssh_version"] = "{}.{}".format(*version)

    def _phase(self, phase: str) -> None:
        """The master's "authenticating" means its server has spoken, not that the host key
        passed: the trace says that."""

    def host_key_facts(self, step: Step) -> None:
        facts = self.trace.facts
        step.facts.update(pick(facts, "algorithm", "fingerprint", "kex", "known_as"))
        step.facts.update(pick(facts, "known_hosts", "known_hosts_ca", "certificate"))
        if "fingerprint" not in facts:
            return
        text = f"{facts['algorithm']} {facts['fingerprint']}"
        if found := facts.get("known_hosts"):
            text += f", matches {found['file']}:{found['line']}"
        elif found := facts.get("known_hosts_ca"):
            text += f", signed by the @cert-authority of {found['file']}:{found['line']}"
        step.detail = text + (f" (kex {facts['kex']})" if "kex" in facts else "")

    def auth_facts(self, step: Step) -> None:
        facts = self.trace.facts
        step.facts.update(pick(facts, "methods_offered", "method", "key"))
        step.facts["tried"] = list(self.trace.offered)
        methods = ",".join(facts.get("methods_offered", [])) or "unknown"
        if "method" in facts:
            key = facts.get("key")
            step.detail = f"{facts['method']}" + (f" with {key}" if key else "")
            step.detail += f"; the server offers {methods}"
        else:
            tried = "; ".join(self.trace.offered) or "no key"
            step.detail = f"the server offers {methods}; tried {tried}"

    async def probe(self, target: Endpoint, step: Step) -> None:
        here, there = socket.socketpair()
        here.setblocking(False)
        started = time.monotonic()
        try:
            forwarding = await self.transport.forward(target, there)
        except BaseException:
            here.close()
            raise
        finally:
            there.close()
        step.detail = f"opened in {(time.monotonic() - started) * 1000:.1f} ms"
        loop = asyncio.get_running_loop()

        def close() -> None:
            here.close()
            forwarding.close()

        await first_bytes(step, lambda: loop.sock_recv(here, 65536), close)


async def effective_config(argv: list[str]) -> dict[str, Any]:
    """What `ssh -G` makes of the master's own arguments: the lines that matter."""
    found: dict[str, Any] = {key: [] for key in LISTED}
    for line in (await sshexit.output([argv[0], "-G", *argv[1:]])).splitlines():
        key, _, value = line.partition(" ")
        if key in LISTED:
            found[key] += value.split() if key == "userknownhostsfile" else [value]
        elif key in SHOWN and value != "none":
            found.setdefault(key, value)
    if "port" in found:
        found["port"] = int(found["port"])
    return {key: found[key] for key in (*SHOWN, *LISTED) if found.get(key)}


def _hop_args(hop: str) -> list[str]:
    """A ProxyJump hop, "[ssh://][user@]host[:port]", as ssh's arguments."""
    hop = hop.removeprefix("ssh://")
    user, at, rest = hop.rpartition("@")
    host, port = rest, ""
    if found := re.fullmatch(r"\[(.+)\](?::(\d+))?|([^:]+)(?::(\d+))?", rest):
        host = found.group(1) or found.group(3)
        port = found.group(2) or found.group(4) or ""
    return [*(["-l", user] if at else []), *(["-p", port] if port else []), "--", host]


def _peer(resolved: dict[str, Any], label: str, host: str, port: int) -> Peer:
    """Where ssh connects, as `ssh -G` says (``host`` and ``port`` if ssh could not say)."""
    return Peer(str(resolved.get("hostname", host)), int(resolved.get("port", port)), label)
