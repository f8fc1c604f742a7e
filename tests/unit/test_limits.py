"""Raising a spawned child's descriptor limit (limits.py), and only the child's."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


LOWERED = 256  # the caller's soft descriptor limit here

SCRIPT = """
import json, resource, subprocess, sys
from tether.limits import raise_nofile
child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                         stdin=subprocess.PIPE)
before = resource.prlimit(child.pid, resource.RLIMIT_NOFILE)[0]
raise_nofile(child.pid)
after = resource.prlimit(child.pid, resource.RLIMIT_NOFILE)[0]
child.stdin.close()
child.wait()
raise_nofile(child.pid)  # gone: nothing to raise, and no error
print(json.dumps([before, after, resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))
"""


def test_a_child_gets_the_hard_limit_and_the_caller_keeps_its_own() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # A machine whose hard limit is this low cannot show the raise: said, not skipped.
    assert hard == resource.RLIM_INFINITY or hard > LOWERED, f"the hard limit is {hard}"
    done = subprocess.run(
        ["prlimit", f"--nofile={LOWERED}:{hard}", "--", sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [LOWERED, hard, LOWERED]
