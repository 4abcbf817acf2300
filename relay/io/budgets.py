"""Usage counters and budgets: in this process, or in Redis shared by every worker and replica.

Counters are read at the upgrade (one lookup, or one Redis round trip) and, from a session's
cached view, at ``response.create``; they are added to once per ``response.done`` or completed
transcription. Nothing here runs per audio frame.

When Redis is unreachable (``RELAY_BUDGET_REDIS_FAILURE``): ``open`` admits and counts each
failure in ``relay_budget_store_failures_total`` (spending during the outage is not counted),
``closed`` refuses new sessions (503) and responses until Redis answers again. After a failure
the store is not tried again for a second, so an outage costs no upgrade a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.core.credentials import Identity
from relay.core.errors import InvalidEvent
from relay.core.usage import (
    PERIODS,
    TRANSCRIPTION_COMPLETED,
    Budget,
    BudgetKeys,
    CounterKey,
    Exceeded,
    PriceTable,
    Spend,
    Usage,
    UsageLedger,
    budget_keys,
    first_exceeded,
    window,
)
from relay.io import redis_client
from relay.io.redis_client import StoreUnavailable
from relay.observability.logging import get_logger, register_secret
from relay.observability.metrics import RelayMetrics
from relay.settings import Settings

RETRY_AFTER_FAILURE_S = 1.0  # after a Redis failure, act on the failure policy without trying
EXPIRY_GRACE_S = 60  # a window's Redis key outlives its reset by this much
_REDIS_PREFIX = "relay:usage:"
_log = get_logger()


class BudgetsUnavailable(Exception):
    """Fail closed: the counters are unreachable, so the relay refuses until they answer."""


# ---------------------------------------------------------------------------------- stores
class CounterStore(Protocol):
    name: str

    async def add(self, keys: Iterable[CounterKey], amount: Spend, now: float) -> dict[CounterKey, Spend]:
        """Add ``amount`` to each counter's current window; returns the totals after."""

    async def read(self, keys: Iterable[CounterKey], now: float) -> dict[CounterKey, Spend]: ...

    async def current(self, now: float) -> dict[CounterKey, Spend]:
        """Every counter's current window (for ``/admin/usage``)."""

    async def close(self) -> None: ...


class MemoryStore:
    """Counters of this process only: right for one process, per-process with several."""

    name = "memory"

    def __init__(self) -> None:
        self._counts: dict[tuple[CounterKey, int], Spend] = {}
        self._next_prune = 0.0

    async def add(self, keys: Iterable[CounterKey], amount: Spend, now: float) -> dict[CounterKey, Spend]:
        self._prune(now)
        totals: dict[CounterKey, Spend] = {}
        for key in keys:
            slot = (key, window(key.period, now)[0])
            old = self._counts.get(slot, Spend())
            totals[key] = self._counts[slot] = Spend(
                old.tokens + amount.tokens, old.cost_usd + amount.cost_usd
            )
        return totals

    async def read(self, keys: Iterable[CounterKey], now: float) -> dict[CounterKey, Spend]:
        counts = self._counts
        return {key: counts.get((key, window(key.period, now)[0]), Spend()) for key in keys}

    async def current(self, now: float) -> dict[CounterKey, Spend]:
        return {
            key: spent for (key, start), spent in self._counts.items() if start == window(key.period, now)[0]
        }

    def _prune(self, now: float) -> None:
        """Forget ended windows (at most once a minute: a minute is the shortest period)."""
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        self._counts = {
            slot: spent for slot, spent in self._counts.items() if slot[1] == window(slot[0].period, now)[0]
        }

    async def close(self) -> None:
        return None


