"""The Database against a dict model: add / upsert / delete / batch / search / reopen rules,
with check() and the model comparison as invariants."""

from __future__ import annotations

import shutil
import tempfile
import warnings

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import llmdsdb
from llmdsdb.errors import DuplicateIdError, MissingSideError, MissingSideWarning

DIM = 4
IDS = st.sampled_from([f"id{i}" for i in range(12)] + ["é" * 300, "long-" + "x" * 450])
WORDS = ["apple", "banana", "cherry", "delta", "echo", "foxtrot", "golf", "hotel"]
TEXT = st.lists(st.sampled_from(WORDS), min_size=0, max_size=5).map(" ".join)
VEC = st.one_of(
    st.none(),
    st.lists(st.integers(-3, 3), min_size=DIM, max_size=DIM)
    .filter(lambda v: any(v))
    .map(lambda v: np.array(v, dtype=np.float32)),
)
META = st.one_of(st.none(), st.fixed_dictionaries({"n": st.integers(-5, 5)}))
DOC = st.tuples(TEXT, VEC, META)


def _docs(draw_ids, draw_docs):
    return list(draw_ids), [d[0] for d in draw_docs], [d[1] for d in draw_docs], \
        [d[2] for d in draw_docs]


class DatabaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dbmodel-")
        self.path = self.dir + "/db"
        # a tiny fresh segment: vectors move into the graph every few steps
        self.db = llmdsdb.open(self.path, fresh_max_vectors=5)
        # id -> (text, embedding bytes or None, metadata)
        self.model: dict[str, tuple[str, bytes | None, dict]] = {}
        self.generation = 0

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _entry(text, vec, meta):
        return text, None if vec is None else vec.tobytes(), meta or {}

    def _apply_upsert(self, model, ids, texts, vecs, metas) -> int:
        n = 0
        for i, t, v, m in zip(ids, texts, vecs, metas):
            e = self._entry(t, v, m)
            if model.get(i) != e:
                model[i] = e
                n += 1
        return n

    # --- rules -------------------------------------------------------------------------------

    @rule(items=st.dictionaries(IDS, DOC, min_size=1, max_size=4))
    def add(self, items):
        ids, texts, vecs, metas = _docs(items.keys(), items.values())
        if any(i in self.model for i in ids):
            try:
                self.db.add(ids, texts, embeddings=vecs, metadata=metas)
            except DuplicateIdError:
                return
            raise AssertionError("add of an existing id did not raise")
        assert self.db.add(ids, texts, embeddings=vecs, metadata=metas) == len(ids)
        self._apply_upsert(self.model, ids, texts, vecs, metas)
        self.generation += 1

    @rule(items=st.dictionaries(IDS, DOC, min_size=1, max_size=4))
    def upsert(self, items):
        ids, texts, vecs, metas = _docs(items.keys(), items.values())
        expected = self._apply_upsert(dict(self.model), ids, texts, vecs, metas)
        assert self.db.upsert(ids, texts, embeddings=vecs, metadata=metas) == expected
        self._apply_upsert(self.model, ids, texts, vecs, metas)
        self.generation += 1 if expected else 0

    @rule(ids=st.lists(IDS, max_size=4))
    def delete(self, ids):
        expected = len({i for i in ids if i in self.model})
        assert self.db.delete(ids) == expected
        for i in ids:
            self.model.pop(i, None)
        self.generation += 1 if expected else 0

    @rule(ops=st.lists(st.tuples(st.sampled_from(["upsert", "delete"]),
                                 st.dictionaries(IDS, DOC, min_size=1, max_size=3)),
                       min_size=1, max_size=3),
          fail=st.booleans())
    def batch(self, ops, fail):
        model = dict(self.model)
        changed = 0
        try:
            with self.db.batch():
                for kind, items in ops:
                    ids, texts, vecs, metas = _docs(items.keys(), items.values())
                    if kind == "upsert":
                        n = self._apply_upsert(model, ids, texts, vecs, metas)
                        assert self.db.upsert(ids, texts, embeddings=vecs, metadata=metas) == n
                    else:
                        n = len({i for i in ids if i in model})
                        assert self.db.delete(ids) == n
                        for i in ids:
                            model.pop(i, None)
                    changed += n
                if fail:
                    raise KeyboardInterrupt  # any exception: nothing is written
        except KeyboardInterrupt:
            return
        self.model = model
        self.generation += 1 if changed else 0

    @rule(outer=st.dictionaries(IDS, DOC, min_size=1, max_size=3),
          inner=st.dictionaries(IDS, DOC, min_size=1, max_size=3),
          inner_deletes=st.lists(IDS, max_size=2), fail=st.booleans())
    def nested_batch(self, outer, inner, inner_deletes, fail):
        """An exception leaving a nested batch() drops only that block's calls."""
        model = dict(self.model)
        changed = 0
        with self.db.batch():
            ids, texts, vecs, metas = _docs(outer.keys(), outer.values())
            changed += self._apply_upsert(model, ids, texts, vecs, metas)
            self.db.upsert(ids, texts, embeddings=vecs, metadata=metas)
            inner_model = dict(model)
            try:
                with self.db.batch():
                    ids, texts, vecs, metas = _docs(inner.keys(), inner.values())
                    n = self._apply_upsert(inner_model, ids, texts, vecs, metas)
                    assert self.db.upsert(ids, texts, embeddings=vecs, metadata=metas) == n
                    d = len({i for i in inner_deletes if i in inner_model})
                    assert self.db.delete(inner_deletes) == d
                    for i in inner_deletes:
                        inner_model.pop(i, None)
                    if fail:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                pass
            else:
                model = inner_model
                changed += n + d
        self.model = model
        self.generation += 1 if changed else 0

    @rule(word=st.sampled_from(WORDS))
    def search_text(self, word):
        try:
            hits = self.db.search(word, top_k=20, fusion_weight=0.0)
        except MissingSideError:  # documented: a text query where no document has text
            assert self.model and all(not t for t, _, _ in self.model.values())
            return
        expected = {i for i, (t, _, _) in self.model.items() if word in t.split()}
        assert {h.id for h in hits} == expected
        for h in hits:
            assert h.text == self.model[h.id][0] and h.metadata == self.model[h.id][2]

    @rule(vec=VEC.filter(lambda v: v is not None))
    def search_vector(self, vec):
        with_vec = {i: np.frombuffer(e, dtype=np.float32) for i, (_, e, _) in
                    self.model.items() if e is not None}
        if self.db.dim is None:
            return
        try:
            hits = self.db.search(vector=vec, top_k=20, fusion_weight=1.0)
        except MissingSideError:  # documented: documents exist and none has an embedding
            assert self.model and not with_vec
            return
        assert {h.id for h in hits} == set(with_vec)
        if with_vec:
            sims = {i: float(v @ vec / np.linalg.norm(v) / np.linalg.norm(vec))
                    for i, v in with_vec.items()}
            assert sims[hits[0].id] >= max(sims.values()) - 1e-5

    @rule()
    def reopen(self):
        self.db.close()
        self.db = llmdsdb.open(self.path, fresh_max_vectors=5)

    @rule()
    def optimize(self):
        moved = self.db.optimize()
        self.generation += 1 if moved else 0

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def hybrid(self):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MissingSideWarning)
                hits = self.db.search(WORDS[0], vector=np.ones(DIM), top_k=5)
        except MissingSideError:  # documented: neither side has anything to search
            assert all(not t and e is None for t, e, _ in self.model.values())
            return
        for w in caught:  # documented: a side with nothing to search is skipped, with a warning
            assert issubclass(w.category, MissingSideWarning)
            if "no text" in str(w.message):
                assert all(not t for t, _, _ in self.model.values())
            else:
                assert all(e is None for _, e, _ in self.model.values())
        assert len({h.id for h in hits}) == len(hits) <= 5
        assert all(h.id in self.model for h in hits)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def matches_model(self):
        assert self.db.count() == len(self.model)
        assert self.db.generation == self.generation
        docs = {d.id: d for d in self.db.iter_documents()}
        assert set(docs) == set(self.model)
        for i, (t, e, m) in self.model.items():
            d = docs[i]
            assert d.text == t and d.metadata == m
            assert (None if d.embedding is None else d.embedding.tobytes()) == e
            assert i in self.db

    @invariant()
    def healthy(self):
        assert self.db.check() == []


# Each example opens a real LMDB file and runs up to 12 steps; 12 examples keep this test
# to a few seconds (the "ci" profile's 60 would take a minute).
DatabaseMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=12,
    deadline=None,
)
TestDatabaseModel = DatabaseMachine.TestCase
