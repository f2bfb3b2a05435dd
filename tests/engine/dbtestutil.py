"""Helpers shared by the database tests (not a test module)."""

from __future__ import annotations

import hashlib

import msgpack
import numpy as np

import llmdsdb


def dump(db: llmdsdb.Database) -> tuple:
    """A canonical dump of a database's visible state: generation, count and every document
    (id, text, embedding bytes, metadata, content hash) sorted by id."""
    docs = sorted(
        (d.id, d.text, None if d.embedding is None else d.embedding.tobytes(),
         msgpack.packb(d.metadata), d.content_hash)
        for d in db.iter_documents()
    )
    return db.generation, db.count(), docs


def digest(db: llmdsdb.Database) -> str:
    return hashlib.sha256(msgpack.packb(list(dump(db)))).hexdigest()


def state_hash(db: llmdsdb.Database) -> str:
    """The database hash of the fault and bad-input tests: sha256 over msgpack of the stored
    configuration (keys sorted) and :func:`dump` (generation, count, every document sorted
    by id). Equal hashes mean nothing visible changed, not even an empty commit."""
    config = sorted((k, repr(v)) for k, v in db.config.items())
    return hashlib.sha256(msgpack.packb([config, list(dump(db))])).hexdigest()


def path_state_hash(path: str) -> str:
    """:func:`state_hash` of the database at ``path``, opened read-only."""
    with llmdsdb.open(path, readonly=True) as db:
        return state_hash(db)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
