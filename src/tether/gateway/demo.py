"""`tether demo gateway`: a whole gateway on loopback, offline, without root: a relay, a site
whose agent only dials out, a user granted one target, a tunnel to it, and a revoke that cuts
the tunnel. The relay and the agent are the real commands, run as tether's children; the
tunnel is the one `tether start` runs."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from tether.demo import echo_target, exchange
from tether.errors import AccessRefused, TetherError
from tether.gateway import audit, keygen, layout
from tether.gateway.agent import free_port
from tether.gateway.sshd import strict_base
from tether.spec import Endpoint, SshOptions, TunnelSpec, Via
from tether.transports.master import parent_death_wrapper
from tether.tunnel import Tunnel

STEP_TIMEOUT = 30.0
Say = Callable[[str], None]


class DemoError(TetherError):
    """The demonstration did not go as it should."""


async def run_gateway_demo(say: Say) -> None:
    """Run the gateway demonstration, narrating through ``say``; raises if anything misbehaves."""
    say("tether demo gateway: everything below runs on 127.0.0.1 and nothing leaves this machine.")
    target = await asyncio.start_server(echo_target, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    say(f"[1/7] a target (echo) on 127.0.0.1:{target_port}, inside the 'site' lab")
    try:
        with _scratch() as work:
            async with _children() as children:
                await _demo(work, target_port, children, say)
    finally:
        target.close()
        await target.wait_closed()
    say("stopped the tunnel, the agent, the relay and the signer; removed the gateway. demo ok.")


async def _demo(work: Path, target_port: int, children: list[_Child], say: Say) -> None:
    gateway = layout.init(work / "gateway")
    say(f"[2/7] tether gateway init {gateway.root}: a user CA, a host CA, an empty policy")
    relay_port, signer_port = free_port(), free_port()
    began = time.monotonic()
    signer = f"127.0.0.1:{signer_port}"
    await _command("relays", "add", str(gateway.root), "r1", "--signer", signer)
    children.append(await _Child.start("signer", ["signer", str(gateway.root), "--listen", signer]))
    bundle = gateway.relays / "r1.toml"
    relay_state = work / "relay"
    children.append(
        await _Child.start(
            "relay",
            [
                "relay",
                str(bundle),
                "--listen",
                f"127.0.0.1:{relay_port}",
                "--state-dir",
                str(relay_state),
            ],
        )
    )
    say(
        f"[3/7] tether gateway relays add r1, the signer (the CA's keys stay with it), relay "
        f"r1 on 127.0.0.1:{relay_port}, fed by the signer: up in "
        f"{time.monotonic() - began:.2f}s"
    )
    await _command("site", "add", str(gateway.root), "lab", "--relay", f"127.0.0.1:{relay_port}")
    enrolment = gateway.enrolments / "lab.toml"
    began = time.monotonic()
    children.append(
        await _Child.start(
            "agent",
            [
                "agent",
                str(enrolment),
                "--target",
                f"db=127.0.0.1:{target_port}",
                "--state-dir",
                str(work / "agent"),
            ],
        )
    )
    say(
        f"[4/7] tether gateway site add lab, then its agent (outbound only) linked to the "
        f"relay in {time.monotonic() - began:.2f}s, serving lab/db"
    )
    key = keygen.generate(work / "alice", "alice")
    await _command("user", "add", str(gateway.root), "alice", f"{key}.pub")
    await _command("grant", str(gateway.root), "alice", "lab/db", "--for", "10m")
    known_hosts = work / "known_hosts"
    known_hosts.write_text(await _command("trust", str(gateway.root)))
    await _until(
        lambda: "'alice'" in _read(relay_state / "authorized_keys"),
        "the relay to learn alice's key",
    )
    say("[5/7] user alice added with her own key and granted lab/db for 10m; her known_hosts")
    say("      trusts the gateway's host CA (tether gateway trust), and nothing else")
    spec = TunnelSpec(
        name="lab-db",
        target=Endpoint("lab/db", 0),
        via=Via("gw", "127.0.0.1", relay_port),
        ssh=SshOptions(identity_files=(str(key),), known_hosts=str(known_hosts)),
        timeout=STEP_TIMEOUT,
        reconnect=True,
        backoff_initial=0.2,
        backoff_max=1.0,
    )
    tunnel = Tunnel(spec)
    began = time.monotonic()
    await tunnel.start()
    try:
        address = tunnel.address
        assert address is not None
        say(
            f"[6/7] tether start --via gw://127.0.0.1:{relay_port} --to lab/db: ready in "
            f"{time.monotonic() - began:.2f}s on {address} (a 5-minute certificate for "
            "alice's key, end to end to the site's sshd)"
        )
        reply = await exchange(address, b"hello through the gateway\n")
        answered = reply.decode().strip()
        say(f"      sent 'hello through the gateway', the target answered {answered!r}")
        began = time.monotonic()
        await _command("revoke", str(gateway.root), "alice", "lab/db")
        try:
            reason = await asyncio.wait_for(tunnel.wait_ended(), STEP_TIMEOUT)
        except AccessRefused as exc:
            say(
                f"[7/7] tether gateway revoke alice lab/db: the relay cut the session and the "
                f"tunnel ended in {time.monotonic() - began:.2f}s: {exc.message} (exit 5)"
            )
        else:
            raise DemoError(f"the revoked tunnel ended otherwise: {reason}")
    finally:
        await tunnel.close()
    say("      the audit log:")
    for line in audit.history(gateway.audit):
        say(f"        {audit.describe_line(line)}")


class _Child:
    """A `tether gateway` command run by the demo, up once it says it is ready."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process

    @classmethod
    async def start(cls, name: str, args: list[str]) -> _Child:
        argv = [*parent_death_wrapper(), sys.executable, "-m", "tether", "gateway", *args, "--json"]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        child = cls(name, process)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), STEP_TIMEOUT)
        except TimeoutError:
            line = b""
        if b'"state": "ready"' not in line:
            await child.stop()
            assert process.stderr is not None
            said = (await process.stderr.read()).decode(errors="replace").strip()
            raise DemoError(f"the {name} did not start: {said or 'no word from it'}")
        return child

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STEP_TIMEOUT)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    base = strict_base()
    if base is None:
        raise DemoError(
            "no directory that sshd accepts a gateway in: XDG_RUNTIME_DIR, /run/user/UID and "
            "the home directory are all writable by others"
        )
    path = Path(tempfile.mkdtemp(prefix=".tether-demo-gateway-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def _children() -> AsyncIterator[list[_Child]]:
    """The demo's children, stopped (the last started first) when the block ends."""
    children: list[_Child] = []
    try:
        yield children
    finally:
        for child in reversed(children):
            await child.stop()


async def _command(*args: str) -> str:
    """Run `tether gateway ARGS` as an operator would; what it prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether",
        "gateway",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT)
    if process.returncode != 0:
        said = err.decode(errors="replace").strip()
        raise DemoError(f"tether gateway {args[0]} failed: {said}")
    return out.decode(errors="replace")


async def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
