"""``bench/profile.py``: perf's report read into a split of CPU per frame, and a real round.

The split's arithmetic is checked on perf's own output format; the round runs perf on a relay
under a smoke-sized load (skipped, with the reason, where perf cannot sample here).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from bench.load import Stamps
from bench.profile import GROUPS, group_of, parse, perf_unusable, profile_round, relay_modules, table
from bench.runner import simulator_config
from bench.servers import start_relay
from relay.simulator.server import start_simulator

# `perf report --no-children --sort dso --stdio -q -g none`, and with `--sort dso,sym`
BY_DSO = """\
    43.94%  [kernel.kallsyms]
    31.19%  libpython3.11.so.1.0
     6.92%  loop.cpython-311-x86_64-linux-gnu.so
     6.68%  libc.so.6
     5.16%  _frame_path.cpython-311-x86_64-linux-gnu.so
     0.88%  orjson.cpython-311-x86_64-linux-gnu.so
     0.32%  [vdso]
"""
BY_SYMBOL = """\
     9.36%  [kernel.kallsyms]                             [k] finish_task_switch.isra.0
     8.05%  libpython3.11.so.1.0                          [.] _PyEval_EvalFrameDefault
     1.52%  _frame_path.cpython-311-x86_64-linux-gnu.so   [.] __pyx_f_AppendLane_c_take
"""


def test_perf_shares_become_cpu_per_frame_by_group() -> None:
    ours = frozenset({"_frame_path.cpython-311-x86_64-linux-gnu.so"})
    split = parse(BY_DSO, BY_SYMBOL, 20.0, ours)
    assert split.groups["kernel"] == pytest.approx((43.94 + 0.32) / 100 * 20)
    assert split.groups["interpreter"] == pytest.approx(31.19 / 100 * 20)
    assert split.groups["event loop"] == pytest.approx(6.92 / 100 * 20)
    assert split.groups["libc"] == pytest.approx(6.68 / 100 * 20)
    assert split.groups["relay compiled"] == pytest.approx(5.16 / 100 * 20)
    assert split.groups["other C"] == pytest.approx(0.88 / 100 * 20)
    assert split.symbols[0] == (
        "finish_task_switch.isra.0 [[kernel.kallsyms]]",
        pytest.approx(9.36 / 100 * 20),
    )
    assert [s for s, _ in split.symbols][2].startswith("__pyx_f_AppendLane")


def test_the_table_sets_the_relay_beside_the_floor() -> None:
    ours = frozenset({"_frame_path.cpython-311-x86_64-linux-gnu.so"})
    relay, floor = parse(BY_DSO, BY_SYMBOL, 20.0, ours), parse(BY_DSO, "", 10.0, ours)
    relay.name, floor.name = "relay", "floor (forward only)"
    lines = table([floor, relay])
    assert lines[0] == "| us per frame | floor (forward only) | relay | relay - floor |"
    assert f"| interpreter | {31.19 / 10:.1f} | {31.19 / 5:.1f} | +{31.19 / 10:.1f} |" in lines
    assert "| total | 10.0 | 20.0 | +10.0 |" in lines
    assert not any(line.startswith("| nginx |") for line in lines)  # no proxy had any


def test_the_relay_s_own_modules_are_known() -> None:
    if not os.environ.get("RELAY_REQUIRE_EXTENSIONS"):
        pytest.skip("the compiled build is required only where RELAY_REQUIRE_EXTENSIONS is set")
    modules = relay_modules()
    assert any(name.startswith("_frame_path.") for name in modules)  # relay/io
    assert any(name.startswith("retention.") for name in modules)  # relay/core, pure mode
    assert group_of(next(iter(modules)), modules) == "relay compiled"


def test_a_round_under_perf_accounts_for_the_relay_s_cpu() -> None:
    if reason := perf_unusable():
        pytest.skip(reason)

    async def run() -> None:
        current = {"clock": Stamps()}
        runner, sim_port = await start_simulator(simulator_config(current))
        relay = await start_relay(sim_port)
        try:
            url = f"ws://127.0.0.1:{relay.port}/v1/realtime?model=gpt-realtime"
            split = await profile_round("relay", relay.proc.pid, url, 5, 3.0, current)
        finally:
            relay.stop()
            await runner.cleanup()
        assert split.us_per_frame > 0
        assert set(split.groups) == set(GROUPS)
        assert split.groups["interpreter"] > 0
        assert split.groups["kernel"] > 0
        # perf's shares add up to ~100%: the groups to the CPU per frame measured apart
        assert sum(split.groups.values()) == pytest.approx(split.us_per_frame, rel=0.05)
        assert split.symbols

    asyncio.run(run())
