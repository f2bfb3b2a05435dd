"""The compiled extension is built and reports what it runs."""

from __future__ import annotations

import llmdsdb._native as native


def test_kernel_info_names_isa_and_kernels() -> None:
    info = native.kernel_info()
    assert info["isa"] in {"avx512", "avx2", "sse2", "neon", "scalar"}
    assert "kernel_info" in info["kernels"]
    assert isinstance(info["compiler"], str) and info["compiler"]
