"""`tether gateway relay` and `tether gateway signer`: stock sshd, checked, supervised, the relay
following the policy a signer feeds it while it runs, and each gone with every session when it
stops."""

from __future__ import annotations

import signal
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import listens
from tests.support.servers import EchoServer, free_port
from tests.support.strict_dirs import strict_tmp
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync
from tether.gateway import enrol, layout, relaybundle
from tether.gateway.hops import known_hosts_lines, ssh_options
from tether.gateway.names import RELAY_PRINCIPAL
from tether.procs import descendants
from tether.spec import Endpoint


@pytest.fixture
def work() -> Iterator[Path]:
    with strict_tmp() as path:
        yield path


def agent_argv(work: Path, enrolled: Path, port: int) -> tuple[list[str], str]:
    """An agent's ssh command from its enrolment (what `tether gateway agent` runs)."""
    data = tomllib.loads(enrolled.read_text())
    key = work / f"{data['site']}-agent"
    key.write_text(data["agent_key"])
    key.chmod(0o600)
    certificate = Path(f"{key}-cert.pub")
    certificate.write_text(data["agent_certificate"] + "\n")
    known = work / "known_hosts"
    known.write_text(known_hosts_lines(data["host_ca"]))
    options = ssh_options(
        key=key, certificate=certificate, known_hosts=known, alias=RELAY_PRINCIPAL
    )
    argv = ["ssh", "-F", "/dev/null", *options, "-p", str(port), "-N"]
    return argv, f"127.0.0.1:{data['endpoint_port']}"


def test_the_relay_serves_sites_added_while_it_runs_and_leaves_nothing(
    tether: TetherRunner, work: Path, echo_server: EchoServer
) -> None:
    gateway = layout.init(work / "gw")
    port, signer_port = free_port(), free_port()
    bundle = relaybundle.add_relay(gateway, "r1", [Endpoint("127.0.0.1", signer_port)])
    signer_process = tether.spawn(
        "gateway", "signer", str(gateway.root), "--listen", f"127.0.0.1:{signer_port}"
    )
    signer_process.wait_for(lambda p: "signer ready on" in p.stderr, "the signer to be ready")
    relay = tether.spawn(
        "gateway", "relay", str(bundle), "--listen", f"127.0.0.1:{port}",
        "--state-dir", str(work / "relay"),
    )  # fmt: skip
    relay.wait_for(lambda p: "r1 ready on" in p.stderr, "the relay to be ready")
    enrolled = enrol.add_site(
        gateway, "lab", [Endpoint("127.0.0.1", port)], port=free_port()
    )  # while it runs
    argv, endpoint = agent_argv(work, enrolled.path, port)
    site_port = int(endpoint.rpartition(":")[2])
    wait_until_sync(
        lambda: "site:lab" in (work / "relay" / "principals").read_text(),
        "the relay to apply the new site, as the signer feeds it",
    )
    agent = subprocess.Popen(
        [*argv, "-R", f"{endpoint}:{echo_server.address}", "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_sync(lambda: listens(site_port), "the agent's endpoint on the relay")
        sshd = descendants(relay.pid)
        assert sshd, "the relay runs sshd"
        signer = work / "relay" / "signer.sock"
        assert (
            stat.S_ISSOCK(signer.lstat().st_mode) and stat.S_IMODE(signer.lstat().st_mode) == 0o600
        )
        relay.send_signal(signal.SIGTERM)
        assert relay.finish() == 0, relay.stderr
        assert not signer.exists()
        # The relay took its sessions with it: the agent's connection is gone too.
        assert agent.wait(timeout=20) != 0
        assert not listens(site_port)
        # Killed, not waited for: each is gone a moment after (a SIGTERM'd ssh, a SIGKILL'd
        # session), and its socket may close before it has exited.
        wait_until_sync(lambda: not any(map(alive, sshd)), "the relay's processes to be gone")
        feeds = descendants(signer_process.pid)
        signer_process.send_signal(signal.SIGTERM)
        assert signer_process.finish() == 0, signer_process.stderr
        wait_until_sync(lambda: not any(map(alive, feeds)), "the signer's feeds to be gone")
    finally:
        agent.kill()
        agent.wait()
        for process in (relay, signer_process):
            if process.proc.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.finish()


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie its new parent has not reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_directory_others_can_write_is_refused(tether: TetherRunner, tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")  # pytest's tmp_path is under /tmp (1777)
    bundle = relaybundle.add_relay(gateway, "r1", [Endpoint("127.0.0.1", 1)])
    for argv in (
        ["signer", str(gateway.root), "--listen", "127.0.0.1:1"],
        ["relay", str(bundle), "--listen", "127.0.0.1:1", "--state-dir", str(tmp_path / "r")],
    ):
        code, out, err = tether.run("gateway", *argv)
        assert code == 2 and out == ""
        assert "sshd would refuse every login" in err and err.count("\n") == 1, err


def test_a_state_directory_too_deep_for_the_signers_socket_is_refused_in_one_line(
    tether: TetherRunner, work: Path
) -> None:
    gateway = layout.init(work / "gw")
    bundle = relaybundle.add_relay(gateway, "r1", [Endpoint("127.0.0.1", 1)])
    deep = work / ("d" * 100)
    code, _, err = tether.run(
        "gateway", "relay", str(bundle), "--listen", "127.0.0.1:1", "--state-dir", str(deep)
    )
    assert code == 2 and err.count("\n") == 1, err
    assert "too deep for the relay's signer socket" in err.splitlines()[0], err
