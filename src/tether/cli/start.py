"""`tether start`: build TunnelSpecs from profiles and flags, then hand them to a mode."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from tether.cli.render import Spinner, print_ready
from tether.config import Config, Setting, Settings, build_spec, find_config, load_config
from tether.errors import TetherError, UsageError
from tether.modes.pidfile import check_pid_file
from tether.modes.runtime import run
from tether.registry import Registry, new_id
from tether.spec import TunnelSpec

# Flags that map one-to-one onto profile keys: (click parameter name, profile key, flag spelling).
FLAG_KEYS = (
    ("to", "to", "--to"),
    ("via", "via", "--via"),
    ("target_host", "target_host", "--target-host"),
    ("target_port", "target_port", "--target-port"),
    ("host", "host", "--host"),
    ("port", "port", "--port"),
    ("timeout", "timeout", "--timeout"),
    ("identity_file", "identity_file", "--identity-file"),
    ("known_hosts", "known_hosts", "--known-hosts"),
    ("keepalive_interval", "keepalive_interval", "--keepalive-interval"),
    ("keepalive_count", "keepalive_count_max", "--keepalive-count"),
    ("reconnect", "reconnect", "--reconnect"),
    ("max_retries", "max_retries", "--max-retries"),
    ("backoff_initial", "backoff_initial", "--backoff-initial"),
    ("backoff_max", "backoff_max", "--backoff-max"),
    ("drain", "drain", "--drain"),
    ("ttl", "ttl", "--ttl"),
    ("idle_timeout", "idle_timeout", "--idle-timeout"),
    ("max_connections", "max_connections", "--max-connections"),
)
# Flags that describe a single tunnel, so they cannot go with several profiles.
SINGLE_TUNNEL_FLAGS = ("to", "target_host", "target_port", "port", "name")
MODE_FLAGS = "--foreground, --background, --run and -- are mutually exclusive"


@dataclass(frozen=True)
class StartRequest:
    """A parsed `tether start`: what to open and which mode runs it."""

    specs: tuple[TunnelSpec, ...]
    mode: str  # foreground, background, run
    command: str | tuple[str, ...] | None
    pid_file: Path | None
    as_json: bool


def spec_from_flags(
    config: Config,
    profile: str | None,
    flags: dict[str, Any],
    name: str | None,
    *,
    run_mode: bool = False,
) -> TunnelSpec:
    """Profile settings (if any) under flag overrides, validated once by build_spec."""
    settings: Settings = config.settings(profile) if profile else config.default_settings()
    for param, key, flag in FLAG_KEYS:
        value = flags.get(param)
        if value is not None:
            settings[key] = Setting(value, flag)
    if flags.get("no_probe"):
        settings["probe"] = Setting(False, "--no-probe")
    return build_spec(settings, name=name or profile or "", run_mode=run_mode)


def parse_request(params: dict[str, Any], argv: Sequence[str] | None) -> StartRequest:
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
    mode = {"run": "run", "--": "run", "background": "background"}.get(
        chosen[0] if chosen else "", "foreground"
    )
    if argv is not None and not argv:
        raise UsageError("-- must be followed by a command")
    if len(profiles) > 1:
        if mode != "run":
            raise UsageError("several profiles need --run or -- (one command for all tunnels)")
        clashing = [
            f"--{p.replace('_', '-')}" for p in SINGLE_TUNNEL_FLAGS if params.get(p) is not None
        ]
        if clashing:
            raise UsageError(f"{', '.join(clashing)} cannot be used with several profiles")
    path, required = find_config(params["config_path"])
    config = load_config(path, required=required)
    specs = tuple(
        spec_from_flags(config, profile, params, params["name"], run_mode=mode == "run")
        for profile in (profiles or (None,))
    )
    pid_file = Path(params["pid_file"]).absolute() if params["pid_file"] else None
    if pid_file is not None:
        check_pid_file(pid_file)
    command: str | tuple[str, ...] | None = params["run"] if argv is None else tuple(argv)
    return StartRequest(specs, mode, command, pid_file, params["as_json"])


class _StartCommand(click.Command):
    """Splits off everything after `--` as the command's argv before click sees it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["tether.argv"] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


