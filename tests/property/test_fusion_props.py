"""Properties of llmdsdb.fusion.fuse against plain-Python reference formulas."""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import given
from hypothesis import strategies as st

from llmdsdb.fusion import fuse

KEYS = st.integers(min_value=0, max_value=40)
BM25_SCORE = st.floats(min_value=0.01, max_value=50.0, allow_nan=False)
COS_DIST = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)


def side(score: st.SearchStrategy[float], min_size: int = 0) -> st.SearchStrategy[list]:
    return st.dictionaries(KEYS, score, min_size=min_size, max_size=25).map(
        lambda d: list(d.items())
    )


WEIGHTS = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 1.0))
NORMS = st.sampled_from(["minmax", "zscore", "theoretical"])
METHODS = st.sampled_from([("convex", "minmax"), ("convex", "zscore"),
                           ("convex", "theoretical"), ("rrf", "minmax")])


def bm25_order(bm25: list) -> list:
    return [k for k, _ in sorted(bm25, key=lambda kv: (-kv[1], kv[0]))]


def vector_order(dense: list) -> list:
    return [k for k, _ in sorted(dense, key=lambda kv: (kv[1], kv[0]))]


@given(side(BM25_SCORE), side(COS_DIST), NORMS, st.sampled_from(["convex", "rrf"]))
def test_weight_zero_is_bm25_order_and_one_is_vector_order(bm25, dense, norm, method) -> None:
    got0 = [h.key for h in fuse(bm25, dense, fusion_weight=0.0, method=method,
                                normalization=norm)]
    got1 = [h.key for h in fuse(bm25, dense, fusion_weight=1.0, method=method,
                                normalization=norm)]
    assert got0 == bm25_order(bm25)
    assert got1 == vector_order(dense)


@given(side(BM25_SCORE), side(COS_DIST), WEIGHTS)
def test_minmax_convex_scores_within_unit_interval(bm25, dense, w) -> None:
    for h in fuse(bm25, dense, fusion_weight=w):
        assert 0.0 <= h.score <= 1.0
        for part in (h.bm25_norm, h.vector_norm):
            assert part is None or 0.0 <= part <= 1.0


def reference_rrf(bm25: list, dense: list, w: float, k: float = 60.0) -> list:
    """Weighted RRF written out in plain Python (competition ranks, ties by key)."""

    def ranks(values: dict, better) -> dict:
        return {key: 1 + sum(1 for o in values.values() if better(o, v))
                for key, v in values.items()}

    rb = ranks(dict(bm25), lambda o, v: o > v)
    rv = ranks(dict(dense), lambda o, v: o < v)
    use_b, use_d = w < 1.0, w > 0.0
    cand = (set(rb) if use_b else set()) | (set(rv) if use_d else set())
    scored = []
    for key in cand:
        pb = 1.0 / (k + rb[key]) if key in rb else 0.0
        pv = 1.0 / (k + rv[key]) if key in rv else 0.0
        if use_b and use_d:
            s = w * pv + (1.0 - w) * pb
        else:
            s = pb if use_b else pv
        big = 10**9
        r1 = rb.get(key, big) if use_b else big
        r2 = rv.get(key, big) if use_d else big
        scored.append((key, s, (min(r1, r2), max(r1, r2))))
    scored.sort(key=lambda kv: (-kv[1], kv[2], kv[0]))
    return [(key, s) for key, s, _ in scored]


