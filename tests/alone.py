"""Tests marked `alone` run with no other test beside them, even under pytest-xdist.

A test that measures how late a real server is (the storm test) measures the machine instead when another worker
starts a browser or a PostgreSQL server on the second core at the same moment. The workers of one run share two
lock files: every test holds the `run` lock shared while it runs; an `alone` test first closes the `gate` (new tests
wait there), then takes the `run` lock exclusively, which it gets once the tests already running have finished.
Without xdist there is nobody beside it and nothing is locked.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "alone: run with no other test running beside it (tests/alone.py)")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: pytest-timeout's clock starts after the wait
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        yield
        return
    base = Path(tempfile.gettempdir()) / f"jiaoying-tests-{run_id}"
    with open(f"{base}.gate", "a") as gate, open(f"{base}.run", "a") as running:
        if item.get_closest_marker("alone"):
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(running, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(running, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield  # closing the files lets go of the locks
