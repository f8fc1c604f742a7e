"""`tether diagnose`: run each step of a tunnel's path on its own and show where it fails."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from tether.cli.candidates import profiles
from tether.cli.flags import config_option, some_tunnel_options
from tether.cli.request import load_profiles, spec_from_flags
from tether.cli.render import echo, table, with_flags
from tether.errors import visible

if TYPE_CHECKING:
    from tether.diagnose import Diagnosis

# The options that say where a tunnel goes and how it logs in; the local side (port, mode,
# lifetime, reconnects) has no step to check.
OPTIONS = (
    "to",
    "target_host",
    "target_port",
    "via",
    "timeout",
    "identity_file",
    "certificate_file",
    "known_hosts",
    "engine",
    "ssh_config",
    "connect_timeout",
    "socks",
    "allow",
)
HEADERS = ("STEP", "RESULT", "MS", "DETAIL")
RESULT = {"ok": "ok", "fail": "FAIL", "skipped": "skipped"}
# ssh_config's own spelling of what `ssh -G` prints in lower case.
SETTINGS = {
    "hostname": "HostName",
    "port": "Port",
    "user": "User",
    "proxyjump": "ProxyJump",
    "proxycommand": "ProxyCommand",
    "hostkeyalias": "HostKeyAlias",
    "identityfile": "IdentityFile",
    "certificatefile": "CertificateFile",
    "userknownhostsfile": "UserKnownHostsFile",
    "ssh_version": "ssh version",
}


@click.command()
@click.argument("profile", required=False, shell_complete=profiles)
@some_tunnel_options(*OPTIONS)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as one JSON object.")
def diagnose(**params: Any) -> None:
    """Check each step of reaching PROFILE's target (or --to HOST:PORT), timed.

    The steps: resolve, tcp, banner, host_key, auth, channel, probe. The first failure ends
    the diagnosis, and its exit status is the one `tether start` would have (0: all passed).

    \b
    tether diagnose prod-db
    tether diagnose --to db.internal:5432 --via ssh://ops@bastion --json
    """
    from tether.diagnose import diagnose as run_diagnosis  # here: completion loads no engine
    from tether.modes.runtime import run

    spec = spec_from_flags(load_profiles(params["config_path"]), params["profile"], params)
    diagnosis = run(run_diagnosis(spec))
    if params["as_json"]:
        echo(json.dumps(to_json(diagnosis)))
    else:
        echo(render(diagnosis))
    if diagnosis.error is not None:
        raise diagnosis.error  # the one error line on stderr, and its exit code


def to_json(diagnosis: Diagnosis) -> dict[str, Any]:
    """The JSON object, with the hint's options named as flags."""
    data = diagnosis.to_json()
    if diagnosis.error is not None and diagnosis.error.hint:
        data["hint"] = with_flags(diagnosis.error.hint, diagnosis.error.options)
    return data


def render(diagnosis: Diagnosis) -> str:
    """The report for people: what was checked, the effective ssh_config, the steps."""
    via = f" via {diagnosis.via} (engine {diagnosis.engine})" if diagnosis.via else " (direct)"
    # What a server or ssh_config says is shown escaped: tables escape their cells, and so
    # does every other line made of a value.
    lines = [visible(f"diagnosing {diagnosis.target}{via}"), ""]
    if diagnosis.ssh_config:
        how = "ssh -G" if diagnosis.engine == "openssh" else "as asyncssh reads it"
        lines.append(f"ssh_config, as the tunnel uses it ({how}):")
        settings = [
            (f"  {SETTINGS.get(key, key)}", _value(value))
            for key, value in diagnosis.ssh_config.items()
        ]
        lines += [*table(("", ""), settings).splitlines()[1:], ""]
    lines += [visible(f"note: {note}") for note in diagnosis.notes]
    lines += [""] if diagnosis.notes else []
    rows = [
        (
            step.name,
            RESULT[step.status],
            "-" if step.ms is None or step.status == "skipped" else f"{step.ms:.1f}",
            step.detail,
        )
        for step in diagnosis.steps.values()
    ]
    lines.append(table(HEADERS, rows))
    error = diagnosis.error
    if error is not None:
        lines.append("")
        lines.append(f"failed at {diagnosis.failed} (exit {error.exit_code})")
        if error.hint:
            lines.append(visible(f"next step: {with_flags(error.hint, error.options)}"))
    return "\n".join(lines)


def _value(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)
