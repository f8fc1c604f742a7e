"""Where tether keeps things, found in one place and passed in to what uses them: the registry,
the background logs, the config file and the default known_hosts."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

RUNTIME_ENV = "TETHER_RUNTIME_DIR"
CONFIG_ENV = "TETHER_CONFIG"
SSH_CONFIG_ENV = "TETHER_SSH_CONFIG"


#: Where systemd-logind (and user-runtime-dir@.service) makes each user's runtime directory.
RUN_USER = Path("/run/user")


def runtime_directory(
    environ: Mapping[str, str] = os.environ, *, run_user: Path = RUN_USER, uid: int | None = None
) -> Path:
    """The registry: $TETHER_RUNTIME_DIR, else $XDG_RUNTIME_DIR/tether, else
    /run/user/UID/tether when that directory is the user's own, else a per-user directory in
    the temp dir.

    A shell of `su` or `sudo -u` has no XDG_RUNTIME_DIR, while the user's systemd units (and
    login shells) register in /run/user/UID: looking there too, `tether list` and `tether
    start` in such a shell meet them. It is taken only as systemd makes it: a directory, not a
    symlink, owned by the user, with no access for anyone else.
    """
    if environ.get(RUNTIME_ENV):
        return Path(environ[RUNTIME_ENV])
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "tether"
    uid = os.getuid() if uid is None else uid
    own = run_user / str(uid)
    if _private_directory(own, uid):
        return own / "tether"
    import tempfile  # here: the common cases above need none of what it loads

    return Path(tempfile.gettempdir()) / f"tether-{uid}"


def _private_directory(path: Path, uid: int) -> bool:
    """Whether ``path`` is a directory (not a symlink to one) of ``uid``'s, mode 0700 or
    stricter."""
    try:
        found = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == uid and not found.st_mode & 0o077


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
