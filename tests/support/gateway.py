"""A gateway's sshds as tests run them: the relay (and a site's sshd) with tether's generated
configs, in a directory sshd's StrictModes accepts, and real ssh clients with certificates; and
a whole gateway of `tether gateway` processes (signer, relay, agent)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import echo_once, free_port
from tests.support.strict_dirs import strict_tmp
from tests.support.tether_process import TetherProcess, TetherRunner
from tests.support.sshd_server import require_sshd, stop_tree
from tests.support.waiting import wait_until_sync
from tether.gateway import enrol, keygen, layout, policy, relaybundle
from tether.gateway.hops import known_hosts_line, ssh_options
from tether.gateway.names import RELAY_PRINCIPAL
from tether.gateway.sshdconfig import relay_principals, sshd_config
from tether.spec import Endpoint


@dataclass
class Relay:
    gateway: layout.Gateway
    port: int
    site_port: int
    user: str
    known_hosts: Path
    work: Path

    def argv(self, key: Path, alias: str = RELAY_PRINCIPAL) -> list[str]:
        """ssh to the relay with ``key`` (and its KEY-cert.pub), checking the host certificate
        for ``alias`` against the gateway's host CA only; the host argument is the caller's."""
        options = ssh_options(
            key=key, certificate=Path(f"{key}-cert.pub"), known_hosts=self.known_hosts, alias=alias
        )
        return ["ssh", "-F", "/dev/null", *options, "-p", str(self.port), "-l", self.user]

    def ssh(self, key: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv(key), *args], input=stdin, capture_output=True, text=True, timeout=20
        )


def certified(relay: Relay, name: str, principals: list[str], validity: str = "+5m") -> Path:
    key = keygen.generate(relay.work / name, name)
    keygen.sign(
        relay.gateway.user_ca,
        relay.work / f"{name}.pub",
        key_id=name,
        principals=principals,
        validity=validity,
        serial=7,
    )
    return key


def user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


@contextmanager
def gateway_sshd(
    work: Path,
    name: str,
    port: int,
    host_key: Path,
    certificate: Path,
    ca: Path,
    principals: str,
    revoked: Path | None = None,
) -> Iterator[None]:
    """One sshd with tether's generated config (sshdconfig.py) on 127.0.0.1:``port``; its files
    and its log (``name``.log) in ``work``."""
    principals_path = work / f"{name}.principals"
    principals_path.write_text(principals)
    principals_path.chmod(0o600)
    config = work / f"{name}.sshd_config"
    config.write_text(
        sshd_config(
            listen=Endpoint("127.0.0.1", port),
            user=user(),
            host_key=host_key,
            host_certificate=certificate,
            user_ca=ca,
            principals=principals_path,
            revoked=revoked,
        )
    )
    sshd = require_sshd()
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until_sync(lambda: answers(port) or proc.poll() is not None, f"{name} to listen")
        assert proc.poll() is None, log_path.read_text()
        yield
    finally:
        for pid in stop_tree(proc.pid):
            # A process of the tree may be gone already: halted() counts a zombie or an
            # exited one as stopped, and its parent may reap it meanwhile.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def relay_host_key(gateway: layout.Gateway, work: Path) -> tuple[Path, Path]:
    """A relay's host key in ``work``, certified by ``gateway``'s host CA as a relay bundle's
    is, and its certificate."""
    key = keygen.generate(work / "relay_host", "relay")
    keygen.sign(
        gateway.host_ca,
        work / "relay_host.pub",
        key_id="relay:test",
        principals=[RELAY_PRINCIPAL],
        validity="+1d",
        serial=3,
        host=True,
    )
    return key, work / "relay_host-cert.pub"


@contextmanager
def running_relay(work: Path) -> Iterator[Relay]:
    """A new gateway in ``work`` and its relay, with one site, lab, whose endpoint is free."""
    gateway = layout.init(work / "gw")
    port, site_port = free_port(), free_port()
    host_key, host_certificate = relay_host_key(gateway, work)
    known_hosts = work / "known_hosts"
    ca = Path(f"{gateway.host_ca}.pub").read_text().strip()
    known_hosts.write_text(known_hosts_line(ca))
    with gateway_sshd(
        work,
        "relay",
        port,
        host_key,
        host_certificate,
        Path(f"{gateway.user_ca}.pub"),
        relay_principals({"lab": site_port}, ["/bin/false"]),
        revoked=gateway.revoked,
    ):
        yield Relay(gateway, port, site_port, user(), known_hosts, work)


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def agent_link(relay: Relay, key: Path, to: str) -> Iterator[subprocess.Popen[bytes]]:
    """An agent's `ssh -R` with ``key``: the site's endpoint on the relay forwarded to ``to``,
    up (its endpoint listens) until the block ends."""
    proc = subprocess.Popen(
        [*relay.argv(key), "-N", "-R", f"127.0.0.1:{relay.site_port}:{to}", "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_sync(
            lambda: listens(relay.site_port) or proc.poll() is not None, "the agent's endpoint"
        )
        assert proc.poll() is None, (relay.work / "relay.log").read_text()
        yield proc
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Running:
    """A gateway's processes; a test may replace them (the fixture ends the last ones)."""

    work: Path
    gateway: layout.Gateway
    signer_port: int
    relay_port: int
    endpoint_port: int
    tether: TetherRunner
    enrolment: Path
    targets: dict[str, str]
    signer: TetherProcess = field(init=False)
    relay: TetherProcess = field(init=False)  # r1's
    agent: TetherProcess = field(init=False)
    # Every relay's port and process, by name (r1, r2, ...); r1's are relay_port and relay.
    relay_ports: dict[str, int] = field(default_factory=dict)
    relays: dict[str, TetherProcess] = field(default_factory=dict)
    signer_ports: list[int] = field(default_factory=list)  # every signer the bundles name

    def relay_state(self, name: str = "r1") -> Path:
        """Where relay ``name`` keeps its files: its sshd's, and what its agents announce."""
        return self.work / f"relay-{name}"

    def relay_has_policy(self, name: str = "r1") -> None:
        """Wait until relay ``name`` holds the gateway's policy as it is now."""
        wait_for_policy(self.relay_state(name), self.gateway, f"relay {name}")

    def start_signer(self, port: int | None = None) -> TetherProcess:
        listen = f"127.0.0.1:{port or self.signer_port}"
        signer = self.tether.spawn("gateway", "signer", str(self.gateway.root), "--listen", listen)
        signer.wait_for(lambda p: " ready on " in p.stderr, "the signer")
        return signer

    def start_relay(self, name: str = "r1", launcher: Sequence[str] = ()) -> TetherProcess:
        listen = f"127.0.0.1:{self.relay_ports.get(name, self.relay_port)}"
        bundle = str(self.gateway.relays / f"{name}.toml")
        state = str(self.relay_state(name))
        relay = self.tether.spawn(
            "gateway", "relay", bundle, "--listen", listen, "--state-dir", state,
            launcher=launcher,
        )  # fmt: skip
        relay.wait_for(lambda p: " ready on " in p.stderr, "the relay")
        return relay

    def start_agent(
        self, state: str = "agent", wait: bool = True, launcher: Sequence[str] = ()
    ) -> TetherProcess:
        agent = self.tether.spawn(
            "gateway",
            "agent",
            str(self.enrolment),
            *(f"--target={name}={where}" for name, where in self.targets.items()),
            "--state-dir",
            str(self.work / state),
            launcher=launcher,
        )
        if wait:
            agent.wait_for(lambda p: " ready on " in p.stderr, "the agent")
        return agent


