"""What the flags and profiles of a start mean together: a Launch (modes/launch.py), every spec
built and checked before anything starts. Free of click: the plain start (plainstart.py) builds
its Launch here too, from the same parameters the click command gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether import paths
from tether.config import OPTIONS, Config, Setting, Settings, load_config, spec_for
from tether.errors import UsageError
from tether.modes.launch import Launch, StartMode
from tether.modes.pidfile import ReadyFiles
from tether.options import Option
from tether.spec import TunnelSpec

# Flags that describe a single tunnel, so they cannot go with several profiles.
SINGLE_TUNNEL_FLAGS = ("to", "target_host", "target_port", "port", "name", "socks", "allow")
MODE_FLAGS = "--foreground, --background, --run and -- are mutually exclusive"


def spec_from_flags(
    config: Config,
    profile: str | None,
    flags: dict[str, Any],
    *,
    run_mode: bool = False,
) -> TunnelSpec:
    """Profile settings (if any) under flag overrides, validated once."""
    overrides: Settings = {
        opt.key: Setting(value, _spelling(opt, value))
        for opt in OPTIONS
        if _given(value := flags.get(opt.key)) and opt.cli_flag is not None
    }
    return spec_for(config, profile, overrides, run_mode=run_mode)


def _given(value: Any) -> bool:
    """Whether a flag was given: click makes a repeatable flag that was not an empty tuple."""
    return value is not None and value != ()


def _spelling(opt: Option, value: Any) -> str:
    """The flag as the user typed it, for error messages."""
    assert opt.cli_flag is not None
    return opt.cli_flag if not opt.switch or value else f"--no-{opt.cli_flag[2:]}"


def parse_request(params: dict[str, Any], argv: Sequence[str] | None) -> Launch:
    """Check the flags together and build every spec, before anything starts."""
    profiles: tuple[str, ...] = params["profiles"]
    chosen = [
        flag
        for flag, on in (
            ("foreground", params["foreground"]),
            ("background", params["background"]),
            ("run", params["run"] is not None),
            ("--", argv is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise UsageError(MODE_FLAGS)
    mode: StartMode = "foreground"
    if chosen and chosen[0] in ("run", "--"):
        mode = "run"
    elif chosen and chosen[0] == "background":
        mode = "background"
    if argv is not None and not argv:
        raise UsageError("-- must be followed by a command")
    if len(profiles) > 1:
        if mode != "run":
            raise UsageError("several profiles need --run or -- (one command for all tunnels)")
        clashing = [
            f"--{p.replace('_', '-')}" for p in SINGLE_TUNNEL_FLAGS if _given(params.get(p))
        ]
        if clashing:
            raise UsageError(f"{', '.join(clashing)} cannot be used with several profiles")
    config = load_profiles(params["config_path"])
    specs = tuple(
        spec_from_flags(config, profile, params, run_mode=mode == "run")
        for profile in (profiles or (None,))
    )
    files = ReadyFiles(_absolute(params["pid_file"]), _absolute(params["json_file"]))
    if params["reuse"]:
        _check_reuse(mode, files, as_json=params["as_json"])
    files.check()
    command: str | tuple[str, ...] | None = params["run"] if argv is None else tuple(argv)
    return Launch(specs, mode, command, files, params["reuse"])


def _absolute(path: str | None) -> Path | None:
    return Path(path).absolute() if path else None


def _check_reuse(mode: StartMode, files: ReadyFiles, *, as_json: bool) -> None:
    if mode == "run":
        raise UsageError("--reuse cannot go with --run or --: the command's tunnels are its own")
    if mode == "foreground" and not as_json:
        raise UsageError("--reuse needs --background or --json, to say which tunnel is used")
    if files.pid_file or files.json_file:
        raise UsageError(
            "--reuse cannot go with --pid-file or --json-file: a reused tunnel's files belong "
            "to the start that made it"
        )


def load_profiles(config_path: str | None) -> Config:
    """The profiles of ``--config`` (else $TETHER_CONFIG, else the default file, which may be
    missing)."""
    path, required = paths.config_file(config_path)
    return load_config(path, required=required)
