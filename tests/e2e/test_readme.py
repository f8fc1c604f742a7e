"""Every example of the README runs, in order, against the test sshd and an echo target.

The README names hosts it cannot reach here (bastion.example.com, db.internal); the examples run
with these names mapped to the test's servers (`REWRITES`), and with stand-ins for the client
programs they call (pg_dump, ./migrate, ...), each of which makes a round trip through the
tunnel it is given, so an example that hands its command a wrong port fails. A block that cannot
run here carries `<!-- not run: REASON -->` on the line before it; any other block that this
test does not know how to run fails it.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tether
from tests.support.servers import EchoServer, echo_once, free_port
from tests.support.socks import HttpServer, socks_echo
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner
from tether.cli.listing import HEADERS
from tether.config import build_spec, load_config
from tether.diagnose.report import STEPS, Diagnosis
from tether.record import record_keys

README = Path(__file__).parents[2] / "README.md"
NOT_RUN = re.compile(r"<!-- not run: .+ -->")
# Lines with commands that need a running systemd (PID 1) or root, and could write system paths:
# shown, not run. Every other line runs.
NEEDS_SYSTEMD = ("systemctl ", "sudo ")
# A client program: connect to the address its flags name, make a round trip, say where it went.
CLIENT = """#!{python}
import socket, sys
args = sys.argv[1:]
def value(*names):
    for name in names:
        if name in args:
            return args[args.index(name) + 1]
    sys.exit(f"{{sys.argv[0]}}: none of {{names}} given in {{args}}")
addresses = [value("--db")] if "--db" in args else []
if "--cache" in args:
    addresses.append(value("--cache"))
if not addresses:
    addresses = [value("-h", "--host") + ":" + value("-p", "--port")]
for address in addresses:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), 10) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping", address
    print(f"{{sys.argv[0].rsplit('/', 1)[-1]}} reached the target through {{address}}")
"""


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    text: str
    not_run: bool


def blocks() -> list[Block]:
    found: list[Block] = []
    lines = README.read_text().splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("```"):
            start = index
            end = lines.index("```", start + 1)
            marked = start > 0 and NOT_RUN.fullmatch(lines[start - 1].strip()) is not None
            text = "\n".join(lines[start + 1 : end])
            found.append(Block(start + 1, lines[start][3:].strip(), text, marked))
            index = end
        index += 1
    return found


@dataclass
class Sandbox:
    """Where the examples run: a home, a config, stand-in clients, the names mapped."""

    tether: TetherRunner
    home: Path
    work: Path
    env: dict[str, str]
    rewrites: dict[str, str]
    ports: list[int]
    echo_port: int

    def rewrite(self, text: str) -> str:
        for old, new in self.rewrites.items():
            text = text.replace(old, new)
        return text

    def sh(self, line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line],
            cwd=self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


@pytest.fixture
def sandbox(
    tether: TetherRunner,
    shared_sshd: SshdServer,
    echo_server: EchoServer,
    http_server: HttpServer,
    tmp_path: Path,
) -> Iterator[Sandbox]:
    home = Path(tether.env["HOME"])
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "known_hosts").write_bytes(shared_sshd.known_hosts.read_bytes())
    key = home / ".ssh" / "cache_ed25519"
    key.write_bytes(shared_sshd.client_key.read_bytes())
    key.chmod(0o600)
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        "Host bastion bastion.example.com\n"
        f"  HostName 127.0.0.1\n  Port {shared_sshd.port}\n"
        f"  IdentityFile {shared_sshd.client_key}\n"
        f"  UserKnownHostsFile {shared_sshd.known_hosts}\n"
    )
    work = tmp_path / "work"
    bin_dir = tmp_path / "bin"
    work.mkdir()
    bin_dir.mkdir()
    for path in (bin_dir / "pg_dump", work / "migrate", work / "integration-tests"):
        path.write_text(CLIENT.format(python=sys.executable))
        path.chmod(0o755)
    ports = [free_port(), free_port()]
    rewrites = {
        "ops@": f"{shared_sshd.user}@",
        # A web server behind the bastion, named by a name that the far side resolves.
        "wiki.internal:8080": f"localhost:{http_server.port}",
        "127.0.0.1:1080": f"127.0.0.1:{ports[1]}",
        "--port 1080": f"--port {ports[1]}",
        "db.internal:5432": echo_server.address,
        "db.staging.internal:5432": echo_server.address,
        "redis.internal:6379": echo_server.address,
        "15432": str(ports[0]),
    }
    env = {
        **{k: v for k, v in tether.env.items() if "proxy" not in k.lower()},
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TETHER_CONFIG": str(tmp_path / "config.toml"),
        "TETHER_SSH_CONFIG": str(ssh_config),
    }
    box = Sandbox(tether, home, work, env, rewrites, ports, echo_server.port)
    yield box
    assert box.sh("tether stop --all").returncode == 0
    assert tether.list_json() == []


def test_every_block_is_run_or_says_why_not() -> None:
    known = {"sh", "json", "toml", "python", "yaml", ""}
    for block in blocks():
        assert block.not_run or block.language in known, f"README line {block.line}"


def sections() -> list[tuple[int, str]]:
    """The README's ## and ### headings, in order, outside code blocks."""
    found = []
    in_code = False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (heading := re.match(r"(#{2,3}) (.+)$", line)):
            found.append((len(heading.group(1)), heading.group(2)))
    return found


