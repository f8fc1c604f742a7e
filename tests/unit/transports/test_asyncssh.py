"""The SSH transport's own checks, before and around the handshake: files, known_hosts parsing,
and which keys known_hosts trusts, revokes or leaves to an authority."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from tests.support.servers import AsyncSshServer
from tether.errors import ConfigError, HostKeyError
from tether.spec import SshOptions, Via
from tether.transports.asyncssh import AsyncSshTransport, channel_failure, load_known_hosts


def transport(server: AsyncSshServer, **options: object) -> AsyncSshTransport:
    defaults: dict[str, object] = {
        "identity_files": (str(server.client_key),),
        "known_hosts": str(server.known_hosts),
    }
    return AsyncSshTransport(Via.parse(server.via), SshOptions(**{**defaults, **options}))  # type: ignore[arg-type]


async def test_connects_and_closes(asyncssh_server: AsyncSshServer) -> None:
    ssh = transport(asyncssh_server)
    phases: list[str] = []
    await ssh.connect(phases.append)
    assert phases == ["authenticating"]
    await ssh.close()


@pytest.mark.parametrize("what", ["identity_files", "known_hosts"])
async def test_files_are_checked_before_the_network(
    asyncssh_server: AsyncSshServer, tmp_path: Path, what: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    value: object = (str(fifo),) if what == "identity_files" else str(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        await transport(asyncssh_server, **{what: value}).connect()
    await asyncssh_server.stop()  # nothing was asked of it: the check came first


def test_known_hosts_lines_that_are_not_entries_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    data = f"host {key}\n".encode() + b"\xff\xfe\njust-one-field\n"
    known = load_known_hosts(data, tmp_path / "known_hosts")
    assert len(known.match("host", "", None)[0]) == 1
    assert "skipped 2 unreadable line(s)" in caplog.text


async def test_a_revoked_key_is_named(asyncssh_server: AsyncSshServer) -> None:
    public = asyncssh_server.host_key.export_public_key().decode().strip()
    asyncssh_server.known_hosts.write_text(
        f"@revoked [127.0.0.1]:{asyncssh_server.port} {public}\n"
    )
    with pytest.raises(HostKeyError, match="is marked @revoked"):
        await transport(asyncssh_server).connect()


async def test_only_an_authority_and_no_certificate(
    asyncssh_server: AsyncSshServer, tmp_path: Path
) -> None:
    authority = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    asyncssh_server.known_hosts.write_text(f"@cert-authority * {authority}\n")
    with pytest.raises(HostKeyError, match="trusts only certificate authorities"):
        await transport(asyncssh_server).connect()


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (asyncssh.OPEN_CONNECT_FAILED, "Connection refused", "refused"),
        (asyncssh.OPEN_CONNECT_FAILED, "No route to host", "unreachable"),
        (asyncssh.OPEN_CONNECT_FAILED, "Name or service not known", "unreachable"),
        (asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed", "prohibited"),
        (asyncssh.OPEN_RESOURCE_SHORTAGE, "too many", "other"),
    ],
)
def test_refused_channels_say_what_kind_they_are(code: int, reason: str, kind: str) -> None:
    assert channel_failure(code, reason) == kind
