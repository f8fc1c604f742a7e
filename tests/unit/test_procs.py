"""Process identity: pid and start time, and pidfds that PID reuse cannot redirect."""

from __future__ import annotations

import os
import subprocess

from tether.procs import Pinned, ProcessRef, wait_exited


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
