"""Usage parsing (from the recorded real sessions), prices, periods and budget arithmetic."""

from __future__ import annotations

import calendar
from typing import Any

import pytest
from pydantic import ValidationError

from relay.core.credentials import Identity
from relay.core.usage import (
    DEFAULT_PRICES,
    KINDS,
    TRANSCRIPTION_COMPLETED,
    Budget,
    CounterKey,
    Price,
    PriceOverride,
    PriceTable,
    Spend,
    UsageLedger,
    budget_keys,
    first_exceeded,
    response_usage,
    transcription_usage,
    window,
)
from relay.settings import Settings
from tests.support.recordings import load, recording_files, require_recordings

PRICES = PriceTable.with_overrides({})


def _received(event_type: str) -> list[tuple[str, dict[str, Any]]]:
    require_recordings()
    return [
        (path.name, i["data"])
        for path in recording_files()
        for i in load(path)
        if i["direction"] == "received" and i["data"]["type"] == event_type
    ]


# ---------------------------------------------------------------------------------- parsing
def test_every_recorded_response_splits_into_exclusive_kinds_that_add_up() -> None:
    done = _received("response.done")
    assert len(done) == 8
    for name, event in done:
        raw = event["response"]["usage"]
        usage = response_usage(raw, "gpt-realtime", PRICES)
        assert usage is not None, name
        tokens = {kind: usage.tokens.get(kind, 0) for kind in KINDS}
        assert usage.total_tokens == raw["total_tokens"], name
        inputs = tokens["input_text"] + tokens["input_audio"] + tokens["input_image"] + tokens["input_cached"]
        assert inputs == raw["input_tokens"], name
        assert tokens["output_text"] + tokens["output_audio"] == raw["output_tokens"], name
        assert tokens["input_cached"] == raw["input_token_details"]["cached_tokens"], name
        assert usage.model == "gpt-realtime"
        assert usage.cost_usd > 0


def test_cached_tokens_are_taken_out_of_their_modality() -> None:
    """The recorded tool round: text_tokens 103 of which 64 cached (cached_tokens_details)."""
    [_, second] = [e for name, e in _received("response.done") if name == "openai-tool-call-round.yaml"]
    usage = response_usage(second["response"]["usage"], "gpt-realtime", PRICES)
    assert usage is not None
    assert dict(usage.tokens) == {"input_text": 39, "input_cached": 64, "output_text": 13}
    assert usage.cost_usd == pytest.approx((39 * 4.0 + 64 * 0.4 + 13 * 16.0) / 1e6)


def test_cost_of_a_recorded_spoken_answer() -> None:
    """openai-audio-in-server-vad: 14 text + 27 audio in, 28 text + 136 audio out."""
    [(_, event)] = [e for e in _received("response.done") if e[0] == "openai-audio-in-server-vad.yaml"]
    usage = response_usage(event["response"]["usage"], "gpt-realtime-2025-08-28", PRICES)
    assert usage is not None
    assert dict(usage.tokens) == {"input_text": 14, "input_audio": 27, "output_text": 28, "output_audio": 136}
    assert usage.cost_usd == pytest.approx((14 * 4 + 27 * 32 + 28 * 16 + 136 * 64) / 1e6)
    mini = response_usage(event["response"]["usage"], "gpt-realtime-mini", PRICES)
    assert mini is not None
    assert mini.model == "gpt-realtime-mini"
    assert mini.cost_usd == pytest.approx((14 * 0.6 + 27 * 10 + 28 * 2.4 + 136 * 20) / 1e6)


def test_recorded_duration_transcription_is_priced_per_minute() -> None:
    [(_, event)] = _received(TRANSCRIPTION_COMPLETED)
    assert event["usage"] == {"type": "duration", "seconds": 3}
    usage = transcription_usage(event["usage"], "gpt-realtime-whisper", PRICES)
    assert usage is not None
    assert usage.tokens == {}
    assert usage.seconds == 3.0
    assert usage.cost_usd == pytest.approx(3 / 60 * 0.017)


def test_token_priced_transcription() -> None:
    raw = {
        "type": "tokens",
        "total_tokens": 120,
        "input_tokens": 100,
        "input_token_details": {"text_tokens": 10, "audio_tokens": 90},
        "output_tokens": 20,
    }
    usage = transcription_usage(raw, "gpt-4o-mini-transcribe", PRICES)
    assert usage is not None
    assert dict(usage.tokens) == {"input_text": 10, "input_audio": 90, "output_text": 20}
    assert usage.cost_usd == pytest.approx((10 * 1.25 + 90 * 3.0 + 20 * 5.0) / 1e6)


