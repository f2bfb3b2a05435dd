"""Build of the compiled kernels, ``llmdsdb._native._core``.

Everything else about the package is declared in pyproject.toml; this file exists only
because an extension module needs a build step. Flags are portable (no -march=native):
SIMD paths are chosen at run time inside the kernels (see llmdsdb/_native/native.h).
"""

from __future__ import annotations

import os
from glob import glob

from setuptools import Extension, setup

_SANITIZE = os.environ.get("LLMDSDB_SANITIZE") == "1"  # tools/sanitize sets it

compile_args = ["-std=c11", "-O3", "-fno-strict-aliasing", "-Wall", "-Wextra",
                "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
link_args: list[str] = []
if _SANITIZE:
    compile_args += ["-O1", "-g", "-fno-omit-frame-pointer",
                     "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    link_args += ["-fsanitize=address,undefined"]

setup(
    ext_modules=[
        Extension(
            "llmdsdb._native._core",
            sources=sorted(glob("llmdsdb/_native/*.c")),
            depends=sorted(glob("llmdsdb/_native/*.h")),
            include_dirs=["llmdsdb/_native"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            define_macros=[("PY_SSIZE_T_CLEAN", None)],
        )
    ],
)
