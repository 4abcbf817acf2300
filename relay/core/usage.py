"""What each client used, read from the API's own accounting, priced, and held against budgets.

Sans-I/O: parsing, prices, periods and budget arithmetic only; the counters live in
``relay.io.budgets``. The source of truth is the API's ``usage``, read once per response
(``response.done.response.usage``) and once per transcribed utterance
(``conversation.item.input_audio_transcription.completed``), never per audio frame.

Token kinds are exclusive, so they add up to the API's own totals. In the API's accounting the
cached tokens are part of ``input_tokens`` (and of the per-modality counts: a recorded turn had
``text_tokens: 103`` of which ``cached_tokens_details.text_tokens: 64``), so::

    input_text   = input_token_details.text_tokens  - cached_tokens_details.text_tokens
    input_audio  = input_token_details.audio_tokens - cached_tokens_details.audio_tokens
    input_image  = input_token_details.image_tokens - cached_tokens_details.image_tokens
    input_cached = input_token_details.cached_tokens
    input_text + input_audio + input_image + input_cached == input_tokens
    output_text + output_audio == output_tokens

Without ``cached_tokens_details`` the cached tokens are taken from text first, then audio, then
image (instructions and earlier turns, the usual cached prefix, are mostly text); without
``input_token_details`` all uncached input counts as text. Cached tokens are priced by their own
modality (``cached_text``, ``cached_audio``, ``cached_image``) and counted as one kind.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # settings.py imports this module, and credentials.py imports settings.py
    from relay.core.credentials import Identity

TRANSCRIPTION_COMPLETED = "conversation.item.input_audio_transcription.completed"
RESPONSE_DONE = "response.done"
KINDS = ("input_text", "input_audio", "input_image", "input_cached", "output_text", "output_audio")
OTHER = "other"  # the metric label of a model the price table does not list

# ---------------------------------------------------------------------------------- prices

PRICES_AS_OF = "2026-12-02"
PRICES_SOURCE = "OpenAI's model pages (developers.openai.com/api/docs/models/...), read on " + PRICES_AS_OF


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens of each kind; ``per_minute`` is USD per minute of duration-priced audio."""

    input_text: float = 0.0
    input_audio: float = 0.0
    input_image: float = 0.0
    cached_text: float = 0.0
    cached_audio: float = 0.0
    cached_image: float = 0.0
    output_text: float = 0.0
    output_audio: float = 0.0
    per_minute: float = 0.0

    def as_json(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PRICE_FIELDS = tuple(f.name for f in fields(Price))

_REALTIME = Price(4.0, 32.0, 5.0, 0.4, 0.4, 0.5, 16.0, 64.0)
_REALTIME_MINI = Price(0.6, 10.0, 0.8, 0.06, 0.3, 0.08, 2.4, 20.0)

# Where each figure comes from is in docs/operations.md ("Usage and budgets"). gpt-realtime's
# text prices are its own page's; its audio and image prices are those of gpt-realtime-1.5 (the
# same tier), as gpt-realtime's own audio rows were not found. gpt-realtime-mini's text input
# ($0.60) is confirmed; its other figures are gpt-realtime-2.1-mini's, the same tier. whisper-1
# is OpenAI's long-standing $0.006/min, not re-confirmed here.
DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-realtime": _REALTIME,
    "gpt-realtime-1.5": _REALTIME,
    "gpt-realtime-2": replace(_REALTIME, output_text=24.0),
    "gpt-realtime-mini": _REALTIME_MINI,
    "gpt-realtime-2.1-mini": _REALTIME_MINI,
    "gpt-4o-transcribe": Price(input_text=2.5, input_audio=6.0, output_text=10.0),
    "gpt-4o-mini-transcribe": Price(input_text=1.25, input_audio=3.0, output_text=5.0),
    "gpt-realtime-whisper": Price(per_minute=0.017),
    "gpt-transcribe": Price(per_minute=0.0045),
    "whisper-1": Price(per_minute=0.006),
}

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-realtime-2025-08-28 is priced as gpt-realtime
_MAX_CACHED_MODELS = 256


