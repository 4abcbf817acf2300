"""One step of the capacity sweep in a process of its own: ``python -m bench.sweep --count 400``.

Direct, nginx and a fresh relay at ``count`` voice sessions, on this process's own simulator, in
interleaved rounds (``bench.runner.compare``); the full benchmark runs each step this way and
reads it back (``--save``), so that no step inherits the load process of the rows before it.
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument("--count", type=int, required=True, help="voice sessions at once")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--no-nginx", dest="nginx", action="store_false")
    parser.add_argument("--save", help="pickle (paths, the load process's stalls) here")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # as the benchmark: the load side on core 1, the proxies on 0
    import uvloop

    from bench.report import sweep_table
    from bench.runner import sweep_step

    paths, stalls = uvloop.run(sweep_step(args.count, args.duration, args.trials, nginx=args.nginx))
    if args.save:
        Path(args.save).write_bytes(pickle.dumps((paths, stalls)))
    print("\n".join(sweep_table({"sweep": [(args.count, paths)], "sweep_stalls": [stalls]})))
    return 0 if all(path.lost == 0 for path in paths.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
