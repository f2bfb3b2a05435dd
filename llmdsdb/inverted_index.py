"""InvertedIndex: BM25 full-text search over compressed postings blocks kept in a PageStore.

**Scoring.** Okapi BM25 with Lucene's idf::

    score(q, d) = sum over query tokens t (repeats count) present in d of
                  idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
    idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5))

where N is the number of live documents, df the number of live documents containing t, dl the
document's number of terms after analysis and avgdl the mean dl over live documents. This
idf is always positive, so every live document that contains a query term scores > 0 and
only those are returned. Scores are float64; ties are broken by insertion order.

**Layout.** Documents get dense internal numbers (docno) in insertion order, so postings
only ever grow at their end. Each term's postings are cut into blocks of ``block_size``
postings; each block is one page (:mod:`llmdsdb.codec` format). The term dictionary holds,
per term, its df and one skip row per block: (page id, count, first docno, last docno, max
tf, min doc length) -- enough for an upper bound of the block's BM25 contribution. Per-doc
data (external id, length, live flag) is kept in chunk pages of 65,536 docs, and per-doc
forward lists (the sorted term ids of each document, needed to update df on removal) in
chunk pages of 1,024 docs. The term dictionary is kept in meta records sharded by crc32 of
the term into :data:`N_SHARDS` records, so that :meth:`InvertedIndex.flush` rewrites only
the shards of terms that changed.

**Top-k** runs in the compiled kernels (llmdsdb/_native/bm25.c, GIL released).
``mode="exhaustive"`` adds every posting of every query term into a dense per-thread
accumulator; ``mode="pruned"`` runs block-max MaxScore over windows of 4,096 doc numbers: a
window whose block bounds cannot beat the k-th score so far is skipped without decoding, the
terms whose bounds together could lift a document into the top k (the
*essential* ones) are added into a window accumulator, and each document they touch looks
up the other terms, best bound first, only while its score plus the bound of the block that
could hold it plus the bounds left can still beat the k-th score -- only the blocks a
candidate falls in are decoded. A block's bound is exact once known: its largest
``tf * (k1 + 1) / (norm + tf)`` (times idf and the query count), which the query state
learns the first time a query decodes the block (at registration for a list it holds
decoded); until then the bound from the skip row's max tf and min length stands in.
``mode="auto"`` (the default) picks exhaustive for queries whose terms hold at most
:data:`EXHAUSTIVE_MAX_POSTINGS` postings. Contributions are summed
in 64-bit fixed point (a power-of-two scale per query, ~1e-16 relative), so every mode and
every evaluation order returns bit-identical scores (tested), within 1e-12 of the float
formula.

**One call per query.** Python analyses the query into term ids; everything after that
-- the plan (idf, bounds, order, mode), the top k, the external ids -- runs in one call of
a C query state (``_core.Bm25State``) that holds, for one generation of the index, the
norms, the per-term statistics and the postings lists registered so far; ``search_many``
runs all its queries in one such call, on threads. A write, a flush or a new snapshot
generation starts a new state, and so does a state whose lists outgrow the cache budget.

**Filters.** ``allow`` (an :class:`~llmdsdb.allow.AllowSet` of the ids given to
:meth:`InvertedIndex.add_documents`) restricts a query to those documents, exactly: either
the kernel checks the bitmap (through the docno -> id array, bounds-checked) before a
document can enter the top k, or, for a selective set, it scores only the allowed
documents one at a time (:meth:`InvertedIndex.filter_plan` tells which).

**Memory.** A flushed term is read as its verified compressed blocks back to back
(:func:`~llmdsdb.codec.join_postings`, ~1.1-1.8 bytes a posting) and cached in the store's
:class:`~llmdsdb.pages.PageCache` (TinyLFU, its stats show these entries); the C query
state views those entries, and keeps the lists it meets first decoded (8 bytes a posting,
every block checked once) up to :data:`DECODED_SHARE` of the cache budget, so that small
collections never decode on the query path; larger ones decode the blocks a query needs
each time (~2 ns a posting).

**Removal** marks the document dead (a tombstone: its postings stay until a rebuild) and
decrements df of its terms, so N, avgdl and df always describe live documents only.

**Bad input** raises before anything changes: non-str text -> InvalidTypeError, a doc id
already present or repeated in a batch -> DuplicateIdError; an empty or whitespace-only
query (or one whose words are all stop words) returns ``[]``; a query of more than
:data:`MAX_QUERY_TERMS` terms after analysis, or longer than :data:`MAX_QUERY_CHARS`, and
``top_k`` that is not a positive int raise QueryError.

>>> idx = InvertedIndex()
>>> idx.add_documents([1, 2, 3], ["the quick brown fox", "a lazy dog", "quick quick dogs"])
>>> [doc for doc, _ in idx.search("quick dog")]
[3, 2, 1]
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, NamedTuple

import msgpack
import numpy as np

from llmdsdb._native import _core
from llmdsdb.allow import AllowSet
from llmdsdb.analysis import _SEPARATORS, Analyzer
from llmdsdb.codec import (
    decode_arrays,
    decode_postings,
    decode_postings_many,
    encode_arrays,
    encode_postings_many,
    join_postings,
)
from llmdsdb.errors import (
    ConfigConflictError,
    CorruptionError,
    DocumentNotFoundError,
    DuplicateIdError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
    QueryError,
)
from llmdsdb.pages import MemoryPageStore, PageCache, PageStore, put_pages

__all__ = [
    "DECODED_SHARE",
    "EXHAUSTIVE_MAX_POSTINGS",
    "FILTER_CANDIDATES_FACTOR",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "N_SHARDS",
    "FilterPlan",
    "IndexStats",
    "InvertedIndex",
]

FORMAT_VERSION = 1
#: Number of meta records the term dictionary is sharded into.
N_SHARDS = 512
#: A query with more terms than this after analysis is refused.
MAX_QUERY_TERMS = 1024
#: A query string longer than this is refused before analysis.
MAX_QUERY_CHARS = 1 << 20
#: Terms longer than this (from a custom tokenizer) are dropped; the default analyzer
#: already drops words longer than its max_token_len.
MAX_TERM_CHARS = 256
#: Documents per doc-data chunk page and per forward-list chunk page.
DOC_CHUNK = 1 << 16
FWD_CHUNK = 1 << 10
#: search(mode="auto") scores a query exhaustively when its terms hold at most this many
#: postings, and with block-max MaxScore above (measured: tools/bench/results/bench_bm25*.md).
EXHAUSTIVE_MAX_POSTINGS = 50_000
#: A filtered query scores only its allowed documents (strategy "candidates") when they
#: number at most 1/this of the postings of its terms; above, the postings merge checks the
#: allow bitmap (strategy "bitmap"). Both are exact.
FILTER_CANDIDATES_FACTOR = 8
#: The C query state keeps lists decoded (8 bytes a posting: no decoding on the query path)
#: up to 1/this of the cache budget (0: none); the other lists stay compressed. Measured:
#: ~20% less kernel time a query on SciFact, where every list fits (tools/bench/results).
DECODED_SHARE = 4
#: Kernel mode codes (llmdsdb/_native/native.h; 2 = auto, decided in C per query).
_MODES = {"exhaustive": 0, "pruned": 1, "auto": 2}
_INSTANCES = itertools.count()
#: Documents analysed and appended per internal step of add_documents (bounds memory).
ADD_BATCH = 20_000
#: The word -> term id memo is cleared when it grows past this.
WORD_MEMO_MAX = 2_000_000
#: Open last blocks (fewer than block_size postings) kept decoded after a flush, so the next
#: append to the term reopens its tail without reading the page back: at most this many
#: terms and this many postings in all (the least recently written are dropped first).
TAIL_CACHE_TERMS = 1 << 17
TAIL_CACHE_POSTINGS = 1 << 22

# Skip-row columns.
_PAGE, _CNT, _FIRST, _LAST, _MAXTF, _MINDL = range(6)
_EMPTY_SKIP = np.zeros((0, 6), dtype=np.int64)
_NO_DOCS = np.zeros(0, dtype=np.int32)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class IndexStats(NamedTuple):
    """What :meth:`InvertedIndex.stats` reports."""

    num_docs: int  # live documents (N)
    num_docnos: int  # documents ever added, dead ones included
    num_terms: int
    avgdl: float
    total_postings: int  # postings stored, dead documents' included
    num_blocks: int
    k1: float
    b: float
    block_size: int


class FilterPlan(NamedTuple):
    """How a filtered query runs (:meth:`InvertedIndex.filter_plan`).

    ``strategy``: ``"none"`` (no filter), ``"empty"`` (nothing allowed: no hits),
    ``"bitmap"`` (the usual top-k, the allow bitmap checked for each document in the
    merge) or ``"candidates"`` (only the allowed documents scored, one at a time).
    ``exact``: whether the hits are exactly the filtered top k (always True here).
    """

    strategy: str
    exact: bool


class _Grow:
    """A growable 1-D numpy array (capacity doubling)."""

    __slots__ = ("a", "n")

    def __init__(self, dtype: Any, init: np.ndarray | None = None) -> None:
        if init is None:
            self.a = np.zeros(16, dtype=dtype)
            self.n = 0
        else:
            self.a = np.array(init, dtype=dtype)
            self.n = len(init)
            if len(self.a) == 0:
                self.a = np.zeros(16, dtype=dtype)

    def reserve(self, n: int) -> None:
        if n > len(self.a):
            new = np.zeros(max(n, 2 * len(self.a)), dtype=self.a.dtype)
            new[: self.n] = self.a[: self.n]
            self.a = new

    def extend(self, vals: np.ndarray) -> None:
        self.reserve(self.n + len(vals))
        self.a[self.n : self.n + len(vals)] = vals
        self.n += len(vals)

    @property
    def view(self) -> np.ndarray:
        return self.a[: self.n]


def _shard_of(term: str) -> int:
    return zlib.crc32(term.encode("utf-8", "surrogatepass")) % N_SHARDS


class InvertedIndex:
    """BM25 inverted index with compressed postings blocks in a :class:`PageStore` (see the
    module docstring for the scoring formula, the layout and the pruning).

    :param tokenizer: an :class:`~llmdsdb.analysis.Analyzer` (default: ``Analyzer()``), or
        any callable ``str -> list[str]`` (then it is not persisted: pass it again to
        :meth:`open`).
    :param k1: BM25 term-frequency saturation (>= 0).
    :param b: BM25 length normalisation, in [0, 1].
    :param store: where pages and meta records live (default: a new MemoryPageStore).
    :param block_size: postings per block (16..65536); 256 was measured best (see
        tools/bench/results/bench_bm25.md).
    :param cache_bytes: budget of the page cache this index creates for its postings lists
        when its store has none (a database's store has one: then that one is used). An
        entry is a term's compressed blocks, ~1.8 bytes a posting: 256 MiB holds the lists
        the 300 SciFact queries read on the synthetic 1M-document corpus.

    Memory: the term dictionary (a dict entry plus a (blocks, 6) int64 skip array per term,
    ~48 bytes per block), four arrays of 8-21 bytes per document, the word memo, postings not
    yet flushed, the page cache of postings lists (the store's, or ``cache_bytes``), and an
    int64 accumulator plus an int32 list per searching thread (12 bytes per document).
    Not thread-safe for writes: one writer, and no search concurrent with a write;
    searches from several threads run in parallel (the kernel releases the GIL).
    """

    def __init__(
        self,
        tokenizer: Analyzer | Callable[[str], list[str]] | None = None,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        store: PageStore | None = None,
        block_size: int = 256,
        cache_bytes: int = 256 << 20,
    ) -> None:
        for name, v in (("k1", k1), ("b", b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidTypeError(f"{name} must be a number, not {type(v).__name__}")
        if not (math.isfinite(k1) and k1 >= 0):
            raise InvalidArgumentError(f"k1 must be finite and >= 0, got {k1}")
        if not (math.isfinite(b) and 0 <= b <= 1):
            raise InvalidArgumentError(f"b must lie in [0, 1], got {b}")
        if isinstance(block_size, bool) or not isinstance(block_size, int):
            raise InvalidTypeError("block_size must be int")
        if not 16 <= block_size <= 65536:
            raise InvalidArgumentError(f"block_size must lie in [16, 65536], got {block_size}")
        if tokenizer is None:
            tokenizer = Analyzer()
        if isinstance(tokenizer, Analyzer):
            self._analyzer: Analyzer | None = tokenizer
            self._tokenize: Callable[[str], list[str]] = tokenizer.analyze
        elif callable(tokenizer):
            self._analyzer = None
            self._tokenize = tokenizer
        else:
            raise InvalidTypeError("tokenizer must be an Analyzer or a callable str -> list[str]")
        self.k1 = float(k1)
        self.b = float(b)
        self.block_size = block_size
        self._store: PageStore = store if store is not None else MemoryPageStore()
        # term dictionary
        self._tid: dict[str, int] = {}
        self._terms: list[str] = []
        self._df = _Grow(np.int64)
        self._skip: list[np.ndarray] = []
        self._shard_tids: list[list[int]] = [[] for _ in range(N_SHARDS)]
        # postings not yet flushed: buffers, and (tid << 32 | first pending block) arrays
        self._pbufs: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows: list[tuple[np.ndarray, ...]] = []
        # documents
        self._ext = _Grow(np.int64)
        self._len = _Grow(np.int32)
        self._live = _Grow(np.uint8)
        self._nlive = 0
        self._total_len = 0
        self._ext_map: dict[int, int] | None = {}
        self._fwd_pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # chunk -> off, tids
        self._fwd_pages: list[int] = []
        self._doc_pages: list[int] = []
        # dirty state since the last flush
        self._dirty_terms: set[int] = set()
        self._dirty_doc_chunks: set[int] = set()
        self._to_free: list[int] = []
        # a reopened flushed block is rewritten in place: (tid << 32 | block) -> its page
        self._reuse: dict[int, int] = {}
        # tid -> (page, docs, tfs) of its flushed open last block (see TAIL_CACHE_TERMS)
        self._tails: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        self._tail_postings = 0
        # caches (rebuilt on demand)
        self._word_tid: dict[str, int] = {}  # normalised word -> term id (-1: dropped)
        self._norm: np.ndarray | None = None  # k1 * (1 - b + b * dl / avgdl), inf if dead
        self._ext_sorted: tuple[np.ndarray, np.ndarray] | None = None  # live ids, docnos
        # per-term upper-bound summaries (max tf, min doc length over all its blocks)
        self._tmaxtf = _Grow(np.int64)
        self._tmindl = _Grow(np.int64)
        # kernel postings lists of terms with blocks not flushed yet; until the next write
        self._pending_lists: dict[int, tuple[Any, ...]] = {}
        self.cache_bytes = cache_bytes
        self._own_cache: PageCache | None = None
        self._instance = next(_INSTANCES)  # tells this object's cache entries from others'
        self._gen = 0  # bumped by every change: names the generation of _cstate
        self._cstate: Any = None  # the C query state (_core.Bm25State) of _cstate_key
        self._cstate_key: tuple[int, int | None] | None = None
        self._written_config = False

    # --- small accessors -------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of live documents. Complexity: O(1)."""
        return self._nlive

    def __contains__(self, doc_id: object) -> bool:
        """Whether a live document has this id. Complexity: O(1) (O(N) once after open)."""
        if isinstance(doc_id, bool) or not isinstance(doc_id, (int, np.integer)):
            return False
        return int(doc_id) in self._ext_to_docno()

    @property
    def analyzer(self) -> Analyzer | None:
        """The analyzer (None when a custom tokenizer callable is used)."""
        return self._analyzer

    @property
    def store(self) -> PageStore:
        return self._store

    def _ext_to_docno(self) -> dict[int, int]:
        if self._ext_map is None:
            live = np.flatnonzero(self._live.view)
            self._ext_map = dict(zip(self._ext.view[live].tolist(), live.tolist()))
        return self._ext_map

    def _avgdl(self) -> float:
        return self._total_len / self._nlive if self._nlive else 0.0

    def _invalidate(self) -> None:
        """N, avgdl or a document changed: the norms are stale, and so are the kernel
        lists of unflushed terms (flushed ones are cached by page id and stay valid)."""
        self._norm = None
        self._ext_sorted = None
        self._gen += 1
        self._cstate = None
        self._pending_lists.clear()

    def _norms(self) -> np.ndarray:
        """k1 * (1 - b + b * dl / avgdl) per docno; +inf for dead documents."""
        if self._norm is None:
            avgdl = self._avgdl() or 1.0
            k1, b = self.k1, self.b
            norm = k1 * (1.0 - b + b * (self._len.view.astype(np.float64) / avgdl))
            norm[self._live.view == 0] = np.inf
            self._norm = norm
        return self._norm

    # --- writing ---------------------------------------------------------------------------

    def add_document(self, doc_id: int, text: str) -> None:
        """Index one document.

        Complexity: O(len(text) + terms of the document), amortised.

        :raises InvalidTypeError: when ``text`` is not a str or ``doc_id`` not an int.
        :raises DuplicateIdError: when a live document has ``doc_id``.
        """
        self.add_documents([doc_id], [text])

    def add_documents(self, doc_ids: Sequence[int], texts: Sequence[str]) -> None:
        """Index a batch of documents. All-or-nothing as far as input validation goes: every
        id and text is checked before anything changes.

        Complexity: O(total text length + P log P) for P postings of the batch, with one
        stemmer call per new distinct word; vectorised per batch, one Python step per
        distinct term per internal batch of 20,000 documents.

        :raises InvalidTypeError: when a text is not a str or an id not an int.
        :raises InvalidArgumentError: when the lengths differ or an id is out of int64 range.
        :raises DuplicateIdError: when an id is present already or repeated in the batch.
        """
        if isinstance(texts, (str, bytes)) or isinstance(doc_ids, (str, bytes)):
            raise InvalidTypeError("doc_ids and texts must be sequences, not a single string")
        ids = list(doc_ids)
        texts = list(texts)
        if len(ids) != len(texts):
            raise InvalidArgumentError(f"{len(ids)} doc ids but {len(texts)} texts")
        for i, (d, t) in enumerate(zip(ids, texts)):
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
                raise InvalidTypeError(f"doc_ids[{i}] must be int, not {type(d).__name__}")
            if not _INT64_MIN <= int(d) <= _INT64_MAX:
                raise InvalidArgumentError(f"doc_ids[{i}] = {d} is outside the int64 range")
            if not isinstance(t, str):
                raise InvalidTypeError(f"texts[{i}] must be str, not {type(t).__name__}")
        ids = [int(d) for d in ids]
        if len(set(ids)) != len(ids):
            seen: set[int] = set()
            dup = next(d for d in ids if d in seen or seen.add(d))  # type: ignore[func-returns-value]
            raise DuplicateIdError(f"doc id {dup} appears twice in the batch")
        emap = self._ext_to_docno()
        for d in ids:
            if d in emap:
                raise DuplicateIdError(f"doc id {d} is already indexed; remove it first")
        for s in range(0, len(ids), ADD_BATCH):
            self._add_batch(ids[s : s + ADD_BATCH], texts[s : s + ADD_BATCH])

    def _term_ids(self, terms: list[str]) -> list[int]:
        """Term ids of ``terms``, creating the new ones in bulk."""
        tid_of = self._tid
        new = [t for t in dict.fromkeys(terms) if t not in tid_of]
        if new:
            base = len(self._terms)
            tid_of.update(zip(new, range(base, base + len(new))))
            self._terms.extend(new)
            self._sync_terms()
        return [tid_of[t] for t in terms]

    def _new_words(self, words: list[str]) -> None:
        """Enter words not in the word memo: their terms through the analyzer (one batched
        stemmer call), new terms numbered in the order of the words, -1 for a dropped word;
        the per-term arrays catch up in :meth:`_sync_terms`."""
        assert self._analyzer is not None
        terms = self._analyzer.terms(words)
        tid_of = self._tid
        fresh = [t for t in dict.fromkeys(terms) if t is not None and t not in tid_of]
        if fresh:
            base = len(self._terms)
            tid_of.update(zip(fresh, range(base, base + len(fresh))))
            self._terms.extend(fresh)
        self._word_tid.update(zip(words, [-1 if t is None else tid_of[t] for t in terms]))

    def _sync_terms(self) -> None:
        """Extend the per-term arrays to the terms created by :meth:`_new_words`."""
        new = self._terms[len(self._skip) :]
        if not new:
            return
        base = len(self._skip)
        self._df.extend(np.zeros(len(new), dtype=np.int64))
        self._skip.extend([_EMPTY_SKIP] * len(new))
        self._tmaxtf.extend(np.zeros(len(new), dtype=np.int64))
        self._tmindl.extend(np.full(len(new), _INT64_MAX, dtype=np.int64))
        shard_tids = self._shard_tids
        for i, t in enumerate(new):
            shard_tids[_shard_of(t)].append(base + i)

    def _token_tids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat int64 term ids of the batch (-1 = dropped) and the token count per text."""
        if self._analyzer is not None:
            # The words of the whole batch split and numbered in C (each distinct word once,
            # ~10 ns a character); only the distinct words meet Python: the memo maps them
            # to term ids, and the tokens follow by one gather. Measured on SciFact: 0.09 s
            # for the 1.2M tokens against 0.8 s word by word through the memo
            # (tools/bench/results/bench_bm25.md).
            norm = self._analyzer.normalize
            slots, counts, words = _core.words_split(
                [t if t.isascii() else norm(t) for t in texts]
            )
            memo = self._word_tid
            if len(memo) >= WORD_MEMO_MAX:
                memo.clear()
            new = [w for w in words if w not in memo]
            if new:
                self._new_words(new)
                self._sync_terms()
            word_tids = np.fromiter(map(memo.__getitem__, words), dtype=np.int64,
                                    count=len(words))
            flat = word_tids[np.frombuffer(slots, dtype=np.int32)]
            return flat, np.frombuffer(counts, dtype=np.int64)
        per_doc_terms = []
        for t in texts:
            toks = self._tokenize(t)
            if not isinstance(toks, list) or not all(isinstance(x, str) for x in toks):
                raise InvalidTypeError("the tokenizer must return a list of str")
            per_doc_terms.append(toks)
        lens = np.fromiter(map(len, per_doc_terms), dtype=np.int64, count=len(per_doc_terms))
        flat_terms = list(chain.from_iterable(per_doc_terms))
        ok = [t for t in flat_terms if len(t) <= MAX_TERM_CHARS]
        ids = iter(self._term_ids(ok))
        flat = np.fromiter(
            (next(ids) if len(t) <= MAX_TERM_CHARS else -1 for t in flat_terms),
            dtype=np.int64,
            count=len(flat_terms),
        )
        return flat, lens

    def _add_batch(self, ids: list[int], texts: list[str]) -> None:
        nd = len(ids)
        if nd == 0:
            return
        flat, lens = self._token_tids(texts)
        dix = np.repeat(np.arange(nd, dtype=np.int64), lens)
        keep = flat >= 0
        flat = flat[keep]
        dix = dix[keep]
        dl = np.bincount(dix, minlength=nd).astype(np.int32)
        base = self._ext.n
        # --- documents
        self._ext.extend(np.asarray(ids, dtype=np.int64))
        self._len.extend(dl)
        self._live.extend(np.ones(nd, dtype=np.uint8))
        self._nlive += nd
        self._total_len += int(dl.sum())
        if self._ext_map is not None:
            self._ext_map.update(zip(ids, range(base, base + nd)))
        for c in range(base // DOC_CHUNK, (base + nd - 1) // DOC_CHUNK + 1):
            self._dirty_doc_chunks.add(c)
        self._invalidate()
        nterms = max(len(self._terms), 1)
        # --- unique (doc, term) pairs, doc-major: forward lists come out directly
        keys, tf = np.unique(dix * nterms + flat, return_counts=True)
        pdoc = keys // nterms
        ptid = keys - pdoc * nterms
        self._add_forward(base, nd, pdoc, ptid)
        if len(ptid) == 0:
            return
        # --- postings grouped by term, docs ascending within a term (stable sort)
        order = np.argsort(ptid, kind="stable")
        ptid = ptid[order]
        pdocno = (pdoc[order] + base).astype(np.int32)
        ptf = tf[order].astype(np.int32)
        cut = np.flatnonzero(np.diff(ptid)) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [len(ptid)]))
        utids = ptid[starts]
        counts = ends - starts
        df = self._df.a
        df[utids] += counts
        self._dirty_terms.update(utids.tolist())
        self._append_postings(utids, starts, ends, pdocno, ptf)

    def _add_forward(self, base: int, nd: int, pdoc: np.ndarray, ptid: np.ndarray) -> None:
        """Record each new document's sorted term ids in the pending forward chunks."""
        per_doc = np.bincount(pdoc, minlength=nd)
        offs = np.concatenate(([0], np.cumsum(per_doc)))
        ptid32 = ptid.astype(np.int32)
        first_chunk = base // FWD_CHUNK
        last_chunk = (base + nd - 1) // FWD_CHUNK
        for c in range(first_chunk, last_chunk + 1):
            lo = max(c * FWD_CHUNK, base) - base
            hi = min((c + 1) * FWD_CHUNK, base + nd) - base
            old = self._fwd_chunk(c)
            old_off, old_tids = old if old is not None else (np.zeros(1, np.int64), ptid32[:0])
            new_off = offs[lo + 1 : hi + 1] - offs[lo] + old_off[-1]
            self._fwd_pending[c] = (
                np.concatenate((old_off, new_off)),
                np.concatenate((old_tids, ptid32[offs[lo] : offs[hi]])),
            )

    def _fwd_chunk(self, c: int) -> tuple[np.ndarray, np.ndarray] | None:
        if c in self._fwd_pending:
            return self._fwd_pending[c]
        if c < len(self._fwd_pages) and self._fwd_pages[c] >= 0:
            off, tids = self._store.load(self._fwd_pages[c], decode_arrays)
            return off, tids
        return None

    def _append_postings(
        self,
        utids: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        docs: np.ndarray,
        tfs: np.ndarray,
    ) -> None:
        """Append each term's new postings (docs above all its existing ones) to its blocks.

        A term whose last block is not full has that block reopened: its postings are put in
        front of the new ones. Then every term's run is cut into blocks in one vectorised
        pass. The new blocks stay in one pending buffer per call until :meth:`flush`; a
        pending skip row points into it (page column = -1 - (buffer << 32 | offset))."""
        B = self.block_size
        lens = self._len.a
        skip = self._skip
        cnt_new = ends - starts
        # per-term summaries for the term-level upper bounds
        tmax = np.maximum.reduceat(tfs, starts)
        tmin = np.minimum.reduceat(lens[docs], starts)
        self._tmaxtf.a[utids] = np.maximum(self._tmaxtf.a[utids], tmax)
        self._tmindl.a[utids] = np.minimum(self._tmindl.a[utids], tmin)
        # reopen the open last blocks
        old_d, old_t, old_cnt = [], [], np.zeros(len(utids), dtype=np.int64)
        for i, tid in enumerate(utids.tolist()):
            sk = skip[tid]
            if len(sk) and sk[-1, _CNT] < B:
                page = int(sk[-1, _PAGE])
                if page >= 0:
                    # flushed: the decoded tail from the last flush when it still describes
                    # this block (else the page), and the page is rewritten in place
                    d0, t0 = self._tail_of(tid, page, sk[-1])
                    self._reuse[(tid << 32) | (len(sk) - 1)] = page
                else:
                    d0, t0 = self._block(tid, len(sk) - 1)
                old_d.append(d0)
                old_t.append(t0)
                old_cnt[i] = len(d0)
                skip[tid] = sk[:-1]
        if old_d:
            # pieces in term order: [old block of t (if any), new postings of t]
            n_old = int(old_cnt.sum())
            all_d = np.concatenate([docs] + old_d)
            all_t = np.concatenate([tfs] + old_t)
            old_off = len(docs) + np.cumsum(old_cnt) - old_cnt
            piece_start = np.stack((old_off, starts), axis=1).ravel()
            piece_cnt = np.stack((old_cnt, cnt_new), axis=1).ravel()
            idx = _ranges(piece_start, piece_cnt)
            D, T = all_d[idx], all_t[idx]
            seg_cnt = old_cnt + cnt_new
            del n_old
        else:
            D, T = docs, tfs
            seg_cnt = cnt_new
        seg_start = np.cumsum(seg_cnt) - seg_cnt
        nblk = (seg_cnt + B - 1) // B
        first_blk = np.cumsum(nblk) - nblk
        total = int(nblk.sum())
        within = np.arange(total, dtype=np.int64) - np.repeat(first_blk, nblk)
        b_start = np.repeat(seg_start, nblk) + within * B
        b_end = np.minimum(b_start + B, np.repeat(seg_start + seg_cnt, nblk))
        buf = len(self._pbufs)
        self._pbufs.append((D, T))
        rows = np.empty((total, 6), dtype=np.int64)
        rows[:, _PAGE] = -1 - ((buf << 32) | b_start)
        rows[:, _CNT] = b_end - b_start
        rows[:, _FIRST] = D[b_start]
        rows[:, _LAST] = D[b_end - 1]
        rows[:, _MAXTF] = np.maximum.reduceat(T, b_start)
        rows[:, _MINDL] = np.minimum.reduceat(lens[D], b_start)
        k = 0
        nb_before = []
        for tid, nb_new in zip(utids.tolist(), nblk.tolist()):
            sk = skip[tid]
            nb = len(sk)
            skip[tid] = np.concatenate((sk, rows[k : k + nb_new])) if nb else rows[k : k + nb_new]
            nb_before.append(nb)
            k += nb_new
        # where each new pending block is: flush encodes the latest record of each (term,
        # block); a reopened block's older record is superseded by the one made here
        r_bi = np.repeat(np.asarray(nb_before, dtype=np.int64), nblk) + within
        self._pending_rows.append(
            (np.repeat(utids, nblk), r_bi, np.full(total, buf, dtype=np.int64), b_start,
             b_end - b_start)
        )

    def _tail_of(self, tid: int, page: int, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(docnos, tfs) of the flushed last block ``row`` of term ``tid`` at ``page``: from
        the tail cache when its entry names this page, count and doc range, else read (not
        through the page cache: the page is about to be rewritten)."""
        ent = self._tails.pop(tid, None)
        if ent is not None:
            self._tail_postings -= len(ent[1])
            d, t = ent[1], ent[2]
            if (ent[0] == page and len(d) == row[_CNT] and d[0] == row[_FIRST]
                    and d[-1] == row[_LAST]):
                return d, t
        return decode_postings(self._store.get(page))

    def _remember_tails(self, tids: list[int], pages: list[int], cnts: list[int],
                        offs: list[int], D: np.ndarray, T: np.ndarray) -> None:
        """Keep the decoded content of the blocks just written that are open (fewer than
        block_size postings), within the cache bounds; forget older entries of their terms."""
        tails = self._tails
        B = self.block_size
        for tid, page, cnt, o in zip(tids, pages, cnts, offs):
            old = tails.pop(tid, None)
            if old is not None:
                self._tail_postings -= len(old[1])
            if cnt < B:
                tails[tid] = (page, D[o : o + cnt].copy(), T[o : o + cnt].copy())
                self._tail_postings += cnt
        while tails and (len(tails) > TAIL_CACHE_TERMS
                         or self._tail_postings > TAIL_CACHE_POSTINGS):
            self._tail_postings -= len(tails.pop(next(iter(tails)))[1])

    def _block(self, tid: int, bi: int) -> tuple[np.ndarray, np.ndarray]:
        """(docnos int32, tfs int32) of block ``bi`` of term ``tid`` (read-only)."""
        row = self._skip[tid][bi]
        page = int(row[_PAGE])
        if page < 0:
            x = -1 - page
            d, t = self._pbufs[x >> 32]
            off = x & 0xFFFFFFFF
            cnt = int(row[_CNT])
            return d[off : off + cnt], t[off : off + cnt]
        return self._store.load(page, decode_postings)

    def remove_document(self, doc_id: int) -> None:
        """Remove a document: a tombstone at once (its postings stay in their blocks and are
        skipped), df of its terms decremented, N and avgdl updated.

        Complexity: O(terms of the document) (+ loading its forward-list page).

        :raises DocumentNotFoundError: when no live document has ``doc_id``.
        """
        if isinstance(doc_id, bool) or not isinstance(doc_id, (int, np.integer)):
            raise InvalidTypeError(f"doc_id must be int, not {type(doc_id).__name__}")
        emap = self._ext_to_docno()
        docno = emap.get(int(doc_id))
        if docno is None:
            raise DocumentNotFoundError(f"no document with id {doc_id}")
        chunk = self._fwd_chunk(docno // FWD_CHUNK)
        if chunk is None:
            raise CorruptionError(f"forward list of doc id {doc_id} is missing")
        off, tids = chunk
        i = docno % FWD_CHUNK
        if i + 1 >= len(off):
            raise CorruptionError(f"forward list of doc id {doc_id} is missing")
        mine = tids[off[i] : off[i + 1]]
        del emap[int(doc_id)]
        self._df.a[mine] -= 1
        self._dirty_terms.update(mine.tolist())
        self._live.a[docno] = 0
        self._nlive -= 1
        self._total_len -= int(self._len.a[docno])
        self._dirty_doc_chunks.add(docno // DOC_CHUNK)
        self._invalidate()

    # --- reading ---------------------------------------------------------------------------

    def get_document_frequency(self, term: str) -> int:
        """Number of live documents containing ``term`` (analysed like a query word; 0 when
        unknown or dropped by the analyzer).

        Complexity: O(len(term)).
        """
        tid = self._lookup_term(term)
        return 0 if tid is None else int(self._df.a[tid])

    def get_term_frequency(self, term: str, doc_id: int) -> int:
        """Occurrences of ``term`` (analysed like a query word) in live document ``doc_id``;
        0 when either is unknown.

        Complexity: O(log blocks + block_size) (one block decoded at most).
        """
        tid = self._lookup_term(term)
        if tid is None or isinstance(doc_id, bool) or not isinstance(doc_id, (int, np.integer)):
            return 0
        docno = self._ext_to_docno().get(int(doc_id))
        if docno is None:
            return 0
        sk = self._skip[tid]
        bi = int(np.searchsorted(sk[:, _LAST], docno))
        if bi >= len(sk) or sk[bi, _FIRST] > docno:
            return 0
        docs, tfs = self._block(tid, bi)
        j = int(np.searchsorted(docs, docno))
        return int(tfs[j]) if j < len(docs) and docs[j] == docno else 0

    def _lookup_term(self, term: str) -> int | None:
        if not isinstance(term, str):
            raise InvalidTypeError(f"term must be str, not {type(term).__name__}")
        terms = self._query_terms(term)
        if len(terms) != 1:
            return None
        return self._tid.get(terms[0])

    def _query_terms(self, query: str) -> list[str]:
        if self._analyzer is not None:
            an = self._analyzer
            memo = an._memo
            term = an.term
            ts = [memo[w] if w in memo else term(w) for w in an.words(query)]
            return [t for t in ts if t is not None]
        toks = self._tokenize(query)
        if not isinstance(toks, list) or not all(isinstance(x, str) for x in toks):
            raise InvalidTypeError("the tokenizer must return a list of str")
        return toks

    def stats(self) -> IndexStats:
        """Index statistics. Complexity: O(terms)."""
        nb = sum(len(s) for s in self._skip)
        post = sum(int(s[:, _CNT].sum()) for s in self._skip if len(s))
        return IndexStats(
            num_docs=self._nlive,
            num_docnos=self._ext.n,
            num_terms=len(self._terms),
            avgdl=self._avgdl(),
            total_postings=post,
            num_blocks=nb,
            k1=self.k1,
            b=self.b,
            block_size=self.block_size,
        )

    def search(
        self, query: str, top_k: int = 10, *, mode: str = "auto", allow: AllowSet | None = None
    ) -> list[tuple[int, float]]:
        """The ``top_k`` live documents by BM25 score, best first, as (doc_id, score);
        ties by insertion order. Only documents containing a query term are returned.

        An empty or whitespace-only query, or one with no indexed term, returns ``[]``.
        The kernel runs with the GIL released: searches from several threads run in
        parallel.

        :param mode: ``"pruned"`` (MaxScore with block-max bounds, document at a time),
            ``"exhaustive"`` (every posting into a dense accumulator) or ``"auto"`` (see
            :data:`EXHAUSTIVE_MAX_POSTINGS`). All three return exactly the same list.
        :param allow: when given, only documents whose id is in it are returned: exactly
            the top ``top_k`` of the allowed matching documents (scores unchanged: N, df
            and avgdl still describe every live document). :meth:`filter_plan` tells how.
        :raises InvalidTypeError: when ``query`` is not a str or ``allow`` not an AllowSet.
        :raises QueryError: when ``top_k`` is not a positive int, the query is longer than
            MAX_QUERY_CHARS or has more than MAX_QUERY_TERMS terms after analysis.
        :raises CorruptionError: when a postings block the query reads is damaged.

        Complexity: exhaustive O(postings of the query terms + their distinct documents);
        pruned O(postings of the essential terms + candidates x other terms x log blocks),
        typically far fewer postings decoded.
        """
        self._check_top_k(top_k, mode)
        _check_allow(allow)
        tids = self._tids(query)
        if not tids or (allow is not None and len(allow) == 0):
            return []
        return self._run([tids], int(top_k), mode, 1, [allow])[0]

    def search_many(
        self,
        queries: Sequence[str],
        top_k: int = 10,
        *,
        mode: str = "auto",
        threads: int = 1,
        allow: AllowSet | Sequence[AllowSet | None] | None = None,
    ) -> list[list[tuple[int, float]]]:
        """:meth:`search` for each query; returns exactly what the per-query calls return.

        All queries are validated first; then the queries run in one kernel call (GIL
        released), on ``threads`` threads.

        Complexity: as :meth:`search`, summed over the queries, divided among the threads.

        :param threads: worker threads of the kernel (>= 1).
        :param allow: one :class:`~llmdsdb.allow.AllowSet` for every query, or a sequence
            of one (or None) per query; see :meth:`search`.
        :raises InvalidTypeError: when ``queries`` is a str or holds a non-str.
        :raises QueryError: as :meth:`search`, for the first bad query; nothing is returned.
        """
        if isinstance(queries, (str, bytes)):
            raise InvalidTypeError("queries must be a sequence of str, not a single string")
        self._check_top_k(top_k, mode)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
            raise InvalidArgumentError(f"threads must be an int in [1, 256], got {threads!r}")
        queries = list(queries)
        if allow is None or isinstance(allow, AllowSet):
            allows: list[AllowSet | None] = [allow] * len(queries)
        else:
            allows = list(allow)
            if len(allows) != len(queries):
                raise InvalidArgumentError(
                    f"{len(allows)} allow sets for {len(queries)} queries"
                )
        for a in allows:
            _check_allow(a)
        tids = [self._tids(q) for q in queries]
        out: list[list[tuple[int, float]]] = [[] for _ in tids]
        live = [i for i, t in enumerate(tids)
                if t and (allows[i] is None or len(allows[i]) > 0)]  # type: ignore[arg-type]
        if len(live) == len(tids) and allow is None:
            return self._run(tids, int(top_k), mode, threads, allows)
        got = self._run([tids[i] for i in live], int(top_k), mode, threads,
                        [allows[i] for i in live])
        for i, r in zip(live, got):
            out[i] = r
        return out

    def filter_plan(self, allow: AllowSet | None, query: str | None = None) -> FilterPlan:
        """How :meth:`search` runs a query restricted to ``allow`` (see :class:`FilterPlan`).

        ``"candidates"`` when the allowed documents number at most
        1/:data:`FILTER_CANDIDATES_FACTOR` of the postings of the query's terms (without a
        query: of the live documents), else ``"bitmap"``.

        Complexity: O(terms of the query).

        :raises InvalidTypeError: when ``allow`` is not an AllowSet or None.
        """
        _check_allow(allow)
        if allow is None:
            return FilterPlan("none", True)
        if len(allow) == 0:
            return FilterPlan("empty", True)
        if query is None:
            postings = self._nlive
        else:
            tids = self._tids(query)
            postings = self._postings(tids)
            if postings == 0:
                return FilterPlan("empty", True)
        return FilterPlan(self._filter_strategy(allow, postings), True)

    @staticmethod
    def _filter_strategy(allow: AllowSet, postings: int) -> str:
        return "candidates" if len(allow) * FILTER_CANDIDATES_FACTOR <= postings else "bitmap"

    def _postings(self, tids: list[int]) -> int:
        """Live postings of the distinct terms ``tids`` (their df sum)."""
        df = self._df.a
        return sum(int(df[t]) for t in set(tids))

    def _allowed_docnos(self, allow: AllowSet) -> np.ndarray:
        """Ascending int32 docnos of the live documents whose ids are in ``allow``."""
        srt = self._ext_sorted
        if srt is None:
            live = np.flatnonzero(self._live.view)
            keys = self._ext.a[live]
            if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
                order = np.argsort(keys, kind="stable")
                keys, live = keys[order], live[order]
            srt = self._ext_sorted = (keys, live)
        keys, docnos = srt
        ids = allow.ids
        if len(keys) == 0 or len(ids) == 0:
            return _NO_DOCS
        pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        found = docnos[pos[keys[pos] == ids]]
        found.sort()
        return found.astype(np.int32)

    @staticmethod
    def _check_top_k(top_k: object, mode: str) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0:
            raise QueryError(f"top_k must be a positive int, got {top_k!r}")
        if mode not in _MODES:
            raise InvalidArgumentError(
                f"mode must be 'auto', 'pruned' or 'exhaustive', got {mode!r}"
            )

    def _tids(self, query: str) -> list[int]:
        """Validate and analyse a query: the term ids of its indexed terms, repeats kept
        (a repeated word counts as its query tf); [] when none is indexed."""
        if not isinstance(query, str):
            raise InvalidTypeError(f"query must be str, not {type(query).__name__}")
        if len(query) > MAX_QUERY_CHARS:
            raise QueryError(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        terms = self._query_terms(query)
        if len(terms) > MAX_QUERY_TERMS:
            raise QueryError(
                f"query has {len(terms)} terms after analysis; the limit is {MAX_QUERY_TERMS}"
            )
        get = self._tid.get
        return [t for t in map(get, terms) if t is not None]

    # --- top-k evaluation --------------------------------------------------------------------

    def _run(
        self, queries: list[list[int]], k: int, mode: str, threads: int,
        allows: Sequence[AllowSet | None],
    ) -> list[list[tuple[int, float]]]:
        """Top ``k`` of each query (its term ids) in one call of the C query state: planning,
        the kernel and the ids all in C, the GIL released. Lists the state lacks are read
        (through the page cache) and registered, then the call is made again."""
        if not queries:
            return []
        args: list[Any] | None = None
        if any(a is not None for a in allows):
            args = []
            for tids, a in zip(queries, allows):
                if a is None:
                    args.append(None)
                elif self._filter_strategy(a, self._postings(tids)) == "candidates":
                    args.append((None, self._allowed_docnos(a)))
                else:
                    args.append((a.bits, None))
        cache, epoch = self._cache_ctx()
        state = self._state(cache, epoch)
        code = _MODES[mode]
        while True:
            res, missing = state.search(queries, k, code, EXHAUSTIVE_MAX_POSTINGS, threads,
                                        args)
            if res is not None:
                return res
            state.set_lists(missing, [self._plist(t, cache, epoch) for t in missing])

    def _state(self, cache: PageCache | None, epoch: int | None) -> Any:
        """The C query state of this generation of the index (a new one after a write, a
        flush, another snapshot generation, or when its lists outgrow the cache budget;
        a throwaway one inside a write transaction, where nothing is cached)."""
        key = (self._gen, epoch)
        st = self._cstate
        budget = cache.budget_bytes if cache is not None else 0
        if st is not None and cache is not None and self._cstate_key == key \
                and st.nbytes <= budget:
            return st
        n = self._len.n
        st = _core.Bm25State(self._norms(), self._ext.a[:n], self._df.a, self._tmaxtf.a,
                             self._tmindl.a, len(self._terms), self._nlive,
                             self._avgdl() or 1.0, self.k1, self.b, self.block_size,
                             budget // DECODED_SHARE if DECODED_SHARE else 0)
        if cache is not None:
            self._cstate, self._cstate_key = st, key
        return st

    def _plist(self, tid: int, cache: PageCache | None, epoch: int | None) -> tuple[Any, ...]:
        """The term's postings in the kernel's form: ``(buf, offs, skip, None, None)`` for
        flushed terms (the verified blocks back to back, see
        :func:`~llmdsdb.codec.join_postings`), ``(None, offs, skip, docs, tfs)`` when some
        block is not flushed yet.

        Flushed terms are cached in the store's page cache (the one TinyLFU
        :class:`~llmdsdb.pages.PageCache` of a database, so visible in its stats; a store
        without one gets a cache of ``cache_bytes`` owned by this index) under the key
        ``-1 - last page id`` (no real page has a negative id), with the index object, term
        id, block count, first page and last block's count, checked on every hit: a term's
        postings only grow at its end, so these name its content even when a freed page id
        is handed out again. Compressed, an entry costs
        ~1.8 bytes a posting; decoding the blocks a query needs costs ~2 ns a posting,
        so caching decoded arrays (8 bytes a posting) would buy little and hold 4x less."""
        sk = self._skip[tid]
        # unflushed blocks are always a suffix of the term's blocks
        if len(sk) == 0 or int(sk[-1, _PAGE]) < 0:
            hit = self._pending_lists.get(tid)
            if hit is None:
                docs, tfs = self._term_postings(tid)
                offs = np.zeros(len(sk) + 1, dtype=np.int64)
                np.cumsum(sk[:, _CNT], out=offs[1:])
                hit = self._pending_lists[tid] = (None, offs, sk, docs, tfs)
            return hit
        pages = sk[:, _PAGE]
        key = -1 - int(pages[-1])
        # what the entry must describe: this index object's term, with this many blocks,
        # this first page and this many postings in the last block (a term only grows at
        # its end, so these fix its content even if a freed page id comes back)
        ident = (self._instance, tid, len(sk), int(pages[0]), int(sk[-1, _CNT]))
        if cache is not None:
            ent = cache.get(key, None, epoch=epoch)
            if ent is not None and ent[0] == ident:
                return (ent[1], ent[2], sk, None, None)
        buf, offs = join_postings(list(map(self._store.get, pages.tolist())))
        if cache is not None:
            cache.put(key, (ident, buf, offs), len(buf) + offs.nbytes + 256, epoch=epoch)
        return (buf, offs, sk, None, None)

    def _cache_ctx(self) -> tuple[PageCache | None, int | None]:
        """(cache, epoch) for postings entries: the store's PageCache at the bound
        transaction's generation; none inside a write transaction (its pages are not
        committed); this index's own cache for stores without one."""
        st = self._store
        cache = getattr(st, "cache", None)
        if isinstance(cache, PageCache):
            txn = getattr(st, "txn", None)
            if txn is None or getattr(txn, "write", False):
                return None, None
            return cache, txn.start_generation
        own = self._own_cache
        if own is None or own.budget_bytes != self.cache_bytes:
            own = self._own_cache = PageCache(self.cache_bytes)
        return own, None

    @property
    def cache(self) -> PageCache | None:
        """The page cache postings entries go through (None before the first search on a
        store without its own cache)."""
        cache = getattr(self._store, "cache", None)
        return cache if isinstance(cache, PageCache) else self._own_cache

    def _term_postings(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        """(docnos, tfs) int32 of all the term's blocks, in order."""
        sk = self._skip[tid]
        if len(sk) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        if len(sk) > 2 and sk[:, _PAGE].min() >= 0:
            docs, tfs, _ = decode_postings_many(list(map(self._store.get, sk[:, _PAGE].tolist())))
            return docs, tfs
        parts = [self._block(tid, bi) for bi in range(len(sk))]
        if len(parts) == 1:
            return parts[0]
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
        )

    # --- persistence -------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "k1": self.k1,
            "b": self.b,
            "block_size": self.block_size,
            "analyzer": self._analyzer.to_dict() if self._analyzer is not None else None,
            "n_shards": N_SHARDS,
        }

    def flush(self) -> None:
        """Write every dirty postings block, doc chunk, forward chunk and term-dictionary
        shard to the store, and free the pages they replace.

        Complexity: O(what changed since the last flush): the new or rewritten blocks, the
        touched doc chunks, and the dictionary shards of the touched terms.
        """
        st = self._store
        if not self._written_config:
            st.put_meta("bm25/config", msgpack.packb(self._config()))
            self._written_config = True
        # postings blocks: every pending row of every term appended to since the last flush
        if self._pending_rows:
            r_tid, r_bi, r_buf, r_off, r_cnt = (
                np.concatenate(cols) for cols in zip(*self._pending_rows)
            )
            key = (r_tid << 32) | r_bi
            _, first_in_rev = np.unique(key[::-1], return_index=True)
            last = len(key) - 1 - first_in_rev  # the latest record of each (term, block)
            self._write_blocks(r_tid[last], r_bi[last], r_buf[last], r_off[last], r_cnt[last])
        if self._reuse:  # reopened blocks whose rewrite was dropped: their pages go
            self._to_free.extend(self._reuse.values())
            self._reuse.clear()
        self._pbufs = []
        self._pending_rows = []
        self._pending_lists.clear()
        self._gen += 1  # the query state may hold the pending buffers: let it go
        self._cstate = None
        # forward chunks
        for c in sorted(self._fwd_pending):
            off, tids = self._fwd_pending[c]
            page = st.alloc(1)[0]
            st.put(page, encode_arrays([off, tids]))
            while len(self._fwd_pages) <= c:
                self._fwd_pages.append(-1)
            if self._fwd_pages[c] >= 0:
                self._to_free.append(self._fwd_pages[c])
            self._fwd_pages[c] = page
        self._fwd_pending.clear()
        # doc chunks
        for c in sorted(self._dirty_doc_chunks):
            lo, hi = c * DOC_CHUNK, min((c + 1) * DOC_CHUNK, self._ext.n)
            page = st.alloc(1)[0]
            st.put(
                page,
                encode_arrays([self._ext.a[lo:hi], self._len.a[lo:hi], self._live.a[lo:hi]]),
            )
            while len(self._doc_pages) <= c:
                self._doc_pages.append(-1)
            if self._doc_pages[c] >= 0:
                self._to_free.append(self._doc_pages[c])
            self._doc_pages[c] = page
        self._dirty_doc_chunks.clear()
        # term dictionary shards
        shards = {_shard_of(self._terms[t]) for t in self._dirty_terms}
        for s in sorted(shards):
            st.put_meta(f"bm25/terms/{s:03x}", self._encode_shard(s))
        self._dirty_terms.clear()
        if self._to_free:
            st.free(self._to_free)
            self._to_free = []
        st.put_meta(
            "bm25/state",
            msgpack.packb(
                {
                    "version": FORMAT_VERSION,
                    "ndocnos": self._ext.n,
                    "nlive": self._nlive,
                    "total_len": self._total_len,
                    "nterms": len(self._terms),
                    "doc_pages": self._doc_pages,
                    "fwd_pages": self._fwd_pages,
                }
            ),
        )

    def _write_blocks(
        self,
        r_tid: np.ndarray,
        r_bi: np.ndarray,
        r_buf: np.ndarray,
        r_off: np.ndarray,
        r_cnt: np.ndarray,
    ) -> None:
        """Encode pending blocks (vectorised, ~2M postings per call) into new pages."""
        st = self._store
        skip = self._skip
        for buf in np.unique(r_buf).tolist():
            m = np.flatnonzero(r_buf == buf)
            D, T = self._pbufs[buf]
            cum = np.cumsum(r_cnt[m])
            s0 = 0
            while s0 < len(m):
                s1 = int(np.searchsorted(cum, (cum[s0 - 1] if s0 else 0) + 2_000_000, "right"))
                s1 = max(s1, s0 + 1)
                part = m[s0:s1]
                idx = _ranges(r_off[part], r_cnt[part])
                bounds = np.concatenate(([0], np.cumsum(r_cnt[part])))
                Dp, Tp = D[idx], T[idx]
                encoded = encode_postings_many(Dp, Tp, bounds)
                tids, bis = r_tid[part].tolist(), r_bi[part].tolist()
                # a reopened block keeps its page (rewritten in place); new blocks get new ids
                reuse = self._reuse
                pages = [reuse.pop((t << 32) | b, -1) for t, b in zip(tids, bis)]
                fresh = [j for j, p in enumerate(pages) if p < 0]
                for j, p in zip(fresh, st.alloc(len(fresh)) if fresh else ()):
                    pages[j] = p
                # bit-packed postings do not compress: no zstd attempt in the envelope
                put_pages(st, pages, encoded, compress=False)
                for tid, bi, page in zip(tids, bis, pages):
                    skip[tid][bi, _PAGE] = page
                self._remember_tails(tids, pages, r_cnt[part].tolist(), bounds[:-1].tolist(),
                                     Dp, Tp)
                s0 = s1

    def _encode_shard(self, s: int) -> bytes:
        """One term-dictionary shard, columnar: term bytes (with lengths), term ids, df,
        block counts and the concatenated skip rows, as little-endian arrays in msgpack."""
        tids = self._shard_tids[s]
        tb = [self._terms[t].encode("utf-8", "surrogatepass") for t in tids]
        skips = [self._skip[t] for t in tids]
        return msgpack.packb(
            {
                "terms": b"".join(tb),
                "term_lens": np.fromiter(map(len, tb), np.int64, len(tb)).astype("<i4").tobytes(),
                "tids": np.asarray(tids, dtype="<i8").tobytes(),
                "df": self._df.a[tids].astype("<i8").tobytes(),
                "nblocks": np.fromiter(map(len, skips), np.int64, len(skips)).astype("<i4").tobytes(),
                "skip": np.concatenate(skips).astype("<i8").tobytes() if skips else b"",
            }
        )

    @classmethod
    def open(
        cls,
        store: PageStore,
        *,
        tokenizer: Analyzer | Callable[[str], list[str]] | None = None,
        k1: float | None = None,
        b: float | None = None,
    ) -> InvertedIndex:
        """Rebuild an index from ``store`` (written by :meth:`flush`). Loads the term
        dictionary and the doc chunks; postings pages are loaded lazily by searches.

        :param tokenizer: required when the index was built with a custom tokenizer
            callable; must equal the stored analyzer otherwise.
        :param k1: override the stored k1 (scoring only; nothing stored depends on it).
        :param b: override the stored b.
        :raises CorruptionError: when a record is missing or malformed.
        :raises FormatVersionError: when written by a newer format.
        :raises ConfigConflictError: when ``tokenizer`` conflicts with the stored analyzer.

        Complexity: O(terms + blocks + documents / 65,536 pages).
        """
        raw = store.get_meta("bm25/config")
        if raw is None:
            raise CorruptionError("no inverted index in this store (bm25/config is missing)")
        cfg = _unpack_meta(raw, "bm25/config")
        if not isinstance(cfg, dict) or cfg.get("version") != FORMAT_VERSION:
            raise FormatVersionError(f"inverted index format {cfg!r:.80} is not supported")
        stored_an = cfg.get("analyzer")
        if stored_an is None:
            if tokenizer is None or isinstance(tokenizer, Analyzer):
                raise ConfigConflictError(
                    "this index was built with a custom tokenizer callable: pass tokenizer="
                )
            tok: Any = tokenizer
        else:
            an = Analyzer.from_dict(stored_an)
            if tokenizer is not None and tokenizer != an:
                raise ConfigConflictError(
                    f"tokenizer {tokenizer!r} differs from the stored analyzer {an!r}"
                )
            tok = an
        try:
            idx = cls(
                tok,
                k1=cfg["k1"] if k1 is None else k1,
                b=cfg["b"] if b is None else b,
                store=store,
                block_size=cfg["block_size"],
            )
        except KeyError as exc:
            raise CorruptionError(f"bm25/config lacks {exc.args[0]!r}") from None
        idx._written_config = True  # k1/b overrides apply to this object only
        raw = store.get_meta("bm25/state")
        if raw is None:
            return idx
        state = _unpack_meta(raw, "bm25/state")
        try:
            ndocnos = int(state["ndocnos"])
            nterms = int(state["nterms"])
            idx._doc_pages = [int(p) for p in state["doc_pages"]]
            idx._fwd_pages = [int(p) for p in state["fwd_pages"]]
            idx._nlive = int(state["nlive"])
            idx._total_len = int(state["total_len"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"bm25/state is malformed ({exc})") from None
        # documents
        ext, lens, live = [], [], []
        for page in idx._doc_pages:
            e, ln, lv = store.load(page, decode_arrays)
            ext.append(e)
            lens.append(ln)
            live.append(lv)
        idx._ext = _Grow(np.int64, np.concatenate(ext) if ext else None)
        idx._len = _Grow(np.int32, np.concatenate(lens) if lens else None)
        idx._live = _Grow(np.uint8, np.concatenate(live) if live else None)
        if not idx._ext.n == idx._len.n == idx._live.n == ndocnos:
            raise CorruptionError("bm25 doc chunks do not match the recorded document count")
        if int(idx._live.view.sum()) != idx._nlive:
            raise CorruptionError("bm25 live-document count does not match the doc chunks")
        idx._ext_map = None
        # term dictionary: every shard's columns joined, then checked and spread in whole-
        # dictionary numpy steps (per-shard numpy steps cost ~0.1 s of a CLI query's open)
        _load_terms(idx, store, nterms)
        return idx

    # --- invariants ----------------------------------------------------------------------------

    def _check(self) -> None:
        """Invariant: skip rows describe their blocks; df = live docs per term (from the
        forward lists); N, total length and the id map agree with the doc arrays."""
        live = self._live.view.astype(bool)
        assert int(live.sum()) == self._nlive
        assert int(self._len.view[live].sum()) == self._total_len
        assert len(self._terms) == len(self._skip) == self._df.n == len(self._tid)
        df_ref = np.zeros(len(self._terms), dtype=np.int64)
        for docno in np.flatnonzero(live).tolist():
            off, tids = self._fwd_chunk(docno // FWD_CHUNK)  # type: ignore[misc]
            i = docno % FWD_CHUNK
            df_ref[tids[off[i] : off[i + 1]]] += 1
        assert (df_ref == self._df.view).all(), "df disagrees with the forward lists"
        for tid, sk in enumerate(self._skip):
            prev_last = -1
            for bi in range(len(sk)):
                docs, tfs = self._block(tid, bi)
                row = sk[bi]
                assert len(docs) == row[_CNT] and 1 <= row[_CNT] <= self.block_size
                assert docs[0] == row[_FIRST] and docs[-1] == row[_LAST]
                assert docs[0] > prev_last and (np.diff(docs) > 0).all()
                assert tfs.max() == row[_MAXTF] and self._len.a[docs].min() == row[_MINDL]
                prev_last = int(docs[-1])
            if len(sk) > 1:
                assert (sk[:-1, _CNT] == self.block_size).all()
            # a cached open tail that would be used (it names the term's last block: page,
            # count, first and last doc - see _tail_of) holds that block's content
            ent = self._tails.get(tid)
            if (ent is not None and len(sk) and int(sk[-1, _PAGE]) == ent[0]
                    and len(ent[1]) == sk[-1, _CNT] and ent[1][0] == sk[-1, _FIRST]
                    and ent[1][-1] == sk[-1, _LAST]):
                docs, tfs = self._block(tid, len(sk) - 1)
                assert np.array_equal(docs, ent[1]) and np.array_equal(tfs, ent[2])
        assert self._tail_postings == sum(len(e[1]) for e in self._tails.values())
        assert len(self._tails) <= TAIL_CACHE_TERMS
        if self._ext_map is not None:
            assert len(self._ext_map) == self._nlive
            for e, d in self._ext_map.items():
                assert self._ext.a[d] == e and live[d]


def _load_terms(idx: InvertedIndex, store: PageStore, nterms: int) -> None:
    """Read the term dictionary shards of ``store`` into ``idx``: terms, skip rows, df and
    the per-term bounds. Each shard's sizes are checked against its own columns, then the
    term ids over all shards: each of 0..nterms-1 exactly once.

    :raises CorruptionError: naming the shard whose record is malformed, or when term ids
        repeat or are missing.
    """
    shards: list[int] = []
    cols: list[list[bytes]] = [[], [], [], [], [], []]
    for s in range(N_SHARDS):
        name = f"bm25/terms/{s:03x}"
        raw = store.get_meta(name)
        if raw is None:
            continue
        rec = _unpack_meta(raw, name)
        try:
            got = [rec[k] for k in ("term_lens", "tids", "df", "nblocks", "skip", "terms")]
            if not all(isinstance(c, bytes) for c in got):
                raise TypeError("a column is not bytes")
            n = len(got[1]) // 8
            if not (len(got[0]) == 4 * n and len(got[1]) == 8 * n and len(got[2]) == 8 * n
                    and len(got[3]) == 4 * n and len(got[4]) % 48 == 0):
                raise ValueError("column lengths differ")
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptionError(f"{name}: bad record ({exc})") from None
        shards.append(s)
        for c, v in zip(cols, got):
            c.append(v)
    lens = np.frombuffer(b"".join(cols[0]), dtype="<i4").astype(np.int64)
    tids = np.frombuffer(b"".join(cols[1]), dtype="<i8").astype(np.int64)
    tdf = np.frombuffer(b"".join(cols[2]), dtype="<i8").astype(np.int64)
    nbl = np.frombuffer(b"".join(cols[3]), dtype="<i4").astype(np.int64)
    skip = np.frombuffer(b"".join(cols[4]), dtype="<i8").astype(np.int64).reshape(-1, 6)
    blob = b"".join(cols[5])
    # per shard: term bytes and skip rows add up to what its columns say
    n_of = np.fromiter((len(c) // 8 for c in cols[1]), dtype=np.int64, count=len(shards))
    first = np.concatenate(([0], np.cumsum(n_of)))[:-1]
    if (lens < 0).any() or (nbl < 0).any():
        bad = int(np.searchsorted(first, int(np.flatnonzero((lens < 0) | (nbl < 0))[0]),
                                  "right")) - 1
        raise CorruptionError(f"bm25/terms/{shards[bad]:03x}: bad record (negative size)")
    nz = n_of > 0
    sum_len = np.zeros(len(shards), dtype=np.int64)
    sum_nbl = np.zeros(len(shards), dtype=np.int64)
    if nz.any():
        sum_len[nz] = np.add.reduceat(lens, first[nz])
        sum_nbl[nz] = np.add.reduceat(nbl, first[nz])
    want_len = np.fromiter(map(len, cols[5]), dtype=np.int64, count=len(shards))
    want_rows = np.fromiter((len(c) // 48 for c in cols[4]), dtype=np.int64, count=len(shards))
    bad_shards = np.flatnonzero((sum_len != want_len) | (sum_nbl != want_rows))
    if len(bad_shards):
        raise CorruptionError(f"bm25/terms/{shards[int(bad_shards[0])]:03x}: bad record "
                              "(sizes do not add up)")
    if len(tids) and (tids.min() < 0 or tids.max() >= nterms):
        bad = int(np.searchsorted(first, int(np.flatnonzero((tids < 0) | (tids >= nterms))[0]),
                                  "right")) - 1
        raise CorruptionError(f"bm25/terms/{shards[bad]:03x}: bad record (term id out of "
                              "range)")
    if len(tids) != nterms or (nterms and np.bincount(tids, minlength=nterms).max() > 1):
        raise CorruptionError("bm25 term dictionary is missing terms or repeats a term id")
    toff = np.concatenate(([0], np.cumsum(lens))).tolist()
    boff = np.concatenate(([0], np.cumsum(nbl))).tolist()
    try:
        if blob.isascii():
            text = blob.decode("ascii")
            names = [text[a:e] for a, e in zip(toff, toff[1:])]
        else:
            names = [blob[a:e].decode("utf-8", "surrogatepass") for a, e in zip(toff, toff[1:])]
    except UnicodeDecodeError as exc:
        raise CorruptionError(f"bm25 term dictionary: a term is not UTF-8 ({exc})") from None
    views = [skip[a:e] for a, e in zip(boff, boff[1:])]
    order = np.argsort(tids, kind="stable").tolist()  # position of term id 0, 1, ...
    idx._terms = [names[i] for i in order]
    idx._skip = [views[i] for i in order]
    idx._tid = dict(zip(idx._terms, range(nterms)))
    tl = tids.tolist()
    for s, lo, n in zip(shards, first.tolist(), n_of.tolist()):
        idx._shard_tids[s] = sorted(tl[lo : lo + n])
    df = np.zeros(nterms, dtype=np.int64)
    maxtf = np.zeros(nterms, dtype=np.int64)
    mindl = np.full(nterms, _INT64_MAX, dtype=np.int64)
    df[tids] = tdf
    has = nbl > 0
    if has.any():
        starts = np.asarray(boff[:-1], dtype=np.int64)[has]
        maxtf[tids[has]] = np.maximum.reduceat(skip[:, _MAXTF], starts)
        mindl[tids[has]] = np.minimum.reduceat(skip[:, _MINDL], starts)
    idx._df = _Grow(np.int64, df)
    idx._tmaxtf = _Grow(np.int64, maxtf)
    idx._tmindl = _Grow(np.int64, mindl)


def _check_allow(allow: object) -> None:
    if allow is not None and not isinstance(allow, AllowSet):
        raise InvalidTypeError(
            f"allow must be a llmdsdb.allow.AllowSet or None, not {type(allow).__name__}"
        )


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c), vectorised."""
    total = int(counts.sum())
    offs = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(offs - starts, counts)


def _unpack_meta(raw: bytes, name: str) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CorruptionError(f"{name} is not valid msgpack ({exc})") from None
