"""Where `jiaoying demo --real-local` gets its provider fakes: the package tests.fakes of an editable install, and
one clear line naming what is missing when it is not there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from config.cli.common import USER_ERRORS
from config.demo.real_local import FakesMissing, import_fakes

CHECKOUT = Path(__file__).resolve().parents[3]
FAKES = ("tests.fakes.broadcast", "tests.fakes.server", "tests.fakes.smtp", "tests.fakes.twilio", "tests.fakes.wecom")


def _editable_from_this_checkout() -> bool:
    # every installed copy's metadata: a jiaoying.egg-info left in the checkout would otherwise hide the venv's
    for dist in metadata.distributions(name="jiaoying"):
        info = json.loads(dist.read_text("direct_url.json") or "{}")
        if info.get("dir_info", {}).get("editable") and info.get("url") == CHECKOUT.as_uri():
            return True
    return False


@pytest.mark.skipif(not _editable_from_this_checkout(), reason="jiaoying is not installed editable from this checkout")
def test_an_editable_install_imports_the_fakes_from_anywhere_and_nothing_else_of_the_tests(tmp_path: Path) -> None:
    script = (
        "import importlib.util\n"
        "from config.demo.real_local import import_fakes\n"
        "print(import_fakes()[3].__file__)\n"
        "print(importlib.util.find_spec('tests.conftest'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{done.stderr}\n(an install older than the tests.fakes package? pip install -e .)"
    twilio_file, conftest = done.stdout.splitlines()
    assert Path(twilio_file) == CHECKOUT / "tests" / "fakes" / "twilio.py"
    assert conftest == "None"  # only the fakes are packaged, not the tests


def test_the_fakes_are_the_package_tests_fakes() -> None:
    broadcast, server, smtp, twilio, wecom = import_fakes()
    assert [m.__name__ for m in (broadcast, server, smtp, twilio, wecom)] == list(FAKES)
    assert twilio.FakeTwilio and wecom.FakeWeCom and broadcast.FakeBroadcastGateway and smtp.FakeSmtpServer


def test_without_aiosmtpd_it_names_aiosmtpd_and_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FAKES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in ("aiosmtpd", "aiosmtpd.controller", "aiosmtpd.smtp"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(FakesMissing) as refused:
        import_fakes()
    assert str(refused.value) == (
        "--real-local needs aiosmtpd, which the provider fakes (tests.fakes) import: "
        "install the development extras, pip install -e '.[dev]' in the source checkout"
    )


def test_without_the_fakes_it_says_they_come_with_the_source_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FAKES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "tests.fakes", None)
    with pytest.raises(FakesMissing) as refused:
        import_fakes()
    assert str(refused.value) == (
        "--real-local needs the provider fakes (the package tests.fakes), which come with the source checkout: "
        "pip install -e '.[dev]' in the source checkout"
    )


def test_the_command_line_reports_it_in_one_line_not_a_traceback() -> None:
    assert issubclass(FakesMissing, USER_ERRORS)
