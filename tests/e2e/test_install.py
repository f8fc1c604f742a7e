"""A real install: the sdist and the wheel built from the checkout, the wheel installed into a
fresh virtualenv by an unprivileged user, and tether run from there, far from the checkout.

It proves that the package ships everything it needs (its dependencies come from the package
index, as for any user) and nothing from the checkout: the commands run in a directory of
their own, with an environment that names neither the checkout nor its venv.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import tether

CHECKOUT = Path(__file__).resolve().parents[2]
# Building needs hatchling from the package index, and installing the wheel its dependencies.
INSTALL_DEADLINE = 600
# What pip needs to reach the index as configured on this machine, passed on; nothing else is.
PIP_ENV = ("PIP_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class User:
    """Who runs the install: this user if it is not root, else `nobody`."""

    def __init__(self) -> None:
        entry = pwd.getpwuid(os.geteuid()) if os.geteuid() != 0 else pwd.getpwnam("nobody")
        self.name = entry.pw_name
        self.uid = entry.pw_uid
        self.gid = entry.pw_gid

    def argv(self, argv: Sequence[str]) -> list[str]:
        if os.geteuid() != 0:
            return list(argv)
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to run as another user"
        ids = [f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return [setpriv, *ids, "--", *argv]


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory the installing user owns, outside the test's own (root's, mode 0700)."""
    user = User()
    directory = Path(tempfile.mkdtemp(prefix="tether-install-", dir="/tmp"))
    try:
        os.chown(directory, user.uid, user.gid)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def environment(user: User, home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key.startswith(PIP_ENV) or key in ("LANG", "LC_ALL")
    }
    env.update(
        HOME=str(home),
        USER=user.name,
        LOGNAME=user.name,
        PATH="/usr/local/bin:/usr/bin:/bin",
        TETHER_RUNTIME_DIR=str(home / "run"),
        TMPDIR=str(home),
    )
    return env


def attempt(user: User, argv: Sequence[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        user.argv(argv),
        cwd=home,  # far from the checkout: nothing of it can be imported from here
        env=environment(user, home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_DEADLINE,
    )


def run(user: User, argv: Sequence[str], home: Path) -> str:
    done = attempt(user, argv, home)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def make_venv(user: User, venv: Path, home: Path) -> str:
    """A fresh venv, made by the user with the interpreter running the tests (its installation,
    not its venv) if the user can use it, else with Debian's; returns the one used."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    failures = []
    for python in (base, "/usr/bin/python3"):
        done = attempt(user, [python, "-m", "venv", str(venv)], home)
        if done.returncode == 0:
            return python
        failures.append(f"{python}: {done.stderr.strip()}")
        shutil.rmtree(venv, ignore_errors=True)
    raise AssertionError(f"{user.name} cannot make a venv: {failures}")


@pytest.mark.timeout(2 * INSTALL_DEADLINE)
def test_the_wheel_installs_and_runs_as_an_unprivileged_user(home: Path) -> None:
    dist = home / "dist"
    build = [sys.executable, "-m", "build", "--outdir", str(dist), str(CHECKOUT)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=INSTALL_DEADLINE)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dist.glob("tether-*.whl")
    (sdist,) = dist.glob("tether-*.tar.gz")
    assert wheel.name == f"tether-{tether.__version__}-py3-none-any.whl"

    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"} <= names
    assert "src/tether/cli/app.py" in names
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/", 1)[0] for name in archive.namelist()}
        assert "tether/py.typed" in archive.namelist()
    # The package and its metadata: no tests, no benchmarks, no build leftovers.
    assert top == {"tether", f"tether-{tether.__version__}.dist-info"}

    user = User()
    for path in (dist, *dist.iterdir()):
        os.chown(path, user.uid, user.gid)
    venv = home / "venv"
    make_venv(user, venv, home)
    run(user, [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], home)

    bin_tether = str(venv / "bin" / "tether")
    assert run(user, [bin_tether, "--version"], home) == f"tether {tether.__version__}\n"
    where = run(
        user, [str(venv / "bin" / "python"), "-c", "import tether; print(tether.__file__)"], home
    )
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel's, not the checkout's
    demo = run(user, [bin_tether, "demo"], home)
    assert demo.rstrip().endswith("demo ok."), demo
    assert "SHA-256 matches" in demo
    runtime = home / "run"
    assert not runtime.exists() or not list(runtime.iterdir())  # the demo leaves nothing behind


@pytest.mark.timeout(2 * INSTALL_DEADLINE)
def test_another_user_builds_from_a_checkout_without_writing_to_it(home: Path) -> None:
    # A checkout that root owns, as `make demo` (run as root) leaves one: pip builds it in place,
    # and a backend that wrote into the tree (setuptools' egg-info) failed for everyone else.
    checkout = home / "checkout"
    ignore = shutil.ignore_patterns(".git", ".venv*", "*_cache", "__pycache__", "dist", "build")
    shutil.copytree(CHECKOUT, checkout, ignore=ignore)
    (checkout / "src" / "tether.egg-info").mkdir(exist_ok=True)  # a setuptools build left it
    for path in (checkout, *checkout.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in checkout.rglob("*"))

    user = User()
    venv = home / "venv"
    make_venv(user, venv, home)
    wheels = home / "wheels"
    pip = [str(venv / "bin" / "pip"), "wheel", "--no-deps", "--quiet", "-w", str(wheels)]
    run(user, [*pip, str(checkout)], home)

    assert [p.name for p in wheels.iterdir()] == [f"tether-{tether.__version__}-py3-none-any.whl"]
    assert sorted((str(p), p.stat().st_mtime_ns) for p in checkout.rglob("*")) == before
