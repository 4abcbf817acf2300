"""Which build of the per-frame code runs: compiled or Python.

``pip install`` compiles with Cython, when a C compiler is there, ``relay/core/_speedups.pyx``
(the frame reader and writer, the float32 check, the plain append's shortcut) and
``relay/io/_frame_path.pyx`` (a connection's per-frame path and the lanes for the append and the
audio delta). Each has a pure-Python twin beside it, the reference, which runs
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


def compiled(module: str = "relay.core._speedups") -> ModuleType | None:
    """The compiled ``module``, or None for the pure-Python twins."""
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        return None


COMPILED_MODULES = ("relay.core._speedups", "relay.io._frame_path")


def build() -> str:
    """``compiled`` (every compiled module there) or ``python``: for the startup log and the
    build-info metric."""
    return "compiled" if all(compiled(name) is not None for name in COMPILED_MODULES) else "python"
