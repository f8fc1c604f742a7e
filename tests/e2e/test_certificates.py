"""SSH user certificates through a real sshd that trusts a user CA and no key of the test's, with
each engine: found where OpenSSH finds them (beside a key, CertificateFile, certificate_file, the
agent, a jump host's), and a certificate that cannot log in explained in one line (exit 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_errors import one_line_error
from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer, certify, keygen, require_sshd
from tests.support.tether_process import TetherRunner
from tests.support.ssh_setups import add_to_agent, private_agent


@dataclass
class Authority:
    """An sshd that takes certificates of ``user_ca`` (its authorized_keys holds no key of
    ours) and shows a host certificate; ``known_hosts`` trusts only the host CA."""

    server: SshdServer
    user_ca: Path
    known_hosts: Path
    directory: Path

    def key(
        self, name: str, *, principals: str | None = None, validity: str = "", kind: str = ""
    ) -> Path:
        """A new key (ed25519 unless ``kind`` says) and, beside it, its certificate, whose key ID
        is ``name``."""
        key = self.directory / name
        if kind:
            subprocess.run(
                ["ssh-keygen", "-q", "-N", "", "-t", kind, "-f", str(key)],
                check=True,
                stdin=subprocess.DEVNULL,
            )
        else:
            keygen(key)
        sign(self.user_ca, key, name, principals or self.server.user, validity)
        return key

    def config(self, *lines: str, host: str = "bastion") -> Path:
        """An ssh_config whose ``host`` is this server, with ``lines`` besides."""
        path = self.directory / f"{host}.config"
        server = self.server
        base = [f"HostName {server.host}", f"Port {server.port}", f"User {server.user}"]
        base.append(f"UserKnownHostsFile {self.known_hosts}")
        path.write_text(f"Host {host}\n" + "".join(f"  {line}\n" for line in [*base, *lines]))
        path.chmod(0o600)
        return path

    def logged_in_with(self, key_id: str) -> bool:
        """Whether sshd let someone in with the certificate of key ID ``key_id``."""
        log = self.server.log_path.read_text()
        return any(
            "Accepted publickey" in line and f"ID {key_id} (serial" in line
            for line in log.splitlines()
        )


def sign(authority: Path, key: Path, key_id: str, principals: str, validity: str = "") -> Path:
    """Sign ``key``.pub; ``validity`` as ssh-keygen -V takes it, in UTC."""
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(authority), "-I", key_id, "-n", principals]
        + (["-V", validity] if validity else [])
        + [f"{key}.pub"],
        check=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TZ": "UTC"},
    )
    return Path(f"{key}-cert.pub")


def certificate_sshd(directory: Path) -> tuple[SshdServer, Path, Path]:
    """An sshd (not yet started) that trusts a new user CA and has a host certificate; and a
    known_hosts that trusts only the host CA."""
    require_sshd()
    directory.mkdir()
    user_ca = keygen(directory / "user_ca")
    host_ca = keygen(directory / "host_ca")
    server_dir = directory / "sshd"
    server_dir.mkdir()
    host_key = keygen(server_dir / "host_ed25519")
    host_cert = certify(host_ca, host_key, identity="host", principals="127.0.0.1", host=True)
    options = (f"TrustedUserCAKeys {user_ca}.pub", f"HostCertificate {host_cert}")
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"@cert-authority * {Path(f'{host_ca}.pub').read_text()}")
    return SshdServer(server_dir, options=options), user_ca, known_hosts


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[Authority]:
    server, user_ca, known_hosts = certificate_sshd(tmp_path / "ca")
    with server:
        yield Authority(server, user_ca, known_hosts, tmp_path)


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[Path]:
    """A private, empty ssh-agent: its socket. Only the tether runs given it see it."""
    with private_agent(tmp_path) as sock:
        yield sock


def encrypt(key: Path) -> None:
    """Give the key file a passphrase (the agent keeps the copy it already holds)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-N", "secret words", "-f", str(key)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


