"""The OpenSSH master's process: whatever ssh does, none outlives tether's stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.sshd_server import SshdServer
from tests.support.tether_process import processes_with
from tests.support.waiting import wait_until
from tether.spec import Via
from tether.transports import master
from tether.transports.masterconfig import write_config
from tether.transports.openssh import OpenSshTransport
from tether.transports.workdir import Workdir


async def test_a_master_that_forked_away_is_found_and_ended(shared_sshd: SshdServer) -> None:
    """The safety net under the pinned ForkAfterAuthentication: a master that is no longer
    tether's child (here, by -f on its command line, which beats any config) is found by its
    control socket when tether stops its own, and ended."""
    ssh = OpenSshTransport(Via.parse(shared_sshd.via), shared_sshd.ssh_options())
    workdir = Workdir()
    control = workdir.path / "control"
    try:
        config = write_config(workdir.path / "config", ssh.options)
        argv = ssh.ssh_argv(config, control)
        running = master.Master([argv[0], "-f", *argv[1:]], control, None)
        await running.started()
        await wait_until(lambda: running._exited.is_set(), "the forking parent to exit")
        assert running.failure == 0  # it forked: its parent's work is done
        assert processes_with(str(control))  # the forked master serves the socket
        await running.stop()
        assert processes_with(str(control)) == []
    finally:
        for pid in processes_with(str(control)):
            os.kill(pid, signal.SIGKILL)
        workdir.remove()


async def test_a_control_socket_nobody_serves_is_left_alone(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(tmp_path / "control"))  # bound, never listening: a dead master's
        await master.end_stray_master(tmp_path / "control")
        await master.end_stray_master(tmp_path / "missing")


def test_the_parent_death_wrapper_is_probed_once_a_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each reconnect wraps its ssh: the probe (a process run to its end, on the event loop)
    runs at the first only, and the wrapper it found makes a child die with its parent."""
    runs: list[list[str]] = []
    real_run = subprocess.run

    def counted(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        runs.append(argv)
        return real_run(argv, **kwargs)

    master.parent_death_wrapper.cache_clear()
    monkeypatch.setattr(subprocess, "run", counted)
    try:
        first = master.parent_death_wrapper()
        assert master.parent_death_wrapper() == first and len(runs) == 1
    finally:
        master.parent_death_wrapper.cache_clear()
    assert first and first[-1] == "--", first  # Debian's util-linux knows --pdeathsig
    assert runs == [[*first, "true"]]
