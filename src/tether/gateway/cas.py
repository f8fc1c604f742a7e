"""A gateway's two CAs and their rollover (`tether gateway ca add|use|retire DIR user|host`).

Each CA is a line of generations: 1 is ``ca/KIND_ca`` (what `init` made), N after it
``ca/KIND_ca-N``. ``ca/rollover.json`` says, per CA, which generations are trusted (one, or
two during a rollover) and which one signs; a gateway without the file has generation 1 of
each, trusted and signing, so a gateway made before rollovers reads as it always did.

A rollover goes: ``add`` (a new generation, trusted beside the old one, not yet signing),
``use`` (the new one signs), ``retire`` (the old one is trusted no more, and its key deleted).
Trusting comes before signing and stops after it, so every certificate in use is trusted
throughout.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tether.errors import ConfigError, UsageError, shown
from tether.files import CONFIG_LIMIT, read_regular, write_private
from tether.gateway import keygen
from tether.gateway.names import SIGNER_PRINCIPAL
from tether.gateway.policy import parse_public_key
from tether.gateway.serials import next_serial

Kind = Literal["user", "host"]
KINDS: tuple[Kind, ...] = ("user", "host")
STATE = "rollover.json"
# As `init`'s: the signer's host certificate outlives any one signer process.
SIGNER_CERT_VALIDITY = "+520w"


@dataclass(frozen=True)
class Generations:
    """One CA's generations: the one that signs, and those trusted (it among them)."""

    signing: int
    trusted: tuple[int, ...]


def parse_kind(text: str) -> Kind:
    if text not in KINDS:
        raise UsageError(f"not a CA of a gateway: {shown(text)} (expected user or host)")
    return text


def key_path(root: Path, kind: Kind, generation: int) -> Path:
    """The private key of ``kind``'s CA of ``generation`` (its public half beside it, .pub)."""
    name = f"{kind}_ca" if generation == 1 else f"{kind}_ca-{generation}"
    return root / "ca" / name


def public(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def load(root: Path) -> dict[Kind, Generations]:
    """Each CA's generations, as the state file says (generation 1 of each without one)."""
    path = root / "ca" / STATE
    found = {kind: Generations(1, (1,)) for kind in KINDS}
    try:
        raw = read_regular(path, limit=CONFIG_LIMIT, what="CA state", error=ConfigError)
    except FileNotFoundError:
        return found
    try:
        data = json.loads(raw)
        for kind in KINDS:
            entry = data[kind]
            signing, trusted = entry["signing"], tuple(entry["trusted"])
            numbers = (signing, *trusted)
            if not all(type(n) is int and n >= 1 for n in numbers) or signing not in trusted:
                raise ValueError(kind)
            if not 1 <= len(trusted) <= 2 or len(set(trusted)) != len(trusted):
                raise ValueError(kind)
            found[kind] = Generations(signing, trusted)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a CA state tether wrote ({exc})") from None
    return found


def _save(root: Path, state: dict[Kind, Generations]) -> None:
    data = {k: {"signing": g.signing, "trusted": list(g.trusted)} for k, g in state.items()}
    write_private(root / "ca" / STATE, json.dumps(data, indent=1) + "\n")


def signing_key(root: Path, kind: Kind) -> Path:
    """The private key that signs ``kind``'s certificates now."""
    return key_path(root, kind, load(root)[kind].signing)


def trusted_keys(root: Path, kind: Kind) -> list[str]:
    """Every trusted public key of ``kind``'s CA, oldest first, as "TYPE BASE64" lines."""
    return [
        parse_public_key(public(key_path(root, kind, g)).read_text(), what=f"{kind} CA")
        for g in load(root)[kind].trusted
    ]


def trusted_public_files(root: Path, kind: Kind) -> list[Path]:
    return [public(key_path(root, kind, g)) for g in load(root)[kind].trusted]


def add(root: Path, kind: Kind) -> Path:
    """A new generation of ``kind``'s CA, trusted from now on beside the current one, which
    still signs; its key's path. One rollover at a time."""
    state = load(root)
    now = state[kind]
    if len(now.trusted) > 1:
        raise UsageError(
            f"a {kind} CA rollover is under way already",
            hint=f"finish it first: tether gateway ca use / ca retire DIR {kind}",
        )
    generation = max(now.trusted) + 1
    key = keygen.generate(key_path(root, kind, generation), f"tether-gateway-{kind}-ca")
    state[kind] = Generations(now.signing, (*now.trusted, generation))
    _save(root, state)
    return key


def use(root: Path, kind: Kind) -> Path:
    """Sign with the newest generation of ``kind``'s CA from now on; its key's path. The host
    CA's new generation also certifies the signer's host key again (the relays trust both)."""
    state = load(root)
    now = state[kind]
    newest = max(now.trusted)
    if newest == now.signing:
        raise UsageError(
            f"no new {kind} CA to sign with: the newest signs already",
            hint=f"start a rollover with: tether gateway ca add DIR {kind}",
        )
    key = key_path(root, kind, newest)
    if kind == "host":
        _certify_signer(root, key)
    state[kind] = Generations(newest, now.trusted)
    _save(root, state)
    return key


def retire(root: Path, kind: Kind) -> Path:
    """Trust the old generation of ``kind``'s CA no more, and delete its key; its key's path.
    The one that signs is never retired."""
    state = load(root)
    now = state[kind]
    if len(now.trusted) < 2:
        raise UsageError(
            f"no old {kind} CA to retire: only the one that signs is trusted",
            hint=f"start a rollover with: tether gateway ca add DIR {kind}",
        )
    oldest = min(now.trusted)
    if oldest == now.signing:
        raise UsageError(
            f"the old {kind} CA signs now: it cannot be retired",
            hint=f"sign with the new one first: tether gateway ca use DIR {kind}",
        )
    state[kind] = Generations(now.signing, (now.signing,))
    _save(root, state)  # trust ends here; the key is of no use after it
    key = key_path(root, kind, oldest)
    for path in (key, public(key)):
        path.unlink(missing_ok=True)
    return key


def _certify_signer(root: Path, host_ca: Path) -> None:
    """The signer's host key certified again, by ``host_ca``: signed aside, then put in
    place at once, so a signer's sshd never reads half a certificate."""
    signer_key = root / "signer" / "host_ed25519"
    work = Path(tempfile.mkdtemp(prefix=".ca-", dir=root))  # 0700, on the gateway's disk
    try:
        copy = work / "host.pub"
        copy.write_text(public(signer_key).read_text())
        certificate = keygen.sign(
            host_ca,
            copy,
            key_id="signer",
            principals=[SIGNER_PRINCIPAL],
            validity=SIGNER_CERT_VALIDITY,
            serial=next_serial(root / "serial"),
            host=True,
        )
        write_private(signer_key.with_name(signer_key.name + "-cert.pub"), certificate.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
