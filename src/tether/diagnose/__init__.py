"""`tether diagnose`: each step of reaching a tunnel's target, run on its own and timed."""

from __future__ import annotations

import contextlib

from tether.diagnose import network
from tether.diagnose.engine import EngineProbe
from tether.diagnose.network import Peer, Sockaddr
from tether.diagnose.report import STEPS, Diagnosis, Failed, Runner, Step
from tether.errors import UsageError
from tether.spec import GATEWAY, TunnelSpec

NOT_SSH = "direct: no SSH"
NO_TARGET = "not run: a SOCKS tunnel has no one target (an allowlist of one host:port has)"
# For the failures that carry no hint of their own (a dropped connection, a refused target).
SERVER_HINT = "run with --debug for ssh's own words, and read the server's sshd log"


async def diagnose(spec: TunnelSpec) -> Diagnosis:
    """Run the steps of ``spec``'s path in order, each timed, until one fails.

    The steps use what the tunnel would use: its transport, known_hosts, ssh_config and keys.
    Configuration errors (a missing key file, a bad ssh_config) raise, as for `tether start`;
    a failing step does not: it ends the diagnosis, which carries its error.
    """
    if spec.via is None:
        return await _direct(spec)
    if spec.via.scheme == GATEWAY:
        return await _gateway(spec)
    probe = _engine(spec)
    diagnosis = Diagnosis(spec.reaches, str(spec.via), probe.engine)
    await probe.prepare()
    diagnosis.ssh_config = probe.ssh_config
    if probe.note:
        diagnosis.notes.append(probe.note)
    runner = Runner(diagnosis, spec.timeout)
    try:
        if probe.hop is None:
            for name in ("resolve", "tcp", "banner"):
                runner.skip(name, "not run: a ProxyCommand makes the connection")
        else:
            await _server(runner, probe.hop, spec.ssh.connect_timeout)
        await runner.run("host_key", probe.host_key, doing="exchanging keys", hint=SERVER_HINT)
        await runner.run("auth", probe.auth, doing="authenticating", hint=SERVER_HINT)
        target = spec.probe_target
        if target is None:  # a SOCKS tunnel without one target: its clients name theirs
            for name in ("channel", "probe"):
                runner.skip(name, NO_TARGET)
            return diagnosis
        refused = f"check that {target} listens and accepts connections from the SSH server"
        await runner.run(
            "channel",
            lambda step: probe.channel(target, step),
            doing=f"opening a channel to {target}",
            hint=refused,
        )
        await runner.run(
            "probe", lambda step: probe.probe(target, step), doing=f"probing {target}", hint=refused
        )
    except Failed:
        pass
    finally:
        await probe.close()
    return diagnosis


def _engine(spec: TunnelSpec) -> EngineProbe:
    """The engine `tether start` would choose, with the same errors when it cannot."""
    from tether.transports import transport_for

    assert spec.via is not None
    if transport_for(spec).engine == "openssh":
        from tether.diagnose.openssh import OpenSshProbe

        return OpenSshProbe(spec.via, spec.ssh)
    from tether.diagnose.asyncssh import AsyncSshProbe

    return AsyncSshProbe(spec.via, spec.ssh)


async def _server(runner: Runner, peer: Peer, connect_timeout: float | None) -> None:
    """Resolve, connect to and read the banner of the host ssh connects to first."""
    addresses: list[Sockaddr] = []

    async def resolve(step: Step) -> None:
        addresses.extend(await network.resolve(peer, step))

    await runner.run("resolve", resolve, doing=f"resolving {peer.host}")
    connected = []

    async def connect(step: Step) -> None:
        connected.append(await network.connect(peer, addresses, step, connect_timeout))

    await runner.run("tcp", connect, doing=f"connecting to {peer.label}")
    await runner.run(
        "banner",
        lambda step: network.banner(peer, connected[0], step, connect_timeout),
        doing=f"waiting for the SSH banner of {peer.label}",
    )


