"""The operator's policy over input transcription models: an allowlist, and Azure's deployments."""

from __future__ import annotations

import pytest

from relay.core.errors import InvalidEvent
from relay.core.policy import Policy


def _update(model: str) -> dict[str, object]:
    transcription = {"model": model, "language": "en"}
    return {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": {"transcription": transcription}}},
    }


def test_a_model_outside_the_allowlist_is_refused_with_its_param() -> None:
    policy = Policy(allowed_transcription_models=["gpt-4o-transcribe"])
    assert policy.apply(_update("gpt-4o-transcribe")) is False
    with pytest.raises(InvalidEvent) as refused:
        policy.apply(_update("whisper-1"))
    assert refused.value.param == "session.audio.input.transcription.model"
    assert "'gpt-4o-transcribe'" in refused.value.message


def test_on_azure_the_model_is_named_by_its_deployment() -> None:
    policy = Policy(transcription_deployments={"gpt-4o-transcribe": "captions-eu"})
    event = _update("gpt-4o-transcribe")
    assert policy.apply(event) is True
    assert event["session"]["audio"]["input"]["transcription"]["model"] == "captions-eu"  # type: ignore[index]
    unmapped = _update("my-own-deployment")
    assert policy.apply(unmapped) is False  # a deployment name passes as it is


def test_a_realtime_session_update_without_transcription_is_untouched() -> None:
    policy = Policy(allowed_transcription_models=["gpt-4o-transcribe"])
    assert (
        policy.apply({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}})
        is False
    )
