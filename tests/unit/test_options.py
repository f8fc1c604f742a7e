"""Every tunnel option is declared once and reaches profiles, flags and the spec from there."""

from __future__ import annotations

from dataclasses import fields

from tether.cli.start import start
from tether.config import OPTIONS, PROFILE_KEYS, Setting, build_spec
from tether.spec import SshOptions, TunnelSpec


def test_every_field_but_the_addresses_is_an_option() -> None:
    declared = {opt.field for opt in OPTIONS if opt.field}
    spec_fields = {f.name for f in fields(TunnelSpec)} - {"target", "listen", "ssh"}
    ssh_fields = {f"ssh.{f.name}" for f in fields(SshOptions)}
    assert declared == spec_fields | ssh_fields


def test_every_option_has_a_flag_or_a_key_and_they_are_unique() -> None:
    flags = [opt.cli_flag for opt in OPTIONS if opt.cli_flag]
    assert len(flags) == len(set(flags))
    command_flags = {
        flag for param in start.params for flag in [*param.opts, *param.secondary_opts]
    }
    for opt in OPTIONS:
        assert opt.cli_flag is None or opt.cli_flag in command_flags, opt.key
        assert opt.profile == (opt.key in PROFILE_KEYS)
        assert opt.help_text.endswith("]")


def test_defaults_come_from_the_fields() -> None:
    spec = build_spec({"to": Setting("db:5432", "test")})
    assert spec == TunnelSpec(target=spec.target, name="")
    by_key = {opt.key: opt for opt in OPTIONS}
    assert by_key["drain"].default == spec.drain == 5.0
    assert by_key["keepalive_count_max"].cli_flag == "--keepalive-count"
    assert by_key["identity_file"].field == "ssh.identity_files"


def test_durations_are_durations_in_the_help_and_take_both_forms() -> None:
    """--drain, --timeout and --keepalive-interval take `5s`, `1m` or plain seconds, like
    --ttl, and say DURATION as their siblings do."""
    from tether import values

    durations = (values.duration, values.duration_or_zero)
    for opt in OPTIONS:
        if opt.parse in durations:
            assert opt.metavar == "DURATION", opt.key
            assert "SECONDS" not in opt.help_text, opt.key
    for given, seconds in (("1m", 60.0), ("5s", 5.0), ("5", 5.0), ("250ms", 0.25), ("0", 0.0)):
        spec = build_spec({"to": Setting("db:5432", "test"), "drain": Setting(given, "--drain")})
        assert spec.drain == seconds


def test_via_is_the_ssh_server_not_a_jump_host() -> None:
    help_text = next(opt.help_text for opt in OPTIONS if opt.key == "via")
    assert help_text.startswith("The SSH server the tunnel goes through")
    assert "Jump host" not in help_text and "ProxyJump hops lead to it" in help_text
