"""The package's imports, as its source spells them (every import statement, those under
TYPE_CHECKING and inside functions too): no circle, and the seams stay seams."""

from __future__ import annotations

import ast
from pathlib import Path

import tether

ROOT = Path(tether.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def graph() -> dict[str, set[str]]:
    """Each module of tether -> the modules of tether it imports."""
    modules = module_names()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from tether.transports import mux` imports the module tether.transports.mux;
                # `from tether.errors import UsageError`, the module tether.errors.
                found.update(f"{base}.{alias.name}" for alias in node.names)
        edges[module] = {m for name in found if (m := known(name)) and m != module}
    return edges


def a_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules along it, if there is any."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(edges[module]):
            if circle := visit(imported):
                return circle
        path.pop()
        done.add(module)
        return None

    for module in sorted(edges):
        if circle := visit(module):
            return circle
    return None


def reached(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for imported in edges[todo.pop()] - seen:
            seen.add(imported)
            todo.append(imported)
    return seen


def test_the_graph_is_read_from_the_source() -> None:
    edges = graph()
    assert "tether.connection" in edges["tether.tunnel"]
    assert "tether.transports.asyncssh" in edges["tether.transports"]  # imported in a function


def test_no_module_imports_one_that_imports_it_back() -> None:
    circle = a_circle(graph())
    assert circle is None, " -> ".join(circle or [])


def test_the_leaves_import_nothing_of_tether() -> None:
    edges = graph()
    for leaf in ("tether.states", "tether.tcp", "tether.errors"):
        assert edges[leaf] == set(), leaf


def test_a_connection_never_reaches_the_engine() -> None:
    """A connection's life talks to its tunnel through connection.Host, and the wire's status
    is built from the engine's snapshot type, not from the engine."""
    edges = graph()
    for module in ("tether.connection", "tether.socksserve", "tether.protocol"):
        assert "tether.tunnel" not in reached(edges, module), module


def test_no_command_imports_another() -> None:
    """What two commands share (flags, rendering, the listing) lives in a module of its own."""
    from tether.cli.app import COMMANDS

    edges = graph()
    commands = {module for module, _ in COMMANDS.values()}
    for command in commands:
        assert edges[command] & commands == set(), command


def layer(module: str) -> int:
    """0 the core (engine, transports, registry...), 1 what runs a process or a diagnosis (the
    modes, the Python API, diagnose, the gateway's processes), 2 the command line. The
    gateway's names, hops and relay addresses are core: a client's gw:// transport speaks them
    too."""
    if module in ("tether.__main__", "tether.cli") or module.startswith("tether.cli."):
        return 2
    core = ("tether.gateway", "tether.gateway.names", "tether.gateway.hops")
    if module in (*core, "tether.gateway.addresses"):
        return 0
    if module.startswith(("tether.modes", "tether.diagnose", "tether.gateway")):
        return 1
    if module == "tether.api":
        return 1
    return 0


def test_imports_run_down_the_layers() -> None:
    """The command line uses the modes and the core, the modes use the core, never the other
    way (the package's __init__ only names the API's entry points, lazily)."""
    edges = graph()
    up = [
        f"{module} -> {imported}"
        for module, imported_ones in edges.items()
        if module != "tether"
        for imported in imported_ones
        if layer(imported) > layer(module)
    ]
    assert up == []
