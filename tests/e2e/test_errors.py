"""Every failure class: one line on stderr, no traceback, its own documented exit code."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, SilentServer
from tests.support.ssh_setups import (
    authorize,
    certified_sshd,
    encrypted_key,
    fingerprint,
    jump_config,
    jump_pair,
    private_agent,
)
from tests.support.sshd_server import SshdServer, keygen
from tests.support.tether_process import TetherRunner

REPOSITORY = Path(__file__).parents[2]


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tether: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_port_held_by_another_socket(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        code, _, err = tether.run(
            "start", "--to", echo_server.address, *sshd.tether_flags(), "--port", str(port)
        )
    assert code == 3
    assert "in use by another program" in one_line_error(err)


def test_sshd_down(tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer) -> None:
    own_sshd.stop()
    code, _, err = tether.run("start", "--to", echo_server.address, *own_sshd.tether_flags())
    assert code == 4
    assert "cannot reach SSH server" in one_line_error(err)


def test_wrong_key(tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer) -> None:
    code, _, err = tether.run(
        "start",
        "--to",
        echo_server.address,
        "--via",
        sshd.via,
        "-i",
        str(sshd.wrong_key),
        "--known-hosts",
        str(sshd.known_hosts),
    )
    assert code == 5, err
    assert "authentication" in one_line_error(err)


def test_unknown_host_key(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    # No --known-hosts: the isolated HOME has no ~/.ssh/known_hosts, so the key is unknown.
    code, _, err = tether.run(
        "start", "--to", echo_server.address, "--via", sshd.via, "-i", str(sshd.client_key)
    )
    assert code == 5, err
    line = one_line_error(err)
    listing = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.directory / "host_ed25519.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fingerprint = listing.split()[1]
    assert fingerprint.startswith("SHA256:")
    assert "is not in" in line and fingerprint in line and "ssh-keyscan" in line


def test_target_with_nothing_listening(tether: TetherRunner, sshd: SshdServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = tether.run("start", "--to", f"127.0.0.1:{port}", *sshd.tether_flags())
    assert code == 6
    assert f"cannot connect to 127.0.0.1:{port} through {sshd.via}" in one_line_error(err)


def test_timeout_against_silent_server(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    code, _, err = tether.run(
        "start",
        *silent_server.tether_flags(sshd.known_hosts, sshd.engine),
        "--timeout",
        "1",
    )
    assert code == 7
    # It accepted the connection and never spoke: still connecting, not authenticating.
    assert "not ready after 1s (still connecting)" in one_line_error(err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "db:5432", "--port", "abc"], '--port: expected an integer 0-65535, got "abc"'),
        (["--to", "db:5432", "--port", "70000"], "--port: expected an integer 0-65535, got 70000"),
        (["--to", "db"], "--to: expected HOST:PORT"),
        (["--to", "db:5432", "--via", "http://x"], "unsupported scheme 'http'"),
        (["--to", "db:5432", "--via", "ssh://u:pw@x"], "passwords are not accepted"),
        (
            ["--to", "db:5432", "--timeout", "-3"],
            "--timeout: expected a duration like 30s, 5m or 2h",
        ),
        (["--to", "db:5432", "--target-port", "0"], "--target-port: expected an integer 1-65535"),
        (["nope"], "unknown profile 'nope'"),
        (["--to", "db:1", "--pid-file", "/nonexistent/dir/x.pid"], "directory does not exist"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(
    tether: TetherRunner, args: list[str], message: str
) -> None:
    code, out, err = tether.run("start", *args)
    assert code == 2
    assert message in one_line_error(err)
    assert out == ""


def test_malformed_toml(tether: TetherRunner, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[tunnels.db\n")
    code, _, err = tether.run("start", "db", "--config", str(config))
    assert code == 2
    assert f"{config}: invalid TOML" in one_line_error(err)


def test_bad_profile_value(tether: TetherRunner, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[tunnels.db]\nto = "db:5432"\nport = "abc"\n')
    code, _, err = tether.run("start", "db", "--config", str(config))
    assert code == 2
    assert one_line_error(err) == (
        f'tether: error: {config}: tunnels.db.port: expected an integer 0-65535, got "abc"'
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["logs"], "missing argument 'ID|NAME' (see tether logs --help)"),
        (["strat"], "no such command 'strat' (did you mean start? see tether --help)"),
        (["--bogus"], "no such option '--bogus' (see tether --help)"),
        (
            ["start", "--bogus"],
            "no such option '--bogus' (did you mean --host or -bg? see tether start --help)",
        ),
        (["start", "--port"], "option '--port' requires an argument (see tether start --help)"),
        (["list", "extra"], "got unexpected extra argument (extra) (see tether list --help)"),
        (
            ["completion", "tcsh"],
            "invalid value for '{bash|zsh|fish}': 'tcsh' is not one of 'bash', 'zsh', 'fish' "
            "(see tether completion --help)",
        ),
    ],
)
def test_click_usage_errors_are_one_line(tether: TetherRunner, args: list[str], line: str) -> None:
    """A missing argument, an unknown option or command: tether's one line, not click's
    "Usage:" block, and exit 2."""
    code, out, err = tether.run(*args)
    assert code == 2 and out == ""
    assert one_line_error(err) == f"tether: error: {line}"


def test_a_usage_error_in_the_shell_is_one_line(tether: TetherRunner) -> None:
    process = tether.spawn("shell", stdin=subprocess.PIPE)
    assert process.proc.stdin is not None
    process.proc.stdin.write(b"start --bogus\n")
    process.proc.stdin.close()
    assert process.finish() == 2
    assert one_line_error(process.stderr) == (
        "tether: error: no such option '--bogus' (did you mean --host or -bg? see start --help)"
    )


def test_debug_shows_traceback(tether: TetherRunner) -> None:
    code, _, err = tether.run("--debug", "start", "--to", "db")
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1] == "tether: error: --to: expected HOST:PORT, got 'db'"


SECRET = "s3cret-w0rd"
LONG_LABEL = "a" * 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--via", "ssh://u%0Ax@h"], "--via: the user name holds spaces or control characters"),
        (["--via", "ssh://%00@h"], "--via: the user name holds spaces or control characters"),
        (["--via", "ssh://%ff@h"], "--via: the user name is not valid UTF-8"),
        (["--port", "²"], '--port: expected an integer 0-65535, got "²"'),
        (["--max-retries", "²"], '--max-retries: expected a count or "unlimited"'),
        (["--keepalive-count", "²"], "--keepalive-count: expected an integer 1-1000000"),
        (["--max-connections", "0"], "--max-connections: expected an integer 1-1000000"),
        (["--timeout", "nan"], "--timeout: expected a duration"),
        (["--timeout", "inf"], "--timeout: expected a duration"),
        (["--timeout", "1e10"], "--timeout: expected a duration"),
        (["--timeout", "100000000000"], "--timeout: expected a positive duration of at most 365d"),
        (["--ttl", "1" * 400], "--ttl: expected a duration"),
        (["--idle-timeout", "٣s"], "--idle-timeout: expected a duration"),
        (["--target-host", "a..b"], "--target-host: not a valid host name or address: 'a..b'"),
        (["--target-host", "."], "not a valid host name or address: '.'"),
        (["--target-host", f"{LONG_LABEL}.example"], "not a valid host name or address"),
        (["--target-host", "x" * 300], "not a valid host name or address"),
        (["--via", "ssh://a..b"], "--via: not a valid host name or address"),
        (["--host", "a..b"], "--host: not a valid host name or address"),
    ],
)
def test_hostile_values_get_one_line_and_exit_2(
    tether: TetherRunner, args: list[str], message: str
) -> None:
    code, out, err = tether.run("start", "--to", "127.0.0.1:1", *args)
    assert code == 2
    assert message in one_line_error(err)
    assert out == ""


@pytest.mark.parametrize(
    "via",
    [
        f"ssh://u:{SECRET}@h",
        f"ssh://u%3A{SECRET}@h",
        f"ssh://u:{SECRET}@h/path?x",
        f"u:{SECRET}@h",
        f"ssh://u:{SECRET}@[::1",
    ],
)
def test_a_password_is_refused_and_never_echoed(
    tether: TetherRunner, tmp_path: Path, via: str
) -> None:
    code, _, err = tether.run("start", "--to", "127.0.0.1:1", "--via", via)
    assert code == 2 and "passwords are not accepted" in one_line_error(err)
    assert SECRET not in err
    config = tmp_path / "c.toml"
    config.write_text(f'[tunnels.db]\nto = "127.0.0.1:1"\nvia = "{via}"\n')
    code, _, err = tether.run("start", "db", "--config", str(config))
    assert code == 2 and "passwords are not accepted" in one_line_error(err)
    assert SECRET not in err
    assert not list((tmp_path / "run").glob("*.json"))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[tunnels.db]\nto = " + "[" * 3000 + "]" * 3000 + "\n", "invalid TOML: nested too deeply"),
        ('[tunnels.db]\nto = "127.0.0.1:1"\ntimeout = nan\n', "tunnels.db.timeout: expected"),
        ('[tunnels.db]\nto = "127.0.0.1:1"\ntimeout = inf\n', "tunnels.db.timeout: expected"),
        ('[tunnels.db]\nto = "127.0.0.1:1"\ntimeout = 1e10\n', "tunnels.db.timeout: expected"),
        ('[tunnels.db]\nto = "127.0.0.1:1"\nttl = ' + "9" * 400 + "\n", "tunnels.db.ttl: expected"),
        (
            '[tunnels.db]\nto = "127.0.0.1:1"\nport = ' + "9" * 400 + "\n",
            "tunnels.db.port: expected",
        ),
        ('[tunnels.db]\nto = "a..b:1"\n', "tunnels.db.to: not a valid host name"),
        ("[tunnels.db]\nto = '" + "x" * 2000 + "'\n", "tunnels.db.to: expected HOST:PORT"),
    ],
)
def test_hostile_toml_gets_one_line_and_exit_2(
    tether: TetherRunner, tmp_path: Path, toml: str, message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    code, _, err = tether.run("start", "db", "--config", str(config))
    assert code == 2
    line = one_line_error(err)
    assert message in line and len(line) < 400


def non_files(tmp_path: Path) -> list[Path]:
    """Paths that name something other than a file: reading any of them would hang, exhaust
    memory, or make no sense."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "directory"
    directory.mkdir()
    found = [fifo, directory]
    if os.geteuid() == 0:
        zero = tmp_path / "zero"  # a private copy of /dev/zero's node
        os.mknod(zero, 0o444 | stat.S_IFCHR, os.makedev(1, 5))
        found.append(zero)
    return found