@contextmanager
def running_gateway(
    tether: TetherRunner, targets: dict[str, str], relays: int = 1, signers: int = 1
) -> Iterator[Running]:
    """A gateway with ``signers`` signers (the first one run, the others' ports named in the
    relays' bundles), ``relays`` relays (r1, r2, ...) and an agent of site "lab" linked to
    each, serving ``targets`` (name -> HOST:PORT), each a `tether gateway` process, ended with
    SIGTERM after."""
    require_sshd()
    with strict_tmp() as work:
        gateway = layout.init(work / "gw")
        signer_ports = [free_port() for _ in range(signers)]
        signer_port = signer_ports[0]
        ports = {f"r{n}": free_port() for n in range(1, relays + 1)}
        for name in ports:
            named = [Endpoint("127.0.0.1", port) for port in signer_ports]
            relaybundle.add_relay(gateway, name, named)
        addresses = [Endpoint("127.0.0.1", port) for port in ports.values()]
        # The site's endpoint on a free port: another gateway on this host (another run's)
        # may hold the first one enrolments pick, on the loopback the relays share.
        enrolled = enrol.add_site(gateway, "lab", addresses, port=free_port())
        run = Running(
            work, gateway, signer_port, ports["r1"], enrolled.port, tether, enrolled.path, targets
        )
        run.relay_ports = ports
        run.signer_ports = signer_ports
        try:
            run.signer = run.start_signer()
            for name in ports:
                run.relays[name] = run.start_relay(name)
            run.relay = run.relays["r1"]
            run.agent = run.start_agent()
            yield run
        finally:
            ending = [getattr(run, "agent", None), getattr(run, "relay", None)]
            ending += [*run.relays.values(), getattr(run, "signer", None)]
            ended: set[int] = set()
            for process in ending:
                if process is None or id(process) in ended:
                    continue
                ended.add(id(process))
                if process.proc.poll() is None:
                    process.send_signal(signal.SIGTERM)
                process.finish()