class RedisStore:
    """One hash per counter and window, ``relay:usage:<period>:<window start>:<scope>:<subject>``
    with fields ``tokens`` and ``cost_usd``, expiring a minute after its window resets. An add is
    one pipelined round trip (HINCRBY, HINCRBYFLOAT, EXPIREAT per counter), a read one HMGET each."""

    name = "redis"

    def __init__(self, url: str, timeout_s: float) -> None:
        # No retries: the failure policy decides, at once, what an unreachable Redis means.
        self._redis: Redis = redis_client.connect(url, timeout_s)

    @staticmethod
    def _key(key: CounterKey, now: float) -> str:
        return f"{_REDIS_PREFIX}{key.period}:{window(key.period, now)[0]}:{key.scope}:{key.subject}"

    async def add(self, keys: Iterable[CounterKey], amount: Spend, now: float) -> dict[CounterKey, Spend]:
        keys = list(keys)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            name = self._key(key, now)
            pipe.hincrby(name, "tokens", amount.tokens)
            pipe.hincrbyfloat(name, "cost_usd", amount.cost_usd)
            pipe.expireat(name, window(key.period, now)[1] + EXPIRY_GRACE_S)
        results = await redis_client.run(pipe)
        return {key: Spend(int(results[3 * i]), float(results[3 * i + 1])) for i, key in enumerate(keys)}

    async def read(self, keys: Iterable[CounterKey], now: float) -> dict[CounterKey, Spend]:
        keys = list(keys)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._key(key, now), "tokens", "cost_usd")
        results = await redis_client.run(pipe)
        return {key: _spend(values) for key, values in zip(keys, results, strict=True)}

    async def current(self, now: float) -> dict[CounterKey, Spend]:
        found: list[tuple[CounterKey, str]] = []
        try:
            for period in PERIODS:
                prefix = f"{_REDIS_PREFIX}{period}:{window(period, now)[0]}:"
                async for raw in self._redis.scan_iter(match=prefix + "*", count=1000):
                    name = raw.decode()
                    scope, _, subject = name[len(prefix) :].partition(":")
                    if scope in ("identity", "group"):
                        found.append((CounterKey(scope, subject, period), name))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        pipe = self._redis.pipeline(transaction=False)
        for _, name in found:
            pipe.hmget(name, "tokens", "cost_usd")
        results = await redis_client.run(pipe) if found else []
        return {key: _spend(values) for (key, _), values in zip(found, results, strict=True)}

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()


def _spend(values: list[Any]) -> Spend:
    tokens, cost = values
    return Spend(int(tokens or 0), float(cost or 0.0))


