"""A client resumes on another relay process: conversations in Redis (RELAY_REDIS_URL).

Real parts: ``relay serve`` processes, a real ``redis-server``, the simulator with the live API's
timing. A client's TCP connection is cut (or its relay redeployed, or killed) and it comes back
with its resume token and the last event it processed, on another process; it must get every
later event once, in order, and a conversation that goes on with its whole history.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.support.conversation import Event, RecordingClient, assert_one_stream, text_item
from tests.support.redis_server import RedisServer, running_redis
from tests.support.relay_process import TOKEN, RelayProcess, relay_processes
from tests.support.sim_control import SimControl
from tests.support.tcp_proxy import CuttableProxy

OTHER_TOKEN = "process-token-someone-else-0000"
REALISTIC = SimulatorConfig(speed=20.0, timing=Timing.realistic())
ANSWER = " ".join(f"word{i}" for i in range(60))
LEASE_S = 2


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@dataclass
class Cluster:
    relays: list[RelayProcess]
    sim: SimControl
    redis: RedisServer

    async def client(self, relay: RelayProcess, token: str = TOKEN) -> RecordingClient:
        client = await RecordingClient.connect(_url(relay.port), token)
        await client.wait_for("session.created")
        return client

    async def resume(
        self, port: int, token: str, last_event_id: str | None, auth: str = TOKEN
    ) -> RecordingClient:
        headers = {"Authorization": f"Bearer {auth}", "X-Relay-Resume-Token": token}
        if last_event_id:
            headers["X-Relay-Last-Event-Id"] = last_event_id
        ws = await websockets.connect(_url(port), additional_headers=headers, max_size=None)
        return RecordingClient(ws)


def _url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime&relay_resume=1"


@pytest.fixture
async def cluster(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    # The parameter: how many processes, or (how many, the simulator's own timing).
    param = getattr(request, "param", 2)
    count, timing = (param, Timing.realistic()) if isinstance(param, int) else param
    runner, sim_port = await start_simulator(SimulatorConfig(speed=REALISTIC.speed, timing=timing))
    env = {
        "RELAY_UPSTREAM": "simulator",
        "RELAY_UPSTREAM_URL": f"ws://127.0.0.1:{sim_port}/v1/realtime",
        "RELAY_CLIENT_TOKENS": f"{TOKEN},{OTHER_TOKEN}",
        "RELAY_REDIS_URL": redis_server.url,
        "RELAY_SESSION_LEASE_S": str(LEASE_S),
        "RELAY_ROTATE_AFTER_S": "0",
        "RELAY_OVERLOAD_LAG_MS": "0",
        "RELAY_LOG_LEVEL": "WARNING",
        "RELAY_MAX_SESSIONS_PER_TOKEN": "1000",
        "RELAY_MAX_UNFINISHED_HEADS_PER_PEER": "512",  # the balancer is one peer
    }
    async with relay_processes(count, **env) as relays:
        yield Cluster(relays, SimControl(f"http://127.0.0.1:{sim_port}"), redis_server)
    await runner.cleanup()


async def _metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


async def _until_metric(port: int, name: str, value: float, labels: dict[str, str] | None = None) -> None:
    async with asyncio.timeout(15):
        while await _metric(port, name, labels) < value:  # noqa: ASYNC110 (another process's metric)
            await asyncio.sleep(0.05)


async def _answered(relay: RelayProcess, responses: int) -> None:
    """Until ``relay`` has passed on that many response.done events (to a client or its resume
    buffer): how long an answer takes depends on how busy the machine is, not on a fixed sleep."""
    done = {"direction": "upstream_to_client", "type": "response.done"}
    await _until_metric(relay.port, "relay_frames_total", responses, done)


def _shown(events: list[Event]) -> list[Event]:
    return [e for e in events if e["type"] != "relay.session_resumable"]


async def _ask(cluster: Cluster, client: RecordingClient, text: str, after: int = 0) -> Event:
    await cluster.sim.script(replies=[ANSWER])
    await client.send(text_item(text))
    await client.send({"type": "response.create"})
    return await client.wait_for("response.done", after=after, timeout=30)


async def _answer_while_away(cluster: Cluster, owner: RelayProcess) -> tuple[RecordingClient, str, int]:
    """A conversation with one exchange; the client asks again and its network goes away as the
    answer starts. Returns the client, its token, and how many events it had processed."""
    client = await cluster.client(owner)
    await _ask(cluster, client, "first question")
    token = client.resume_token()
    mark = len(client.events)
    await cluster.sim.script(replies=[ANSWER])
    await client.send(text_item("second question"))
    await client.send({"type": "response.create"})
    await client.wait_for("response.output_audio_transcript.delta", after=mark, timeout=30)
    processed = len(client.events)
    await client.cut()
    return client, token, processed


async def _continues_with_history(cluster: Cluster, resumed: RecordingClient) -> None:
    """The conversation goes on where it is now, with every earlier item in the new upstream."""
    mark = len(resumed.events)
    await _ask(cluster, resumed, "third question", after=mark)
    session = await cluster.sim.open_session(resumed.relay_session)
    texts = str(session)
    for question in ("first question", "second question", "third question"):
        assert question in texts


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", [3], indirect=True)
async def test_a_client_resumes_on_another_process_with_every_event_once(cluster: Cluster) -> None:
    """Across three processes: taken over by the second, then by the third."""
    owner, other, third = cluster.relays
    client, token, processed = await _answer_while_away(cluster, owner)
    # The answer finishes while the client is away: the owner keeps it (and writes it to Redis).
    await _answered(owner, 2)
    seen = _shown(client.events[:processed])
    resumed = await cluster.resume(other.port, token, seen[-1]["event_id"])
    assert resumed.ws.response is not None
    assert resumed.ws.response.headers["X-Relay-Session-Id"] == client.relay_session
    await resumed.wait_for("response.done", timeout=30)
    everything = seen + _shown(resumed.events)
    assert_one_stream(everything)
    done = [e for e in everything if e["type"] == "response.done"]
    assert [d["response"]["status"] for d in done] == ["completed", "completed"]
    await resumed.send(text_item("my name is Ada", item_id="item_app_name"))
    await _continues_with_history(cluster, resumed)
    assert await _metric(other.port, "relay_sessions_moved_total", {"reason": "arrived"}) == 1
    assert await _metric(owner.port, "relay_sessions_moved_total", {"reason": "released"}) == 1
    # Again, to the third process; the app, unsure its last item arrived, sends it again.
    processed = len(resumed.events)
    await resumed.cut()
    again = await cluster.resume(third.port, resumed.resume_token(), _shown(resumed.events)[-1]["event_id"])
    await again.send(text_item("my name is Ada", item_id="item_app_name"))
    mark = len(again.events)
    await _ask(cluster, again, "what is my name?", after=mark)
    assert "error" not in again.types()
    assert await _metric(third.port, "relay_client_events_deduplicated_total") == 1
    session = await cluster.sim.open_session(again.relay_session)
    assert [item["id"] for item in session["conversation"]].count("item_app_name") == 1
    assert_one_stream(seen + _shown(resumed.events[:processed]) + _shown(again.events))
    await again.close()


@pytest.mark.timeout(120)
async def test_a_crashed_owner_is_taken_over_once_its_lease_lapses(cluster: Cluster) -> None:
    """Two clients away when their relay dies: one whose answer had finished into the buffer, one
    whose answer was still streaming. Whatever the owner had written arrives once; the streaming
    answer ends with one response.done (incomplete: what was said before the crash)."""
    owner, other = cluster.relays
    buffered = await _answer_while_away(cluster, owner)
    await _answered(owner, 2)  # that answer ends
    await asyncio.sleep(1.5)  # and the owner's syncs write it to Redis
    streaming = await _answer_while_away(cluster, owner)
    await asyncio.sleep(0.4)
    owner.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(owner.proc.wait, 10)
    statuses = []
    for client, token, processed in (buffered, streaming):
        seen = _shown(client.events[:processed])
        resumed = await cluster.resume(other.port, token, seen[-1]["event_id"])
        done = await resumed.wait_for("response.done", timeout=30)
        statuses.append(done["response"]["status"])
        assert_one_stream(seen + _shown(resumed.events))
        await _continues_with_history(cluster, resumed)
        await resumed.close()
    assert statuses[0] == "completed"
    assert statuses[1] in ("completed", "incomplete")  # how far it got before the crash


@pytest.mark.timeout(120)
async def test_tokens_replayed_stolen_or_of_ended_sessions_are_refused_everywhere(cluster: Cluster) -> None:
    owner, other = cluster.relays
    client = await cluster.client(owner)
    token = client.resume_token()
    await client.cut()
    stolen = await _refusal(other.port, token, OTHER_TOKEN)
    assert stolen == (403, "resume_identity_mismatch")
    resumed = await cluster.resume(other.port, token, None)
    await asyncio.sleep(0.5)
    # The token was replaced at the resume: the old one opens nothing, here or on its old process.
    assert await _refusal(other.port, token, TOKEN) == (401, "invalid_resume_token")
    assert await _refusal(owner.port, token, TOKEN) == (401, "invalid_resume_token")
    new_token = resumed.resume_token()
    await resumed.close()  # a normal close ends the conversation: nothing left to resume
    await asyncio.sleep(0.5)
    assert await _refusal(owner.port, new_token, TOKEN) == (410, "session_gone")


async def _refusal(port: int, token: str, auth: str) -> tuple[int, str]:
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Authorization": f"Bearer {auth}",
        "X-Relay-Resume-Token": token,
    }
    url = f"http://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        body: dict[str, Any] = await r.json()
        return r.status, body["error"]["code"]


@pytest.mark.timeout(120)
async def test_redis_restarted_mid_run_costs_only_cross_process_resume_meanwhile(cluster: Cluster) -> None:
    owner, other = cluster.relays
    client = await cluster.client(owner)
    await _ask(cluster, client, "first question")
    cluster.redis.stop()
    await _until_metric(owner.port, "relay_session_store_failures_total", 1)
    assert await _metric(owner.port, "relay_session_store_up") == 0
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{owner.port}/readyz") as r:
        assert (await r.json())["session_store"] == "down"
    mark = len(client.events)
    await _ask(cluster, client, "second question", after=mark)  # the session works where it is
    token = client.resume_token()
    assert (await _refusal(other.port, token, TOKEN))[0] == 503  # nowhere to look it up
    cluster.redis.start()  # empty: a cache restarted without persistence
    await _until_metric(owner.port, "relay_session_store_up", 1)
    await asyncio.sleep(1.0)  # the next syncs register the conversation again
    processed = len(client.events)
    await client.cut()
    resumed = await cluster.resume(other.port, token, _shown(client.events[:processed])[-1]["event_id"])
    await _continues_with_history(cluster, resumed)
    assert_one_stream(_shown(client.events[:processed]) + _shown(resumed.events))
    await resumed.close()


CONVERSATIONS = 50


@pytest.mark.timeout(180)
async def test_a_rolling_deploy_moves_fifty_conversations_to_the_other_replica(cluster: Cluster) -> None:
    first, second = cluster.relays
    balancer = await CuttableProxy(first.port).start()  # all start on the first replica
    await cluster.sim.script(replies=["short answer"] * (CONVERSATIONS * 3))
    try:
        clients = await asyncio.gather(
            *(cluster.client(RelayProcess(first.proc, balancer.port)) for _ in range(CONVERSATIONS))
        )
        for index, client in enumerate(clients):
            await client.send(text_item(f"question {index}"))
            await client.send({"type": "response.create"})
        await asyncio.gather(*(c.wait_for("response.done", timeout=60) for c in clients))
        balancer.targets = [second.port]  # the new replica is up; the old one is told to go
        first.proc.send_signal(signal.SIGTERM)
        for client in clients:  # the SDKs reconnect on 1012 (service restart)
            await asyncio.wait_for(client._reader, 30)
            assert client.ws.close_code == 1012
        resumed = await asyncio.gather(
            *(
                cluster.resume(balancer.port, c.resume_token(), _shown(c.events)[-1]["event_id"])
                for c in clients
            )
        )
        for index, client in enumerate(resumed):
            await client.send(text_item(f"follow-up {index}"))
            await client.send({"type": "response.create"})
        await asyncio.gather(*(c.wait_for("response.done", timeout=60) for c in resumed))
        for index, (before, after) in enumerate(zip(clients, resumed, strict=True)):
            assert_one_stream(_shown(before.events) + _shown(after.events))
            session = await cluster.sim.open_session(after.relay_session)
            assert f"question {index}" in str(session)
            assert f"follow-up {index}" in str(session)
        arrived = await _metric(second.port, "relay_sessions_moved_total", {"reason": "arrived"})
        assert arrived == CONVERSATIONS
        await asyncio.gather(*(c.close() for c in resumed))
    finally:
        await balancer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", [(2, Timing(first_delta_ms=2500))], indirect=True)
async def test_a_deploy_before_the_answer_is_heard_asks_for_it_again(cluster: Cluster) -> None:
    """The user asked; the model has not said a word yet (its first token takes 2.5 s here) when
    the relay is redeployed. The cut response ends for the app (one response.done, incomplete),
    and the process that takes the conversation over asks for it again: the answer comes without
    the app asking twice, as after an upstream drop."""
    first, second = cluster.relays
    balancer = await CuttableProxy(first.port).start()
    await cluster.sim.script(replies=[ANSWER, ANSWER])
    try:
        client = await cluster.client(RelayProcess(first.proc, balancer.port))
        await client.send(text_item("what time is it?"))
        await client.send({"type": "response.create"})
        await client.wait_for("response.created", timeout=15)
        balancer.targets = [second.port]
        first.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(client._reader, 30)
        assert client.ws.close_code == 1012
        cut = [e for e in _shown(client.events) if e["type"] == "response.done"]
        assert [d["response"]["status"] for d in cut] == ["incomplete"]
        assert cut[0]["response"]["status_details"]["error"]["code"] == "upstream_replaced"
        resumed = await cluster.resume(
            balancer.port, client.resume_token(), _shown(client.events)[-1]["event_id"]
        )
        done = await resumed.wait_for("response.done", timeout=30)
        assert done["response"]["status"] == "completed"
        assert done["response"]["id"] != cut[0]["response"]["id"]
        transcript = done["response"]["output"][0]["content"][0]["transcript"]
        assert transcript == ANSWER
        assert_one_stream(_shown(client.events) + _shown(resumed.events))
        session = await cluster.sim.open_session(resumed.relay_session)
        assert "what time is it?" in str(session)
        assert str(session).count(ANSWER) == 1  # the cut answer is not in the conversation twice
        await resumed.close()
    finally:
        await balancer.close()


@pytest.mark.timeout(120)
async def test_the_openai_sdk_follows_its_conversation_through_a_deploy(cluster: Cluster) -> None:
    """The SDK reconnects by itself on 1012; its ``on_reconnecting`` hook returns the resume token
    and last event; the load balancer sends it to the replica that stays, which takes over."""
    from openai import AsyncOpenAI
    from openai.types import ReconnectingEvent, ReconnectingOverrides

    leaving, staying = cluster.relays
    balancer = await CuttableProxy(leaving.port).start()
    resume: dict[str, str] = {}
    reconnecting = asyncio.Event()

    def on_reconnecting(event: ReconnectingEvent) -> ReconnectingOverrides:
        reconnecting.set()
        headers = {"X-Relay-Resume-Token": resume["token"], "X-Relay-Last-Event-Id": resume["last"]}
        return {"extra_headers": headers}

    sdk = AsyncOpenAI(api_key=TOKEN, websocket_base_url=f"ws://127.0.0.1:{balancer.port}/v1")
    await cluster.sim.script(replies=["the first answer", "the second answer"])
    types: list[str] = []
    try:
        async with sdk.realtime.connect(
            model="gpt-realtime", extra_query={"relay_resume": "1"}, on_reconnecting=on_reconnecting
        ) as conn:
            await conn.conversation.item.create(item=text_item("remember the word banana")["item"])
            await conn.response.create()
            async for event in conn:
                types.append(event.type)
                if event.type == "relay.session_resumable":  # type: ignore[comparison-overlap]
                    resume["token"] = getattr(event, "resume_token")  # noqa: B009
                    continue
                resume["last"] = event.event_id
                if event.type == "response.done" and types.count("response.done") == 1:
                    balancer.targets = [staying.port]
                    leaving.proc.send_signal(signal.SIGTERM)  # a deploy: the replica goes
                    follow_up = asyncio.create_task(_ask_after_reconnect(conn, reconnecting))
                elif event.type == "response.done":
                    break
            await follow_up
            still_open = [s for s in await cluster.sim.sessions() if s["open"]]
            assert len(still_open) == 1  # the staying replica's upstream; the leaving one closed
            session = await cluster.sim.session(still_open[0]["id"])
    finally:
        await balancer.close()
    assert reconnecting.is_set()
    assert types.count("response.done") == 2
    assert types.count("session.created") == 1
    assert "error" not in types
    for text in ("remember the word banana", "which word?"):
        assert text in str(session)
    assert await _metric(staying.port, "relay_sessions_moved_total", {"reason": "arrived"}) == 1


async def _ask_after_reconnect(conn: Any, reconnecting: asyncio.Event) -> None:
    """The app asks its next question once the SDK is on its way back (it queues meanwhile)."""
    await asyncio.wait_for(reconnecting.wait(), 20)
    await conn.conversation.item.create(item=text_item("which word?")["item"])
    await conn.response.create()
