"""The key and the place of a shared master; sharing itself is tested against sshd in
tests/e2e/test_shared_master.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tether import locks, masters
from tether.transports import masterspawn

RESOLVED = {
    "hostname": ["bastion.example"],
    "port": ["22"],
    "user": ["deploy"],
    "proxyjump": ["none"],
    "identityfile": ["~/.ssh/a", "~/.ssh/b"],
    "serveraliveinterval": ["15"],
    "controlpath": ["/run/user/1000/tether/masters/x"],
}


def key_of(resolved: dict[str, list[str]], runtime: str = "/run/user/1000/tether") -> str:
    return masterspawn.key(resolved, "/usr/bin/ssh", Path(runtime))


def test_the_same_connection_has_the_same_key_and_any_setting_changes_it() -> None:
    base = key_of(RESOLVED)
    assert base == key_of(dict(reversed(list(RESOLVED.items()))))  # the order of settings
    assert len(base) == masters.KEY_CHARS
    changes = {
        "port": ["2222"],
        "user": ["root"],
        "proxyjump": ["jump.example"],
        "identityfile": ["~/.ssh/b", "~/.ssh/a"],  # the order of keys is tried in: it counts
        "serveraliveinterval": ["7"],
    }
    keys = {key_of({**RESOLVED, name: value}) for name, value in changes.items()}
    assert len(keys) == len(changes) and base not in keys
    assert key_of(RESOLVED, runtime="/tmp/other") != base  # another set of tunnels
    # What names this invocation's socket is not part of the connection.
    assert key_of({**RESOLVED, "controlpath": ["/elsewhere"], "controlpersist": ["10"]}) == base


def test_an_edited_known_hosts_file_or_key_is_a_new_master(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAA\n")
    resolved = {**RESOLVED, "userknownhostsfile": [f"{known_hosts} {tmp_path / 'none'}"]}
    before = key_of(resolved)
    assert key_of(resolved) == before
    known_hosts.write_text("")  # the server's key taken out: a master must check again
    assert key_of(resolved) != before


def test_masters_live_in_the_runtime_directory_or_a_short_place_named_after_it(
    tmp_path: Path,
) -> None:
    short = Path("/run/user/1000/tether")
    assert masters.place(short) == short / "masters"
    long = tmp_path / ("x" * 80)
    far = masters.place(long)
    assert far.name.startswith(f"tether-masters-{os.getuid()}-") and far != masters.place(
        tmp_path / ("y" * 80)
    )
    assert len(os.fsencode(far)) + 1 + masters.KEY_CHARS + masters.SSH_SUFFIX <= 107
    # Not $TMPDIR: every process of the registry finds the same place, whatever its own.
    assert far.parent == Path("/tmp")


def test_a_masters_directory_others_can_write_to_is_not_shared(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    made = masterspawn.directory(runtime)
    try:
        assert made == masters.place(runtime) and made.stat().st_mode & 0o777 == 0o700
        os.chmod(made, 0o777)
        with pytest.raises(masterspawn.Unshareable, match="writable"):
            masterspawn.directory(runtime)
    finally:
        made.rmdir()


def test_ending_all_masters_removes_what_dead_ones_left(tmp_path: Path) -> None:
    place = tmp_path / "masters"
    place.mkdir(mode=0o700)
    for name in ("k", "k.lock", "k.log", "k.config"):
        (place / name).write_text("")  # a socket's name with no master behind it
    assert masters.end_all(place) == 0
    assert not place.exists()
    assert masters.end_all(place) == 0  # none at all: nothing to do


def test_a_start_sweeps_what_ended_masters_left_and_nothing_in_use(tmp_path: Path) -> None:
    place = tmp_path / "m"
    place.mkdir()
    for name in ("gone.lock", "gone.log", "gone.config", "live", "live.lock", "live.log"):
        (place / name).write_text("")  # "live" stands for a master's socket
    held = os.open(place / "busy.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert locks.try_lock(held, "flock")  # a tunnel starting that master holds it
        (place / "busy.config").write_text("")
        masterspawn.sweep(place, keep="mine")
        left = sorted(p.name for p in place.iterdir())
        assert left == ["busy.config", "busy.lock", "live", "live.lock", "live.log"]
    finally:
        os.close(held)


def test_the_masters_of_a_socket_are_found_by_their_command_line(tmp_path: Path) -> None:
    """How `stop --all` and a new start find a master (one that does not answer too): an ssh
    of this user's whose -S names the socket; nothing else with the same words."""
    control = tmp_path / "k%ey"  # written "%%" in ssh's argv, as tokens_escaped has it
    ssh = tmp_path / "ssh"
    ssh.symlink_to(sys.executable)
    other = tmp_path / "python"
    other.symlink_to(sys.executable)
    sleeping = "import time; time.sleep(60)"
    argv = ["-S", str(control).replace("%", "%%")]
    with (
        subprocess.Popen([str(ssh), "-c", sleeping, *argv]) as master,
        subprocess.Popen([str(other), "-c", sleeping, *argv]) as impostor,
    ):
        try:
            assert masters.serving([control]) == [master.pid]
            assert masters.serving([tmp_path / "other"]) == []
        finally:
            master.kill()
            impostor.kill()