@pytest.mark.parametrize(
    "raw",
    [None, "nope", {"type": "duration", "seconds": -1}, {"type": "duration", "seconds": float("nan")}],
)
def test_absent_or_broken_transcription_usage_counts_nothing(raw: Any) -> None:
    assert transcription_usage(raw, "gpt-4o-transcribe", PRICES) is None


def test_usage_without_details() -> None:
    """Older or partial shapes: cached tokens come out of text first, then audio."""
    usage = response_usage(
        {
            "total_tokens": 60,
            "input_tokens": 50,
            "output_tokens": 10,
            "input_token_details": {"text_tokens": 5, "audio_tokens": 45, "cached_tokens": 20},
        },
        "gpt-realtime",
        PRICES,
    )
    assert usage is not None
    assert dict(usage.tokens) == {"input_audio": 30, "input_cached": 20, "output_text": 10}
    cost = (30 * 32 + 5 * 0.4 + 15 * 0.4 + 10 * 16) / 1e6
    assert usage.cost_usd == pytest.approx(cost)
    bare = response_usage({"input_tokens": 7, "output_tokens": 3}, "gpt-realtime", PRICES)
    assert bare is not None
    assert dict(bare.tokens) == {"input_text": 7, "output_text": 3}
    assert response_usage(None, "gpt-realtime", PRICES) is None  # response.created: usage null


def test_ledger_counts_responses_and_transcriptions_only() -> None:
    ledger = UsageLedger(PRICES)
    for path in recording_files():
        for interaction in load(path):
            if interaction["direction"] == "received":
                event = interaction["data"]
                model = "gpt-realtime-whisper" if event["type"] == TRANSCRIPTION_COMPLETED else "gpt-realtime"
                ledger.record(event["type"], event, model)
    totals = [e["response"]["usage"]["total_tokens"] for _, e in _received("response.done")]
    assert ledger.total_tokens == sum(totals) == 917
    assert ledger.responses == 8
    assert ledger.transcriptions == 1
    summary = ledger.summary()
    assert summary["tokens_total"] == 917
    assert summary["transcription_s"] == 3.0
    assert summary["cost_usd"] == pytest.approx(ledger.cost_usd, abs=1e-6)
    assert set(summary["tokens"]) <= set(KINDS)


# ---------------------------------------------------------------------------------- prices
def test_model_names_resolve_to_the_table_or_other() -> None:
    assert PRICES.lookup("gpt-realtime-2025-08-28") == ("gpt-realtime", DEFAULT_PRICES["gpt-realtime"])
    assert PRICES.lookup("gpt-realtime-mini-2025-10-06")[0] == "gpt-realtime-mini"
    assert PRICES.lookup("gpt-realtime-1.5")[0] == "gpt-realtime-1.5"
    label, price = PRICES.lookup("my-azure-deployment")
    assert label == "other"
    # An unlisted model costs the table's highest price of each kind: budgets cannot be dodged.
    assert price.input_audio == 32.0
    assert price.output_text == 24.0
    assert price.per_minute == 0.017
    assert PRICES.lookup(None)[0] == "other"


def test_overrides_merge_over_the_built_in_prices() -> None:
    table = PriceTable.with_overrides(
        {
            "gpt-realtime": PriceOverride(input_audio=30.0),
            "my-deployment": PriceOverride(input_text=1.0, output_audio=2.0),
            "default": PriceOverride(input_audio=1.0),
        }
    )
    assert table.lookup("gpt-realtime")[1] == Price(4.0, 30.0, 5.0, 0.4, 0.4, 0.5, 16.0, 64.0)
    assert table.lookup("my-deployment") == ("my-deployment", Price(input_text=1.0, output_audio=2.0))
    assert table.lookup("unknown")[1].input_audio == 1.0
    assert table.as_json()["models"]["my-deployment"]["output_audio"] == 2.0


def test_prices_are_validated_in_settings() -> None:
    settings = Settings(prices={"gpt-realtime": {"input_audio": 30}})
    assert settings.prices["gpt-realtime"].input_audio == 30
    with pytest.raises(ValidationError):
        Settings(prices={"gpt-realtime": {"input_audo": 30}})
    with pytest.raises(ValidationError):
        Settings(prices={"gpt-realtime": {"input_audio": -1}})


# ---------------------------------------------------------------------------------- periods
def test_windows_are_aligned_so_every_replica_agrees() -> None:
    now = calendar.timegm((2026, 12, 2, 22, 38, 22)) + 0.5
    assert window("minute", now) == (now - 22.5, now + 37.5)
    assert window("hour", now) == (now - 38 * 60 - 22.5, now + 21 * 60 + 37.5)
    midnight = calendar.timegm((2026, 12, 3, 0, 0, 0))
    assert window("day", now) == (midnight - 86400, midnight)  # days reset at 00:00 UTC
    assert window("day", midnight) == (midnight, midnight + 86400)  # a window starts inclusive


