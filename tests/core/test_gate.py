"""Hold-until-ready decisions, without sockets."""

from __future__ import annotations

import pytest

from relay.core.errors import HoldOverflow
from relay.core.gate import ReadinessGate, changes_input_audio

APPEND = "input_audio_buffer.append"


def _gate() -> ReadinessGate:
    return ReadinessGate(max_events=3, max_bytes=100, timeout_s=5)


def _format_update() -> dict[str, object]:
    return {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
    }


def test_everything_waits_for_session_created_then_leaves_in_order() -> None:
    gate = _gate()
    assert gate.must_hold("session.update")
    gate.hold(b"a", "session.update", 0)
    gate.hold(b"b", APPEND, 0)
    assert gate.releasable() is None
    gate.on_server_event("session.created")
    released = [gate.releasable(), gate.releasable(), gate.releasable()]
    assert [f.data if f else None for f in released] == [b"a", b"b", None]
    assert not gate.must_hold(APPEND)


def test_appends_wait_for_the_update_that_changes_the_format() -> None:
    gate = _gate()
    gate.on_server_event("session.created")
    gate.sent(_format_update(), "session.update")
    assert gate.must_hold(APPEND)
    assert not gate.must_hold("conversation.item.create")
    gate.hold(b"audio", APPEND, 0)
    # Once something is held, later events queue behind it, whatever their type.
    assert gate.must_hold("conversation.item.create")
    gate.hold(b"item", "conversation.item.create", 0)
    assert gate.releasable() is None
    gate.on_server_event("session.updated")
    assert [gate.releasable().data, gate.releasable().data] == [b"audio", b"item"]  # type: ignore[union-attr]


def test_a_rejected_update_also_releases_but_unrelated_errors_do_not() -> None:
    gate = _gate()
    gate.on_server_event("session.created")
    gate.sent(_format_update(), "session.update")
    commit_error = {
        "type": "error",
        "error": {"code": "input_audio_buffer_commit_empty", "param": None},
    }
    gate.on_server_event("error", commit_error)
    assert gate.must_hold(APPEND)
    rejected = {
        "type": "error",
        "error": {"code": "invalid_value", "param": "session.audio.input.format.type"},
    }
    gate.on_server_event("error", rejected)
    assert not gate.must_hold(APPEND)


def test_updates_that_do_not_touch_input_audio_do_not_hold() -> None:
    assert not changes_input_audio(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
    )
    assert changes_input_audio({"type": "session.update", "session": {"turn_detection": None}})
    assert changes_input_audio(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )


def test_bounds_and_timeout() -> None:
    gate = _gate()
    for i in range(3):
        assert gate.has_room()
        gate.hold(b"x" * 10, APPEND, float(i))
    assert not gate.has_room()
    gate.check_timeout(4.9)
    with pytest.raises(HoldOverflow, match="3 held event"):
        gate.check_timeout(5.1)


def test_losing_the_upstream_holds_again() -> None:
    gate = _gate()
    gate.on_server_event("session.created")
    gate.sent(_format_update(), "session.update")
    gate.upstream_lost()
    assert gate.must_hold("response.create")
    gate.on_server_event("session.created")
    assert not gate.must_hold(APPEND)