@given(side(BM25_SCORE, 1), side(COS_DIST, 1), WEIGHTS)
def test_rrf_matches_plain_python_reference(bm25, dense, w) -> None:
    got = [(h.key, h.score) for h in fuse(bm25, dense, fusion_weight=w, method="rrf")]
    want = reference_rrf(bm25, dense, w)
    assert [k for k, _ in got] == [k for k, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def reference_minmax_convex(bm25: list, dense: list, w: float) -> dict:
    """Min-max convex fusion in plain Python: key -> score (missing side = 0)."""

    def norm(pairs: list, higher: bool) -> dict:
        vals = {k: (v if higher else -v) for k, v in pairs}
        lo, hi = min(vals.values()), max(vals.values())
        return {k: (1.0 if hi == lo else (v - lo) / (hi - lo)) for k, v in vals.items()}

    nb, nv = norm(bm25, True), norm(dense, False)
    return {key: w * nv.get(key, 0.0) + (1 - w) * nb.get(key, 0.0) for key in set(nb) | set(nv)}


@given(side(BM25_SCORE, 1), side(COS_DIST, 1), st.floats(0.01, 0.99))
def test_minmax_convex_matches_plain_python_reference(bm25, dense, w) -> None:
    want = reference_minmax_convex(bm25, dense, w)
    got = fuse(bm25, dense, fusion_weight=w)
    assert {h.key for h in got} == set(want)
    for h in got:
        assert math.isclose(h.score, want[h.key], rel_tol=1e-9, abs_tol=1e-9)
    scores = [h.score for h in got]
    assert scores == sorted(scores, reverse=True)


@given(side(BM25_SCORE), side(COS_DIST), WEIGHTS, METHODS, st.randoms(use_true_random=False))
def test_permutation_invariance(bm25, dense, w, method_norm, rnd: random.Random) -> None:
    method, norm = method_norm
    a = fuse(bm25, dense, fusion_weight=w, method=method, normalization=norm)
    b_side, d_side = list(bm25), list(dense)
    rnd.shuffle(b_side)
    rnd.shuffle(d_side)
    b = fuse(b_side, d_side, fusion_weight=w, method=method, normalization=norm)
    assert a == b


@given(side(BM25_SCORE), side(COS_DIST), WEIGHTS, METHODS, st.integers(1, 30))
def test_top_k_is_a_prefix_and_keys_are_unique(bm25, dense, w, method_norm, k) -> None:
    method, norm = method_norm
    full = fuse(bm25, dense, fusion_weight=w, method=method, normalization=norm)
    assert fuse(bm25, dense, fusion_weight=w, method=method, normalization=norm,
                top_k=k) == full[:k]
    keys = [h.key for h in full]
    assert len(keys) == len(set(keys))
    expected = set()
    if w < 1.0:
        expected |= {key for key, _ in bm25}
    if w > 0.0:
        expected |= {key for key, _ in dense}
    assert set(keys) == expected


@given(side(BM25_SCORE, 1), side(COS_DIST, 1), st.floats(0.0, 1.0), NORMS)
def test_convex_score_is_the_weighted_sum_of_the_explained_parts(bm25, dense, w, norm) -> None:
    hits = fuse(bm25, dense, fusion_weight=w, normalization=norm)
    if 0.0 < w < 1.0:
        present_b = [h.bm25_norm for h in hits if h.bm25_norm is not None]
        present_v = [h.vector_norm for h in hits if h.vector_norm is not None]
        for h in hits:
            pb = h.bm25_norm if h.bm25_norm is not None else _missing(present_b)
            pv = h.vector_norm if h.vector_norm is not None else _missing(present_v)
            assert math.isclose(h.score, w * pv + (1 - w) * pb, rel_tol=1e-9, abs_tol=1e-9)


def _missing(present: list) -> float:
    return 0.0 if not present or min(present) == max(present) else min(present)


@given(side(BM25_SCORE, 1), side(COS_DIST, 1), NORMS)
def test_missing_side_falls_back_to_the_present_one(bm25, dense, norm) -> None:
    for w in (0.0, 0.3, 1.0):
        assert [h.key for h in fuse(None, dense, fusion_weight=w, normalization=norm)] == \
            vector_order(dense)
        assert [h.key for h in fuse(bm25, None, fusion_weight=w, normalization=norm)] == \
            bm25_order(bm25)


# --- RetrievalPipeline against a dict model ------------------------------------------------

import numpy as np
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from llmdsdb.errors import DocumentNotFoundError, DuplicateIdError
from llmdsdb.retrieval_pipeline import RetrievalPipeline

WORDS = ["alpha", "bravo", "delta", "echo", "golf", "hotel"]  # kept whole by the analyzer
DIM = 4
VEC = st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=DIM, max_size=DIM).filter(
    lambda v: sum(x * x for x in v) > 1e-3
)


