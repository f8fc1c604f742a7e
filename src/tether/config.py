"""TOML profiles and flag overrides turned into a validated TunnelSpec; errors name file and key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import ConfigError, UsageError, clip, map_exceptions, shown
from tether.files import CONFIG_LIMIT, read_regular
from tether.spec import (
    DEFAULT_LISTEN_HOST,
    Endpoint,
    SshOptions,
    TunnelSpec,
    Via,
    parse_duration,
    parse_host,
    parse_int,
    parse_port,
)

CONFIG_ENV = "TETHER_CONFIG"
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# Keys a profile (or [defaults]) may set, with the type TOML must give them.
DURATION = (int, float, str)
PROFILE_KEYS: dict[str, tuple[type, ...]] = {
    "to": (str,),
    "via": (str,),
    "host": (str,),
    "port": (int, str),
    "timeout": DURATION,
    "probe": (bool,),
    "identity_file": (str, list),
    "known_hosts": (str,),
    "keepalive_interval": DURATION,
    "keepalive_count_max": (int,),
    "connect_timeout": DURATION,
    "reconnect": (bool,),
    "max_retries": (int, str),
    "backoff_initial": DURATION,
    "backoff_max": DURATION,
    "drain": DURATION,
    "ttl": DURATION,
    "idle_timeout": DURATION,
    "max_connections": (int, str),
}


@dataclass(frozen=True)
class Setting:
    """One raw option value and where it came from, so errors can point at it."""

    value: Any
    origin: str


Settings = dict[str, Setting]


@dataclass(frozen=True)
class Config:
    """A parsed config file: defaults plus named profiles, not yet validated per key."""

    path: Path | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path) if self.path else "config"

    def default_settings(self) -> Settings:
        """The [defaults] table alone: what an ad-hoc tunnel (no profile) starts from."""
        return {k: Setting(v, f"{self.label}: defaults.{k}") for k, v in self.defaults.items()}

    def settings(self, name: str) -> Settings:
        """The raw settings of profile ``name`` with the defaults beneath them."""
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "none"
            where = f" in {self.path}" if self.path else " (no config file found)"
            raise ConfigError(f"unknown profile {clip(name)!r}{where}; known profiles: {known}")
        merged = self.default_settings()
        merged.update(
            {
                k: Setting(v, f"{self.label}: tunnels.{name}.{k}")
                for k, v in self.profiles[name].items()
            }
        )
        return merged


def default_config_path() -> Path:
    """The per-user config file: ~/.config/tether/config.toml on Linux."""
    import platformdirs

    return Path(platformdirs.user_config_dir("tether")) / "config.toml"


def find_config(explicit: str | None, environ: Mapping[str, str] = os.environ) -> tuple[Path, bool]:
    """The config path to read, and whether the user named it (then it must exist)."""
    if explicit:
        return Path(explicit).expanduser(), True
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser(), True
    return default_config_path(), False


def load_config(path: Path, *, required: bool) -> Config:
    """Read and structurally check a config file; a missing optional file is an empty config."""
    try:
        data = read_regular(path, limit=CONFIG_LIMIT, what="config", error=ConfigError)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: config file not found") from None
        return Config()
    with map_exceptions({UnicodeDecodeError: ConfigError}, f"{path}: not UTF-8"):
        text = data.decode("utf-8")
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    return parse_config(parsed, path)


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> Config:
    """Check the shape of parsed TOML: top-level tables and the keys and types inside them."""
    label = str(path) if path else "config"
    for key in data:
        if key not in ("defaults", "tunnels"):
            raise ConfigError(f"{label}: {key}: unknown top-level key (expected defaults, tunnels)")
    defaults = _table(data.get("defaults", {}), f"{label}: defaults")
    _check_keys(defaults, f"{label}: defaults")
    tunnels = _table(data.get("tunnels", {}), f"{label}: tunnels")
    profiles: dict[str, Mapping[str, Any]] = {}
    for name, body in tunnels.items():
        if not PROFILE_NAME.match(name):
            raise ConfigError(
                f"{label}: tunnels.{_show(name)}: "
                "a profile name uses letters, digits, '.', '_', '-'"
            )
        where = f"{label}: tunnels.{name}"
        profiles[name] = _table(body, where)
        _check_keys(profiles[name], where)
    return Config(path, defaults, profiles)


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {_show(value)}")
    return value


def _check_keys(table: Mapping[str, Any], where: str) -> None:
    for key, value in table.items():
        if key not in PROFILE_KEYS:
            known = ", ".join(PROFILE_KEYS)
            raise ConfigError(f"{where}.{key}: unknown key (known keys: {known})")
        types = PROFILE_KEYS[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ConfigError(f"{where}.{key}: expected {names}, got {_show(value)}")


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list of strings",
}


def _show(value: Any) -> str:
    # JSON quoting keeps the message on one line whatever the value holds.
    return shown(value)


RUN_MAX_RETRIES = 5  # a command should fail, not wait forever, on a tunnel that stays down


def build_spec(settings: Settings, *, name: str = "", run_mode: bool = False) -> TunnelSpec:
    """Validate raw settings (from a profile, flags or both) into a TunnelSpec.

    Each error names where the bad value came from: a file and key, or a flag. In run mode,
    reconnect attempts are bounded unless the settings say otherwise.
    """

    def check(key: str, parse: Any) -> Any:
        setting = settings.get(key)
        if setting is None:
            return None
        try:
            return parse(setting.value)
        except UsageError as exc:
            problem = exc.message.split(": ", 1)[-1]
            raise ConfigError(f"{setting.origin}: {problem}", hint=exc.hint) from None

    target = check("to", lambda v: Endpoint.parse(v, what="to"))
    target_host = check("target_host", lambda v: parse_host(v, what="target host"))
    target_port = check(
        "target_port", lambda v: parse_port(v, what="target port", allow_zero=False)
    )
    if target is None and (target_host is None or target_port is None):
        raise UsageError(
            "no target: give a PROFILE, --to HOST:PORT, or --target-host and --target-port"
        )
    target = Endpoint(
        target_host if target_host is not None else target.host,
        target_port if target_port is not None else target.port,
    )
    listen = Endpoint(
        check("host", lambda v: parse_host(v, what="host")) or DEFAULT_LISTEN_HOST,
        check("port", lambda v: parse_port(v, what="port")) or 0,
    )
    ssh_values = {field: check(key, parse) for key, (field, parse) in SSH_KEYS.items()}
    values = {field: check(key, parse) for key, (field, parse) in SPEC_KEYS.items()}
    retries = check("max_retries", _retries)
    if retries is not None:
        values["max_retries"] = None if retries == UNLIMITED else retries
    elif run_mode:
        values["max_retries"] = RUN_MAX_RETRIES
    return TunnelSpec(
        target=target,
        listen=listen,
        via=check("via", lambda v: Via.parse(v, what="via")),
        name=name,
        ssh=SshOptions(**{k: v for k, v in ssh_values.items() if v is not None}),
        **{k: v for k, v in values.items() if v is not None or k == "max_retries"},
    )


UNLIMITED = -1
MAX_COUNT = 1_000_000


def _duration(value: Any, *, zero: bool = False) -> float:
    if zero and value in (0, "0"):
        return 0.0
    return parse_duration(value, what="duration")


def _retries(value: Any) -> int:
    if value == "unlimited":
        return UNLIMITED
    try:
        return parse_int(value, what="retries", low=0, high=MAX_COUNT)
    except UsageError:
        raise UsageError(f'retries: expected a count or "unlimited", got {_show(value)}') from None


def _count(value: Any) -> int:
    return parse_int(value, what="count", low=1, high=MAX_COUNT)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"flag: expected true or false, got {_show(value)}")
    return value


def _paths(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise UsageError(f"identity_file: expected a path or a list of paths, got {_show(value)}")
    return tuple(str(Path(i).expanduser()) for i in items)


# Profile keys (and their flags) that map onto one field: key -> (field, parser).
SPEC_KEYS: dict[str, tuple[str, Any]] = {
    "timeout": ("timeout", _duration),
    "probe": ("probe", _bool),
    "reconnect": ("reconnect", _bool),
    "backoff_initial": ("backoff_initial", _duration),
    "backoff_max": ("backoff_max", _duration),
    "drain": ("drain", lambda v: _duration(v, zero=True)),
    "ttl": ("ttl", _duration),
    "idle_timeout": ("idle_timeout", _duration),
    "max_connections": ("max_connections", _count),
}
SSH_KEYS: dict[str, tuple[str, Any]] = {
    "identity_file": ("identity_files", _paths),
    "known_hosts": ("known_hosts", lambda v: str(Path(v).expanduser())),
    "keepalive_interval": ("keepalive_interval", lambda v: _duration(v, zero=True)),
    "keepalive_count_max": ("keepalive_count_max", _count),
    "connect_timeout": ("connect_timeout", _duration),
}
