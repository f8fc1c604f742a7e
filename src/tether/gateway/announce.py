"""What an agent tells each relay it links to: the account its site's sshd logs clients in as,
and where each of its targets is. The signer passes both on with a certificate, so a client
names only SITE/TARGET and never needs to know the site's hosts or accounts.

The agent's `ssh -R` session runs `tether gateway announce DIR SITE` on the relay (its
certificate's forced command): one JSON line on stdin, checked whole, kept in the relay's run
directory as ``sites/SITE.json``. A hostile agent can describe only its own site: the site
comes from its certificate, never from what it says, and a client still verifies that site's
host certificate before it sends a byte.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tether.errors import UsageError, shown
from tether.files import write_private
from tether.gateway.names import ACCOUNT, parse_name
from tether.spec import Endpoint

MAX_LINE = 64 * 1024
MAX_TARGETS = 1000


@dataclass(frozen=True)
class Announcement:
    """A site as its agent describes it."""

    account: str
    targets: dict[str, Endpoint]

    def encode(self) -> str:
        """One JSON line."""
        targets = {name: str(where) for name, where in sorted(self.targets.items())}
        return json.dumps({"account": self.account, "targets": targets}) + "\n"

    @classmethod
    def parse(cls, text: str) -> Announcement:
        """Read one line as an agent sent it, refusing anything unexpected in one line."""
        if len(text) > MAX_LINE:
            raise UsageError("announcement: too long")
        try:
            data = json.loads(text)
        except ValueError:
            raise UsageError("announcement: not JSON") from None
        if not isinstance(data, dict) or set(data) != {"account", "targets"}:
            raise UsageError("announcement: expected the keys account and targets")
        account, targets = data["account"], data["targets"]
        if not isinstance(account, str) or not ACCOUNT.match(account):
            raise UsageError(f"announcement: not an account name: {shown(str(account))}")
        if not isinstance(targets, dict) or not 0 < len(targets) <= MAX_TARGETS:
            raise UsageError(f"announcement: expected 1 to {MAX_TARGETS} targets")
        checked: dict[str, Endpoint] = {}
        for name, where in targets.items():
            parse_name(name, what="announcement target")
            if not isinstance(where, str):
                raise UsageError(f"announcement: target {name}: expected HOST:PORT")
            checked[name] = Endpoint.parse(where, what=f"announcement target {name}")
        return cls(account, checked)


def announced_path(run_dir: Path, site: str) -> Path:
    return run_dir / "sites" / f"{parse_name(site, what='site')}.json"


def record(run_dir: Path, site: str, announcement: Announcement) -> None:
    """Keep what ``site``'s agent said (0600, in a 0700 directory), replacing what it said
    before."""
    path = announced_path(run_dir, site)
    try:
        os.mkdir(path.parent, 0o700)
    except FileExistsError:
        pass
    os.chmod(path.parent, 0o700)
    write_private(path, announcement.encode())


def load(run_dir: Path, site: str) -> Announcement | None:
    """What ``site``'s agent said last, or None if it has said nothing to this relay."""
    try:
        text = announced_path(run_dir, site).read_text()
    except FileNotFoundError:
        return None
    return Announcement.parse(text)
