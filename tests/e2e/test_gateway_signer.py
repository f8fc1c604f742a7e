"""A gateway's signers and relays: the CA's keys only with the signers, relays fed the policy
and revocation list over SSH, signers that stand in for each other, and a relay removed that is
cut off. (A revoke on every relay: test_gateway_relays.py, where two relays can run.)"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path


from tests.support.gateway import alice, carries, running_gateway, started
from tests.support.servers import EchoServer
from tests.support.tether_process import TetherRunner
from tether.gateway import policy, relaybundle
from tether.gateway.hops import known_hosts_line, ssh_options
from tether.gateway.names import RELAY_PRINCIPAL, SIGNER_PRINCIPAL


def test_signers_stand_in_for_each_other(tether: TetherRunner, echo_server: EchoServer) -> None:
    """Two signers of one gateway directory: with the relay's first signer stopped, the relay
    is fed by the second within its backoff; a revoke still reaches it and new tunnels still get
    certificates."""
    with running_gateway(tether, {"echo": echo_server.address}, signers=2) as run:
        client = alice(tether, run)
        second = run.start_signer(run.signer_ports[1])
        try:
            tunnel, port = started(tether, client)
            run.signer.send_signal(signal.SIGTERM)  # its sessions (the relay's feed) end with it
            assert run.signer.finish() == 0
            second_address = f"fed by signer 127.0.0.1:{run.signer_ports[1]}"
            run.relay.wait_for(lambda p: second_address in p.stderr, "the second signer's feed")
            assert carries(port)  # a signer's outage is not the data path's
            code, _, err = tether.run("start", *client.flags(), "--run", "true")
            assert code == 0, err
            policy.revoke(run.gateway.policy, "alice", "lab", "echo")
            assert tunnel.finish(deadline=30) == 5
        finally:
            second.send_signal(signal.SIGTERM)
            second.finish()


def test_a_removed_relay_is_cut_off_and_ends_with_exit_5(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        code, _, err = tether.run("gateway", "relays", "remove", str(run.gateway.root), "r1")
        assert code == 0, err
        assert run.relay.finish(deadline=30) == 5
        last = run.relay.stderr.strip().splitlines()[-1]
        assert "refused this relay's certificate" in last, run.relay.stderr
        assert not (run.gateway.relays / "r1.toml").exists()


def test_a_relay_holds_no_ca_key_and_cannot_grant_itself_access(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    """A relay taken over has its bundle and its state directory: no CA key in either, and what
    it can ask a signer for is a certificate of a user's own key, which it cannot use."""
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        client = alice(tether, run)
        ca_keys = [run.gateway.user_ca.read_text(), run.gateway.host_ca.read_text()]
        held = [(run.gateway.relays / "r1.toml").read_text()]
        held += [
            p.read_bytes().decode(errors="replace")
            for p in run.relay_state().iterdir()
            if p.is_file()
        ]
        assert not [text for text in held for ca in ca_keys if ca.strip() in text]

        bundle = relaybundle.RelayBundle.load(run.gateway.relays / "r1.toml")
        work = run.work / "taken"
        work.mkdir(mode=0o700)
        login = work / "login"
        login.write_text(bundle.login_key)
        login.chmod(0o600)
        Path(f"{login}-cert.pub").write_text(bundle.login_certificate + "\n")
        known = work / "known_hosts"
        known.write_text(
            known_hosts_line(bundle.host_cas[0], f"{SIGNER_PRINCIPAL},{RELAY_PRINCIPAL}")
        )

        def ssh(
            port: int, alias: str, *args: str, stdin: str = ""
        ) -> subprocess.CompletedProcess[str]:
            options = ssh_options(key=login, certificate=Path(f"{login}-cert.pub"),
                                  known_hosts=known, alias=alias)  # fmt: skip
            argv = ["ssh", "-F", "/dev/null", *options, "-p", str(port), "127.0.0.1", *args]
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)

        # The signer answers the relay's login with a certificate of alice's own key.
        asked = json.dumps({"sign": 1, "user": "alice", "site": "lab", "target": "echo"})
        fed = ssh(run.signer_port, SIGNER_PRINCIPAL, "feed", stdin=asked + "\n")
        answers = [json.loads(line) for line in fed.stdout.splitlines()]
        (signed,) = [a for a in answers if a.get("signed") == 1]
        certificate = work / "alice-cert.pub"
        certificate.write_text(str(signed["certificate"]) + "\n")
        shown = subprocess.run(["ssh-keygen", "-L", "-f", str(certificate)], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        fingerprint = ["ssh-keygen", "-l", "-f", f"{client.key}.pub"]
        listed = subprocess.run(fingerprint, capture_output=True, text=True, check=True)
        alice_key = listed.stdout.split()[1]
        assert f"Public key: ED25519-CERT {alice_key}" in shown
        # With the relay's own key it opens nothing: not the site's endpoint on the relay...
        opened = ssh(run.relay_port, RELAY_PRINCIPAL, "-W", f"127.0.0.1:{run.endpoint_port}")
        assert opened.returncode == 255 and "Permission denied" in opened.stderr, opened.stderr
        # ...and its login to the signer runs the feed and nothing else.
        shell = ssh(run.signer_port, SIGNER_PRINCIPAL, "-W", "127.0.0.1:22")
        assert shell.returncode != 0
