"""Which build of the per-frame functions runs: compiled (``relay/core/_speedups.pyx``) or Python.

``pip install`` compiles the frame reader, the frame writer and the float32 check with Cython
when a C compiler is there. Each has a pure-Python twin beside it, the reference, which runs
when the build is missing or ``RELAY_NO_EXTENSIONS`` is set (as ``AIOHTTP_NO_EXTENSIONS`` does
for aiohttp). CI runs the whole suite on both; ``RELAY_REQUIRE_EXTENSIONS`` makes a missing
build an error instead of a quiet fallback (CI sets it, so a broken build cannot pass as Python).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("RELAY_NO_EXTENSIONS", "") not in ("", "0")
REQUIRE_EXTENSIONS = os.environ.get("RELAY_REQUIRE_EXTENSIONS", "") not in ("", "0")


def compiled() -> ModuleType | None:
    """The compiled module, or None for the pure-Python twins."""
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module("relay.core._speedups")
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        return None


def build() -> str:
    """``compiled`` or ``python``: for the startup log and the build-info metric."""
    return "python" if compiled() is None else "compiled"
