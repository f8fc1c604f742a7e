"""Process identity: pid and start time, pidfds that PID reuse cannot redirect, and a process's
tree found and stopped whole."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from tests.support.waiting import wait_until_sync
from tether.procs import Pinned, ProcessRef, descendants, halt_tree, halted, wait_exited


def test_a_process_is_its_pid_and_start_time() -> None:
    me = ProcessRef.current()
    assert me.pid == os.getpid() and me.is_running() and me.is_ours()
    assert not ProcessRef(me.pid, me.start + 1).is_running()  # a successor with our pid


def test_a_zombie_is_no_process() -> None:
    proc = subprocess.Popen(["true"])
    pinned = Pinned.child(proc.pid)
    assert pinned.wait(10)  # exited, not yet reaped
    assert ProcessRef.of(proc.pid) is None
    proc.wait()
    pinned.close()


def test_pinned_signal_and_wait() -> None:
    proc = subprocess.Popen(["sleep", "300"])
    ref = ProcessRef.of(proc.pid)
    assert ref is not None
    pinned = ref.pin()
    assert pinned is not None
    with pinned:
        assert wait_exited([pinned], 0) == set()
        pinned.signal()
        assert wait_exited([pinned], 10) == {pinned}
        proc.wait()
        pinned.signal()  # gone: no error


def test_a_tree_is_found_to_its_leaves_and_stopped_whole() -> None:
    """Three levels below the root, siblings on each: every one found, and every one stopped
    with the root; a tree of one root and nothing below is found empty."""
    script = "sleep 300 & sh -c 'sleep 300 & sleep 300 & wait' & wait"
    root = subprocess.Popen(["sh", "-c", script])
    try:
        # sh, and below it a sleep and a sh with two sleeps of its own.
        wait_until_sync(lambda: len(descendants(root.pid)) == 4, "the tree to grow")
        below = descendants(root.pid)
        assert len(set(below)) == 4 and root.pid not in below, below
        assert not any(halted(pid) for pid in [root.pid, *below])
        stopped = halt_tree(root.pid)
        assert sorted(stopped) == sorted(below)
        assert all(halted(pid) for pid in [root.pid, *below])
    finally:
        for pid in [root.pid, *descendants(root.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        root.wait()
    with subprocess.Popen(["sleep", "300"]) as leaf:
        assert descendants(leaf.pid) == []
        leaf.kill()
