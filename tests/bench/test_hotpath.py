"""The no-socket hot-path harness forwards every frame it is fed (timings are not asserted)."""

from __future__ import annotations

import aiohttp

from bench.hotpath import measure, open_hot_path, turn_frames


async def test_every_fed_frame_is_forwarded_once() -> None:
    result = await measure(frames=100, interleaved=3)
    assert result["forwarded"] == result["fed"]
    assert result["fed"] == (700, 700)  # 7 batches of 100, each direction
    assert result["c2u_us"] > 0
    assert result["u2c_us"] > 0
    assert result["u2c_text_us"] > 0
    assert result["c2u_full_path_us"] > 0
    assert result["c2u_json_dumps_us"] > 0
    assert result["c2u_pydantic_us"] > 0
    assert result["text_forwarded"] == (700, 700)  # every transcript delta reached the client
    assert result["interleaved"] == 3
    assert result["c2u_interleaved_us"] > 0
    assert result["u2c_interleaved_us"] > 0
    assert len(result["turn_us"]) == 6  # 600 turns, per 100


async def test_a_turn_is_forwarded_whole_and_kept_in_the_mirror() -> None:
    """The turn the harness times is the real thing: its client events go upstream, the answer's
    events reach the client, and the conversation's mirror gains the user's and the assistant's
    items (so a long run times a long conversation)."""
    async with aiohttp.ClientSession() as http:
        path = await open_hot_path(http)
        for n in range(3):
            path.turn(turn_frames(n))
    assert path.upstream_sink.writes == 3 * (10 + 2)  # appends, commit, response.create
    assert path.client_sink.writes == 3 * 19
    items = path.session.supervisor.state.items
    assert [item["role"] for item in items] == ["user", "assistant"] * 3
    assert len({item["id"] for item in items}) == 6


async def test_the_sdk_forms_are_appends_the_relay_forwards_and_keeps() -> None:
    """The appends timed as the SDKs write them are well-formed appends: each goes upstream
    as sent, and its audio is kept for a replay, as a compact one's is."""
    async with aiohttp.ClientSession() as http:
        for form in ("json.dumps", "pydantic"):
            path = await open_hot_path(http)
            path.write_appends_as(form)
            assert path.appends[0] != (await open_hot_path(http)).appends[0]
            for _ in range(5):
                path.c2u()
            assert path.upstream_sink.writes == 5
            assert path.session.checker.account.bytes == 5 * 960