# ---------------------------------------------------------------------------------- budgets
class Budgets:
    """The budgets of every client, on a counter store, with the relay's failure policy."""

    def __init__(
        self,
        budgets: Iterable[Budget],
        store: CounterStore,
        *,
        prices: PriceTable,
        metrics: RelayMetrics,
        fail_closed: bool = False,
        recheck_s: float = 10.0,
        metric_identities: Iterable[str] = (),
        metric_groups: Iterable[str] = (),
    ) -> None:
        self.rules = tuple(budgets)
        self.enabled = bool(self.rules)
        self.store = store
        self.prices = prices
        self.metrics = metrics
        self.fail_closed = fail_closed
        self.recheck_s = recheck_s
        self._metric_identities = frozenset(metric_identities)
        self._metric_groups = frozenset(metric_groups)
        self._down_until = 0.0
        self._last_failure_log = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    @classmethod
    def from_settings(cls, settings: Settings, metrics: RelayMetrics) -> Budgets:
        store: CounterStore
        if settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
            register_secret(url)  # it may carry a password
            store = RedisStore(url, settings.redis_timeout_s)
        else:
            store = MemoryStore()
        return cls(
            settings.budgets,
            store,
            prices=PriceTable.with_overrides(settings.prices),
            metrics=metrics,
            fail_closed=settings.budget_redis_failure == "closed",
            recheck_s=settings.budget_recheck_s,
            metric_identities=settings.usage_metrics_identities,
            metric_groups=settings.usage_metrics_groups,
        )

    def keys_for(self, identity: Identity) -> BudgetKeys:
        return budget_keys(self.rules, identity)

    async def over(self, keys: BudgetKeys, now: float) -> Exceeded | None:
        """The limit this client is over, if any; raises :class:`BudgetsUnavailable` when the
        counters cannot be read and the policy is to fail closed."""
        if not keys.limits:
            return None
        totals = await self._guard("check", self.store.read(keys.checked, now))
        return None if totals is None else first_exceeded(keys.limits, totals, now)

    async def spend(self, keys: BudgetKeys, amount: Spend, now: float) -> Exceeded | None:
        """Add to every counter of this client; returns the limit it is now over, if any."""
        totals = await self._guard("spend", self.store.add(keys.counters, amount, now))
        return None if totals is None else first_exceeded(keys.limits, totals, now)

    async def current(self, now: float) -> dict[CounterKey, Spend]:
        """Every counter's current window; raises :class:`StoreUnavailable`."""
        try:
            return await self.store.current(now)
        except StoreUnavailable:
            self.metrics.budget_store_failures_total.labels("report").inc()
            raise

    async def _guard(
        self, operation: str, call: Coroutine[Any, Any, dict[CounterKey, Spend]]
    ) -> dict[CounterKey, Spend] | None:
        """Run a store call under the failure policy: None means "allow" (fail open)."""
        clock = time.monotonic()
        try:
            if clock < self._down_until:
                call.close()
                raise StoreUnavailable("recently unreachable")
            return await call
        except StoreUnavailable as exc:
            self.metrics.budget_store_failures_total.labels(operation).inc()
            self._down_until = max(self._down_until, clock + RETRY_AFTER_FAILURE_S)
            if clock - self._last_failure_log >= 10.0:
                self._last_failure_log = clock
                _log.warning(
                    "budget_store_unavailable", operation=operation, error=str(exc), closed=self.fail_closed
                )
            if self.fail_closed:
                raise BudgetsUnavailable(str(exc)) from None
            return None

    # -------------------------------------------------------------- metrics and tasks
    def record(self, usage: Usage, identity: Identity) -> None:
        """The usage metrics of one response or transcription (bounded labels only)."""
        m, child = self.metrics, self._child
        for kind, count in usage.tokens.items():
            child(m.tokens_total, kind, usage.model).inc(count)
        child(m.cost_usd_total, usage.model).inc(usage.cost_usd)
        if usage.seconds:
            child(m.transcription_seconds_total, usage.model).inc(usage.seconds)
        who = identity.key if identity.key in self._metric_identities else "other"
        child(m.identity_tokens_total, who).inc(usage.total_tokens)
        child(m.identity_cost_usd_total, who).inc(usage.cost_usd)
        if identity.tenant is not None:
            group = identity.tenant if identity.tenant in self._metric_groups else "other"
            child(m.group_tokens_total, group).inc(usage.total_tokens)
            child(m.group_cost_usd_total, group).inc(usage.cost_usd)

    def _child(self, metric: Counter, *labels: str) -> Counter:
        """``metric.labels(*labels)``, remembered: each lookup takes the metric's lock and builds
        its key, for the same few children every response (the labels are bounded)."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def refused(self, exceeded: Exceeded | None, where: str) -> None:
        if exceeded is None:
            self.metrics.budget_refusals_total.labels("store", "none", where).inc()
        else:
            self.metrics.budget_refusals_total.labels(
                exceeded.budget.scope, exceeded.budget.period, where
            ).inc()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a spend or a check. On this process's own counters it never waits, so it runs
        here and now (a task per response.done cost a task, a step and a callback for a dict
        update); on Redis it is a task, and spends outlive their session: they are awaited when
        the relay shuts down."""
        if isinstance(self.store, MemoryStore):
            try:
                coro.send(None)
            except StopIteration:
                return
            coro.close()
            raise RuntimeError("a spend or check on in-memory counters waited")
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
        await self.store.close()


# ---------------------------------------------------------------------------------- a session
# Server events a session's usage needs: the two that carry usage, and the two that name models.
USAGE_EVENTS = frozenset({"response.done", TRANSCRIPTION_COMPLETED, "session.created", "session.updated"})


