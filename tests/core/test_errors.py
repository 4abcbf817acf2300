"""Ids shaped like the API's."""

from __future__ import annotations

import re
from collections import Counter

from relay.core.errors import new_id


def test_ids_have_the_apis_shape_and_use_the_whole_alphabet() -> None:
    ids = [new_id("event_") for _ in range(3000)]
    assert all(re.fullmatch(r"event_[A-Za-z0-9]{21}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(i[6:] for i in ids))
    assert len(counts) == 62  # every character appears, none dominates
    assert max(counts.values()) < 2 * min(counts.values())
    assert re.fullmatch(r"call_[A-Za-z0-9]{16}", new_id("call_", 16))
