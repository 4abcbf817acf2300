"""The voice console in headless Chromium with a fake microphone speaking real (espeak-ng) speech.

The simulator's VAD hears the speech, the response streams back and plays, the transcript and
event log show in the DOM, and a forced upstream drop mid-conversation goes unnoticed by the page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from relay.simulator.config import SimulatorConfig
from relay.simulator.server import start_simulator
from relay.simulator.timing import Timing
from tests.conftest import RelayFactory, RelayHandle
from tests.support.sim_control import SimControl
from tests.support.speech import speech_pcm16, write_wav
from tests.support.system import require_binary
from tests.support.tcp_proxy import CuttableProxy

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture
async def stack(start_relay: RelayFactory) -> AsyncIterator[tuple[RelayHandle, SimControl]]:
    runner, port = await start_simulator(
        SimulatorConfig(
            timing=Timing.fast(),
            speed=1.0,
            transcript_text="What is the weather like?",
            reply_text="It is sunny and warm today.",
        )
    )
    relay = await start_relay(
        upstream="simulator", upstream_url=f"ws://127.0.0.1:{port}/v1/realtime", reconnect_base_delay_s=0.05
    )
    yield relay, SimControl(f"http://127.0.0.1:{port}")
    await runner.cleanup()


def _microphone_wav(tmp_path: Path) -> Path:
    silence = np.zeros(24000, dtype="<i2").tobytes()
    speech = speech_pcm16("What is the weather like?")
    wav = tmp_path / "mic.wav"
    # Chromium loops the file: speech once, then a long silence so the turn ends and stays ended.
    write_wav(wav, silence + speech + silence * 30)
    return wav


@pytest.mark.slow
async def test_console_conversation_in_chromium(
    stack: tuple[RelayHandle, SimControl], tmp_path: Path
) -> None:
    chromium = require_binary("chromium", package="chromium")
    pytest.importorskip("playwright")
    from playwright.async_api import async_playwright, expect

    relay, sim = stack
    wav = _microphone_wav(tmp_path)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
        )
        page = await browser.new_page()
        await page.goto(relay.http_url + "/")
        await page.get_by_test_id("token").fill(relay.token)
        await page.get_by_test_id("connect").click()
        await expect(page.get_by_test_id("connection")).to_have_text("connected", timeout=10_000)
        await expect(page.get_by_test_id("session-id")).to_contain_text("sess_")
        await page.get_by_test_id("mic").click()
        transcript = page.get_by_test_id("transcript")
        await expect(transcript.locator("li.user")).to_contain_text(
            "What is the weather like?", timeout=20_000
        )
        await expect(transcript.locator("li.assistant")).to_contain_text(
            "It is sunny and warm today.", timeout=20_000
        )
        log = page.get_by_test_id("event-log")
        await expect(log).to_contain_text("input_audio_buffer.speech_started")
        await expect(log).to_contain_text("response.done", timeout=20_000)
        # The running usage, from response.done's usage and the relay's price list.
        await expect(page.get_by_test_id("usage-tokens")).not_to_have_text("0")
        cost = await page.get_by_test_id("usage-cost").text_content()
        assert cost is not None
        assert cost.startswith("$")
        assert float(cost[1:]) > 0
        played = await page.get_by_test_id("played").text_content()
        assert played is not None
        assert int(played.split()[0]) > 500
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "console-mid-conversation.png"
        await page.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot: {shot}")

        # Drop the upstream mid-conversation: the page must carry on without a reconnect or error.
        session_id = await page.get_by_test_id("session-id").text_content()
        upstream = (await sim.sessions())[-1]["id"]
        await sim.fault(upstream, kind="drop")
        await page.get_by_test_id("text").fill("And tomorrow?")
        await page.get_by_test_id("send").click()
        await expect(transcript.locator("li.user")).to_have_count(2, timeout=10_000)
        await expect(transcript.locator("li.assistant")).to_have_count(2, timeout=20_000)
        await expect(page.get_by_test_id("connection")).to_have_text("connected")
        assert await page.get_by_test_id("session-id").text_content() == session_id
        assert await log.locator("li.error").count() == 0
        await browser.close()


@pytest.mark.slow
async def test_console_resumes_the_same_conversation_after_the_network_drops(
    stack: tuple[RelayHandle, SimControl], tmp_path: Path
) -> None:
    """The page's connection is reset under it (no close frame, as when Wi-Fi goes): the console
    resumes with its token, and the conversation, the session and the transcript carry on."""
    chromium = require_binary("chromium", package="chromium")
    pytest.importorskip("playwright")
    from playwright.async_api import async_playwright, expect

    relay, _ = stack
    proxy = await CuttableProxy(relay.server.port).start()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{proxy.port}/")
            await page.get_by_test_id("token").fill(relay.token)
            await page.get_by_test_id("connect").click()
            await expect(page.get_by_test_id("connection")).to_have_text("connected", timeout=10_000)
            await expect(page.get_by_test_id("session-id")).to_contain_text("sess_")
            session_id = await page.get_by_test_id("session-id").text_content()
            transcript = page.get_by_test_id("transcript")
            await page.get_by_test_id("text").fill("What is the weather like?")
            await page.get_by_test_id("send").click()
            # Cut the network while the answer streams: the rest must arrive after the resume.
            await expect(transcript.locator("li.assistant")).not_to_have_text("", timeout=10_000)
            proxy.cut()
            await expect(page.get_by_test_id("connection")).to_have_text(
                "connected (resumed)", timeout=10_000
            )
            await expect(transcript.locator("li.assistant")).to_have_text(
                "It is sunny and warm today.", timeout=20_000
            )
            log = page.get_by_test_id("event-log")
            await expect(log).to_contain_text("response.done", timeout=20_000)
            await page.get_by_test_id("text").fill("And tomorrow?")
            await page.get_by_test_id("send").click()
            await expect(transcript.locator("li.assistant")).to_have_count(2, timeout=20_000)
            assert await page.get_by_test_id("session-id").text_content() == session_id
            assert await log.locator("li.error").count() == 0
            assert relay.metric("relay_resumes_total", {"result": "ok"}) == 1
            await browser.close()
    finally:
        await proxy.close()
