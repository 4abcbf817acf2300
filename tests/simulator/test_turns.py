"""Turn-taking in the simulator: barge-in cancels a response, semantic VAD, transcription failure."""

from __future__ import annotations

import base64

import numpy as np

from relay.simulator.audio import synthesize
from tests.simulator.conftest import SimClient
from tests.support.sim_control import SimControl

SILENCE = np.zeros(24 * 800, dtype="<i2").tobytes()


def _b64(audio: bytes) -> str:
    return base64.b64encode(audio).decode()


async def test_speech_during_a_response_cancels_it(sim: SimClient, sim_port: int) -> None:
    await SimControl(f"http://127.0.0.1:{sim_port}").script(replies=["A very long answer " * 30])
    await sim.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "talk"}]},
        }
    )
    await sim.send({"type": "response.create"})
    await sim.until("response.output_audio.delta")
    await sim.send({"type": "input_audio_buffer.append", "audio": _b64(synthesize("Stop please", "pcm16"))})
    events = await sim.until("response.done")
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    assert any(e["type"] == "input_audio_buffer.speech_started" for e in events)


async def test_semantic_vad_ends_turns_by_eagerness(sim: SimClient) -> None:
    await sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}},
            },
        }
    )
    updated = (await sim.until("session.updated"))[-1]["session"]
    assert updated["audio"]["input"]["turn_detection"]["eagerness"] == "high"
    await sim.send(
        {
            "type": "input_audio_buffer.append",
            "audio": _b64(SILENCE + synthesize("Hello there", "pcm16") + SILENCE),
        }
    )
    events = await sim.until("response.done")
    kinds = [e["type"] for e in events]
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")


async def test_transcription_failure_on_command(sim: SimClient, sim_port: int) -> None:
    await SimControl(f"http://127.0.0.1:{sim_port}").script(transcription_failures=1)
    await sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}},
            },
        }
    )
    await sim.until("session.updated")
    await sim.send({"type": "input_audio_buffer.append", "audio": _b64(synthesize("Hello there", "pcm16"))})
    await sim.send({"type": "input_audio_buffer.commit"})
    failed = (await sim.until("conversation.item.input_audio_transcription.failed"))[-1]
    assert failed["error"]["type"] == "transcription_error"
