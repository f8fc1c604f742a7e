"""Where tether keeps things, found in one place and passed in to what uses them: the registry,
the background logs, the config file and the default known_hosts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

RUNTIME_ENV = "TETHER_RUNTIME_DIR"
CONFIG_ENV = "TETHER_CONFIG"
SSH_CONFIG_ENV = "TETHER_SSH_CONFIG"


def runtime_directory(environ: Mapping[str, str] = os.environ) -> Path:
    """The registry: $TETHER_RUNTIME_DIR, else $XDG_RUNTIME_DIR/tether, else a per-user
    directory in the temp dir."""
    if environ.get(RUNTIME_ENV):
        return Path(environ[RUNTIME_ENV])
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "tether"
    import tempfile  # here: the common cases above need none of what it loads

    return Path(tempfile.gettempdir()) / f"tether-{os.getuid()}"


def log_directory() -> Path:
    """Background tunnels' logs: the user's state dir (~/.local/state/tether/logs)."""
    import platformdirs  # here: only background mode and `tether logs` need it

    return Path(platformdirs.user_state_dir("tether")) / "logs"


def config_file(explicit: str | None, environ: Mapping[str, str] = os.environ) -> tuple[Path, bool]:
    """The config to read, and whether the user named it (then it must exist): --config, else
    $TETHER_CONFIG, else the user config dir (~/.config/tether/config.toml)."""
    if explicit:
        return Path(explicit).expanduser(), True
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser(), True
    import platformdirs

    return Path(platformdirs.user_config_dir("tether")) / "config.toml", False


def ssh_config(environ: Mapping[str, str] = os.environ) -> str:
    """The user's ssh_config when a tunnel names none: $TETHER_SSH_CONFIG (made absolute
    against the working directory: ssh would read a relative one in ~/.ssh), else
    ~/.ssh/config (which ssh itself finds in the passwd home, not $HOME)."""
    named = environ.get(SSH_CONFIG_ENV)
    if not named:
        return "~/.ssh/config"
    from tether import values  # here: `tether list` never reads it
    from tether.errors import UsageError

    try:
        return values.path(named)
    except UsageError as exc:
        problem = exc.message.split(": ", 1)[-1]
        raise UsageError(f"${SSH_CONFIG_ENV}: {problem}") from None


def known_hosts() -> Path:
    """The known_hosts used when a tunnel names none."""
    return Path("~/.ssh/known_hosts").expanduser()