def test_files_that_are_not_files_are_refused(tether: TetherRunner, tmp_path: Path) -> None:
    via = ["--to", "127.0.0.1:1", "--via", "ssh://u@127.0.0.1:1"]
    for path in non_files(tmp_path):
        for args, what in (
            (["db", "--config", str(path)], "config"),
            ([*via, "-i", str(path)], "identity_file"),
            ([*via, "--known-hosts", str(path)], "known_hosts"),
        ):
            code, _, err = tether.run("start", *args, deadline=20)
            assert code == 2, (path, err)
            assert f"{what}: {path} is not a regular file" in one_line_error(err)


def test_oversized_files_are_refused(tether: TetherRunner, tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with open(big, "wb") as handle:
        handle.truncate(2 * 1024 * 1024)  # sparse: big to read, cheap to make
    code, _, err = tether.run("start", "db", "--config", str(big))
    assert code == 2 and "is larger than 1024 KiB" in one_line_error(err)


def test_missing_files_are_configuration_errors(tether: TetherRunner, tmp_path: Path) -> None:
    via = ["--to", "127.0.0.1:1", "--via", "ssh://u@127.0.0.1:1"]
    code, _, err = tether.run("start", *via, "-i", str(tmp_path / "nokey"))
    assert code == 2 and "identity_file: file not found" in one_line_error(err)
    code, _, err = tether.run("start", *via, "--known-hosts", str(tmp_path / "nohosts"))
    assert code == 2 and "known_hosts: file not found" in one_line_error(err)
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    code, _, err = tether.run("start", *via, "-i", str(not_a_key))
    assert code in (2, 4), err  # the server at port 1 may refuse before the key is read
    assert "Traceback" not in err


@pytest.mark.parametrize("variable", ["TETHER_RUNTIME_DIR", "XDG_STATE_HOME", "HOME"])
def test_impossible_directories_are_usage_errors(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path, variable: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {variable: str(blocker / "sub")}
    if variable == "HOME":
        env.update(XDG_CONFIG_HOME="", XDG_STATE_HOME="")
    for args in (
        ["start", "--to", echo_server.address, "--background"],
        ["list"],
        ["stop", "--all"],
        ["logs", "deadbeef"],
    ):
        process = tether.spawn(*args, env=env)
        code = process.finish()
        if variable != "TETHER_RUNTIME_DIR" and args[0] != "start":
            assert code in (0, 8), process.stderr  # these need no state directory
            continue
        assert code == 2, (args, process.stderr)
        assert "Not a directory" in one_line_error(process.stderr)


def test_known_hosts_with_bad_lines_still_verifies(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_bytes(
        b"\xff\xfe not utf-8 at all\njust-one-field\n" + sshd.known_hosts.read_bytes()
    )
    flags = [*sshd.tether_flags(), "--known-hosts", str(known_hosts)]  # the last one wins
    code, _, err = tether.run("start", "--to", echo_server.address, *flags, "--", "true")
    assert code == 0, err
    assert f"known_hosts: skipped 2 unreadable line(s) in {known_hosts}" in err


def test_only_a_certificate_authority_is_a_host_key_failure(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    authority = keygen(tmp_path / "ca")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"@cert-authority * {Path(f'{authority}.pub').read_text()}")
    flags = [*sshd.tether_flags(), "--known-hosts", str(known_hosts)]  # the last one wins
    code, _, err = tether.run("start", "--to", echo_server.address, *flags)
    assert code == 5, err
    assert "trusts only certificate authorities" in one_line_error(err)


def test_a_revoked_host_key_says_so(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"@revoked {sshd.known_hosts.read_text()}")
    flags = [*sshd.tether_flags(), "--known-hosts", str(known_hosts)]  # the last one wins
    code, _, err = tether.run("start", "--to", echo_server.address, *flags)
    assert code == 5, err
    assert "is marked @revoked in" in one_line_error(err)


def test_a_changed_host_key(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    impostor = keygen(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {Path(f'{impostor}.pub').read_text()}")
    flags = [*sshd.tether_flags(), "--known-hosts", str(known_hosts)]  # the last one wins
    code, _, err = tether.run("start", "--to", echo_server.address, *flags)
    assert code == 5, err
    line = one_line_error(err)
    assert f"host key for [127.0.0.1]:{sshd.port} does not match {known_hosts}" in line
    assert "SHA256:" in line and "this may be an attack" in line
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known_hosts}" in line


def test_a_silent_server_and_a_connect_timeout(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    flags = silent_server.tether_flags(sshd.known_hosts, sshd.engine)
    code, _, err = tether.run("start", *flags, "--connect-timeout", "1", "--timeout", "20")
    assert code == 4, err
    line = one_line_error(err)
    assert "cannot reach SSH server" in line and line.endswith("timed out"), line


def test_a_target_refusing_after_ready_is_a_reset(tether: TetherRunner, sshd: SshdServer) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = unused.getsockname()[1]
        process = tether.spawn(
            "start", "--to", f"127.0.0.1:{refused}", *sshd.tether_flags(), "--no-probe", "--json"
        )
        port = process.json_line()["local_port"]
        # The reset may come before a busy client's connect() has returned: then connect()
        # itself reports it. Either way it is a reset, never a clean EOF.
        with pytest.raises(ConnectionResetError):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                client.recv(1)
        process.send_signal(signal.SIGTERM)
        assert process.finish() == 0
    assert "Connection refused" in process.stderr


# Messages that name the fix (issue 18): each the same on both engines, with its exit code.


@pytest.mark.parametrize("with_agent", [True, False])
def test_an_encrypted_key_not_in_the_agent_says_to_load_it(
    tether: TetherRunner,
    own_sshd: SshdServer,
    echo_server: EchoServer,
    tmp_path: Path,
    with_agent: bool,
) -> None:
    """The key is the one the server takes, but encrypted, and the agent (this test's own,
    holding nothing; or none at all) does not have it: the error says to load it, and
    nothing prompts, with no terminal to prompt on."""
    key = encrypted_key(tmp_path / "locked_ed25519")
    authorize(own_sshd, key)
    flags = [
        *("--to", echo_server.address, "--via", own_sshd.via, "-i", str(key)),
        *("--known-hosts", str(own_sshd.known_hosts), "--engine", str(own_sshd.engine)),
    ]
    with private_agent(tmp_path) as sock:
        env = {"SSH_AUTH_SOCK": str(sock)} if with_agent else None
        # setsid: no controlling terminal that ssh could open to ask for the passphrase.
        code, out, err = tether.run("start", *flags, env=env, launcher=("setsid",))
    assert code == 5 and out == ""
    add = f"ssh-add {shlex.quote(str(key))}"
    fix = (
        f"load it into ssh-agent: {add}"
        if with_agent
        else f'start ssh-agent and load it: eval "$(ssh-agent)" && {add}'
    )
    assert one_line_error(err) == (
        f"tether: error: SSH authentication to {own_sshd.via} failed: the key {key} is "
        f"encrypted and not in ssh-agent, and no other key was accepted "
        f"({fix}; tether never prompts for a passphrase)"
    )


def test_a_jump_hosts_refused_login_names_the_hop(
    tether: TetherRunner, engine: str, tmp_path: Path
) -> None:
    """A wrong user on the ProxyJump hop: the hop is named, not the server behind it."""
    with jump_pair(tmp_path) as (jump, inner):
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(jump.known_hosts.read_text() + inner.known_hosts.read_text())
        config = jump_config(tmp_path / "config", jump, inner, known_hosts, jump_user="nobody-here")
        flags = ["--via", "ssh://inner", "--ssh-config", str(config), "--engine", engine]
        code, _, err = tether.run("start", "--to", "127.0.0.1:1", *flags)
    assert code == 5, err
    assert one_line_error(err) == (
        "tether: error: SSH authentication to jump host nobody-here@127.0.0.1 (ProxyJump jump) "
        "failed: Permission denied, so ssh://inner was not reached (check the User and "
        "IdentityFile that ssh_config gives the jump host, and ssh-agent; tether never prompts)"
    )


def test_an_ssh_config_others_can_write_is_a_configuration_error(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    """ssh refuses such a file (for root too): so does tether, for both engines, as exit 2
    naming the file and the fix, before the network."""
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config.read_text())
    config.chmod(0o646)
    flags = [*sshd.tether_flags(), "--ssh-config", str(config)]  # the last one wins
    code, out, err = tether.run("start", "--to", echo_server.address, *flags)
    assert code == 2 and out == ""
    assert one_line_error(err) == (
        f"tether: error: ssh_config: bad owner or permissions on {config}: writable by every "
        f"user (mode 0646) (chmod go-w {config})"
    )


# Run inside a network namespace of its own, where only loopback exists: sshd's lookup of the
# target's name goes nowhere, and nothing leaves the host.
IN_NAMESPACE = """
import json, subprocess, sys
from pathlib import Path
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner
directory, engine, target = sys.argv[1:]
answers = []
with SshdServer(Path(directory), engine=engine) as sshd:
    for command in (["start"], ["diagnose", "--json"]):
        done = subprocess.run(
            TetherRunner.command(*command, "--to", target, *sshd.tether_flags()),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        answers.append([done.returncode, done.stdout, done.stderr])
print(json.dumps({"via": sshd.via, "answers": answers}))
"""


@pytest.mark.needs_root
def test_a_target_name_the_ssh_server_cannot_resolve(
    tether: TetherRunner, engine: str, tmp_path: Path
) -> None:
    """The SSH server resolves the target's name: when it cannot, that is what is said (not
    "check that it listens"), and diagnose files it under channel. It needs root: sshd runs
    in a network namespace, which an unprivileged user namespace would hide /run/sshd from."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare is needed"
    target = "no-such-db.invalid:5432"
    argv = [unshare, "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    argv += [sys.executable, "-c", IN_NAMESPACE, str(tmp_path / "sshd"), engine, target]
    done = subprocess.run(
        argv, env=tether.env, cwd=REPOSITORY, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    (code, out, err), (diagnosed, report, _) = found["answers"]
    assert code == 6 and out == ""
    line = one_line_error(err)
    said = re.fullmatch(
        rf"tether: error: cannot connect to {re.escape(target)} through {re.escape(found['via'])}: "
        r"the SSH server cannot resolve no-such-db\.invalid: (.+) \(check the name: the SSH "
        r"server looks it up, so it must resolve there; try getent hosts no-such-db\.invalid "
        r"on the server\)",
        line,
    )
    assert said is not None, line
    assert said.group(1) in ("Name or service not known", "Temporary failure in name resolution")
    steps = {step["name"]: step for step in json.loads(report)["steps"]}
    assert diagnosed == 6 and json.loads(report)["failed_step"] == "channel"
    assert steps["auth"]["status"] == "ok" and steps["channel"]["status"] == "fail"
    assert "the SSH server cannot resolve no-such-db.invalid" in steps["channel"]["detail"]


def test_an_unknown_server_with_a_host_certificate_gets_its_authority_not_keyscan(
    tether: TetherRunner, engine: str, echo_server: EchoServer, tmp_path: Path
) -> None:
    """A server that presents a host certificate: trust its CA (@cert-authority), not the bare
    key (ssh-keyscan pins it). The line the hint gives, with the CA's key, then works."""
    with certified_sshd(tmp_path / "certified") as (server, authority):
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("")
        flags = [
            *("--to", echo_server.address, "--via", server.via, "-i", str(server.client_key)),
            *("--known-hosts", str(known_hosts), "--engine", engine),
        ]
        code, _, err = tether.run("start", *flags)
        assert code == 5
        host = f"[127.0.0.1]:{server.port}"
        key = fingerprint(Path(f"{server.host_key}.pub"))
        ca = fingerprint(Path(f"{authority}.pub"))
        fix = f'echo "@cert-authority {host} $(cat CA.pub)" >> {known_hosts}'
        assert one_line_error(err) == (
            f"tether: error: host key for {host} is not in {known_hosts} (server offers {key}, "
            f"with a host certificate signed by CA {ca}) (if that CA is yours, trust it: "
            f"{fix}, where CA.pub is its public key)"
        )
        subprocess.run(
            ["bash", "-c", fix.replace("CA.pub", shlex.quote(f"{authority}.pub"))], check=True
        )
        code, _, err = tether.run("start", *flags, "--", "true")
        assert code == 0, err