def test_the_contents_list_every_section_in_order() -> None:
    headings = [(level, title) for level, title in sections() if title != "Contents"]
    contents = README.read_text().split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^( *)- \[(.+)\]\(#([\w-]+)\)$", contents, re.MULTILINE)
    assert [(2 + len(indent) // 2, title) for indent, title, _ in entries] == headings
    for _, title, anchor in entries:  # GitHub's anchors: lower case, punctuation gone, dashes
        assert anchor == re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def test_the_readme_examples_run(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = blocks()
    (config,) = [b for b in readme if b.language == "toml" and not b.not_run]
    Path(sandbox.env["TETHER_CONFIG"]).write_text(sandbox.rewrite(config.text))
    ran = 0
    for block in readme:
        if block.not_run:
            continue
        text = sandbox.rewrite(block.text)
        where = f"README line {block.line}"
        if block.language == "sh":
            for line in commands(text):
                run_line(sandbox, line, where)
        elif block.language == "yaml":
            for line in yaml_steps(text):
                run_line(sandbox, line, where)
        elif block.language == "toml":
            check_config(sandbox)
        elif block.language == "json":
            check_json(json.loads(text), where)
        elif block.language == "python":
            run_python(sandbox, text, monkeypatch)
        elif block.language == "":
            check_plain(sandbox, text, where)
        ran += 1
    assert ran >= 10
    # The script examples wrote what the dump stand-in printed: through the tunnel's port.
    dump = (sandbox.work / "app.sql").read_text()
    assert re.fullmatch(r"pg_dump reached the target through 127\.0\.0\.1:\d+\n", dump), dump
    # And the pipeline of the pipefail example, compressed.
    dump = gzip.decompress((sandbox.work / "app.sql.gz").read_bytes()).decode()
    assert re.fullmatch(r"pg_dump reached the target through 127\.0\.0\.1:\d+\n", dump), dump


def commands(text: str) -> list[str]:
    """The command lines of a shell block: comments and blank lines dropped."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def yaml_steps(text: str) -> list[str]:
    """The shell lines of a CI workflow's `run:` steps, in order."""
    lines: list[str] = []
    script_indent: int | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if script_indent is not None and indent >= script_indent and line.strip():
            lines.append(line.strip())
            continue
        script_indent = None
        key, _, value = line.strip().removeprefix("- ").partition("run:")
        if _ and not key.strip():
            if value.strip() == "|":
                script_indent = indent + 2
            else:
                lines.append(value.strip())
    return lines


def run_line(sandbox: Sandbox, line: str, where: str) -> None:
    if any(command in line for command in NEEDS_SYSTEMD):
        return
    words = shlex.split(line)
    if words[:2] == ["tether", "start"] and not {"--background", "--run", "--"} & set(words):
        run_foreground(sandbox, line, where)
        return
    result = sandbox.sh(line)
    assert result.returncode == 0, f"{where}: {line}\n{result.stderr}"


def run_foreground(sandbox: Sandbox, line: str, where: str) -> None:
    """A foreground start: ready (its record on stdout), serving, then stopped by SIGTERM."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec {line}"],
        cwd=sandbox.work,
        env=sandbox.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        record = json.loads(process.stdout.readline())
        assert list(record) == record_keys(), where
        if record["socks"]:
            echoed = socks_echo(record["local_port"], "127.0.0.1", sandbox.echo_port, b"ready")
        else:
            echoed = echo_once(record["local_port"], b"ready")
        assert echoed == b"ready", where
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, f"{where}: {line}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def check_json(data: dict[str, object], where: str) -> None:
    """A tunnel's record, or the report of `tether diagnose --json` (which has steps)."""
    if "steps" not in data:
        assert list(data) == record_keys(), where
        return
    empty = Diagnosis("t:1", None, None).to_json()
    assert list(data) == list(empty), where
    assert isinstance(data["steps"], list)
    assert [step["name"] for step in data["steps"]] == list(STEPS), where
    for step in data["steps"]:
        assert list(step) == list(empty["steps"][0]), where


def check_config(sandbox: Sandbox) -> None:
    path = Path(sandbox.env["TETHER_CONFIG"])
    config = load_config(path, required=True)
    for name in config.profiles:
        assert build_spec(config.settings(name), name=name).name == name


def run_python(sandbox: Sandbox, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python example, in this process, with the README's drivers replaced by clients
    that make a round trip through the tunnel."""
    for key in ("HOME", "TETHER_CONFIG", "TETHER_SSH_CONFIG", "TETHER_RUNTIME_DIR"):
        monkeypatch.setenv(key, sandbox.env[key])
    reached: list[int] = []

    def connect(*, host: str, port: int, **_: object) -> None:
        assert echo_once(port, b"sql") == b"sql"
        reached.append(port)

    async def connect_async(*, host: str, port: int, **_: object) -> None:
        await asyncio.to_thread(connect, host=host, port=port)

    namespace = {
        "psycopg": types.SimpleNamespace(connect=connect),
        "asyncpg": types.SimpleNamespace(connect=connect_async),
        "print": lambda *args: None,
    }
    code = compile(text, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    outcome = eval(code, namespace)
    if outcome is not None:
        asyncio.run(outcome)
    assert len(reached) == 2
    assert tether.list() == []


def check_plain(sandbox: Sandbox, text: str, where: str) -> None:
    """A block without a language: the synopsis (each flag exists) or `tether list`'s table."""
    if text.startswith("ID "):
        assert text.split("\n", 1)[0].split() == list(HEADERS), where
        return
    assert text.startswith("tether "), where
    commands = {
        words[1].split("|")[0]
        for words in (line.split() for line in text.splitlines() if line.startswith("tether "))
        if not words[1].startswith("-")
    }
    helps = sandbox.sh("tether --help").stdout
    for command in sorted(commands):
        shown = sandbox.sh(f"tether {command} --help")
        assert shown.returncode == 0, f"{where}: tether {command} --help: {shown.stderr}"
        helps += shown.stdout
    for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z-]*)", text):
        assert flag in helps, f"{where}: {flag} is in no --help"
