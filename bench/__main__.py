"""``python -m bench`` / ``relay bench``: run the benchmark."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    # numpy's BLAS threads would spin on the load generator's core; nothing here needs them.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from bench.runner import run

    return run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
