"""Which build of the per-frame code runs: compiled or Python.

``pip install`` compiles with Cython, when a C compiler is there, ``relay/core/_speedups.pyx``
(the frame reader and writer, the float32 check, the plain append's shortcut),
``relay/io/_frame_path.pyx`` (a connection's per-frame path and the lanes for the append and the
audio delta) and the modules in ``PURE_MODE``. Each ``.pyx`` has a pure-Python twin beside it,
the reference, which runs when the build is missing or ``RELAY_NO_EXTENSIONS`` is set (as
``AIOHTTP_NO_EXTENSIONS`` does for aiohttp). CI runs the whole suite on both;
``RELAY_REQUIRE_EXTENSIONS`` makes a missing build an error instead of a quiet fallback (CI sets
it, so a broken build cannot pass as Python).

The modules in ``PURE_MODE`` have no twin: each ``.py`` is compiled as it is (Cython's pure-Python
mode, typed by the ``.pxd`` beside it), so the state the append lane reads and writes for every
frame (the audio check, the readiness gate, the replay's audio) is C fields it reaches without a
dictionary lookup, and the retention's trim runs as C. The compiled module sits beside its own
source, where Python would always import it: with ``RELAY_NO_EXTENSIONS`` set,
:func:`prefer_sources` makes those imports take the ``.py``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

NO_EXTENSIONS = os.environ.get("RELAY_NO_EXTENSIONS", "") not in ("", "0")
REQUIRE_EXTENSIONS = os.environ.get("RELAY_REQUIRE_EXTENSIONS", "") not in ("", "0")
# Compiled from their own .py (setup.py reads this list).
PURE_MODE = ("relay.core.audio", "relay.core.gate", "relay.core.resume", "relay.core.retention")


def compiled(module: str = "relay.core._speedups") -> ModuleType | None:
    """The compiled ``module``, or None for the pure-Python twins."""
    if NO_EXTENSIONS:
        return None
    try:
        found = importlib.import_module(module)
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        return None
    if module in PURE_MODE and not is_extension(found):
        if REQUIRE_EXTENSIONS:
            raise ImportError(f"{module} is not compiled")
        return None
    return found


def is_extension(module: ModuleType) -> bool:
    return (getattr(module, "__file__", None) or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


COMPILED_MODULES = ("relay.core._speedups", "relay.io._frame_path", *PURE_MODE)


def build() -> str:
    """``compiled`` (every compiled module there) or ``python``: for the startup log and the
    build-info metric."""
    return "compiled" if all(compiled(name) is not None for name in COMPILED_MODULES) else "python"


class _Sources(importlib.abc.MetaPathFinder):
    """Finds the ``.py`` of a ``PURE_MODE`` module, where the path finder would take the ``.so``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PURE_MODE or path is None:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            source = Path(entry) / leaf
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def prefer_sources() -> None:
    """Under ``RELAY_NO_EXTENSIONS``, import the ``PURE_MODE`` modules from their ``.py``
    (relay/__init__.py calls this before anything imports them)."""
    if NO_EXTENSIONS and not any(isinstance(finder, _Sources) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Sources())
