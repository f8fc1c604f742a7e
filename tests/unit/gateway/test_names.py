"""Names that reach sshd configs, principals files and certificates."""

from __future__ import annotations

import pytest

from tether.errors import UsageError
from tether.gateway.names import parse_name, parse_target_path, target_principal


@pytest.mark.parametrize("name", ["lab", "db-1", "a_b", "0", "x" * 32])
def test_plain_names_pass(name: str) -> None:
    assert parse_name(name, what="site") == name


@pytest.mark.parametrize(
    "name",
    ["", "-x", "_x", "Lab", "a b", "a,b", "a\nb", "a*", "a/b", "a:b", "x" * 33, "é", "a\x1b[2J"],
)
def test_anything_else_is_refused_with_its_flag(name: str) -> None:
    with pytest.raises(UsageError, match=r"^site: not a name"):
        parse_name(name, what="site")


def test_a_target_path_is_two_names() -> None:
    assert parse_target_path("lab/db") == ("lab", "db")
    assert target_principal("lab", "db") == "target:lab/db"
    for bad in ("lab", "lab/db/x", "/db", "lab/"):
        with pytest.raises(UsageError):
            parse_target_path(bad)
