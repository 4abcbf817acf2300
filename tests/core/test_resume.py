"""Resume bookkeeping: the sent log's bounds, the credential's rules, dedup of re-sent events."""

from __future__ import annotations

import orjson
import pytest

from relay.core.resume import ResumeBufferFull, ResumeCredential, SeenClientEvents, SentLog, split_token


def _frame(n: int, size: int = 0) -> bytes:
    event = {"type": "response.output_audio.delta", "event_id": f"event_{n}", "delta": "A" * size}
    return orjson.dumps(event)


def _log(**bounds: int) -> SentLog:
    defaults = {"window_bytes": 10_000, "window_frames": 5, "max_bytes": 100_000, "max_frames": 50}
    return SentLog(**{**defaults, **bounds})


def test_while_attached_only_the_window_is_kept() -> None:
    log = _log()
    for n in range(20):
        log.append(_frame(n))
    assert len(log) == 5
    frames, found = log.after("event_16")
    assert found
    assert frames == [_frame(17), _frame(18), _frame(19)]


def test_the_window_is_bounded_in_bytes_too() -> None:
    log = _log(window_bytes=3000, window_frames=100)
    for n in range(10):
        log.append(_frame(n, 1000))
    assert log.bytes <= 3000
    assert len(log) == 2


def test_an_event_older_than_the_log_is_a_gap_and_everything_is_resent() -> None:
    log = _log()
    for n in range(20):
        log.append(_frame(n))
    frames, found = log.after("event_3")
    assert not found
    assert len(frames) == 5
    assert log.after(None) == (frames, False)


def test_an_id_that_is_a_prefix_of_another_does_not_match_it() -> None:
    log = _log()
    for n in (1, 10, 11):
        log.append(_frame(n))
    frames, found = log.after("event_1")
    assert found
    assert frames == [_frame(10), _frame(11)]


def test_detached_keeps_everything_up_to_its_bounds() -> None:
    log = _log(max_frames=30)
    log.detach()
    for n in range(30):
        log.append(_frame(n))
    assert len(log) == 30
    with pytest.raises(ResumeBufferFull):
        log.append(_frame(30))


def test_detached_bytes_bound() -> None:
    log = _log(max_bytes=5000, max_frames=1000)
    log.detach()
    with pytest.raises(ResumeBufferFull):
        for n in range(10):
            log.append(_frame(n, 1000))


def test_reattaching_trims_back_to_the_window() -> None:
    log = _log()
    log.detach()
    for n in range(30):
        log.append(_frame(n))
    log.attach()
    assert len(log) == 5


def test_a_token_resumes_only_its_identity_and_only_until_replaced() -> None:
    credential = ResumeCredential("relay_abc", "token:1")
    token, digest = credential.prepare()
    assert credential.check(token.split(".", 1)[1], "token:1") == "wrong_token"  # not adopted yet
    credential.adopt(digest)
    parts = split_token(token)
    assert parts is not None
    assert parts[0] == "relay_abc"
    assert credential.check(parts[1], "token:1") is None
    assert credential.check(parts[1], "token:2") == "wrong_identity"
    assert credential.check(parts[1][:-1] + "x", "token:1") == "wrong_token"
    newer, newer_digest = credential.prepare()
    credential.adopt(newer_digest)
    assert credential.check(parts[1], "token:1") == "wrong_token"
    assert credential.check(newer.split(".", 1)[1], "token:1") is None
    assert digest != newer_digest
    assert parts[1] not in repr(credential)


@pytest.mark.parametrize("token", ["", "nodot", ".secret", "relay_abc.short", "relay_abc."])
def test_malformed_tokens_are_not_split(token: str) -> None:
    assert split_token(token) is None


def test_re_sent_events_are_seen_by_event_id_and_by_item_id() -> None:
    seen = SeenClientEvents(limit=3)
    item = {"type": "conversation.item.create", "event_id": "e1", "item": {"id": "item_1"}}
    assert not seen.repeated(item, 0.0)
    seen.resumed(1.0)  # the app is back on a new connection: what it sent before may come again
    assert seen.repeated({**item, "event_id": "e2"}, 1.5)  # same item id
    assert seen.repeated({"type": "response.create", "event_id": "e1"}, 1.5)  # same event id
    assert not seen.repeated({"type": "response.create"}, 1.5)  # no ids: never a duplicate
    assert not seen.repeated({"type": "response.create"}, 1.5)
    for n in range(5):
        seen.repeated({"type": "response.create", "event_id": f"x{n}"}, 1.5)
    seen.resumed(2.0)
    assert not seen.repeated({"type": "response.create", "event_id": "e1"}, 2.5)  # forgotten: bounded


def test_only_a_resume_makes_a_repeat() -> None:
    """Within one connection ids are the app's business (some send every event under one fixed
    id); after a resume a repeat is recognised once, and only while re-sends are expected."""
    seen = SeenClientEvents()
    fixed = {"type": "response.create", "event_id": "rc"}
    assert not any(seen.repeated(fixed, t) for t in (0.0, 1.0, 2.0))  # every one forwarded
    seen.resumed(3.0)
    assert seen.repeated(fixed, 3.1)  # re-sent after the resume: dropped once
    assert not seen.repeated(fixed, 3.2)  # sent again on this connection: a new one
    seen.resumed(10.0)
    assert not seen.repeated(fixed, 10.0 + SeenClientEvents.RESEND_WINDOW_S + 1)  # long after: new
    item = {"type": "conversation.item.create", "item": {"id": "item_9"}}
    assert not seen.repeated(item, 30.0)
    assert not seen.repeated(item, 30.1)  # the API refuses the duplicate id itself