@dataclass
class Client:
    """A user of a running gateway (alice, granted lab/echo) and the flags of her tunnel."""

    run: Running
    key: Path
    known_hosts: Path
    via: str

    def flags(self, target: str = "lab/echo") -> list[str]:
        return [
            "--via",
            self.via,
            "--to",
            target,
            "-i",
            str(self.key),
            "--known-hosts",
            str(self.known_hosts),
        ]


def wait_for_policy(state: Path, gateway: layout.Gateway, relay: str) -> None:
    """Wait until the relay whose state directory is ``state`` holds ``gateway``'s policy
    as it is now. The signer sends it at its next look at the files (every half second),
    and a relay judges live sessions by its own copy: a login made before the copy arrives
    is cut for a grant the relay does not know yet. Its key in authorized_keys is not
    enough, as the signer may have sent the policy between a user's adding and grant."""
    cache = state / "policy.toml"
    wanted = gateway.policy.read_bytes()

    def holds() -> bool:
        try:
            return cache.read_bytes() == wanted
        except FileNotFoundError:
            return False

    wait_until_sync(holds, f"{relay} to hold the gateway's policy")


def alice(tether: TetherRunner, run: Running, relay: str = "r1") -> Client:
    """User alice, her own key, a grant of lab/echo, her known_hosts trusting the gateway; a
    client of relay ``relay``, once every relay knows her key."""
    key = keygen.generate(run.work / "alice", "alice")
    policy.add_user(run.gateway.policy, "alice", Path(f"{key}.pub").read_text())
    policy.grant(run.gateway.policy, "alice", "lab", "echo", None)
    code, trusted, err = tether.run("gateway", "trust", str(run.gateway.root))
    assert code == 0, err
    known_hosts = run.work / "known_hosts"
    known_hosts.write_text(trusted)
    for name in run.relay_ports or {"r1": run.relay_port}:
        run.relay_has_policy(name)
        keys = run.relay_state(name) / "authorized_keys"
        # The relay follows the policy as a signer feeds it.
        wait_until_sync(
            lambda keys=keys: "'alice'" in keys.read_text(),  # type: ignore[misc]
            f"{name} to learn alice's key",
        )
    for name in run.relay_ports or {"r1": run.relay_port}:
        announced = run.relay_state(name) / "sites" / "lab.json"
        wait_until_sync(announced.exists, f"the agent to link to {name}")
    port = run.relay_ports.get(relay, run.relay_port)
    return Client(run, key, known_hosts, f"gw://127.0.0.1:{port}")


def started(tether: TetherRunner, client: Client, name: str = "db") -> tuple[TetherProcess, int]:
    """A running tunnel through the gateway (reconnecting quickly), proven to carry bytes, and
    its local port."""
    flags = [*client.flags(), "--name", name, "--backoff-max", "1s", "--port", "0"]
    tunnel = tether.spawn("start", *flags)
    tunnel.wait_for(lambda p: "ready" in p.stderr, "the tunnel")
    found = re.search(r"ready on 127\.0\.0\.1:(\d+)", tunnel.stderr)
    assert found is not None, tunnel.stderr
    port = int(found[1])
    assert echo_once(port, b"before") == b"before"
    return tunnel, port


def carries(port: int) -> bool:
    try:
        return echo_once(port, b"again", timeout=5) == b"again"
    except OSError:
        return False
