"""The relay's benchmark: what it costs per frame and per session (see docs/benchmark.md)."""