class PriceOverride(BaseModel):
    """A settings entry: the fields given replace the built-in ones of that model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_text: float | None = Field(None, ge=0)
    input_audio: float | None = Field(None, ge=0)
    input_image: float | None = Field(None, ge=0)
    cached_text: float | None = Field(None, ge=0)
    cached_audio: float | None = Field(None, ge=0)
    cached_image: float | None = Field(None, ge=0)
    output_text: float | None = Field(None, ge=0)
    output_audio: float | None = Field(None, ge=0)
    per_minute: float | None = Field(None, ge=0)


class PriceTable:
    """Prices by model; a model it does not list is labelled ``other`` and priced ``default``.

    ``default`` is, unless configured, the highest price of each kind in the table: a cost
    budget cannot be dodged by asking for a model (or an Azure deployment) the table lacks.
    """

    def __init__(self, prices: Mapping[str, Price], default: Price | None = None) -> None:
        self.prices = dict(prices)
        self.default = default or Price(
            **{
                name: max((getattr(p, name) for p in self.prices.values()), default=0.0)
                for name in PRICE_FIELDS
            }
        )
        self._resolved: dict[str, tuple[str, Price]] = {}

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, PriceOverride]) -> PriceTable:
        prices = dict(DEFAULT_PRICES)
        for model, override in overrides.items():
            if model != "default":
                prices[model] = replace(prices.get(model, Price()), **override.model_dump(exclude_none=True))
        table = cls(prices)
        if "default" in overrides:
            table.default = replace(table.default, **overrides["default"].model_dump(exclude_none=True))
        return table

    def lookup(self, model: str | None) -> tuple[str, Price]:
        """The metric label (a table key or ``other``) and the price for a model name."""
        if model is None:
            return OTHER, self.default
        found = self._resolved.get(model)
        if found is None:
            name = model if model in self.prices else _SNAPSHOT.sub("", model)
            found = (name, self.prices[name]) if name in self.prices else (OTHER, self.default)
            if len(self._resolved) < _MAX_CACHED_MODELS:  # made-up names must not grow it
                self._resolved[model] = found
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "unit": "USD per 1M tokens; per_minute: USD per minute of audio (duration-priced transcription)",
            "source": PRICES_SOURCE,
            "as_of": PRICES_AS_OF,
            "models": {name: price.as_json() for name, price in sorted(self.prices.items())},
            "default": self.default.as_json(),
        }


# ---------------------------------------------------------------------------------- usage


@dataclass(frozen=True, slots=True)
class Usage:
    """One response's or one transcription's usage, priced."""

    model: str  # the price table's name for it, or "other"
    tokens: Mapping[str, int]  # by kind, only the kinds present
    seconds: float = 0.0  # duration-priced transcription
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _split_cached(cached: int, by_modality: dict[str, int], details: Mapping[str, Any]) -> dict[str, int]:
    """How many of the cached tokens are text, audio and image (see the module's docstring)."""
    if details:
        return {m: min(_int(details.get(m + "_tokens")), by_modality[m]) for m in by_modality}
    split: dict[str, int] = {}
    for modality, count in by_modality.items():
        split[modality] = taken = min(cached, count)
        cached -= taken
    return split


def response_usage(usage: Any, model: str | None, prices: PriceTable) -> Usage | None:
    """``response.done.response.usage`` (null while a response runs, absent on some errors)."""
    if not isinstance(usage, dict):
        return None
    label, price = prices.lookup(model)
    input_tokens = _int(usage.get("input_tokens"))
    details = _dict(usage.get("input_token_details"))
    cached = _int(details.get("cached_tokens"))
    if details:
        by_modality = {m: _int(details.get(m + "_tokens")) for m in ("text", "audio", "image")}
    else:
        by_modality = {"text": input_tokens, "audio": 0, "image": 0}
    cached_split = _split_cached(cached, by_modality, _dict(details.get("cached_tokens_details")))
    out = _dict(usage.get("output_token_details"))
    output_tokens = _int(usage.get("output_tokens"))
    output_audio = _int(out.get("audio_tokens"))
    output_text = _int(out.get("text_tokens")) if out else max(output_tokens - output_audio, 0)
    tokens = {
        "input_text": by_modality["text"] - cached_split["text"],
        "input_audio": by_modality["audio"] - cached_split["audio"],
        "input_image": by_modality["image"] - cached_split["image"],
        "input_cached": sum(cached_split.values()),
        "output_text": output_text,
        "output_audio": output_audio,
    }
    cost = (
        tokens["input_text"] * price.input_text
        + tokens["input_audio"] * price.input_audio
        + tokens["input_image"] * price.input_image
        + cached_split["text"] * price.cached_text
        + cached_split["audio"] * price.cached_audio
        + cached_split["image"] * price.cached_image
        + output_text * price.output_text
        + output_audio * price.output_audio
    ) / 1_000_000
    return Usage(label, {k: v for k, v in tokens.items() if v}, cost_usd=cost)


def transcription_usage(usage: Any, model: str | None, prices: PriceTable) -> Usage | None:
    """A completed transcription's ``usage``: ``{type: "tokens", ...}`` or ``{type: "duration", seconds}``."""
    if not isinstance(usage, dict):
        return None
    label, price = prices.lookup(model)
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds < math.inf:
            return None
        return Usage(label, {}, seconds=seconds, cost_usd=seconds / 60 * price.per_minute)
    details = _dict(usage.get("input_token_details"))
    input_tokens = _int(usage.get("input_tokens"))
    audio = _int(details.get("audio_tokens"))
    text = _int(details.get("text_tokens")) if details else max(input_tokens - audio, 0)
    output = _int(usage.get("output_tokens"))
    tokens = {"input_text": text, "input_audio": audio, "output_text": output}
    cost = (text * price.input_text + audio * price.input_audio + output * price.output_text) / 1_000_000
    return Usage(label, {k: v for k, v in tokens.items() if v}, cost_usd=cost)


@dataclass
class UsageLedger:
    """One session's running totals. Call :meth:`record` for ``response.done`` and completed
    transcriptions only; any other event type is ignored at the cost of one comparison."""

    prices: PriceTable
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    cost_usd: float = 0.0
    seconds: float = 0.0
    responses: int = 0
    transcriptions: int = 0

    def record(self, event_type: str, event: Mapping[str, Any], model: str | None) -> Usage | None:
        if event_type == RESPONSE_DONE:
            response = event.get("response")
            usage = response_usage(
                response.get("usage") if isinstance(response, dict) else None, model, self.prices
            )
            if usage is not None:
                self.responses += 1
        elif event_type == TRANSCRIPTION_COMPLETED:
            usage = transcription_usage(event.get("usage"), model, self.prices)
            if usage is not None:
                self.transcriptions += 1
        else:
            return None
        if usage is not None:
            for kind, count in usage.tokens.items():
                self.tokens[kind] += count
            self.cost_usd += usage.cost_usd
            self.seconds += usage.seconds
        return usage

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    def summary(self) -> dict[str, Any]:
        """For the session-end log line."""
        return {
            "tokens": {kind: count for kind, count in self.tokens.items() if count},
            "tokens_total": self.total_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "responses": self.responses,
            "transcriptions": self.transcriptions,
            "transcription_s": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------------- periods

Period = Literal["minute", "hour", "day"]
PERIODS: tuple[Period, ...] = ("minute", "hour", "day")
PERIOD_SECONDS: Mapping[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
Scope = Literal["identity", "group"]


def window(period: str, now: float) -> tuple[int, int]:
    """The fixed window holding ``now`` (UNIX seconds): its start and its end, when it resets.

    Windows are aligned to the UNIX epoch, so every relay process and replica agrees on them
    without talking: minutes and hours on the clock, days at 00:00 UTC.
    """
    length = PERIOD_SECONDS[period]
    start = int(now // length) * length
    return start, start + length


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# ---------------------------------------------------------------------------------- budgets


class Budget(BaseModel):
    """One limit, e.g. ``{scope = "identity", period = "day", max_cost_usd = 5.0}``.

    ``scope = "identity"``: each client identity (``Identity.key``) has its own counter; with
    ``identity = "<key>"`` the entry is for that identity only. ``scope = "group"``: each group
    (the JWT claim ``jwt_tenant_claim`` names, ``Identity.tenant``) has one counter shared by its
    members; with ``group = "<name>"`` the entry is for that group only. An entry naming an
    identity or group replaces, for it, the general entry of the same scope, period and limit
    kind (so one client can be given more, or less, than the rest).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Scope
    period: Period
    max_tokens: int | None = Field(None, ge=1)
    max_cost_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    identity: str | None = Field(None, min_length=1)
    group: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_limit(self) -> Budget:
        if (self.max_tokens is None) == (self.max_cost_usd is None):
            raise ValueError("a budget sets exactly one of max_tokens and max_cost_usd")
        if self.identity is not None and self.scope != "identity":
            raise ValueError("'identity' names the client of a scope = \"identity\" budget only")
        if self.group is not None and self.scope != "group":
            raise ValueError("'group' names the group of a scope = \"group\" budget only")
        return self

    @property
    def metric(self) -> Literal["tokens", "cost_usd"]:
        return "tokens" if self.max_tokens is not None else "cost_usd"

    @property
    def limit(self) -> float:
        return float(self.max_tokens if self.max_tokens is not None else self.max_cost_usd or 0.0)

    @property
    def target(self) -> str | None:
        return self.identity if self.scope == "identity" else self.group


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: int = 0
    cost_usd: float = 0.0

    @classmethod
    def of(cls, usage: Usage) -> Spend:
        return cls(usage.total_tokens, usage.cost_usd)


@dataclass(frozen=True, slots=True)
class CounterKey:
    """One counter: what ``subject`` (an identity key or a group) spent in one kind of period."""

    scope: Scope
    subject: str
    period: Period


@dataclass(frozen=True, slots=True)
class Limit:
    budget: Budget
    counter: CounterKey


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    """For one client: the counters its spending adds to, and the limits that apply to it."""

    counters: tuple[CounterKey, ...]
    limits: tuple[Limit, ...]

    @property
    def checked(self) -> tuple[CounterKey, ...]:
        return tuple(dict.fromkeys(limit.counter for limit in self.limits))


def subjects(identity: Identity) -> dict[Scope, str]:
    out: dict[Scope, str] = {"identity": identity.key}
    if identity.tenant is not None:
        out["group"] = identity.tenant
    return out


def budget_keys(budgets: Iterable[Budget], identity: Identity) -> BudgetKeys:
    """Every identity and group is counted in every period (for ``/admin/usage``); the limits
    are the budgets that match it, an entry naming it replacing the general one."""
    mine = subjects(identity)
    counters = tuple(
        CounterKey(scope, subject, period) for scope, subject in mine.items() for period in PERIODS
    )
    matching = [b for b in budgets if b.scope in mine and b.target in (None, mine[b.scope])]
    specific = {(b.scope, b.period, b.metric) for b in matching if b.target is not None}
    limits = tuple(
        Limit(b, CounterKey(b.scope, mine[b.scope], b.period))
        for b in matching
        if b.target is not None or (b.scope, b.period, b.metric) not in specific
    )
    return BudgetKeys(counters, limits)


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A limit reached: what it is, how much was used, and when its window resets."""

    budget: Budget
    subject: str
    used: float
    resets_at: float  # UNIX seconds

    def retry_after_s(self, now: float) -> int:
        return max(1, math.ceil(self.resets_at - now))

    def message(self) -> str:
        b = self.budget
        who = f"client identity '{self.subject}'" if b.scope == "identity" else f"group '{self.subject}'"
        if b.metric == "tokens":
            amount = f"{int(self.used)} tokens of its {int(b.limit)} per {b.period}"
        else:
            amount = f"{self.used:.4f} USD of its {b.limit:g} USD per {b.period}"
        until = iso(self.resets_at)
        return (
            f"Budget exceeded: {who} has used {amount}; new sessions and responses are refused until {until}."
        )

    def as_json(self, now: float) -> dict[str, Any]:
        b = self.budget
        return {
            "scope": b.scope,
            "subject": self.subject,
            "period": b.period,
            "metric": b.metric,
            "limit": b.limit,
            "used": round(self.used, 6),
            "resets_at": iso(self.resets_at),
            "retry_after_s": self.retry_after_s(now),
        }


def first_exceeded(
    limits: Iterable[Limit], totals: Mapping[CounterKey, Spend], now: float
) -> Exceeded | None:
    """The exceeded limit that resets last (the client may retry only once all have reset)."""
    worst: Exceeded | None = None
    for limit in limits:
        spent = totals.get(limit.counter, Spend())
        used = spent.tokens if limit.budget.metric == "tokens" else spent.cost_usd
        if used >= limit.budget.limit:
            resets_at = window(limit.budget.period, now)[1]
            if worst is None or resets_at > worst.resets_at:
                worst = Exceeded(limit.budget, limit.counter.subject, used, resets_at)
    return worst
