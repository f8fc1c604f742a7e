"""`tether start` in its plain forms, without click: a start is what scripts run in loops, and
click costs a start more than a tenth of its time before the first SSH login can begin.

The plain forms are the ones any reader parses alike: exact flag names (every tunnel option's,
as config.OPTIONS declares them, and start's own below), each value in the next word or after
"=", profiles, and a command after "--". They give the very parameters the click command gets
(tests/unit/cli/test_plainstart.py holds the two parsers to that), and the rest of the start is
the same code. Anything else (help, a short flag with its value attached, a repeated flag, a
value that looks like a flag, a typo) goes to click, which parses it or says what is wrong.
"""

from __future__ import annotations

from typing import Any

from tether.config import OPTIONS

# `tether start`'s own flags, beyond the tunnel options: flag -> parameter (flags.py declares
# them for click).
SWITCHES = {
    "--foreground": "foreground",
    "-fg": "foreground",
    "--background": "background",
    "-bg": "background",
    "--json": "as_json",
    "--reuse": "reuse",
}
VALUES = {
    "--run": "run",
    "-R": "run",
    "--pid-file": "pid_file",
    "--config": "config_path",
    "--json-file": "json_file",
}


def _tunnel_flags() -> tuple[dict[str, tuple[str, bool]], dict[str, tuple[str, bool]]]:
    """The tunnel options' flags: those that take a value and the switches, each as its
    parameter and the value or whether it repeats."""
    values: dict[str, tuple[str, bool]] = {}
    switches: dict[str, tuple[str, bool]] = {}
    for opt in OPTIONS:
        flag = opt.cli_flag
        if flag is None:
            continue
        if opt.switch:
            switches[flag] = (opt.key, True)
            switches[f"--no-{flag[2:]}"] = (opt.key, False)
        else:
            values[flag] = (opt.key, opt.multiple)
            if opt.short:
                values[opt.short] = (opt.key, opt.multiple)
    return values, switches


def plain_start(args: list[str]) -> tuple[dict[str, Any], list[str] | None] | None:
    """The parameters of `tether start ARGS` as the click command gets them, and the command
    after "--" (None without one); None if ARGS need click."""
    command: list[str] | None = None
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1 :]
    tunnel_values, tunnel_switches = _tunnel_flags()
    params: dict[str, Any] = {name: None for name, _ in tunnel_values.values()}
    params.update({name: None for name, _ in tunnel_switches.values()})
    params.update({name: False for name in SWITCHES.values()})
    params.update({name: None for name in VALUES.values()})
    profiles: list[str] = []
    repeated: dict[str, list[str]] = {}
    seen: set[str] = set()
    words = iter(args)
    for word in words:
        if not word.startswith("-"):
            profiles.append(word)
            continue
        flag, equals, attached = word.partition("=")
        if flag in SWITCHES or flag in tunnel_switches:
            if equals:
                return None  # click says a switch takes no value
            name, on = tunnel_switches.get(flag) or (SWITCHES[flag], True)
            if name in seen:
                return None
            seen.add(name)
            params[name] = on
            continue
        if flag in VALUES:
            name, multiple = VALUES[flag], False
        elif flag in tunnel_values:
            name, multiple = tunnel_values[flag]
        else:
            return None  # a typo, help, or a form only click reads
        if equals and not flag.startswith("--"):
            return None  # "-i=x": click reads it its own way
        value = attached if equals else next(words, None)
        if value is None or (not equals and value.startswith("-")):
            return None  # missing, or a value that looks like a flag: click decides
        if multiple:
            repeated.setdefault(name, []).append(value)
            continue
        if name in seen:
            return None
        seen.add(name)
        params[name] = value
    for name, values in repeated.items():
        params[name] = tuple(values)
    for name, multiple in tunnel_values.values():
        if multiple and params[name] is None:
            params[name] = ()
    params["profiles"] = tuple(profiles)
    return params, command


def start_plainly(params: dict[str, Any], command: list[str] | None) -> None:
    """Run the start that ``params`` say, as the click command does; SystemExit with its
    status."""
    from tether.cli.report import reporter_for
    from tether.cli.request import parse_request
    from tether.modes.launch import launch
    from tether.registry import Registry

    req = parse_request(params, command)
    registry = Registry.default()
    with reporter_for(req, as_json=params["as_json"], debug=False) as reporter:
        raise SystemExit(launch(req, registry, reporter))
