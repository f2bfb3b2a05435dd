"""Every class and method of the seed API (../shared/API.md) exists with its shape.

The method tables below are API.md's, translated to ``llmdsdb.*`` paths; the constructors
are the ones API.md fixes for this project. Behaviour is tested per module; this test pins
the names, parameter names, order and defaults so that none of them drifts.
"""

from __future__ import annotations

import importlib
import inspect
import math

import pytest

_ = inspect.Parameter.empty

# (module, class) -> {method: [(param, default), ...]} (self omitted)
SEED_API: dict[tuple[str, str], dict[str, list[tuple[str, object]]]] = {
    ("paged_allocator", "PagedAllocator"): {
        "__init__": [("page_size", _), ("max_pages", _)],
        "alloc": [("num_pages", _)],
        "free": [("page_ids", _)],
        "stats": [],
        "defragment": [],
    },
    ("kv_cache", "KVCache"): {
        "__init__": [("page_size", 512), ("max_pages", 10000), ("enable_prefix_sharing", True)],
        "attach": [("seq_id", _), ("kv_tokens", _), ("prefix_tokens", None)],
        "detach": [("seq_id", _)],
        "get": [("seq_id", _)],
        "stats": [],
    },
    ("token_lru", "TokenLRU"): {
        "__init__": [("token_budget", _), ("token_of", _)],
        "put": [("key", _), ("value", _)],
        "get": [("key", _)],
        "evict_until_budget": [("target_budget", _)],
        "total_tokens": [],
    },
    ("indexed_heap", "IndexedHeap"): {
        "__init__": [("max_heap", False)],
        "push": [("key_id", _), ("score", _)],
        "pop": [],
        "decrease_key": [("key_id", _), ("new_score", _)],
        "increase_key": [("key_id", _), ("new_score", _)],
        "delete": [("key_id", _)],
        "get_score": [("key_id", _)],
    },
    ("scheduler", "Scheduler"): {
        "__init__": [("max_batch_size", 32), ("max_wait_ms", 50.0), ("priority_fn", None)],
        "submit": [("tokens", _), ("slo_ms", None)],
        "get_batch": [("force", False)],
        "complete_batch": [("request_ids", _)],
        "update_priority": [("request_id", _), ("new_tokens", _)],
    },
    ("admissions", "AdmissionController"): {
        "__init__": [("qps_target", 10.0), ("token_rate_limit", 10000), ("window_size", 10)],
        "should_admit": [("estimated_tokens", 0)],
        "record_request": [("tokens", _)],
        "stats": [],
    },
    ("inverted_index", "InvertedIndex"): {
        "__init__": [("tokenizer", None)],
        "add_document": [("doc_id", _), ("text", _)],
        "search": [("query", _), ("top_k", 10)],
        "get_term_frequency": [("term", _), ("doc_id", _)],
        "get_document_frequency": [("term", _)],
    },
    ("hnsw", "HNSW"): {
        "__init__": [
            ("dim", _), ("M", 16), ("ef_construction", 200), ("ef_search", 50),
            ("ml", 1 / math.log(2)), ("seed", None),
        ],
        "add": [("vec", _), ("vec_id", _)],
        "search": [("query", _), ("k", _)],
        "stats": [],
    },
    ("cmsketch", "CountMinSketch"): {
        "__init__": [("width", 2048), ("depth", 4)],
        "add": [("item", _), ("count", 1)],
        "estimate": [("item", _)],
        "is_hot": [("item", _), ("threshold", _)],
        "get_error_bound": [],
    },
    ("retrieval_pipeline", "RetrievalPipeline"): {
        "__init__": [
            ("embedding_dim", 384), ("hnsw_M", 16), ("hnsw_ef_construction", 200),
            ("hnsw_ef_search", 50), ("token_budget", 100000), ("tokenizer", None), ("seed", None),
        ],
        "add_document": [("doc_id", _), ("text", _), ("embedding", None)],
        "search": [("query", _), ("query_embedding", None), ("top_k", 10), ("fusion_weight", 0.5)],
        "stats": [],
    },
}

CASES = [
    (mod, cls, meth, params)
    for (mod, cls), methods in SEED_API.items()
    for meth, params in methods.items()
]


@pytest.mark.parametrize(("module", "cls", "method", "params"), CASES,
                         ids=[f"{c[1]}.{c[2]}" for c in CASES])
def test_seed_method_shape(module: str, cls: str, method: str, params: list) -> None:
    klass = getattr(importlib.import_module(f"llmdsdb.{module}"), cls)
    func = getattr(klass, method, None)
    assert callable(func), f"{cls}.{method} is missing"
    sig = inspect.signature(func)
    positional = [
        p for p in sig.parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    got = [(p.name, p.default) for p in positional[: len(params)]]
    assert [g[0] for g in got] == [p[0] for p in params], f"{cls}.{method}{sig}"
    for (name, default), (_, want) in zip(got, params):
        if want is inspect.Parameter.empty:
            continue  # required in the seed API; a default here breaks no seed call
        if isinstance(want, float) and isinstance(default, float):
            assert math.isclose(default, want), f"{cls}.{method}: default of {name}"
        else:
            assert default == want, f"{cls}.{method}: default of {name} is {default!r}"
    # Anything beyond the seed parameters must be optional, so seed calls keep working.
    for p in list(sig.parameters.values()):
        if p.name == "self" or p.name in {n for n, _ in params}:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        assert p.default is not inspect.Parameter.empty, f"{cls}.{method}: extra {p.name} required"
