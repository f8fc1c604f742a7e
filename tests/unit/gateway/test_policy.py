"""policy.toml: read and checked whole; every error names the key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tether.errors import ConfigError, UsageError
from tether.gateway.policy import (
    EMPTY_POLICY,
    add_site,
    add_user,
    grant,
    load,
    parse_public_key,
    remove_site,
    remove_user,
    revoke,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQ6EOaTwWyasL+lWPWkjnlX2ZShGJsW+DQHtxY2MAHM"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_a_policy_with_a_user_a_site_and_grants(tmp_path: Path) -> None:
    policy = load(
        write(
            tmp_path,
            EMPTY_POLICY
            + f'[users.alice]\nkey = "{KEY} alice@laptop"\n[sites.lab]\nport = 42001\n'
            + '[[grants]]\nuser = "alice"\ntarget = "lab/db"\n'
            + '[[grants]]\nuser = "alice"\ntarget = "lab/web"\nuntil = 2030-01-01T01:00:00+01:00\n',
        )
    )
    assert policy.users["alice"].key == KEY  # the comment is dropped
    assert policy.sites["lab"].port == 42001
    assert [(g.site, g.target) for g in policy.grants] == [("lab", "db"), ("lab", "web")]
    assert policy.grants[1].until == datetime(2030, 1, 1, tzinfo=UTC)
    assert policy.grants[0].live(datetime.now(UTC))
    assert not policy.grants[1].live(datetime(2030, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[users.Alice]\nkey = 'x'\n", "users: a user: not a name"),
        (f'[users.alice]\nkey = "{KEY}"\nshell = "/bin/sh"\n', "users.alice.shell: unknown key"),
        ('[users.alice]\nkey = "ssh-ed25519 AAAA\\nX"\n', "users.alice.key: not an SSH public key"),
        ('[users.alice]\nkey = "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAA"\n', "users.alice.key"),
        ("[sites.'lab\\nx']\n", "sites: a site: not a name"),
        ('[[grants]]\nuser = "bob"\ntarget = "lab/db"\n', "grants[0].user: not a user"),
        (
            f'[users.a]\nkey = "{KEY}"\n[[grants]]\nuser = "a"\ntarget = "lab/db"\n',
            'grants[0].target: no site "lab"',
        ),
        (
            f'[users.a]\nkey = "{KEY}"\n[sites.lab]\nport = 1\n'
            '[[grants]]\nuser = "a"\ntarget = "lab"\n',
            "grants[0].target: not SITE/TARGET",
        ),
        (
            f'[users.a]\nkey = "{KEY}"\n[sites.lab]\nport = 42001\n'
            '[[grants]]\nuser = "a"\ntarget = "lab/db"\nuntil = 2030-01-01T00:00:00\n',
            "grants[0].until: not a date and time with its zone",
        ),
        ("admins = []\n", "admins: unknown key"),
        ("[sites.lab]\n", "sites.lab.port: not a port"),
        ("[sites.lab]\nport = 70000\n", "sites.lab.port: not a port"),
        ("[sites.lab]\nport = 1\nserial = -1\n", "sites.lab.serial: not a serial"),
        ("[sites.lab]\nport = 1\nshell = 1\n", "sites.lab.shell: unknown key"),
        ("[users\n", "invalid TOML"),
    ],
)
def test_a_bad_policy_says_where(tmp_path: Path, text: str, said: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.message.startswith(f"{path}: ")
    assert said in caught.value.message


def test_a_public_key_must_hold_its_own_type() -> None:
    assert parse_public_key(f"{KEY} a comment", what="key") == KEY
    with pytest.raises(Exception, match="type does not match"):
        parse_public_key("ssh-rsa " + KEY.split()[1], what="key")


def test_adding_and_removing_a_site_keeps_what_a_person_wrote(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        EMPTY_POLICY
        + f'# the team\n[users.alice]  # on call\nkey = "{KEY}"\n'
        + '[sites.edge]\nport = 42002\n[[grants]]\nuser = "alice"\ntarget = "edge/web"\n',
    )
    add_site(path, "lab", port=42001, serial=5)
    policy = load(path)
    assert (policy.sites["lab"].port, policy.sites["lab"].serial) == (42001, 5)
    text = path.read_text()
    assert "# the team" in text and "# on call" in text and text.startswith(EMPTY_POLICY)
    with pytest.raises(UsageError, match="enrolled already"):
        add_site(path, "lab", port=42003, serial=6)
    with pytest.raises(UsageError, match="another site's"):
        add_site(path, "new", port=42002, serial=6)
    assert remove_site(path, "edge") == 0
    policy = load(path)
    assert set(policy.sites) == {"lab"} and policy.grants == ()
    assert "# on call" in path.read_text()
    with pytest.raises(UsageError, match="not enrolled"):
        remove_site(path, "edge")


def test_users_and_grants_come_and_go(tmp_path: Path) -> None:
    path = write(tmp_path, EMPTY_POLICY)
    add_site(path, "lab", port=42001, serial=2)
    with pytest.raises(UsageError, match="no such user"):
        grant(path, "alice", "lab", "db", None)
    add_user(path, "alice", f"{KEY} alice@laptop")
    with pytest.raises(UsageError, match="exists already"):
        add_user(path, "alice", KEY)
    with pytest.raises(UsageError, match="not an SSH public key"):
        add_user(path, "bob", "ssh-ed25519 AAAA\nPermitOpen any")
    until = datetime(2030, 1, 1, 12, 0, 0, 500, tzinfo=UTC)
    grant(path, "alice", "lab", "db", until)
    grant(path, "alice", "lab", "web", None)
    grant(path, "alice", "lab", "db", None)  # replaces the first: now until revoked
    policy = load(path)
    assert [(g.target, g.until) for g in policy.grants] == [("web", None), ("db", None)]
    with pytest.raises(UsageError, match="not enrolled"):
        grant(path, "alice", "edge", "db", None)
    revoke(path, "alice", "lab", "web")
    with pytest.raises(UsageError, match="has no grant"):
        revoke(path, "alice", "lab", "web")
    remove_user(path, "alice")
    policy = load(path)
    assert policy.users == {} and policy.grants == ()


def test_a_grant_until_a_time_reads_back_exactly(tmp_path: Path) -> None:
    path = write(tmp_path, EMPTY_POLICY)
    add_site(path, "lab", port=42001, serial=2)
    add_user(path, "alice", KEY)
    grant(path, "alice", "lab", "db", datetime(2030, 1, 1, 12, 30, 15, 999, tzinfo=UTC))
    assert load(path).grants[0].until == datetime(2030, 1, 1, 12, 30, 15, tzinfo=UTC)


def test_a_site_enrolled_again_is_granted_again(tmp_path: Path) -> None:
    """Removing a site's last grant leaves a policy a new grant can be added to (a site is
    enrolled again in a CA rollover)."""
    path = write(tmp_path, EMPTY_POLICY)
    add_user(path, "alice", KEY)
    add_site(path, "lab", port=42001, serial=2)
    grant(path, "alice", "lab", "db", None)
    remove_site(path, "lab")
    add_site(path, "lab", port=42001, serial=3)
    grant(path, "alice", "lab", "db", None)
    assert [(g.site, g.target) for g in load(path).grants] == [("lab", "db")]
