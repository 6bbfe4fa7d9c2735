"""Start-up as a county's administrator meets it: no serving on the placeholder secret, a warning for a short one,
mistyped variables named with the setting they meant, and a bad setting named without echoing its value."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import PLACEHOLDER_SECRET, Settings
from config.startup import SecretRefused, check_secret, describe, unknown_variables
from tests.fakes.server import free_port

JIAOYING = str(Path(sys.executable).parent / "jiaoying")  # the installed command, as a county runs it
GOOD_SECRET = "startup-test-secret-0123456789-abcdef"
SHORT_SECRET = "short-secret"


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Nothing of the developer's own JIAOYING_* settings; a database in tmp_path, no TOML file."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("JIAOYING_")}
    env.update(
        JIAOYING_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'jiaoying.db'}",
        JIAOYING_CONFIG=str(tmp_path / "no-such-config.toml"),
        JIAOYING_AUDIT_KEY=os.environ.get("JIAOYING_AUDIT_KEY", "startup-test-audit-key-0123456789-abcdef"),
        JIAOYING_LOG_LEVEL="info",
    )
    env.update(settings)
    return env


def jiaoying(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = environment(tmp_path, **settings)
    return subprocess.run([JIAOYING, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("JIAOYING_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "no-such-config.toml"))
    return monkeypatch


def test_serve_refuses_the_placeholder_secret_says_how_to_set_one_and_writes_nothing(tmp_path: Path) -> None:
    port = free_port()
    done = jiaoying(tmp_path, "serve", "--port", str(port))  # JIAOYING_SECRET_KEY unset: the placeholder
    assert done.returncode == 2, done.stderr
    assert "refusing to start" in done.stderr
    assert f"JIAOYING_SECRET_KEY is still the placeholder '{PLACEHOLDER_SECRET}'" in done.stderr
    assert "export JIAOYING_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" in done.stderr
    assert '"event": "settings.secret_refused"' in done.stderr  # the log says it too, for whoever reads only the log
    assert not (tmp_path / "jiaoying.db").exists()  # refused before the database was touched


def test_serve_refuses_an_empty_secret(tmp_path: Path) -> None:
    done = jiaoying(tmp_path, "serve", "--port", str(free_port()), JIAOYING_SECRET_KEY="   ")
    assert done.returncode == 2, done.stderr
    assert "JIAOYING_SECRET_KEY is empty" in done.stderr
    assert not (tmp_path / "jiaoying.db").exists()


def test_engine_run_refuses_the_placeholder_too(tmp_path: Path) -> None:
    env = environment(tmp_path, JIAOYING_SECRET_KEY=PLACEHOLDER_SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "config.engine_process", "run", "--sandbox-devices"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 2, done.stderr
    assert "still the placeholder" in done.stderr
    assert not (tmp_path / "jiaoying.db").exists()


async def test_engine_run_with_a_short_secret_warns_and_still_runs(tmp_path: Path) -> None:
    env = environment(tmp_path, JIAOYING_SECRET_KEY=SHORT_SECRET)
    log = tmp_path / "engine.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "config.engine_process", "run", "--sandbox-devices", "--poll", "0.2"),
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=out,
        )
    try:
        async with asyncio.timeout(60):
            while "engine running" not in log.read_text(errors="replace"):
                assert process.returncode is None, log.read_text(errors="replace")
                await asyncio.sleep(0.2)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await process.wait()
    text = log.read_text(errors="replace")
    assert f"warning: JIAOYING_SECRET_KEY is only {len(SHORT_SECRET)} characters" in text
    assert '"event": "settings.secret_short"' in text
    assert SHORT_SECRET not in text  # said how long, never what it is


def test_a_mistyped_variable_is_named_at_start_up_with_the_setting_it_meant(tmp_path: Path) -> None:
    # serve stops at the secret, after the settings were read: the warnings come first either way
    done = jiaoying(tmp_path, "serve", "--port", str(free_port()), JIAOYING_TWILIO_SMS_PER_SEC="5")
    assert (
        "warning: JIAOYING_TWILIO_SMS_PER_SEC is not a jiaoying setting and is ignored; "
        "did you mean JIAOYING_TWILIO_SMS_PER_SECOND?"
    ) in done.stderr
    assert '"closest": "JIAOYING_TWILIO_SMS_PER_SECOND"' in done.stderr


def test_api_keys_in_the_wrong_form_say_a_json_list_is_expected_without_echoing_the_key(tmp_path: Path) -> None:
    done = jiaoying(
        tmp_path,
        "serve",
        "--port",
        str(free_port()),
        JIAOYING_SECRET_KEY=GOOD_SECRET,
        JIAOYING_API_KEYS="k9-private:duty",
    )
    assert done.returncode == 2
    assert "configuration error:" in done.stderr
    assert 'JIAOYING_API_KEYS: a JSON list of "key:role" strings is expected' in done.stderr
    assert "k9-private" not in done.stderr + done.stdout
    assert not (tmp_path / "jiaoying.db").exists()


def test_unknown_variables_are_found_whatever_their_case_and_only_close_names_are_offered() -> None:
    environ = {
        "JIAOYING_DATABSE_URL": "sqlite+aiosqlite:///x.db",
        "jiaoying_public_url": "https://jy.example.test",  # read case-insensitively, so known
        "JIAOYING_CONFIG": "jiaoying.toml",  # names the TOML file, not a field
        "JIAOYING_TEST_POSTGRES": "all",  # the test suite's own switch
        "JIAOYING_WEATHER": "rain",
        "PATH": "/usr/bin",
    }
    found = {v.name: v.closest for v in unknown_variables(environ)}
    assert found == {"JIAOYING_DATABSE_URL": "JIAOYING_DATABASE_URL", "JIAOYING_WEATHER": None}


def test_every_setting_is_a_known_variable() -> None:
    # a setting added later is known at once: the list comes from the settings themselves
    environ = {"JIAOYING_" + name.upper(): "x" for name in Settings.model_fields}
    assert unknown_variables(environ) == []


def test_check_secret_refuses_the_placeholder_and_warns_on_a_short_one() -> None:
    with pytest.raises(SecretRefused, match="still the placeholder"):
        check_secret(Settings(secret_key=PLACEHOLDER_SECRET))
    with pytest.raises(SecretRefused, match="is empty"):
        check_secret(Settings(secret_key=""))
    assert check_secret(Settings(secret_key=SHORT_SECRET)) == (
        "JIAOYING_SECRET_KEY is only 12 characters; a secret shorter than 32 can be guessed from one answer link. "
        "Set JIAOYING_SECRET_KEY to a long random secret kept outside the source, the same for every process of "
        "this county, e.g. export JIAOYING_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )
    assert check_secret(Settings(secret_key=GOOD_SECRET)) is None


def test_a_bad_setting_is_named_as_it_is_set_and_its_value_stays_out(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("JIAOYING_SMTP_PORT", "port-hunter2")
    clean_environment.setenv("JIAOYING_API_KEYS", "k1:duty,k2:auditor")
    with pytest.raises(ValidationError) as refused:
        Settings()
    lines = describe(refused.value)
    assert lines == [
        'JIAOYING_API_KEYS: a JSON list of "key:role" strings is expected, '
        'e.g. JIAOYING_API_KEYS=\'["k1:duty","k2:auditor"]\'',
        "JIAOYING_SMTP_PORT: Input should be a valid integer, unable to parse string as an integer",
    ]
    assert "hunter2" not in str(refused.value)


def test_api_keys_as_a_json_list_or_empty_are_read(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("JIAOYING_API_KEYS", '["k1:duty", "k2:township:500238101"]')
    assert Settings().api_keys == ["k1:duty", "k2:township:500238101"]
    clean_environment.setenv("JIAOYING_API_KEYS", "")
    assert Settings().api_keys == []


def test_sending_the_first_wave_from_the_command_line_refuses_the_placeholder_too(tmp_path: Path) -> None:
    done = jiaoying(
        tmp_path,
        *("alert", "send", "--level", "red", "--hazard", "暴雨", "--title", "暴雨红色预警", "--text", "强降雨"),
        *("--unit", "500238101", "--send-now"),
    )
    assert done.returncode == 2, done.stderr
    assert "still the placeholder" in done.stderr
    assert not (tmp_path / "jiaoying.db").exists()  # nothing issued, nothing queued