class PipelineMachine(RuleBasedStateMachine):
    """Adds, removes and searches against a dict of documents; the small token budget makes
    the result cache evict, and every search is checked against the model (a stale cache
    entry would show up as a removed or missing document)."""

    def __init__(self) -> None:
        super().__init__()
        self.pipe = RetrievalPipeline(embedding_dim=DIM, seed=0, token_budget=25)
        self.model: dict[int, tuple[set[str], np.ndarray | None]] = {}

    @rule(doc_id=st.integers(0, 12), words=st.lists(st.sampled_from(WORDS), max_size=4),
          vec=st.one_of(st.none(), VEC))
    def add(self, doc_id, words, vec) -> None:
        emb = None if vec is None else np.array(vec)
        if doc_id in self.model:
            try:
                self.pipe.add_document(doc_id, " ".join(words), emb)
            except DuplicateIdError:
                return
            raise AssertionError("duplicate id accepted")
        self.pipe.add_document(doc_id, " ".join(words), emb)
        self.model[doc_id] = (set(words), emb)

    @rule(doc_id=st.integers(0, 12))
    def remove(self, doc_id) -> None:
        if doc_id not in self.model:
            try:
                self.pipe.remove_document(doc_id)
            except DocumentNotFoundError:
                return
            raise AssertionError("removing an unknown id succeeded")
        self.pipe.remove_document(doc_id)
        del self.model[doc_id]

    @rule(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
    def search_text(self, words) -> None:
        got = self.pipe.search(" ".join(words), None, top_k=50)
        want = {d for d, (ws, _) in self.model.items() if ws & set(words)}
        assert {d for d, _ in got} == want
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)

    @rule(vec=VEC)
    def search_vector(self, vec) -> None:
        q = np.array(vec)
        got = self.pipe.search("", q, top_k=50)
        embedded = {d: e for d, (_, e) in self.model.items() if e is not None}
        assert {d for d, _ in got} == set(embedded)
        cos = {d: float(e @ q / np.linalg.norm(e) / np.linalg.norm(q)) for d, e in embedded.items()}
        sims = [cos[d] for d, _ in got]
        assert all(a >= b - 1e-5 for a, b in itertools.pairwise(sims))
        # a vector-only query scores each hit by its cosine similarity (issue 16)
        assert all(abs(s - cos[d]) < 1e-4 for d, s in got)

    @rule(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), vec=VEC,
          w=st.floats(0.0, 1.0))
    def search_hybrid(self, words, vec, w) -> None:
        got = self.pipe.search(" ".join(words), np.array(vec), top_k=50, fusion_weight=w)
        assert {d for d, _ in got} <= set(self.model)
        if 0.0 < w < 1.0:  # fused: a convex mix of min-max parts
            assert all(0.0 <= s <= 1.0 for _, s in got)
        elif w == 0.0:  # BM25 only: raw BM25 scores
            assert all(s >= 0.0 for _, s in got)
        else:  # vector only: cosine similarities
            assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for _, s in got)

    @invariant()
    def check(self) -> None:
        self.pipe._check()
        assert len(self.pipe) == len(self.model)


PipelineMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=25,
                                             deadline=None)
TestPipelineMachine = PipelineMachine.TestCase


@given(st.dictionaries(KEYS, st.sampled_from([0.5, 1.25, 2.0, 3.5]) | BM25_SCORE, max_size=25),
       st.integers(1, 30), METHODS, st.floats(0.0, 0.99))
def test_bm25_own_hits_equal_the_one_side_fusion_with_own_scores(scores, k, method_norm,
                                                                   w) -> None:
    """A BM25 list as the index gives it (best first, ties in any key order, few distinct
    scores so that ties cross the k-th): the direct path equals fusing the one side and
    replacing the normalised score by the raw one, under every spec."""
    from llmdsdb.fusion import FusionSpec, bm25_own_hits
    from llmdsdb.retrieval_pipeline import own_scores

    pairs = sorted(scores.items(), key=lambda kv: (-kv[1], -kv[0]))  # ties: keys descending
    spec = FusionSpec(w, method_norm[0], method_norm[1])
    got = bm25_own_hits(pairs, k)
    want = own_scores(spec.fuse(pairs, None, top_k=k, metric="cosine"), "cosine") if pairs else []
    assert got == want
    assert bm25_own_hits(pairs[::-1], k) is None or len(set(scores.values())) <= 1