# ---------------------------------------------------------------------------------- budgets
def test_budget_format_is_validated() -> None:
    Budget(scope="identity", period="day", max_cost_usd=5.0)
    Budget(scope="group", group="acme", period="hour", max_tokens=200_000)
    bad: list[dict[str, Any]] = [
        {"scope": "identity", "period": "day"},  # no limit
        {"scope": "identity", "period": "day", "max_tokens": 1, "max_cost_usd": 1.0},  # two
        {"scope": "identity", "period": "week", "max_tokens": 1},
        {"scope": "tenant", "period": "day", "max_tokens": 1},
        {"scope": "identity", "group": "acme", "period": "day", "max_tokens": 1},
        {"scope": "group", "identity": "token:x", "period": "day", "max_tokens": 1},
        {"scope": "identity", "period": "day", "max_tokens": 0},
        {"scope": "identity", "period": "day", "max_cost_usd": float("inf")},
        {"scope": "identity", "period": "day", "max_tokens": 1, "max_cost": 1},
    ]
    for entry in bad:
        with pytest.raises(ValidationError):
            Budget(**entry)


def test_budgets_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RELAY_BUDGETS",
        '[{"scope": "identity", "period": "day", "max_cost_usd": 5},'
        ' {"scope": "group", "group": "acme", "period": "hour", "max_tokens": 200000}]',
    )
    settings = Settings()
    assert [(b.scope, b.period, b.limit) for b in settings.budgets] == [
        ("identity", "day", 5.0),
        ("group", "hour", 200000.0),
    ]


def test_which_budgets_apply_to_whom() -> None:
    general = Budget(scope="identity", period="day", max_cost_usd=5.0)
    vip = Budget(scope="identity", identity="jwt:acme/vip", period="day", max_cost_usd=50.0)
    hourly = Budget(scope="identity", period="hour", max_tokens=1000)
    acme = Budget(scope="group", group="acme", period="hour", max_tokens=200_000)
    groups = Budget(scope="group", period="day", max_cost_usd=100.0)
    rules = [general, vip, hourly, acme, groups]

    alice = budget_keys(rules, Identity("alice", "acme"))
    assert {limit.budget for limit in alice.limits} == {general, hourly, acme, groups}
    assert len(alice.counters) == 6  # identity and group, every period (for /admin/usage)
    vip_keys = budget_keys(rules, Identity("vip", "acme"))
    assert {limit.budget for limit in vip_keys.limits} == {vip, hourly, acme, groups}  # vip replaces general
    app = budget_keys(rules, Identity("0123456789ab", kind="token"))  # no group
    assert {limit.budget for limit in app.limits} == {general, hourly}
    bob = budget_keys(rules, Identity("bob", "globex"))
    assert {limit.budget for limit in bob.limits} == {general, hourly, groups}
    assert CounterKey("group", "globex", "day") in bob.checked


def test_the_exceeded_limit_that_resets_last_is_named() -> None:
    now = calendar.timegm((2026, 12, 2, 22, 38, 22))
    day = Budget(scope="identity", period="day", max_cost_usd=5.0)
    hour = Budget(scope="identity", period="hour", max_tokens=1000)
    keys = budget_keys([day, hour], Identity("alice"))
    totals = {
        CounterKey("identity", "jwt:alice", "day"): Spend(1000, 4.99),
        CounterKey("identity", "jwt:alice", "hour"): Spend(1000, 4.99),
    }
    only_hour = first_exceeded(keys.limits, totals, now)
    assert only_hour is not None
    assert only_hour.budget is hour
    assert only_hour.retry_after_s(now) == 21 * 60 + 38
    totals[CounterKey("identity", "jwt:alice", "day")] = Spend(1000, 5.01)
    both = first_exceeded(keys.limits, totals, now)
    assert both is not None
    assert both.budget is day
    assert both.resets_at == calendar.timegm((2026, 12, 3, 0, 0, 0))
    assert both.as_json(now) == {
        "scope": "identity",
        "subject": "jwt:alice",
        "period": "day",
        "metric": "cost_usd",
        "limit": 5.0,
        "used": 5.01,
        "resets_at": "2026-12-03T00:00:00Z",
        "retry_after_s": 1 * 3600 + 21 * 60 + 38,
    }
    assert "5.0100 USD of its 5 USD per day" in both.message()
    assert "2026-12-03T00:00:00Z" in both.message()
    assert first_exceeded(keys.limits, {}, now) is None
