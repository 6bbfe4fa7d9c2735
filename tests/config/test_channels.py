"""Adapter choice: a provider whose settings are complete gets its real adapters, one with none of them set is a
sandbox, and a half-configured one stops start-up with a message naming what it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alerting.deliver.port import Channel, DeliveryError
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from config.channels import PROVIDERS, complete, provider_channels
from config.cli import main
from config.settings import Settings
from tests.channels.contract import make_message
from tests.fakes import wecom
from tests.fakes.server import serve_app
from tests.fakes.twilio import FakeTwilio, Paced

TWILIO = {
    "twilio_account_sid": "AC0123456789abcdef0123456789abcdef",
    "twilio_auth_token": "twilio-token",
    "twilio_from_number": "+15005550006",
}
WECOM = {
    "wecom_corp_id": wecom.CORP_ID,
    "wecom_secret": wecom.SECRET,
    "wecom_agent_id": wecom.AGENT_ID,
    "wecom_token": wecom.TOKEN,
    "wecom_aes_key": wecom.AES_KEY,
}
SMTP = {"smtp_host": "mail.example.org", "smtp_from": "duty@example.org"}
BROADCAST = {"broadcast_url": "https://gb.example.test/api", "broadcast_secret": "s" * 32}

INCOMPLETE = [
    ({"twilio_account_sid": TWILIO["twilio_account_sid"]}, "Twilio needs"),
    ({k: v for k, v in TWILIO.items() if k != "twilio_from_number"}, "Twilio needs"),
    ({"twilio_auth_token": "t"}, "Twilio needs"),
    ({"wecom_corp_id": wecom.CORP_ID}, "WeCom needs"),
    ({k: v for k, v in WECOM.items() if k != "wecom_aes_key"}, "WeCom needs"),
    ({"wecom_agent_id": 0}, "WeCom needs"),  # a zero agent id is given, not missing
    ({"smtp_host": "mail.example.org"}, "email needs"),
    ({"smtp_from": "duty@example.org"}, "email needs"),
    ({"broadcast_url": BROADCAST["broadcast_url"]}, "the broadcast gateway needs"),
    ({"broadcast_secret": BROADCAST["broadcast_secret"]}, "the broadcast gateway needs"),
]

MESSAGES = {
    "Twilio needs": "Twilio needs JIAOYING_TWILIO_ACCOUNT_SID, _AUTH_TOKEN and _FROM_NUMBER together",
    "WeCom needs": "WeCom needs JIAOYING_WECOM_CORP_ID, _SECRET, _AGENT_ID, _TOKEN and _AES_KEY together",
    "email needs": "email needs JIAOYING_SMTP_HOST and JIAOYING_SMTP_FROM together",
    "the broadcast gateway needs": "the broadcast gateway needs JIAOYING_BROADCAST_URL and _BROADCAST_SECRET together",
}


def settings(**values: Any) -> Settings:
    return Settings(database_url="sqlite+aiosqlite:///:memory:", public_url="https://jy.example.test", **values)


@pytest.fixture
async def built() -> AsyncIterator[list[dict[ChannelKind, Channel]]]:
    made: list[dict[ChannelKind, Channel]] = []
    yield made
    for chosen in made:
        for channel in chosen.values():
            await channel.close()


@pytest.mark.parametrize(("given", "needs"), INCOMPLETE)
def test_a_half_configured_provider_stops_start_up_naming_what_it_needs(given: dict[str, object], needs: str) -> None:
    with pytest.raises(ValueError, match="needs") as refused:
        provider_channels(settings(**given), ManualClock())
    assert str(refused.value) == MESSAGES[needs]


def test_a_half_configured_provider_is_refused_even_when_the_others_are_complete() -> None:
    with pytest.raises(ValueError, match="email needs"):
        provider_channels(settings(**TWILIO, **WECOM, smtp_host="mail.example.org"), ManualClock())


def test_the_first_half_configured_provider_is_the_one_named() -> None:
    with pytest.raises(ValueError, match="Twilio needs"):
        provider_channels(settings(twilio_auth_token="t", broadcast_url="https://gb.example.test"), ManualClock())


def test_empty_values_count_as_not_given() -> None:
    assert provider_channels(settings(twilio_account_sid="", smtp_host="", broadcast_secret=""), ManualClock()) == {}


async def test_nothing_configured_is_every_channel_a_sandbox(built: list[dict[ChannelKind, Channel]]) -> None:
    assert provider_channels(settings(), ManualClock()) == {}
    chosen = complete({}, None)
    built.append(chosen)
    assert set(chosen) == set(ChannelKind)
    assert all(c.sandbox for c in chosen.values())


async def test_complete_providers_get_their_real_adapters_with_their_pacing(
    built: list[dict[ChannelKind, Channel]],
) -> None:
    chosen = provider_channels(
        settings(
            **TWILIO,
            **WECOM,
            **SMTP,
            **BROADCAST,
            twilio_sms_per_second=12.0,
            twilio_calls_per_second=2.0,
            wecom_per_second=7.0,
            wecom_per_member_per_minute=9,
            smtp_per_second=3.0,
            broadcast_per_second=4.0,
        ),
        ManualClock(),
    )
    built.append(chosen)
    assert {k: (c.provider, c.sandbox) for k, c in chosen.items()} == {
        ChannelKind.SMS: ("twilio", False),
        ChannelKind.VOICE: ("twilio", False),
        ChannelKind.WECOM: ("wecom", False),
        ChannelKind.EMAIL: ("smtp", False),
        ChannelKind.BROADCAST: ("broadcast", False),
    }
    limits = {k: c.limits for k, c in chosen.items()}
    assert (limits[ChannelKind.SMS].concurrency, limits[ChannelKind.SMS].per_second, limits[ChannelKind.SMS].burst) == (
        50,
        12.0,
        12,
    )
    assert (limits[ChannelKind.VOICE].concurrency, limits[ChannelKind.VOICE].per_second) == (20, 2.0)
    assert limits[ChannelKind.VOICE].burst == 2
    assert limits[ChannelKind.WECOM].per_second == 7.0
    assert limits[ChannelKind.WECOM].per_recipient_per_minute == 9
    assert (limits[ChannelKind.EMAIL].concurrency, limits[ChannelKind.EMAIL].per_second) == (4, 3.0)
    assert (limits[ChannelKind.BROADCAST].concurrency, limits[ChannelKind.BROADCAST].per_second) == (20, 4.0)
    # SMS and voice answer on one /webhooks/twilio
    assert chosen[ChannelKind.SMS].webhooks == chosen[ChannelKind.VOICE].webhooks
    # manual tasks are carried by the real WeCom and SMS adapters
    everything = complete(chosen, None)
    built.append({ChannelKind.MANUAL: everything[ChannelKind.MANUAL]})
    assert not everything[ChannelKind.MANUAL].sandbox


async def test_one_complete_provider_leaves_the_others_sandboxes(built: list[dict[ChannelKind, Channel]]) -> None:
    chosen = provider_channels(settings(**SMTP), ManualClock())
    built.append(chosen)
    assert list(chosen) == [ChannelKind.EMAIL]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("JIAOYING_TWILIO_ACCOUNT_SID", "AC1"), ("JIAOYING_WECOM_AES_KEY", "k"), ("JIAOYING_SMTP_FROM", "a@b.c")],
)
def test_the_environment_variables_keep_their_names(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match="needs"):
        provider_channels(Settings(), ManualClock())


def test_every_provider_requires_only_settings_of_its_own_and_they_are_all_settings() -> None:
    for provider in PROVIDERS:
        assert set(provider.required) <= set(provider.model_fields), provider
        assert set(provider.model_fields) <= set(Settings.model_fields), provider
    claimed = [name for provider in PROVIDERS for name in provider.model_fields]
    assert len(claimed) == len(set(claimed))  # no setting belongs to two providers


def test_a_command_refuses_to_start_half_configured_with_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("JIAOYING_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'jy.db'}")
    monkeypatch.setenv("JIAOYING_TWILIO_ACCOUNT_SID", "AC0123")
    result = CliRunner().invoke(main.app, ["account", "list"])
    assert result.exit_code == 2, result.output
    assert " ".join(result.stderr.split()) == f"error: {MESSAGES['Twilio needs']}"


async def test_a_twilio_create_slower_than_the_configured_timeout_is_a_retryable_timeout_though_it_was_created(
    built: list[dict[ChannelKind, Channel]],
) -> None:
    """JIAOYING_TWILIO_TIMEOUT_S reaches the adapters: Twilio answering later than it is a timeout to retry, and the
    fake's own log shows why the README warns that such a retry can repeat the text (Twilio did create it)."""
    fake = FakeTwilio(paced=Paced(latency_s=1.5))
    async with serve_app(fake.app) as base_url:
        credentials = {**TWILIO, "twilio_account_sid": fake.account_sid, "twilio_auth_token": fake.auth_token}
        credentials["twilio_base_url"] = base_url
        patient = provider_channels(settings(**credentials), ManualClock())
        hasty = provider_channels(settings(**credentials, twilio_timeout_s=0.3), ManualClock())
        built.extend([patient, hasty])
        with pytest.raises(DeliveryError) as failed:
            await hasty[ChannelKind.SMS].send(make_message(ChannelKind.SMS))
        receipt = await patient[ChannelKind.SMS].send(make_message(ChannelKind.SMS))
    assert (failed.value.code, failed.value.retryable) == ("timeout", True)
    assert receipt.provider_id is not None
    assert len(fake.created("Messages")) == 2  # the timed-out one was created all the same


def test_the_twilio_timeout_must_be_positive_and_bounded() -> None:
    for bad in (0, -1, 121):
        with pytest.raises(ValueError, match="twilio_timeout_s"):
            settings(**TWILIO, twilio_timeout_s=bad)