async def _gateway(spec: TunnelSpec) -> Diagnosis:
    """Through a gateway: the relay's address, its signer (the relay's host certificate, the
    user's own key, the grant), then the site's login through the relay, then the target."""
    from tether.transports import transport_for
    from tether.transports.gateway import GatewayTransport

    assert spec.via is not None and spec.target is not None
    transport = transport_for(spec)
    assert isinstance(transport, GatewayTransport)
    diagnosis = Diagnosis(spec.reaches, str(spec.via), transport.engine)
    diagnosis.notes.append(
        "through a gateway: host_key is the relay's signer (the relay's host certificate, your "
        "key, your grant); auth is the site's sshd, through the relay, with the certificate"
    )
    runner = Runner(diagnosis, spec.timeout)
    target = spec.target

    async def sign(step: Step) -> None:
        answer = await transport.authorize()
        signer = transport.signer
        assert signer is not None
        step.facts.update(relay=signer.label)
        step.detail = (
            f"certificate issued for {target} by relay {signer.label}; the site's endpoint is "
            f"port {answer.port}"
        )

    async def site(step: Step) -> None:
        await transport.connect()
        step.detail = f"logged in to site {transport.site}'s sshd through the relay"

    async def channel(step: Step) -> None:
        await transport.probe(target)
        step.detail = f"channel to {target} opened and closed"

    try:
        await _first_relay(runner, spec)
        await runner.run("host_key", sign, doing="asking the relay's signer", hint=SERVER_HINT)
        await runner.run("auth", site, doing="logging in to the site", hint=SERVER_HINT)
        await runner.run("channel", channel, doing=f"opening a channel to {target}")
        runner.skip("probe", "the channel above is the tunnel's readiness probe")
    except Failed:
        pass
    finally:
        await transport.close()
    return diagnosis


async def _first_relay(runner: Runner, spec: TunnelSpec) -> None:
    """Resolve, connect to and read the banner of a gateway's relays, in the order named, until
    one answers: its steps are the diagnosis's, each relay before it a note. If none answers, the
    last one's failure is the step's."""
    assert spec.via is not None
    diagnosis = runner.diagnosis
    *others, last = spec.via.relays
    for relay in others:
        trial = Diagnosis(diagnosis.target, diagnosis.via, diagnosis.engine)
        trying = Runner(trial, spec.timeout)
        trying.deadline = runner.deadline
        try:
            await _server(
                trying, Peer(relay.host, relay.port, str(relay)), spec.ssh.connect_timeout
            )
        except Failed:
            assert trial.error is not None
            diagnosis.notes.append(f"relay {relay}: {trial.error.message}; the next was tried")
            continue
        for name in ("resolve", "tcp", "banner"):
            diagnosis.steps[name] = trial.steps[name]
        return
    await _server(runner, Peer(last.host, last.port, str(last)), spec.ssh.connect_timeout)


async def _direct(spec: TunnelSpec) -> Diagnosis:
    """A direct tunnel: the target is resolved and connected to as the tunnel's streams are.
    Its failures are the target's (exit 6), as `tether start --to` says them."""
    diagnosis = Diagnosis(spec.reaches, None, None)
    target = spec.probe_target
    if target is None:
        raise UsageError(
            "a direct SOCKS tunnel has nothing to diagnose: each client names its target",
            hint="name one to check: tether diagnose --to HOST:PORT",
        )
    peer = Peer(target.host, target.port, str(target), direct=True)
    for name in ("banner", "host_key", "auth", "channel"):
        diagnosis.steps[name].detail = NOT_SSH
    runner = Runner(diagnosis, spec.timeout)
    addresses: list[Sockaddr] = []

    async def resolve(step: Step) -> None:
        addresses.extend(await network.resolve(peer, step))

    async def connect(step: Step) -> None:
        sock = await network.connect(peer, addresses, step, spec.ssh.connect_timeout)
        sock.close()

    with contextlib.suppress(Failed):
        await runner.run("resolve", resolve, doing=f"resolving {target.host}")
        await runner.run("tcp", connect, doing=f"connecting to {target}")
        await runner.run(
            "probe",
            lambda step: network.direct_probe(peer, addresses, step, spec.ssh.connect_timeout),
            doing=f"probing {target}",
        )
    return diagnosis


__all__ = ["STEPS", "Diagnosis", "Step", "diagnose"]
