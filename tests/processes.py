"""Process identities for liveness tests: one of a process that really ran on this machine and has exited."""

from __future__ import annotations

import subprocess
import sys

from alerting.people.liveness import ProcessIdentity, start_ticks


def exited_process() -> ProcessIdentity:
    """The identity a process had while it ran here; it has exited by the time this returns."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = start_ticks(child.pid)
        assert started is not None, "no /proc here: the same-machine check cannot be tested"
        identity = ProcessIdentity(ProcessIdentity.current().host, child.pid, started)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    return identity
