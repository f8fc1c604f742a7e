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