def start(
    tether: TetherRunner,
    echo: EchoServer,
    engine: str,
    *flags: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """`tether start` in run mode (ready, probed, `true` run, stopped): its exit code and
    stderr."""
    code, _, err = tether.run(
        "start", "--to", echo.address, "--engine", engine, *flags, "--", "true", env=env
    )
    return code, err


def test_a_certificate_beside_an_identity_file_of_ssh_config(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str
) -> None:
    key = authority.key("beside-config")
    config = authority.config(f"IdentityFile {key}", "IdentitiesOnly yes")
    code, err = start(
        tether, echo_server, engine, "--via", "ssh://bastion", "--ssh-config", str(config)
    )
    assert code == 0, err
    assert authority.logged_in_with("beside-config")


def test_a_certificate_file_of_ssh_config(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str
) -> None:
    key = authority.key("elsewhere")
    certificate = authority.directory / "signed" / "elsewhere.pub"
    certificate.parent.mkdir()
    Path(f"{key}-cert.pub").rename(certificate)
    config = authority.config(f"IdentityFile {key}", f"CertificateFile {certificate}")
    code, err = start(
        tether, echo_server, engine, "--via", "ssh://bastion", "--ssh-config", str(config)
    )
    assert code == 0, err
    assert authority.logged_in_with("elsewhere")


def test_the_certificate_file_option(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str, tmp_path: Path
) -> None:
    key = authority.key("option")
    certificate = tmp_path / "option.cert"
    Path(f"{key}-cert.pub").rename(certificate)
    server = authority.server
    flags = ["--via", server.via, "--known-hosts", str(authority.known_hosts)]
    # A profile's path is its file's directory's, as identity_file's is.
    profile = tmp_path / "tether.toml"
    profile.write_text(
        f'[tunnels.db]\nto = "{echo_server.address}"\nidentity_file = "{key.name}"\n'
        f'certificate_file = "{certificate.name}"\n'
    )
    code, _, err = tether.run(
        "start", "db", "--config", str(profile), *flags, "--engine", engine, "--", "true"
    )
    assert code == 0, err
    assert authority.logged_in_with("option")
    # Without it, the key alone is refused: the certificate is what logged in.
    code, err = start(tether, echo_server, engine, *flags, "-i", str(key))
    assert code == 5, err


def test_a_certificate_the_agent_holds(
    tether: TetherRunner,
    authority: Authority,
    echo_server: EchoServer,
    engine: str,
    ssh_agent: Path,
) -> None:
    key = authority.key("in-agent")
    add_to_agent(ssh_agent, key)  # with its certificate, beside it
    for path in (key, Path(f"{key}.pub"), Path(f"{key}-cert.pub")):
        path.unlink()  # the agent holds all there is
    server = authority.server
    flags = ["--via", server.via, "--known-hosts", str(authority.known_hosts)]
    code, err = start(tether, echo_server, engine, *flags, env={"SSH_AUTH_SOCK": str(ssh_agent)})
    assert code == 0, err
    assert authority.logged_in_with("in-agent")


@pytest.mark.parametrize("where", ["beside an encrypted key", "CertificateFile"])
def test_a_certificate_whose_key_only_the_agent_holds(
    tether: TetherRunner,
    authority: Authority,
    echo_server: EchoServer,
    engine: str,
    ssh_agent: Path,
    where: str,
) -> None:
    """ssh signs for a certificate file with the agent's copy of its key."""
    key = keygen(authority.directory / "agent-key")
    add_to_agent(ssh_agent, key)  # before there is a certificate: the key alone
    sign(authority.user_ca, key, "agent-signs", authority.server.user)
    if where == "CertificateFile":
        certificate = authority.directory / "signed.pub"
        Path(f"{key}-cert.pub").rename(certificate)
        key.unlink()
        config = authority.config(f"CertificateFile {certificate}")
    else:
        encrypt(key)  # which tether cannot open, and never prompts for
        config = authority.config(f"IdentityFile {key}")
    flags = ["--via", "ssh://bastion", "--ssh-config", str(config)]
    code, err = start(tether, echo_server, engine, *flags, env={"SSH_AUTH_SOCK": str(ssh_agent)})
    assert code == 0, err
    assert authority.logged_in_with("agent-signs")


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
@pytest.mark.parametrize("signer", ["key file", "agent"])
def test_rsa_and_ecdsa_certificates(
    tether: TetherRunner,
    authority: Authority,
    echo_server: EchoServer,
    engine: str,
    ssh_agent: Path,
    kind: str,
    signer: str,
) -> None:
    """An RSA certificate goes by rsa-sha2-*-cert-v01 to a current sshd, which refuses the older
    ssh-rsa-cert-v01 name; each key type, signed for by a file or by the agent."""
    key = authority.key(f"{kind}-{signer.replace(' ', '-')}", kind=kind)
    env = {}
    if signer == "agent":
        add_to_agent(ssh_agent, key)
        encrypt(key)
        env = {"SSH_AUTH_SOCK": str(ssh_agent)}
    config = authority.config(f"IdentityFile {key}")
    flags = ["--via", "ssh://bastion", "--ssh-config", str(config)]
    code, err = start(tether, echo_server, engine, *flags, env=env)
    assert code == 0, err
    assert authority.logged_in_with(key.name)


def test_a_certificate_of_another_key_beside_the_key_is_passed_over(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    """A stale KEY-cert.pub (of a key since replaced): ssh logs in with the key alone."""
    directory = tmp_path / "keys"
    directory.mkdir()
    key = directory / "client_ed25519"
    shutil.copy(sshd.client_key, key)
    stale = keygen(directory / "old")
    sign(keygen(directory / "ca"), stale, "stale", sshd.user).rename(f"{key}-cert.pub")
    flags = ["--via", sshd.via, "--known-hosts", str(sshd.known_hosts), "-i", str(key)]
    code, err = start(tether, echo_server, str(sshd.engine), *flags)
    assert code == 0, err


def test_a_default_key_and_its_certificate(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer
) -> None:
    """~/.ssh/id_ed25519 and id_ed25519-cert.pub, with no IdentityFile anywhere. The asyncssh
    engine only: it reads ~ from $HOME, which the test can point elsewhere, while OpenSSH's ssh
    reads the home directory of the passwd entry, which a test may not touch."""
    home = Path(tether.env["HOME"]) / ".ssh"
    home.mkdir()
    key = authority.key("default-key")
    for suffix in ("", ".pub", "-cert.pub"):
        shutil.copy(f"{key}{suffix}", home / f"id_ed25519{suffix}")
    server = authority.server
    flags = ["--via", server.via, "--known-hosts", str(authority.known_hosts)]
    code, err = start(tether, echo_server, "asyncssh", *flags)
    assert code == 0, err
    assert authority.logged_in_with("default-key")


def test_a_jump_host_that_takes_certificates(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str
) -> None:
    """The jump host takes only certificates; the host behind it, the fixture's key."""
    hop_key = authority.key("hop")
    with SshdServer(authority.directory / "inner") as inner:
        known_hosts = authority.directory / "known_hosts"
        known_hosts.write_text(authority.known_hosts.read_text() + inner.known_hosts.read_text())
        authority.known_hosts = known_hosts
        config = authority.config(f"IdentityFile {hop_key}", host="jump")
        config.write_text(
            config.read_text()
            + f"Host inner\n  HostName {inner.host}\n  Port {inner.port}\n  User {inner.user}\n"
            f"  IdentityFile {inner.client_key}\n  UserKnownHostsFile {known_hosts}\n"
            "  ProxyJump jump\n"
        )
        flags = ["--via", "ssh://inner", "--ssh-config", str(config)]
        code, err = start(tether, echo_server, engine, *flags)
        assert code == 0, err
        assert authority.logged_in_with("hop")
        assert "Accepted publickey" in inner.log_path.read_text()


REFUSALS = {
    "expired": (
        {"validity": "20200101:20200102"},
        "certificate {cert} expired at 2020-01-02 00:00:00 UTC",
        "(have the CA sign the key again)",
    ),
    "not yet valid": (
        {"validity": "20990101:21000101"},
        "certificate {cert} is not valid before 2099-01-01 00:00:00 UTC",
        "(check the clocks of this host and the CA)",
    ),
    "wrong principal": (
        {"principals": "someone-else,nobody"},
        "certificate {cert} is for someone-else, nobody, not for user {user}",
        "(have the CA sign the key for {user}, or log in as one of its principals)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_certificate_the_server_must_refuse_says_why(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str, case: str
) -> None:
    signing, words, hint = REFUSALS[case]
    key = authority.key(case.replace(" ", "-"), **signing)
    server = authority.server
    flags = ["--via", server.via, "--known-hosts", str(authority.known_hosts), "-i", str(key)]
    code, err = start(tether, echo_server, engine, *flags)
    assert code == 5, err
    line = one_line_error(err)
    failed = f"tether: error: SSH authentication to {server.via} failed: "
    why = words.format(cert=f"{key}-cert.pub", user=server.user)
    assert line == f"{failed}{why} {hint.format(user=server.user)}"


def test_a_certificate_of_an_authority_the_server_does_not_trust(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str
) -> None:
    other_ca = keygen(authority.directory / "other_ca")
    key = keygen(authority.directory / "untrusted")
    sign(other_ca, key, "untrusted", authority.server.user)
    server = authority.server
    flags = ["--via", server.via, "--known-hosts", str(authority.known_hosts), "-i", str(key)]
    code, err = start(tether, echo_server, engine, *flags)
    assert code == 5, err
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{other_ca}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert one_line_error(err) == (
        f"tether: error: SSH authentication to {server.via} failed: the server refused "
        f"certificate {key}-cert.pub, key ID 'untrusted' for {server.user}, valid forever, "
        f"signed by CA {fingerprint} (is that CA in the server's TrustedUserCAKeys, for this "
        "user?)"
    )


@pytest.mark.parametrize("case", ["no key anywhere", "an encrypted key"])
def test_a_certificate_that_no_key_signs_for_says_why(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str, case: str
) -> None:
    key = authority.key("keyless")
    certificate = Path(f"{key}-cert.pub")
    if case == "an encrypted key":
        encrypt(key)  # and no agent holds it
        config = authority.config(f"IdentityFile {key}")
        why = f"its key {key} is encrypted and not in ssh-agent (load the key into ssh-agent: "
        why += f"ssh-add {key})"
    else:
        certificate = certificate.rename(authority.directory / "alone.pub")
        key.unlink()
        config = authority.config(f"CertificateFile {certificate}")
        why = "neither an identity file nor ssh-agent holds the key it certifies (name its key "
        why += "with --identity-file, or load it into ssh-agent)"
    code, err = start(
        tether, echo_server, engine, "--via", "ssh://bastion", "--ssh-config", str(config)
    )
    assert code == 5, err
    assert one_line_error(err) == (
        "tether: error: SSH authentication to ssh://bastion failed: certificate "
        f"{certificate} cannot be used: {why}"
    )


def test_a_certificate_file_that_is_not_a_users_certificate(
    tether: TetherRunner, authority: Authority, echo_server: EchoServer, engine: str
) -> None:
    key = authority.key("checked")
    host_ca = keygen(authority.directory / "some_ca")
    host = certify(
        host_ca, keygen(authority.directory / "host"), identity="h", principals="h", host=True
    )
    server = authority.server
    connections = server.log_path.read_text().count("Connection from")
    flags = ["--via", server.via, "--known-hosts", str(authority.known_hosts), "-i", str(key)]
    for named, words in (
        (f"{key}.pub", f"certificate_file: not an OpenSSH certificate: {key}.pub"),
        (str(host), f"certificate_file: {host} is a host certificate, not a user's"),
        (str(authority.directory / "missing"), "certificate_file: file not found"),
    ):
        code, err = start(tether, echo_server, engine, *flags, "--certificate-file", named)
        assert code == 2, err
        assert one_line_error(err).startswith(f"tether: error: {words}"), err
    # Refused before the network: the server saw no connection.
    assert server.log_path.read_text().count("Connection from") == connections


def test_diagnose_names_the_certificate_and_why_it_failed(
    tether: TetherRunner, authority: Authority, engine: str
) -> None:
    key = authority.key("diagnosed")
    expired = authority.key("expired", validity="20200101:20200102")
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    server = authority.server
    flags = ["--via", server.via, "--known-hosts", str(authority.known_hosts), "--engine", engine]
    code, out, err = tether.run("diagnose", "--to", "127.0.0.1:1", *flags, "-i", str(key), "--json")
    assert code == 6, err  # logged in; nothing listens on the target
    report = json.loads(out)
    (auth,) = [step for step in report["steps"] if step["name"] == "auth"]
    assert auth["ok"], report
    # ssh names a certificate by the key it certifies: its file and fingerprint.
    assert str(key) in auth["facts"]["key"] and fingerprint in auth["facts"]["key"], auth
    assert "CERT" in auth["facts"]["key"].upper(), auth
    code, out, _ = tether.run(
        "diagnose", "--to", "127.0.0.1:1", *flags, "-i", str(expired), "--json"
    )
    report = json.loads(out)
    assert code == 5 and report["failed_step"] == "auth", report
    assert report["error"].endswith(
        f"certificate {expired}-cert.pub expired at 2020-01-02 00:00:00 UTC"
    )
