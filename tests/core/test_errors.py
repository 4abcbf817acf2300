"""Ids shaped like the API's."""

from __future__ import annotations

import re
from collections import Counter

from relay.core.errors import InvalidEvent, UpstreamError, error_event, new_id
from tests.support.conversation import SERVER_EVENT


def test_ids_have_the_apis_shape_and_use_the_whole_alphabet() -> None:
    ids = [new_id("event_") for _ in range(3000)]
    assert all(re.fullmatch(r"event_[A-Za-z0-9]{21}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(i[6:] for i in ids))
    assert len(counts) == 62  # every character appears, none dominates
    assert max(counts.values()) < 2 * min(counts.values())
    assert re.fullmatch(r"call_[A-Za-z0-9]{16}", new_id("call_", 16))


def test_the_relays_own_errors_parse_as_the_official_sdk_reads_them() -> None:
    """Every error the relay answers with itself goes through error_event or an exception's
    to_event: whichever the code, param and event id, the openai SDK must parse it (an event it
    refuses surfaces in the app as a validation failure, not as the relay's message)."""
    events = [
        error_event("invalid_value", "m", param="audio_end_ms", client_event_id="evt_1"),
        error_event(None, "m"),
        InvalidEvent("invalid_event", "m", "audio", "evt_2").to_event(),
        InvalidEvent("input_audio_buffer_commit_empty", "m", None, None).to_event(),
        UpstreamError("upstream gone", retryable=False).to_event(),
    ]
    for event in events:
        parsed = SERVER_EVENT.validate_python(event)
        assert (parsed.type, parsed.error.message) == ("error", event["error"]["message"])
