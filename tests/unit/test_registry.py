"""The registry: private directory checks, lock-based liveness, reservations, corrupt entries."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import EchoServer
from tests.support.tether_process import start_of
from tether import procs
from tests.support.records import register
from tether.errors import PortInUseError, RegistryError, UsageError
from tether.modes.hosted import HostedTunnel
from tether.paths import runtime_directory
from tether.registry import Registry
from tether.spec import Endpoint, TunnelSpec


def entry_json(registry: Registry, entry_id: str, pid: int) -> dict[str, Any]:
    """A complete entry as another process would have written it."""
    return {
        "id": entry_id,
        "name": "db",
        "pid": pid,
        "proc_start": start_of(pid),
        "lock_id": "0:0",
        "mode": "foreground",
        "local_host": "127.0.0.1",
        "local_port": 15432,
        "local_addresses": ["127.0.0.1"],
        "target_host": "db",
        "target_port": 5432,
        "via": None,
        "engine": None,
        "started": "x",
        "log_file": None,
        "control": str(registry.directory / f"{entry_id}.sock"),
    }


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "run")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_directory_is_created_private(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "a" / "run")
    assert (registry.directory.stat().st_mode & 0o777) == 0o700


def test_location_precedence(tmp_path: Path) -> None:
    assert runtime_directory({"TETHER_RUNTIME_DIR": "/x", "XDG_RUNTIME_DIR": "/y"}) == Path("/x")
    assert runtime_directory({"XDG_RUNTIME_DIR": "/y"}) == Path("/y/tether")
    assert runtime_directory({}, run_user=tmp_path).name == f"tether-{os.getuid()}"


def test_without_xdg_runtime_dir_the_users_own_run_user_directory(tmp_path: Path) -> None:
    """A `su` or `sudo -u` shell has no XDG_RUNTIME_DIR: it finds /run/user/UID, where the
    user's units register, when that is the user's own private directory, and nothing else."""
    uid = os.getuid()
    own = tmp_path / str(uid)
    own.mkdir(mode=0o700)
    own.chmod(0o700)
    assert runtime_directory({}, run_user=tmp_path) == own / "tether"
    # XDG_RUNTIME_DIR, where set, still decides.
    assert runtime_directory({"XDG_RUNTIME_DIR": "/y"}, run_user=tmp_path) == Path("/y/tether")
    fallback = f"tether-{uid}"
    for mode in (0o750, 0o705, 0o770):  # anyone else may enter or write
        own.chmod(mode)
        assert runtime_directory({}, run_user=tmp_path).name == fallback, oct(mode)
    own.chmod(0o700)
    # Another user's directory: here, ours named as another uid's.
    other = uid + 1
    (tmp_path / str(other)).mkdir(mode=0o700)
    assert runtime_directory({}, run_user=tmp_path, uid=other).name == f"tether-{other}"
    # A symlink to a private directory of ours is not the directory systemd makes.
    link_parent = tmp_path / "links"
    link_parent.mkdir()
    (link_parent / str(uid)).symlink_to(own)
    assert runtime_directory({}, run_user=link_parent).name == fallback
    # A file under the name.
    files = tmp_path / "files"
    files.mkdir()
    (files / str(uid)).write_text("")
    (files / str(uid)).chmod(0o600)
    assert runtime_directory({}, run_user=files).name == fallback


def test_group_writable_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    path.chmod(0o770)
    with pytest.raises(RegistryError, match=r"group- or world-writable \(mode 0770\)"):
        Registry(path)


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(tmp_path / "real")
    with pytest.raises(RegistryError, match="is a symlink"):
        Registry(tmp_path / "run")


def test_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(path, 65534, 65534)
    else:
        path = Path("/usr")  # owned by root, and not by us
    with pytest.raises(RegistryError, match="is owned by uid"):
        Registry(path)


def test_entry_lives_while_its_lock_is_held(registry: Registry) -> None:
    registration = register(registry)
    entry = registration.entry
    assert [e.id for e in registry.entries()] == [entry.id]
    assert registry.is_verified(entry)
    on_disk = json.loads((registry.directory / f"{entry.id}.json").read_text())
    assert on_disk["pid"] == os.getpid() and on_disk["started"].endswith("Z")
    assert (registry.directory / f"{entry.id}.json").stat().st_mode & 0o777 == 0o600
    registration.remove()
    assert registry.entries() == []
    assert list(registry.directory.iterdir()) == []


def test_free_lock_means_dead_even_if_the_pid_lives(
    registry: Registry, sleeper: subprocess.Popen[bytes]
) -> None:
    """A recycled pid (here: a live, unrelated process) never makes a stale entry look alive."""
    entry = entry_json(registry, "deadbeef", sleeper.pid)
    (registry.directory / "deadbeef.json").write_text(json.dumps(entry))
    (registry.directory / "deadbeef.lock").write_text("")
    assert registry.entries() == []
    assert not (registry.directory / "deadbeef.json").exists()
    assert sleeper.poll() is None


def test_lock_held_by_another_pid_is_not_verified(
    registry: Registry, sleeper: subprocess.Popen[bytes]
) -> None:
    registration = register(registry)
    path = registry.directory / f"{registration.entry.id}.json"
    forged = json.loads(path.read_text())
    forged.update(pid=sleeper.pid, proc_start=start_of(sleeper.pid))
    path.write_text(json.dumps(forged))
    (entry,) = registry.entries()
    assert registry.is_alive(entry)  # the lock is held...
    assert not registry.is_verified(entry)  # ...but not by the pid the entry names
    registration.remove()


def test_corrupt_entry_is_skipped_and_removed(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    live = register(registry)
    (registry.directory / "0badc0de.json").write_text("{not json")
    (registry.directory / "0badc0de.lock").write_text("")
    assert [e.id for e in registry.entries()] == [live.entry.id]
    assert "removed corrupt registry entry" in caplog.text
    assert not (registry.directory / "0badc0de.json").exists()
    live.remove()


@pytest.mark.parametrize(
    ("held", "wanted"),
    [
        (["127.0.0.1", "::1"], ["127.0.0.1"]),
        (["127.0.0.1"], ["127.0.0.1", "::1"]),
        (["::1"], ["127.0.0.1", "::1"]),
        (["0.0.0.0"], ["127.0.0.1"]),
        (["127.0.0.1"], ["0.0.0.0"]),
        (["127.0.0.2"], ["127.0.0.2"]),
    ],
)
async def test_overlapping_reservation_fails_naming_the_tunnel(
    registry: Registry, held: list[str], wanted: list[str]
) -> None:
    registration = register(registry, name="holder", addresses=held)
    with pytest.raises(PortInUseError) as info:
        async with registry.reserving(wanted, 15432):
            pass
    message = str(info.value)
    assert f"in use by tether tunnel {registration.entry.id} (holder, pid {os.getpid()})" in message
    registration.remove()


async def test_distinct_addresses_do_not_clash(registry: Registry) -> None:
    registration = register(registry, addresses=["127.0.0.2"])
    async with registry.reserving(["127.0.0.3"], 15432):
        pass
    async with registry.reserving(["127.0.0.2"], 15433):
        pass
    registration.remove()


def test_find_by_id_prefix_name_and_port(registry: Registry) -> None:
    a = register(registry, name="db", local_port=1111)
    b = register(registry, name="db", local_port=2222)
    found = registry.find([a.entry.id, a.entry.id[:5], "db", "2222", "nope"])
    assert found[a.entry.id] == [a.entry]
    assert found[a.entry.id[:5]] == [a.entry]
    assert {e.id for e in found["db"]} == {a.entry.id, b.entry.id}
    assert found["2222"] == [b.entry]
    assert found["nope"] == []
    a.remove()
    b.remove()


def test_discard_leaves_a_live_owner_alone(registry: Registry) -> None:
    registration = register(registry)
    registry.discard(registration.entry.id)
    assert registry.entries() == [registration.entry]
    registration.remove()


def test_flock_holders_reads_proc_locks(tmp_path: Path) -> None:
    path = tmp_path / "l"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        assert procs.flock_holders(path) == set()
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert procs.flock_holders(path) == {os.getpid()}
    finally:
        os.close(fd)


async def test_nothing_is_resolved_under_the_registry_lock(
    registry: Registry, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow resolver must hold up no other start: under the lock, addresses are literals."""
    lock = registry.directory / ".lock"
    calls: list[tuple[object, int, bool]] = []
    real = socket.getaddrinfo

    def recording(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        calls.append((host, flags, os.getpid() in procs.flock_holders(lock)))
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    for host in ("localhost", "127.0.0.1", "ip6-localhost"):
        spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port), listen=Endpoint(host, 0))
        hosted = HostedTunnel(spec, registry, "foreground", on_stop=lambda: None)
        try:
            await hosted.start()
        except UsageError:
            assert host == "ip6-localhost"  # not every /etc/hosts has it
        finally:
            await hosted.close()
    under_lock = [(host, flags) for host, flags, held in calls if held]
    assert under_lock, "the bind under the lock was not seen"
    assert all(flags & socket.AI_NUMERICHOST for _, flags in under_lock), under_lock
