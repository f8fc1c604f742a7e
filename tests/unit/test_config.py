"""Profiles: TOML to TunnelSpec, with errors that name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.config import Setting, build_spec, load_config, parse_config
from tether.paths import config_file
from tether.errors import ConfigError, UsageError
from tether.spec import Endpoint, Via


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def spec_of(tmp_path: Path, text: str, name: str = "db") -> Any:
    config = load_config(write(tmp_path, text), required=True)
    return build_spec(config.settings(name), name=name)


def test_profile_with_defaults(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path,
        """
[defaults]
via = "ssh://ops@bastion:2222"
timeout = 12
known_hosts = "/etc/ssh/ssh_known_hosts"
keepalive_interval = 5

[tunnels.db]
to = "db.internal:5432"
port = 15432
identity_file = ["~/.ssh/a", "/k/b"]
probe = false
""",
    )
    assert spec.name == "db"
    assert spec.target == Endpoint("db.internal", 5432)
    assert spec.listen == Endpoint("localhost", 15432)
    assert spec.via == Via("ssh", "bastion", 2222, "ops")
    assert spec.timeout == 12 and spec.probe is False
    assert spec.ssh.known_hosts == "/etc/ssh/ssh_known_hosts"
    assert spec.ssh.keepalive_interval == 5
    assert spec.ssh.identity_files == (str(Path("~/.ssh/a").expanduser()), "/k/b")


def test_a_profile_can_go_direct_under_a_default_via(tmp_path: Path) -> None:
    text = '[defaults]\nvia = "ssh://bastion"\n[tunnels.db]\nto = "h:1"\nvia = "direct"\n'
    text += '[tunnels.far]\nto = "h:2"\n'
    assert spec_of(tmp_path, text).via is None
    assert spec_of(tmp_path, text, "far").via == Via("ssh", "bastion", 22, port_given=False)


def test_profile_overrides_defaults(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, '[defaults]\ntimeout = 5\n[tunnels.db]\nto = "h:1"\ntimeout = 9\n')
    assert spec.timeout == 9


def test_bad_port_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[tunnels.db]\nto = "h:1"\nport = "abc"\n')
    with pytest.raises(ConfigError) as info:
        build_spec(load_config(path, required=True).settings("db"))
    assert str(info.value) == f'{path}: tunnels.db.port: expected an integer 0-65535, got "abc"'


def test_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tunnels\.db\.prot: unknown key"):
        spec_of(tmp_path, '[tunnels.db]\nto = "h:1"\nprot = 1\n')


def test_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"tunnels\.db\.probe: expected true or false, got \"yes\""
    ):
        spec_of(tmp_path, '[tunnels.db]\nto = "h:1"\nprobe = "yes"\n')


def test_unknown_profile_lists_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'nope'.*known profiles: cache, db"):
        spec_of(tmp_path, '[tunnels.db]\nto = "h:1"\n[tunnels.cache]\nto = "h:2"\n', name="nope")


def test_malformed_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[tunnels.db\nto = 1"), required=True)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tunnel: unknown top-level key"):
        load_config(write(tmp_path, '[tunnel.db]\nto = "h:1"\n'), required=True)


def test_missing_required_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml", required=True)
    assert load_config(tmp_path / "none.toml", required=False).profiles == {}


def test_config_location_precedence(tmp_path: Path) -> None:
    assert config_file("/x.toml", {"TETHER_CONFIG": "/y.toml"}) == (Path("/x.toml"), True)
    assert config_file(None, {"TETHER_CONFIG": "/y.toml"}) == (Path("/y.toml"), True)
    path, required = config_file(None, {})
    assert path.name == "config.toml" and path.parent.name == "tether" and not required


def test_flags_override_parts_of_the_target() -> None:
    settings = {
        "to": Setting("db:5432", "profile"),
        "target_port": Setting("6543", "--target-port"),
    }
    assert build_spec(settings).target == Endpoint("db", 6543)


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--port: expected an integer 0-65535, got \"x\""):
        build_spec({"to": Setting("db:1", "--to"), "port": Setting("x", "--port")})


def test_no_target_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no target"):
        build_spec({"target_host": Setting("db", "--target-host")})


@pytest.mark.parametrize(("value", "hold"), [("0", 0), (0, 0), ("250ms", 0.25), (5, 5)])
def test_hold_takes_a_duration_or_zero(value: object, hold: float) -> None:
    spec = build_spec({"to": Setting("db:1", "--to"), "hold": Setting(value, "--hold")})
    assert spec.hold == hold


@pytest.mark.parametrize("value", [-1, "soon", "-2s", True])
def test_bad_holds(value: object) -> None:
    with pytest.raises(ConfigError, match="--hold"):
        build_spec({"to": Setting("db:1", "--to"), "hold": Setting(value, "--hold")})


@pytest.mark.parametrize("value", [0, -1, "soon", float("inf"), True])
def test_bad_timeouts(value: object) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        build_spec({"to": Setting("db:1", "--to"), "timeout": Setting(value, "--timeout")})


toml_scalars = st.one_of(
    st.integers(),
    st.text(max_size=20),
    st.booleans(),
    st.floats(),
    st.lists(st.text(max_size=5), max_size=3),
)
profile_tables = st.dictionaries(
    st.sampled_from(
        [
            "to",
            "via",
            "port",
            "host",
            "timeout",
            "probe",
            "identity_file",
            "known_hosts",
            "bogus",
            "keepalive_count_max",
            "connect_timeout",
            "hold",
        ]
    ),
    toml_scalars,
    max_size=6,
)


@given(st.dictionaries(st.text(min_size=1, max_size=8), profile_tables, max_size=3))
def test_any_profile_table_validates_or_fails_cleanly(tunnels: dict[str, Any]) -> None:
    try:
        config = parse_config({"tunnels": tunnels})
        for name in config.profiles:
            build_spec(config.settings(name), name=name)
    except UsageError as exc:
        assert "\n" not in str(exc)


def test_allowlist_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    config = parse_config(
        {"tunnels": {"web": {"socks": True, "allow": ["db.internal:5432", "oops"]}}},
        tmp_path / "c.toml",
    )
    with pytest.raises(ConfigError, match=r"c\.toml: tunnels\.web\.allow: expected HOST:PORT"):
        build_spec(config.settings("web"), name="web")
    config = parse_config({"tunnels": {"web": {"socks": True, "allow": [1]}}})
    with pytest.raises(ConfigError, match=r"tunnels\.web\.allow: expected HOST:PORT or a list"):
        build_spec(config.settings("web"), name="web")


def test_socks_and_a_target_do_not_go_together() -> None:
    with pytest.raises(UsageError, match=r"--to: a SOCKS tunnel has no target .*--socks"):
        build_spec({"to": Setting("db:1", "--to"), "socks": Setting(True, "--socks")})
    with pytest.raises(UsageError, match=r"an allowlist is for a SOCKS tunnel"):
        build_spec({"to": Setting("db:1", "--to"), "allow": Setting(["db:1"], "--allow")})
    spec = build_spec({"socks": Setting(True, "--socks"), "allow": Setting(("db:1",), "--allow")})
    assert spec.target is None and spec.name == "socks" and [str(r) for r in spec.allow] == ["db:1"]


@pytest.mark.parametrize("key", ["host", "to", "target_host", "via"])
def test_a_zone_that_would_inject_lines_names_the_file_and_key(tmp_path: Path, key: str) -> None:
    zone = "fe80::1%x\\n[Service]\\nExecStartPre=+touch pwned\\n[Unit]\\nX=x"
    value = {
        "host": zone,
        "to": f"[{zone}]:5432",
        "target_host": zone,
        "via": f"ssh://[{zone}]:22",
    }[key]
    target = "" if key == "to" else 'to = "db:5432"\n'
    extra = "target_port = 1\n" if key == "target_host" else ""
    path = write(tmp_path, f'[tunnels.db]\n{target}{extra}{key} = "{value}"\n')
    with pytest.raises(ConfigError) as info:
        build_spec(load_config(path, required=True).settings("db"))
    message = str(info.value)
    assert message.startswith(f"{path}: tunnels.db.{key}: ")
    assert message.isprintable() and "\\n[Service]" in message  # one line, the value escaped


def test_a_name_flag_with_escapes_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--name: holds control or invisible characters"):
        build_spec({"to": Setting("db:1", "--to"), "name": Setting("\x1b[2J", "--name")})


def test_a_profile_name_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[tunnels."db\\n"]\nto = "db:5432"\n')
    with pytest.raises(ConfigError, match="a profile name uses letters") as info:
        load_config(path, required=True)
    assert str(info.value).isprintable()


def test_a_relative_path_in_a_profile_is_the_config_files_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same profile names the same files from any working directory (a unit's is /)."""
    home = tmp_path / "etc"
    home.mkdir()
    config = write(
        home,
        """
[defaults]
known_hosts = "keys/known_hosts"

[tunnels.db]
to = "db.internal:5432"
via = "ssh://bastion"
identity_file = ["keys/id", "/abs/id", "~/id"]
ssh_config = "../ssh/config"
""",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = build_spec(load_config(config, required=True).settings("db"), name="db")
    assert spec.ssh.identity_files == (
        str(home / "keys" / "id"),
        "/abs/id",
        str(Path("~/id").expanduser()),
    )
    assert spec.ssh.known_hosts == str(home / "keys" / "known_hosts")
    assert spec.ssh.ssh_config == str(home / ".." / "ssh" / "config")
    # A flag's relative path stays the working directory's.
    flags = {"identity_file": Setting(["id"], "--identity-file")}
    settings = {**load_config(config, required=True).settings("db"), **flags}
    assert build_spec(settings, name="db").ssh.identity_files == (str(elsewhere / "id"),)


def test_a_relative_config_file_anchors_its_paths_to_its_absolute_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[tunnels.db]\nto = "db:1"\nknown_hosts = "kh"\n')
    spec = build_spec(load_config(Path("config.toml"), required=True).settings("db"), name="db")
    monkeypatch.chdir("/")
    assert spec.ssh.known_hosts == str(tmp_path / "kh")