@click.command(cls=_StartCommand)
@click.argument("profiles", nargs=-1)
@click.option("--to", metavar="HOST:PORT", help="Target address (overrides the profile's).")
@click.option("--via", metavar="ssh://[USER@]HOST[:PORT]", help="Jump host; direct TCP without.")
@click.option("--target-host", metavar="HOST", help="Override only the target host.")
@click.option("--target-port", metavar="PORT", help="Override only the target port.")
@click.option("--host", "-o", metavar="ADDR", help="Local address to bind [default: 127.0.0.1].")
@click.option("--port", "-p", metavar="PORT", help="Local port; 0 picks a free one [default: 0].")
@click.option(
    "--name", metavar="NAME", help="Name in banners and lists [default: profile or target]."
)
@click.option("--foreground", "-fg", is_flag=True, help="Block until signalled (the default).")
@click.option("--background", "-bg", is_flag=True, help="Detach; return once the tunnel is ready.")
@click.option(
    "--run", "-R", metavar="CMD", help="Run CMD through the shell once ready, then close."
)
@click.option("--pid-file", metavar="PATH", help="Write the pid here once ready.")
@click.option("--timeout", metavar="SECONDS", help="Bound on getting ready [default: 30].")
@click.option("--no-probe", is_flag=True, help="Do not test-connect to the target before ready.")
@click.option(
    "--reconnect/--no-reconnect", default=None, help="Reconnect a lost transport [default: on]."
)
@click.option(
    "--max-retries",
    metavar="N",
    help="Reconnect attempts before giving up, or "
    "'unlimited' [default: unlimited; 5 with --run / --].",
)
@click.option("--backoff-initial", metavar="DURATION", help="First reconnect delay [0.5s].")
@click.option("--backoff-max", metavar="DURATION", help="Longest reconnect delay [30s].")
@click.option(
    "--drain", metavar="SECONDS", help="On stop, time for open connections to finish [default: 5]."
)
@click.option("--ttl", metavar="DURATION", help="Stop after this long (30s, 5m, 2h).")
@click.option(
    "--idle-timeout", metavar="DURATION", help="Stop after this long without connections."
)
@click.option(
    "--max-connections",
    metavar="N",
    help="Connections served at once; more wait until one ends [default: 1024].",
)
@click.option(
    "--keepalive-interval",
    metavar="SECONDS",
    help="SSH keepalive interval, 0 for off [default: 15].",
)
@click.option(
    "--keepalive-count",
    metavar="N",
    help="Unanswered keepalives before the link counts as lost [default: 3].",
)
@click.option("--identity-file", "-i", metavar="PATH", help="SSH private key to use.")
@click.option("--known-hosts", metavar="PATH", help="known_hosts file to verify the server with.")
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file [default: $TETHER_CONFIG or ~/.config/tether/config.toml].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout when ready.")
@click.option("--ready-fd", type=int, hidden=True)
@click.option("--tunnel-id", hidden=True)
@click.option("--log-file", hidden=True)
@click.option("--as-background", is_flag=True, hidden=True)
@click.pass_context
def start(ctx: click.Context, /, **params: Any) -> None:
    """Open a tunnel to PROFILE (or --to HOST:PORT) and keep it until signalled.

    \b
    tether start db                       # foreground, until Ctrl-C / SIGTERM / tether stop
    tether start db --background          # detach once ready
    tether start db --run 'psql -h $TETHER_HOST -p $TETHER_PORT'
    tether start db cache -- ./migrate.sh # several tunnels for one command
    """
    req = parse_request(params, ctx.meta.get("tether.argv"))
    registry = Registry.default()
    if params["as_background"]:
        raise SystemExit(_background_child(req, registry, params))
    if req.mode == "background":
        raise SystemExit(_background_parent(ctx, req, registry))
    if req.mode == "run":
        raise SystemExit(_run(req, registry))
    raise SystemExit(_foreground(req, registry))


