"""The demo's HashingEmbedder: deterministic unit vectors, errors from llmdsdb.errors."""

from __future__ import annotations

import numpy as np
import pytest

from llmdsdb.demo import HashingEmbedder
from llmdsdb.errors import InvalidArgumentError, InvalidTypeError


def test_vectors_are_deterministic_unit_rows() -> None:
    e = HashingEmbedder(dim=32)
    v = e.embed(["Owls hunt at night", "owls HUNT at night", "", "salt in the sea"])
    assert v.shape == (4, 32) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[[0, 1, 3]], axis=1), 1.0)
    assert np.array_equal(v[0], v[1]) and not v[2].any()
    assert np.array_equal(v, HashingEmbedder(dim=32).embed(
        ["Owls hunt at night", "owls HUNT at night", "", "salt in the sea"]))


@pytest.mark.parametrize("dim,err", [(1, InvalidArgumentError), ("8", InvalidTypeError),
                                     (True, InvalidTypeError), (2.5, InvalidTypeError)])
def test_bad_dim_raises_llmdsdb_errors(dim: object, err: type) -> None:
    # was a bare ValueError (and int("8") quietly accepted a string)
    with pytest.raises(err):
        HashingEmbedder(dim)  # type: ignore[arg-type]
