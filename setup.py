"""The compiled build of the per-frame code (relay/core/_speedups.pyx, relay/io/_frame_path.pyx,
and the modules of ``relay.core.speedups.PURE_MODE``, each compiled from its own .py and typed by
the .pxd beside it), made by ``pip install``.

Optional, as aiohttp's and yarl's are: without a C compiler (or with ``RELAY_NO_EXTENSIONS`` set)
the install goes on and the relay runs their pure-Python twins, the same code it was measured
and tested against (CI runs the whole suite on both builds).
"""

from __future__ import annotations

import os
import runpy
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


# Modules compiled from their own .py, named where the Python build finds them too.
PURE_MODE: tuple[str, ...] = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay/core/speedups.py")
)["PURE_MODE"]


def extensions() -> list[Extension]:
    if os.environ.get("RELAY_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    modules = [
        Extension("relay.core._speedups", ["relay/core/_speedups.pyx"], extra_compile_args=["-O2"]),
        Extension("relay.io._frame_path", ["relay/io/_frame_path.pyx"], extra_compile_args=["-O2"]),
        # Pure-Python mode: the .py is the source of both builds (relay/core/speedups.py says how
        # the Python build still imports the .py beside the compiled module).
        *(
            Extension(name, [name.replace(".", "/") + ".py"], extra_compile_args=["-O2"])
            for name in PURE_MODE
        ),
    ]
    # The .py's annotations are for mypy; the .pxd alone gives the compiled build its C types.
    return cythonize(modules, language_level=3, quiet=True, compiler_directives={"annotation_typing": False})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