def _foreground(req: StartRequest, registry: Registry) -> int:
    from tether.modes.foreground import run_foreground

    spec = req.specs[0]
    with Spinner(spec.name) as spinner:

        def ready(hosted: Any) -> None:
            spinner.stop()
            print_ready(hosted.ready_record(), as_json=req.as_json)

        return run(
            run_foreground(
                spec, registry, on_ready=ready, on_phase=spinner.phase, pid_file=req.pid_file
            )
        )


def _run(req: StartRequest, registry: Registry) -> int:
    from tether.modes.run import run_command

    assert req.command is not None
    with Spinner(", ".join(s.name for s in req.specs)) as spinner:

        def ready(tunnels: Sequence[Any]) -> None:
            spinner.stop()
            for hosted in tunnels:
                print_ready(hosted.ready_record(), as_json=req.as_json, hint=False)

        return run(
            run_command(
                req.specs,
                registry,
                req.command,
                on_ready=ready,
                on_phase=spinner.phase,
                pid_file=req.pid_file,
            )
        )


def _background_parent(ctx: click.Context, req: StartRequest, registry: Registry) -> int:
    from tether.modes.background import ensure_log_directory, launch

    entry_id = new_id()
    log_file = ensure_log_directory() / f"{entry_id}.log"
    argv = [
        "start",
        *_child_args(ctx),
        "--as-background",
        "--tunnel-id",
        entry_id,
        "--log-file",
        str(log_file),
    ]
    spec = req.specs[0]
    with Spinner(spec.name) as spinner:

        def ready(record: dict[str, Any]) -> None:
            spinner.stop()
            print_ready(record, as_json=req.as_json, hint=False)

        launch(
            argv,
            entry_id=entry_id,
            log_file=log_file,
            timeout=spec.timeout,
            registry=registry,
            on_ready=ready,
        )
    return 0


def _child_args(ctx: click.Context) -> list[str]:
    """The parent's own flags, for the child, less those that only concern the parent."""
    skip = {
        "background",
        "foreground",
        "as_json",
        "ready_fd",
        "tunnel_id",
        "log_file",
        "as_background",
        "profiles",
    }
    args: list[str] = list(ctx.params["profiles"])
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name in skip or value is None or not isinstance(param, click.Option):
            continue
        if param.is_flag:
            spellings = param.opts if value else param.secondary_opts
            args += [max(spellings, key=len)] if spellings else []
        elif param.name == "pid_file":
            args += [max(param.opts, key=len), str(Path(value).absolute())]
        else:
            args += [max(param.opts, key=len), str(value)]
    return args


def _background_child(req: StartRequest, registry: Registry, params: dict[str, Any]) -> int:
    from tether.logs import TimestampedLog, as_text_stream
    from tether.modes.background import report
    from tether.modes.foreground import run_foreground

    if params["log_file"]:
        # Its stdout and stderr are the log: every line timestamped, the file capped.
        sys.stdout = sys.stderr = as_text_stream(TimestampedLog(Path(params["log_file"])))
    # The pipe is used once: after the report its fd number may be reused by something else.
    pipe: list[int] = [params["ready_fd"]] if params["ready_fd"] is not None else []

    def send(message: dict[str, Any]) -> None:
        if pipe:
            report(pipe.pop(), message)

    def ready(hosted: Any) -> None:
        record = hosted.ready_record()
        print_ready(record, as_json=False, hint=False)
        send({"ready": record})

    try:
        return run(
            run_foreground(
                req.specs[0],
                registry,
                on_ready=ready,
                pid_file=req.pid_file,
                mode="background",
                entry_id=params["tunnel_id"],
                log_file=params["log_file"],
                parent_pipe=pipe[0] if pipe else None,
            )
        )
    except TetherError as exc:
        send({"error": str(exc), "exit_code": exc.exit_code})
        raise
    finally:
        sys.stderr.flush()
