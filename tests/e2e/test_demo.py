"""`tether demo` runs offline with no config and narrates a real SSH tunnel."""

from __future__ import annotations

from pathlib import Path

from tests.support.strict_dirs import strict_tmp
from tests.support.tether_process import TetherRunner


def test_demo(tether: TetherRunner) -> None:
    code, out, err = tether.run("demo", deadline=60)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1].endswith("demo ok.")
    assert any("tunnel ready" in line and "via ssh://demo@127.0.0.1:" in line for line in lines)
    assert any("SHA-256 matches" in line for line in lines)
    assert any(line.startswith("[5/5] stats: 2 connections (0 active)") for line in lines)


def test_demo_gateway(tether: TetherRunner) -> None:
    """A relay, an agent, a grant, a tunnel and a revoke, without root; nothing left after."""
    with strict_tmp() as base:
        code, out, err = tether.run(
            "demo", "gateway", deadline=90, env={"XDG_RUNTIME_DIR": str(base)}
        )
        assert list(base.iterdir()) == []  # its gateway, removed
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1].endswith("demo ok.")
    assert any("answered 'HELLO THROUGH THE GATEWAY'" in line for line in lines)
    cut = next(line for line in lines if line.startswith("[7/7]"))
    assert "access ended" in cut and "(exit 5)" in cut
    events = [line.split()[1] for line in lines if line.startswith("        20")]
    sessions = ("opened", "closed")
    assert [e for e in events if e not in sessions] == [
        "granted",
        "issued",
        "revoked",
        "cut",
        "refused",
    ]
    assert events.count("opened") == 2  # the agent's link and the tunnel's session
    # The relay's and the site's sshd, the agent's ssh: all gone with their tether processes.
    assert own_processes("sshd") == [] and own_processes("ssh") == []


def own_processes(comm: str) -> list[int]:
    """This user's processes named ``comm`` that run a gateway config of a demo."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == comm:
                if "tether-demo-gateway" in (entry / "cmdline").read_text():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found
