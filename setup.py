"""The compiled build of the per-frame code (relay/core/_speedups.pyx, relay/io/_frame_path.pyx),
made by ``pip install``.

Optional, as aiohttp's and yarl's are: without a C compiler (or with ``RELAY_NO_EXTENSIONS`` set)
the install goes on and the relay runs their pure-Python twins, the same code it was measured
and tested against (CI runs the whole suite on both builds).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed compile is a warning, not a failed install: the pure-Python twins take over."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers
            print(f"relay: compiled speedups not built ({exc}); pure Python runs", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"relay: compiled speedups not built ({exc}); pure Python runs", file=sys.stderr)


def extensions() -> list[Extension]:
    if os.environ.get("RELAY_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    modules = [
        Extension("relay.core._speedups", ["relay/core/_speedups.pyx"], extra_compile_args=["-O2"]),
        Extension("relay.io._frame_path", ["relay/io/_frame_path.pyx"], extra_compile_args=["-O2"]),
    ]
    return cythonize(modules, language_level=3, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
