"""What `tether systemd-unit` and `tether gateway systemd-unit` share: the command that runs
this tether, and writing unit files into a directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tether.errors import UsageError, describe
from tether.files import write_atomic

if TYPE_CHECKING:
    from tether.unitfiles import UnitFile

# Unit files hold no secret (paths and names), and `systemctl cat` and `status` read them as
# any user: the mode systemd's own units have.
UNIT_MODE = 0o644


def tether_command() -> tuple[str, ...]:
    """The absolute command that runs this tether: its console script when there is one (in
    PATH or beside the interpreter), else the interpreter with ``-m tether``."""
    script = sys.argv[0]
    if os.path.basename(script) == "tether" and os.access(script, os.X_OK):
        return (os.path.abspath(script),)
    beside = Path(sys.executable).parent / "tether"
    if os.access(beside, os.X_OK):
        return (str(beside),)
    return (os.path.abspath(sys.executable), "-m", "tether")


def write_units(units: list[UnitFile], directory: Path, *, replace: bool = True) -> list[Path]:
    """Write ``units`` into ``directory``; without ``replace``, a unit file there already is
    refused (before any is written) and left as it is."""
    if not directory.is_dir():
        raise UsageError(f"--output-dir: {directory} is not a directory")
    if not replace:
        for unit in units:
            if os.path.lexists(directory / unit.name):
                raise _exists(directory / unit.name)
    written = []
    for unit in units:
        path = directory / unit.name
        try:
            write_atomic(path, unit.text, UNIT_MODE, replace=replace)
        except FileExistsError:
            raise _exists(path) from None  # made since the check above
        except OSError as exc:
            raise UsageError(
                f"cannot write {path}: {describe(exc)}",
                hint="print the units instead, and install them with sudo tee",
            ) from None
        written.append(path)
    return written


def _exists(path: Path) -> UsageError:
    return UsageError(
        f"{path} exists already; not overwritten", hint="remove it first, or print the unit"
    )
