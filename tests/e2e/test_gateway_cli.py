"""`tether gateway` from the command line: each step's output and exit code, the policy and the
audit log it leaves, and one-line errors for what it refuses."""

from __future__ import annotations

import json
import signal
import subprocess
import tomllib
from pathlib import Path

from tests.support.tether_process import TetherRunner
from tether.gateway import audit


def test_a_gateway_from_init_to_revoke(tether: TetherRunner, tmp_path: Path) -> None:
    gw = str(tmp_path / "gw")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "alice")],
        check=True,
    )
    steps = [
        (["gateway", "init", gw], 0, "gateway created in"),
        (["gateway", "site", "add", gw, "lab", "--relay", "127.0.0.1:2222"], 0, "enrolled"),
        (["gateway", "user", "add", gw, "alice", str(tmp_path / "alice.pub")], 0, "added"),
        (["gateway", "grant", gw, "alice", "lab/db", "--for", "8h"], 0, "may reach lab/db"),
        (["gateway", "revoke", gw, "alice", "lab/db"], 0, "may no longer reach"),
        (["gateway", "site", "remove", gw, "lab"], 0, "revoked"),
    ]
    for argv, code, said in steps:
        got, out, err = tether.run(*argv)
        assert (got, err) == (code, ""), (argv, err)
        assert said in out, (argv, out)
    policy = tomllib.loads((tmp_path / "gw" / "policy.toml").read_text())
    assert list(policy["users"]) == ["alice"]
    assert not policy.get("sites")
    events = [json.loads(line)["event"] for line in (tmp_path / "gw" / "audit.jsonl").open()]
    assert events == ["granted", "revoked"]


def test_refusals_are_one_line_with_exit_2(tether: TetherRunner, tmp_path: Path) -> None:
    gw = str(tmp_path / "gw")
    assert tether.run("gateway", "init", gw)[0] == 0
    for argv in (
        ["gateway", "init", gw],
        ["gateway", "site", "add", str(tmp_path / "none"), "lab", "--relay", "h:1"],
        ["gateway", "site", "add", gw, "Lab!", "--relay", "h:1"],
        ["gateway", "site", "add", gw, "lab", "--relay", "h:99999"],
        ["gateway", "grant", gw, "nobody", "lab/db"],
        ["gateway", "grant", gw, "nobody", "lab"],
        ["gateway", "user", "add", gw, "bob", str(tmp_path / "missing.pub")],
    ):
        code, out, err = tether.run(*argv)
        assert code == 2 and out == "", (argv, out)
        assert err.startswith("tether: error: ") and err.count("\n") == 1, (argv, err)


def test_the_audit_log_reads_back_and_follows(tether: TetherRunner, tmp_path: Path) -> None:
    gw = tmp_path / "gw"
    assert tether.run("gateway", "init", str(gw))[0] == 0
    assert tether.run("gateway", "site", "add", str(gw), "lab", "--relay", "h:1")[0] == 0
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    assert tether.run("gateway", "user", "add", str(gw), "ann", str(tmp_path / "k.pub"))[0] == 0
    assert tether.run("gateway", "grant", str(gw), "ann", "lab/db")[0] == 0
    with (gw / "audit.jsonl").open("a") as log:  # a hand edit, and a hostile value
        log.write('not json\n{"time": "t", "event": "note", "who": "\\u001b[2Jx"}\n')
    code, out, err = tether.run("gateway", "audit", str(gw))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert " granted user=ann site=lab target=db" in lines[0]
    assert lines[1] == "t note who=\\x1b[2Jx" and "\x1b" not in out
    code, out, _ = tether.run("gateway", "audit", str(gw), "--json")
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["granted", "note"]
    follower = tether.spawn("gateway", "audit", str(gw), "--follow")
    follower.wait_for(lambda p: "granted" in p.stdout, "the lines so far")
    assert tether.run("gateway", "revoke", str(gw), "ann", "lab/db")[0] == 0
    follower.wait_for(lambda p: "revoked" in p.stdout, "the new line")
    follower.send_signal(signal.SIGINT)
    assert follower.finish() == 130
    assert "Traceback" not in follower.stderr


def test_the_audit_log_reads_and_follows_across_rotations(
    tether: TetherRunner, tmp_path: Path
) -> None:
    gw = tmp_path / "gw"
    assert tether.run("gateway", "init", str(gw))[0] == 0
    log = gw / "audit.jsonl"

    def note(n: int) -> None:
        audit.append(log, {"time": "t", "event": "note", "n": n}, rotate_at=1024)

    def numbers(out: str) -> list[int]:
        return [json.loads(line)["n"] for line in out.splitlines()]

    for n in range(100):
        note(n)
    assert len(audit.segments(log)) >= 3 and log.exists()
    code, out, err = tether.run("gateway", "audit", str(gw), "--json")
    assert (code, err) == (0, "")
    assert numbers(out) == list(range(100))  # the segments, oldest first, then the current
    follower = tether.spawn("gateway", "audit", str(gw), "--json", "--follow")
    follower.wait_for(lambda p: '"n": 99}' in p.stdout, "the lines so far")
    for n in range(100, 200):  # rotations between two reads of the follower
        note(n)
    follower.wait_for(lambda p: '"n": 199}' in p.stdout, "the lines of the rotations")
    log.rename(gw / "audit.jsonl.1")  # an operator's logrotate, of the file it follows
    for n in range(200, 220):
        note(n)
    follower.wait_for(lambda p: '"n": 219}' in p.stdout, "the lines since")
    follower.send_signal(signal.SIGINT)
    assert follower.finish() == 130
    assert numbers(follower.stdout) == list(range(220))
    assert "Traceback" not in follower.stderr
