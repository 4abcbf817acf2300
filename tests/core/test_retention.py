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


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 40)),
            st.tuples(st.just("cut"), st.floats(0, 1)),
        ),
        max_size=30,
    )
)
def test_cuts_let_go_of_exactly_what_is_before_them(steps: list[tuple[str, float]]) -> None:
    """Commits anywhere among appends of any size: what is kept is the stream from where the
    buffer last began, to the byte, whichever end the release walked from."""
    retention = AudioRetention()
    retention.configure("pcm16", None)
    stream = b""
    for n, (kind, value) in enumerate(steps):
        if kind == "append":
            chunk = bytes((n * 11 + i) % 251 for i in range(int(value)))
            retention.append(chunk, now=float(n))
            stream += chunk
        else:
            retention.cut(retention.origin + round((retention.end - retention.origin) * value))
        kept_from = retention.end - retention.kept_bytes
        assert kept_from == retention.origin  # manual turns: nothing since the buffer began is let go
        assert retention.segment(0, len(stream)) == stream[retention.origin :]
