"""The kept input audio: what a range of the stream reads back, whatever the chunks' edges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.core.retention import AudioRetention


@given(sizes=st.lists(st.integers(1, 40), min_size=0, max_size=12), data=st.data())
def test_a_segment_is_the_stream_between_two_positions(sizes: list[int], data: st.DataObject) -> None:
    retention = AudioRetention()
    retention.configure("pcm16", None)  # manual turns: everything since the buffer began is kept
    stream = b""
    for n, size in enumerate(sizes):
        chunk = bytes((n * 7 + i) % 251 for i in range(size))
        retention.append(chunk, now=float(n))
        stream += chunk
    # The buffer began again here (a commit): what is before it is let go, chunk edges or not.
    retention.cut(data.draw(st.integers(0, len(stream)), label="cut"))
    start = data.draw(st.integers(-5, len(stream) + 5), label="start")
    stop = data.draw(st.integers(-5, len(stream) + 5), label="stop")
    kept_from = retention.end - retention.kept_bytes
    low = max(start, kept_from, 0)
    assert retention.segment(start, stop) == stream[low : max(low, stop)]
