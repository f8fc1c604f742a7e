"""`tether diagnose` through a real sshd, with each engine: every step passing, and each failing
in turn, with the exit code `tether start` would have and the next step to take."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import EchoServer, SilentServer, free_port
from tests.support.ssh_setups import (
    authorize,
    certified_sshd,
    encrypted_key,
    jump_config,
    jump_pair,
    private_agent,
)
from tests.support.ssh_setups import fingerprint as key_fingerprint
from tests.support.sshd_server import SshdServer, keygen
from tests.support.tether_process import TetherRunner
from tether.diagnose.report import STEPS

REPORT_KEYS = [
    "schema",
    "ok",
    "exit_code",
    "target",
    "via",
    "engine",
    "failed_step",
    "error",
    "hint",
    "steps",
    "ssh_config",
    "notes",
]
STEP_KEYS = ["name", "status", "ok", "ms", "detail", "facts"]


def diagnose(tether: TetherRunner, *args: str) -> tuple[int, dict[str, Any], str]:
    """`tether diagnose ARGS --json`: exit status, the report, stderr."""
    code, out, err = tether.run("diagnose", *args, "--json")
    assert "Traceback" not in err
    report = json.loads(out)
    assert list(report) == REPORT_KEYS
    assert report["schema"] == 1 and report["exit_code"] == code
    assert [step["name"] for step in report["steps"]] == list(STEPS)
    assert all(list(step) == STEP_KEYS for step in report["steps"])
    return code, report, err


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in report["steps"]}


def stopped_at(report: dict[str, Any], name: str, code: int) -> dict[str, Any]:
    """Check that the diagnosis ended at step ``name`` with ``code``, having run every step
    before it and none after; return that step."""
    assert report["ok"] is False and report["exit_code"] == code, report
    assert report["failed_step"] == name
    index = STEPS.index(name)
    statuses = [step["status"] for step in report["steps"]]
    assert set(statuses[:index]) <= {"ok", "skipped"}, statuses
    assert statuses[index] == "fail"
    assert set(statuses[index + 1 :]) <= {"skipped"}, statuses
    failed = steps(report)[name]
    assert failed["ok"] is False and failed["ms"] is not None
    assert report["error"] in failed["detail"]
    assert report["hint"], "every failure says what to do next"
    return failed


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tether: error: "), err
    return lines[0]


def fingerprint(sshd: SshdServer) -> str:
    listing = subprocess.run(
        ["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True, text=True, check=True
    ).stdout
    return listing.split()[1]


def test_every_step_passes(tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer) -> None:
    code, report, err = diagnose(tether, "--to", echo_server.address, *sshd.tether_flags())
    assert code == 0 and err == "", err
    assert report["ok"] is True and report["failed_step"] is None and report["error"] is None
    assert report["engine"] == sshd.engine and report["via"] == sshd.via
    found = steps(report)
    assert all(step["status"] == "ok" and step["ms"] >= 0 for step in found.values()), found
    assert found["resolve"]["facts"]["addresses"] == ["127.0.0.1"]
    assert found["tcp"]["facts"]["address"] == f"127.0.0.1:{sshd.port}"
    assert found["banner"]["facts"]["banner"].startswith("SSH-2.0-OpenSSH_")
    host_key = found["host_key"]["facts"]
    assert host_key["algorithm"] == "ssh-ed25519"
    assert host_key["fingerprint"] == fingerprint(sshd)
    assert host_key["known_hosts"] == {"file": str(sshd.known_hosts), "line": 1}
    assert f"matches {sshd.known_hosts}:1" in found["host_key"]["detail"]
    auth = found["auth"]["facts"]
    assert auth["method"] == "publickey" and auth["methods_offered"] == ["publickey"]
    assert str(sshd.client_key) in auth["key"]
    assert "SHA256:" in auth["key"]
    # The echo target waits for its client: nothing came first.
    assert found["probe"]["facts"]["first_bytes"] is None
    config = report["ssh_config"]
    assert config["hostname"] == "127.0.0.1" and config["port"] == sshd.port
    assert str(sshd.known_hosts) in config["userknownhostsfile"]
    assert str(sshd.client_key) in config["identityfile"]


def test_the_table(tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer) -> None:
    code, out, err = tether.run("diagnose", "--to", echo_server.address, *sshd.tether_flags())
    assert code == 0 and err == "", err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STEP "))
    assert lines[header].split() == ["STEP", "RESULT", "MS", "DETAIL"]
    rows = [line.split()[:2] for line in lines[header + 1 :]]
    assert rows == [[name, "ok"] for name in STEPS]
    assert fingerprint(sshd) in out and "HostName" in out and "UserKnownHostsFile" in out


def test_a_target_that_speaks_first_is_counted_not_shown(
    tether: TetherRunner, sshd: SshdServer
) -> None:
    # sshd itself as the target: it sends its banner first.
    code, report, err = diagnose(tether, "--to", f"127.0.0.1:{sshd.port}", *sshd.tether_flags())
    assert code == 0, err
    probe = steps(report)["probe"]
    assert probe["facts"]["first_bytes"] > 0
    assert "spoke first" in probe["detail"] and "SSH-2.0" not in probe["detail"]


def test_an_unresolvable_server(tether: TetherRunner, engine: str) -> None:
    """In a network namespace of its own, with no route anywhere, no lookup leaves the host."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare is needed"
    unprivileged = ["--map-root-user"] if os.geteuid() != 0 else []
    argv = [unshare, "--net", *unprivileged, *tether.command("diagnose", "--to", "127.0.0.1:1")]
    argv += ["--via", "ssh://no-such-host.invalid", "--engine", engine, "--json"]
    done = subprocess.run(argv, env=tether.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done.stderr
    report = json.loads(done.stdout)
    failed = stopped_at(report, "resolve", 4)
    assert "cannot resolve SSH server no-such-host.invalid" in failed["detail"]
    assert "getent hosts no-such-host.invalid" in report["hint"]


def test_a_refused_port(tether: TetherRunner, sshd: SshdServer) -> None:
    port = free_port()
    via = f"ssh://{sshd.user}@127.0.0.1:{port}"
    flags = ["--via", via, "--known-hosts", str(sshd.known_hosts), "--engine", str(sshd.engine)]
    code, report, err = diagnose(tether, "--to", "127.0.0.1:1", *flags)
    assert code == 4
    failed = stopped_at(report, "tcp", 4)
    assert f"cannot reach SSH server {via}: Connection refused" in failed["detail"]
    assert f"sshd listens on 127.0.0.1:{port}" in report["hint"]
    assert "cannot reach SSH server" in error_line(err)


@pytest.mark.parametrize(("flag", "code"), [("--connect-timeout", 4), ("--timeout", 7)])
def test_a_silent_server_stops_at_the_banner(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer, flag: str, code: int
) -> None:
    flags = silent_server.tether_flags(sshd.known_hosts, sshd.engine)
    status, report, _ = diagnose(tether, *flags, flag, "1")
    assert status == code
    failed = stopped_at(report, "banner", code)
    assert steps(report)["tcp"]["status"] == "ok"
    if code == 4:
        assert "timed out (connected, but no SSH banner came)" in failed["detail"]
    else:
        assert "not done after 1s (still waiting for the SSH banner" in failed["detail"]


def test_an_unknown_host_key(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    flags = [*sshd.tether_flags(), "--known-hosts", str(empty)]  # the last one wins
    code, report, err = diagnose(tether, "--to", echo_server.address, *flags)
    assert code == 5
    failed = stopped_at(report, "host_key", 5)
    assert f"host key for [127.0.0.1]:{sshd.port} is not in {empty}" in failed["detail"]
    assert fingerprint(sshd) in failed["detail"]
    assert failed["facts"]["refused"] == "unknown"
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in report["hint"]
    assert steps(report)["banner"]["status"] == "ok"
    assert "ssh-keyscan" in error_line(err)


def test_a_changed_host_key(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    impostor = keygen(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {Path(f'{impostor}.pub').read_text()}")
    flags = [*sshd.tether_flags(), "--known-hosts", str(known_hosts)]
    code, report, _ = diagnose(tether, "--to", echo_server.address, *flags)
    assert code == 5
    failed = stopped_at(report, "host_key", 5)
    assert "this may be an attack" in failed["detail"] and fingerprint(sshd) in failed["detail"]
    assert failed["facts"]["refused"] == "changed"
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known_hosts}" in report["hint"]


def test_a_refused_login_shows_the_methods_offered(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    flags = ["--via", sshd.via, "-i", str(sshd.wrong_key), "--known-hosts", str(sshd.known_hosts)]
    code, report, _ = diagnose(
        tether, "--to", echo_server.address, *flags, "--engine", str(sshd.engine)
    )
    assert code == 5
    failed = stopped_at(report, "auth", 5)
    assert steps(report)["host_key"]["facts"]["fingerprint"] == fingerprint(sshd)
    assert failed["facts"]["methods_offered"] == ["publickey"]
    assert "the server offers publickey" in failed["detail"]
    assert any(str(sshd.wrong_key) in key for key in failed["facts"]["tried"]), failed
    assert "check the user, --identity-file and ssh-agent" in report["hint"]


def test_a_target_that_refuses(tether: TetherRunner, sshd: SshdServer) -> None:
    port = free_port()
    code, report, _ = diagnose(tether, "--to", f"127.0.0.1:{port}", *sshd.tether_flags())
    assert code == 6
    failed = stopped_at(report, "channel", 6)
    assert f"cannot connect to 127.0.0.1:{port} through {sshd.via}" in failed["detail"]
    assert steps(report)["auth"]["status"] == "ok"


def test_direct(tether: TetherRunner, echo_server: EchoServer) -> None:
    code, report, err = diagnose(tether, "--to", echo_server.address)
    assert code == 0, err
    assert report["via"] is None and report["engine"] is None and report["ssh_config"] is None
    statuses = {name: step["status"] for name, step in steps(report).items()}
    assert statuses == {
        "resolve": "ok",
        "tcp": "ok",
        "banner": "skipped",
        "host_key": "skipped",
        "auth": "skipped",
        "channel": "skipped",
        "probe": "ok",
    }


def test_direct_to_a_refused_target_is_the_targets_failure(tether: TetherRunner) -> None:
    """As `tether start --to` without --via says it: the target refuses, exit 6."""
    port = free_port()
    code, report, _ = diagnose(tether, "--to", f"127.0.0.1:{port}")
    assert code == 6
    failed = stopped_at(report, "tcp", 6)
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in failed["detail"]


def test_bad_input_is_a_usage_error_without_a_report(tether: TetherRunner, tmp_path: Path) -> None:
    code, out, err = tether.run("diagnose", "--to", "db")
    assert code == 2 and out == "" and "--to: expected HOST:PORT" in error_line(err)
    missing = tmp_path / "nokey"
    code, out, err = tether.run(
        "diagnose", "--to", "127.0.0.1:1", "--via", "ssh://u@127.0.0.1:1", "-i", str(missing)
    )
    assert code == 2 and out == "" and "identity_file: file not found" in error_line(err)


def test_behind_a_jump_host(tether: TetherRunner, engine: str, tmp_path: Path) -> None:
    """The first three steps concern the jump host, the only one this host connects to; the
    host key and the login are the inner server's."""
    with SshdServer(tmp_path / "jump") as jump, SshdServer(tmp_path / "inner") as inner:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(jump.known_hosts.read_text() + inner.known_hosts.read_text())
        config = tmp_path / "config"
        config.write_text(
            "".join(
                f"Host {alias}\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n"
                f"  IdentityFile {server.client_key}\n  UserKnownHostsFile {known_hosts}\n"
                f"  IdentitiesOnly yes\n{extra}"
                for alias, server, extra in (
                    ("jump", jump, ""),
                    ("inner", inner, "  ProxyJump jump\n"),
                )
            )
        )
        config.chmod(0o600)
        flags = ["--via", "ssh://inner", "--ssh-config", str(config), "--engine", engine]
        code, report, err = diagnose(tether, "--to", f"127.0.0.1:{inner.port}", *flags)
    assert code == 0, err
    found = steps(report)
    assert all(step["status"] == "ok" for step in found.values()), found
    assert found["tcp"]["facts"]["address"] == f"127.0.0.1:{jump.port}"
    assert found["host_key"]["facts"]["fingerprint"] == fingerprint(inner)
    assert found["host_key"]["facts"]["known_hosts"] == {"file": str(known_hosts), "line": 2}
    assert report["ssh_config"]["proxyjump"] == "jump"
    (note,) = report["notes"]
    assert "first jump host" in note


def test_a_revoked_host_key(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"@revoked {sshd.known_hosts.read_text()}")
    flags = [*sshd.tether_flags(), "--known-hosts", str(known_hosts)]
    code, report, _ = diagnose(tether, "--to", echo_server.address, *flags)
    assert code == 5
    failed = stopped_at(report, "host_key", 5)
    assert failed["facts"]["refused"] == "revoked" and "is marked @revoked" in failed["detail"]


def test_a_socks_tunnel_checks_its_transport_and_the_one_target_it_may_have(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    code, report, err = diagnose(tether, "--socks", *sshd.tether_flags())
    assert code == 0, err
    assert report["target"] == "socks5 (any)"
    done = steps(report)
    assert done["auth"]["status"] == "ok"
    assert [done[n]["status"] for n in ("channel", "probe")] == ["skipped", "skipped"]
    assert "no one target" in done["channel"]["detail"]
    # An allowlist of one host and port names the target that a start would probe.
    code, report, err = diagnose(
        tether, "--socks", "--allow", echo_server.address, *sshd.tether_flags()
    )
    assert code == 0, err
    assert steps(report)["probe"]["status"] == "ok"
    code, _, err = tether.run("diagnose", "--socks", "--json")
    assert code == 2 and "a direct SOCKS tunnel has nothing to diagnose" in err


# Where each failure of issue 18's messages is filed, on both engines (test_errors has the
# lines `tether start` prints for them).


def test_an_encrypted_key_not_in_the_agent_fails_auth_with_ssh_add(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    key = encrypted_key(tmp_path / "locked_ed25519")
    authorize(own_sshd, key)
    flags = [
        *("--to", echo_server.address, "--via", own_sshd.via, "-i", str(key)),
        *("--known-hosts", str(own_sshd.known_hosts), "--engine", str(own_sshd.engine)),
    ]
    with private_agent(tmp_path) as sock:
        code, out, err = tether.run(
            "diagnose", *flags, "--json", env={"SSH_AUTH_SOCK": str(sock)}, launcher=("setsid",)
        )
    report = json.loads(out)
    assert code == 5
    failed = stopped_at(report, "auth", 5)
    assert steps(report)["host_key"]["status"] == "ok"
    assert f"the key {key} is encrypted and not in ssh-agent" in failed["detail"]
    assert report["hint"] == (
        f"load it into ssh-agent: ssh-add {key}; tether never prompts for a passphrase"
    )
    assert "ssh-add" in error_line(err)


def test_a_jump_hosts_refused_login_is_filed_under_auth_naming_the_hop(
    tether: TetherRunner, engine: str, tmp_path: Path
) -> None:
    """Not under host_key: the server's host key was never shown, and the login that failed
    is the jump host's."""
    with jump_pair(tmp_path) as (jump, inner):
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(jump.known_hosts.read_text() + inner.known_hosts.read_text())
        config = jump_config(tmp_path / "config", jump, inner, known_hosts, jump_user="nobody-here")
        flags = ["--via", "ssh://inner", "--ssh-config", str(config), "--engine", engine]
        code, report, _ = diagnose(tether, "--to", "127.0.0.1:1", *flags)
    assert code == 5
    failed = stopped_at(report, "auth", 5)
    assert failed["facts"]["hop"] == "nobody-here@127.0.0.1"
    assert failed["detail"].startswith(
        "SSH authentication to jump host nobody-here@127.0.0.1 (ProxyJump jump) failed"
    )
    host_key = steps(report)["host_key"]
    assert host_key["status"] == "skipped" and host_key["ms"] is None
    assert host_key["detail"] == (
        "not reached: the login to jump host nobody-here@127.0.0.1 failed first"
    )
    assert steps(report)["banner"]["status"] == "ok"  # the jump host's, which answered
    assert "ssh_config gives the jump host" in report["hint"]


def test_a_jump_hosts_unknown_host_key_names_the_hop(
    tether: TetherRunner, engine: str, tmp_path: Path
) -> None:
    with jump_pair(tmp_path) as (jump, inner):
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(inner.known_hosts.read_text())  # the jump host's key unknown
        config = jump_config(tmp_path / "config", jump, inner, known_hosts)
        flags = ["--via", "ssh://inner", "--ssh-config", str(config), "--engine", engine]
        code, report, _ = diagnose(tether, "--to", "127.0.0.1:1", *flags)
    assert code == 5
    failed = stopped_at(report, "host_key", 5)
    hop = f"[127.0.0.1]:{jump.port}"
    assert failed["facts"]["hop"] == hop and failed["facts"]["refused"] == "unknown"
    assert failed["detail"].startswith(f"host key for jump host {hop} is not in {known_hosts}")
    assert fingerprint(jump) in failed["detail"]


def test_an_ssh_config_others_can_write_stops_before_any_step(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config.read_text())
    config.chmod(0o646)
    flags = [*sshd.tether_flags(), "--ssh-config", str(config)]
    code, out, err = tether.run("diagnose", "--to", echo_server.address, *flags, "--json")
    assert code == 2 and out == ""  # a configuration error: no report, as for a missing key
    assert error_line(err) == (
        f"tether: error: ssh_config: bad owner or permissions on {config}: writable by every "
        f"user (mode 0646) (chmod go-w {config})"
    )


def test_an_unknown_server_with_a_host_certificate_is_filed_under_host_key(
    tether: TetherRunner, engine: str, echo_server: EchoServer, tmp_path: Path
) -> None:
    with certified_sshd(tmp_path / "certified") as (server, authority):
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("")
        flags = [
            *("--to", echo_server.address, "--via", server.via, "-i", str(server.client_key)),
            *("--known-hosts", str(known_hosts), "--engine", engine),
        ]
        code, report, _ = diagnose(tether, *flags)
    assert code == 5
    failed = stopped_at(report, "host_key", 5)
    assert failed["facts"]["refused"] == "unknown"
    ca = key_fingerprint(Path(f"{authority}.pub"))
    assert f"with a host certificate signed by CA {ca}" in failed["detail"]
    assert "@cert-authority" in report["hint"] and "ssh-keyscan" not in report["hint"]
