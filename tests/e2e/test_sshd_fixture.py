"""Smoke tests proving the throwaway sshd accepts the client key and refuses the wrong one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.sshd_server import SshdServer


def _ssh_true(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", *args, "true"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_client_key_logs_in(tmp_path: Path) -> None:
    with SshdServer(tmp_path) as sshd:
        result = _ssh_true(["-F", str(sshd.ssh_config), "tether-test"])
        assert result.returncode == 0, result.stderr + sshd.log_path.read_text()


def test_wrong_key_is_refused(tmp_path: Path) -> None:
    with SshdServer(tmp_path) as sshd:
        # Not -F ssh_config: its IdentityFile would be offered alongside -i and get us in.
        options = [
            f"UserKnownHostsFile={sshd.known_hosts}",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
        ]
        args = ["-F", "/dev/null", "-i", str(sshd.wrong_key), "-p", str(sshd.port)]
        for option in options:
            args += ["-o", option]
        result = _ssh_true([*args, f"{sshd.user}@{sshd.host}"])
    assert result.returncode == 255, result.stderr
    assert "Permission denied" in result.stderr, result.stderr
