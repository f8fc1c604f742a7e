"""The test sshd's own harness: stopping a server must leave none of its processes behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.sshd_server import stop_tree
from tests.support.waiting import wait_until_sync

# A parent that forks a child (which sleeps) as fast as it can, for ever: a tree that grows
# while it is being stopped, as an sshd's does when a login completes during a restart.
FORKER = """
import os, time
while True:
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
"""


def group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(fields[3]) == group and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def test_stopping_a_growing_tree_catches_every_child() -> None:
    root = subprocess.Popen([sys.executable, "-c", FORKER], start_new_session=True)
    try:
        wait_until_sync(lambda: len(group_members(root.pid)) > 20, "the tree to grow")
        below = stop_tree(root.pid)
        assert set(group_members(root.pid)) == {root.pid, *below}
        for pid in below:
            os.kill(pid, signal.SIGKILL)
        root.kill()
        root.wait()
        wait_until_sync(lambda: not group_members(root.pid), "every process of the tree to go")
    finally:
        if group_members(root.pid):  # whatever a failed assertion left
            os.killpg(root.pid, signal.SIGKILL)
