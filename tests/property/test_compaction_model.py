"""Compaction against the database's own answers: a hypothesis state machine.

Rules add, upsert, delete, compact (whole, or stopped after a few steps - an interrupted
compaction), and reopen. The invariant after every rule: the documents are the model's (a
dict); after every compaction ``check()`` is clean and every query answers exactly as it
did before it (BM25: same ids, scores to 1e-12; vectors: the graph is small enough to be
searched exactly, so same ids and distances). The dimension (8) keeps every graph below the
exact-search threshold, so a vector answer never depends on the graph's shape.
"""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import llmdsdb
from llmdsdb import compaction

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]
DIM = 8
texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(" ".join)


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class CompactionMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.path = self.dir + "/db"
        self.db = llmdsdb.open(self.path, auto_compact_debt=None, durability="nosync",
                               fresh_max_vectors=4)
        self.model: dict[str, tuple[str, int | None]] = {}
        self.n = 0

    def teardown(self) -> None:
        import shutil

        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def answers(self) -> tuple:
        qs = [" ".join(WORDS[i:i + 2]) for i in range(0, len(WORDS), 2)]
        has_text = any(t.strip() for t, _ in self.model.values())
        bm = [[(h.id, h.score) for h in self.db.search(q, top_k=5, fusion_weight=0.0)]
              for q in qs] if has_text else []
        has_vec = any(s is not None for _, s in self.model.values())
        vs = [[(h.id, h.score) for h in self.db.search(vector=vec(1000 + i), top_k=5,
                                                        fusion_weight=1.0)]
              for i in range(4)] if has_vec else []
        return bm, vs

    @rule(t=st.lists(texts, min_size=1, max_size=6), with_vec=st.booleans())
    def add(self, t: list[str], with_vec: bool) -> None:
        ids = [f"d{self.n + i}" for i in range(len(t))]
        seeds = [self.n + i for i in range(len(t))]
        self.n += len(t)
        self.db.add(ids, t, [vec(s) for s in seeds] if with_vec or self._has_dim() else None)
        for i, x, s in zip(ids, t, seeds):
            self.model[i] = (x, s if with_vec or self._has_dim() else None)

    def _has_dim(self) -> bool:
        return self.db.dim is not None

    @precondition(lambda self: self.model)
    @rule(data=st.data(), t=texts)
    def upsert(self, data: st.DataObject, t: str) -> None:
        i = data.draw(st.sampled_from(sorted(self.model)))
        s = self.n
        self.n += 1
        self.db.upsert([i], [t], [vec(s)] if self._has_dim() else None)
        self.model[i] = (t, s if self._has_dim() else None)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=6,
                                 unique=True))
        self.db.delete(ids)
        for i in ids:
            del self.model[i]

    @rule(max_batch=st.integers(1, 50), steps=st.none() | st.integers(1, 5))
    def compact(self, max_batch: int, steps: int | None) -> None:
        before = self.answers()
        if steps is None:
            self.db.compact(max_batch=max_batch)
            st_ = self.db.stats()
            assert st_["compaction"]["debt"] == 0.0
            if st_["hnsw"] is not None:
                assert st_["hnsw"]["nodes"] == st_["hnsw"]["count"]
        else:
            left = [steps]

            def stop() -> bool:
                left[0] -= 1
                return left[0] < 0

            compaction.compact(self.db._state, max_batch=max_batch, stop=stop)
        after = self.answers()
        for x, y in zip(before[0], after[0]):
            assert [i for i, _ in x] == [i for i, _ in y]
            np.testing.assert_allclose([s for _, s in x], [s for _, s in y], rtol=1e-12)
        assert before[1] == after[1]
        assert self.db.check() == []

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = llmdsdb.open(self.path, auto_compact_debt=None, durability="nosync",
                               fresh_max_vectors=4)

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "db"):
            return
        assert self.db.count() == len(self.model)
        for i, (t, s) in self.model.items():
            d = self.db.get(i)
            assert d is not None and d.text == t
            assert (d.embedding is None) == (s is None)


CompactionMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=20,
                                               deadline=None)
TestCompaction = CompactionMachine.TestCase
