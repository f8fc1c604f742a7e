"""`tether demo` runs offline with no config and narrates a real SSH tunnel."""

from __future__ import annotations

from tests.support.tether_process import TetherRunner


def test_demo(tether: TetherRunner) -> None:
    code, out, err = tether.run("demo", deadline=60)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1].endswith("demo ok.")
    assert any("tunnel ready" in line and "via ssh://demo@127.0.0.1:" in line for line in lines)
    assert any("SHA-256 matches" in line for line in lines)
    assert any(line.startswith("[5/5] stats: 2 connections (0 active)") for line in lines)