class SessionUsage:
    """One session's usage and budget state, for three hooks in the session:

    - :meth:`on_server_event` for every upstream event (it returns at once for all but four
      types): records usage, updates metrics, spends against the client's budgets;
    - :meth:`refusal` for each client ``response.create``: an API-shaped error to answer with
      instead of forwarding it, or None;
    - :meth:`summary` for the session-end log line.

    :meth:`refusal` is synchronous (the client path never waits): it answers from the state the
    last check left, and starts a new check in the background when that is older than
    ``RELAY_BUDGET_RECHECK_S``, so budgets spent by the client's other sessions, on any replica,
    are noticed within that time. A response already streaming is never cut short.
    """

    def __init__(self, budgets: Budgets, identity: Identity, model: str | None) -> None:
        self.budgets = budgets
        self.identity = identity
        self.model = model
        self.transcription_model: str | None = None
        self.ledger = UsageLedger(budgets.prices)
        self._keys = budgets.keys_for(identity)
        self._exceeded: Exceeded | None = None
        self._unavailable = False
        self._checked_at = time.monotonic()  # the upgrade has just checked
        self._checking = False

    def on_server_event(self, event_type: str, event: dict[str, Any]) -> Usage | None:
        if event_type not in USAGE_EVENTS:
            return None
        if event_type in ("session.created", "session.updated"):
            self._learn_models(event.get("session"))
            return None
        model = self.transcription_model if event_type == TRANSCRIPTION_COMPLETED else self.model
        usage = self.ledger.record(event_type, event, model)
        if usage is not None:
            self.budgets.record(usage, self.identity)
            self._checking = True
            self.budgets.spawn(self._spend(Spend.of(usage)))
        return usage

    def refusal(self, event: dict[str, Any]) -> InvalidEvent | None:
        budgets = self.budgets
        if not budgets.enabled:
            return None
        if not self._checking and time.monotonic() - self._checked_at >= budgets.recheck_s:
            self._checking = True
            budgets.spawn(self._check())
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if self._unavailable:
            budgets.refused(None, "response")
            return InvalidEvent(
                "budget_unavailable",
                "The relay cannot check this client's budget right now; retry the response later.",
                None,
                event_id,
            )
        exceeded = self._exceeded
        if exceeded is None or time.time() >= exceeded.resets_at:
            return None
        budgets.refused(exceeded, "response")
        return InvalidEvent("budget_exceeded", exceeded.message(), None, event_id)

    def summary(self) -> dict[str, Any]:
        return self.ledger.summary()

    def _learn_models(self, session: Any) -> None:
        """The model the upstream runs (a snapshot name, or Azure's model behind a deployment)
        and the input transcription model, GA or beta shape."""
        if not isinstance(session, dict):
            return
        if isinstance(session.get("model"), str) and session.get("type") != "transcription":
            self.model = session["model"]
        audio = session.get("audio")
        audio_input = audio.get("input") if isinstance(audio, dict) else None
        transcription = (
            audio_input.get("transcription")
            if isinstance(audio_input, dict)
            else session.get("input_audio_transcription")
        )
        if isinstance(transcription, dict) and isinstance(transcription.get("model"), str):
            self.transcription_model = transcription["model"]

    async def _spend(self, amount: Spend) -> None:
        try:
            self._exceeded = await self.budgets.spend(self._keys, amount, time.time())
            self._unavailable = False
        except BudgetsUnavailable:
            self._unavailable = True
        finally:
            self._checked_at = time.monotonic()
            self._checking = False

    async def _check(self) -> None:
        try:
            self._exceeded = await self.budgets.over(self._keys, time.time())
            self._unavailable = False
        except BudgetsUnavailable:
            self._unavailable = True
        finally:
            self._checked_at = time.monotonic()
            self._checking = False


# ---------------------------------------------------------------------------------- the app
BUDGETS: web.AppKey[Budgets] = web.AppKey("budgets", Budgets)


def budgets_context(settings: Settings, metrics: RelayMetrics) -> Any:
    """A cleanup context: the budgets for the app's life, pending spends awaited at the end."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[BUDGETS] = budgets = Budgets.from_settings(settings, metrics)
        try:
            yield
        finally:
            await budgets.aclose()

    return context
