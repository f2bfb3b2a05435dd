/*
 * llmdsdb/_native/native.h -- the one header of the compiled kernels.
 *
 * Layout: one C file per kernel family (distance.c, hnsw.c, postings.c, bm25.c, ...) holds
 * the kernels, which see plain pointers, lengths and strides only: no Python objects, no
 * I/O, no allocation that outlives the call unless the caller passes scratch in. Each
 * family's binding (bind_<family>.c) is the thin CPython layer: it checks every buffer
 * (dtype, contiguity, shape, index ranges) before a kernel touches it, releases the GIL
 * around the kernel, and turns the kernel's status code into one llmdsdb.errors class.
 *
 * Data that came from disk is hostile: every id, length and offset a kernel reads from it
 * is bounds-checked before use, and a violation is NATIVE_ECORRUPT, never a crash.
 */
#ifndef LLMDSDB_NATIVE_H
#define LLMDSDB_NATIVE_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* Kernel status codes; the bindings map them with native_raise(). */
enum {
    NATIVE_OK = 0,
    NATIVE_ECORRUPT = -1, /* input data violates its format: llmdsdb.errors.CorruptionError */
    NATIVE_EINVAL = -2,   /* caller passed a bad argument: InvalidArgumentError */
    NATIVE_ENOMEM = -3,   /* allocation failed: MemoryError */
};

/* Error classes from llmdsdb.errors, loaded once at module init (borrowed for the
 * module's lifetime). */
extern PyObject *native_CorruptionError;
extern PyObject *native_InvalidArgumentError;
extern PyObject *native_DimensionError;

/* Set the Python exception for a kernel status (msg may be NULL) and return NULL. */
PyObject *native_raise(int status, const char *msg);

/* 0 when the buffer's start is aligned to its items, else InvalidArgumentError (-1; the
 * caller releases v): a view at an odd byte offset would make every kernel load
 * misaligned, which is undefined behaviour in C. */
static inline int native_check_aligned(const Py_buffer *v, const char *what) {
    if (v->itemsize > 1 && (uintptr_t)v->buf % (uintptr_t)v->itemsize) {
        PyErr_Format(native_InvalidArgumentError, "%s is not aligned to its %zd-byte items "
                     "(a view at an odd byte offset); pass a copy", what, v->itemsize);
        return -1;
    }
    return 0;
}

/* Get a C-contiguous buffer (writable when asked) of `ndim` dimensions (any when ndim < 0)
 * whose items are `itemsize` bytes of one of the struct codes in `codes`, aligned to its
 * items: 0, or InvalidArgumentError naming `what` and -1 (nothing left to release). */
int native_get_buffer(PyObject *o, Py_buffer *v, const char *codes, Py_ssize_t itemsize,
                      int ndim, int writable, const char *what);

/* Runtime instruction-set dispatch: the widest x86-64 level this CPU runs ("avx512",
 * "avx2", "sse2") or "neon"/"scalar" elsewhere. Kernels built with target_clones pick
 * their clone by the same CPU features. */
const char *native_isa(void);

/*
 * Kernel families register their Python-visible functions here: each bind_<family>.c
 * defines one NULL-terminated PyMethodDef table, and module.c lists the tables in
 * native_families[]. To add a family, define its table and add one line there.
 */
extern PyMethodDef native_info_methods[];
extern PyMethodDef native_hnsw_methods[]; /* bind_hnsw.c: distances, exact top-k, HNSW */
extern PyMethodDef native_postings_methods[]; /* bind_postings.c: postings decode, BM25 */
extern PyMethodDef native_repair_methods[]; /* bind_repair.c: compaction's HNSW repair */
extern PyMethodDef native_postings_write_methods[]; /* bind_postings_write.c: encode */
extern PyMethodDef native_words_methods[]; /* bind_words.c: text -> interned words */
extern PyMethodDef native_lmdbguard_methods[]; /* bind_lmdbguard.c: LMDB value bounds */
extern PyMethodDef native_envelope_methods[]; /* bind_envelope.c: stored values' fast path */

/* ---- postings.c: postings blocks (llmdsdb.codec format version 1) --------------------- */

#define NATIVE_POSTINGS_VERSION 1
#define NATIVE_MAX_BLOCK_POSTINGS 65536
#define NATIVE_MAX_DOC 2147483647
#define NATIVE_EVERSION (-16) /* unknown block version: llmdsdb.errors.FormatVersionError */

/* A parsed, length-checked block header: n postings from doc base; the gap run (glen bytes,
 * dw bits a value) and the tf run (tlen bytes, tw bits) point into the block. */
typedef struct {
    uint32_t n, base, dw, tw;
    const uint8_t *gaps, *tfs;
    size_t glen, tlen;
    uint32_t tfmax;  /* the largest tf, set by native_postings_unpack */
    const char *why; /* what was wrong, when a check failed */
} native_block_hdr;

/* zlib-compatible crc32 of n bytes, continuing crc (0 to start). */
uint32_t native_crc32(uint32_t crc, const uint8_t *p, size_t n);
/* Parse and check the header of the len-byte block at p (and its crc32 when verify_crc):
 * NATIVE_OK, NATIVE_ECORRUPT or NATIVE_EVERSION. Reads only p[0..len). */
int native_postings_header(const uint8_t *p, size_t len, int verify_crc, native_block_hdr *h);
/* Unpack a checked header's runs: h->n doc numbers (strictly increasing) and tfs. */
int native_postings_unpack(native_block_hdr *h, int32_t *docs, int32_t *tfs);
/* The two halves of native_postings_unpack: the doc numbers alone, and the tfs alone (which
 * sets h->tfmax). A reader that needs a few tfs of a block takes them one at a time: */
int native_postings_unpack_docs(native_block_hdr *h, int32_t *docs);
int native_postings_unpack_tfs(native_block_hdr *h, int32_t *tfs);
/* The tf of posting j (< h->n, else NATIVE_EINVAL) of a checked header, read from its
 * bits alone; NATIVE_ECORRUPT when out of range as native_postings_unpack_tfs says. */
int64_t native_postings_tf_at(const native_block_hdr *h, uint32_t j);
/* native_postings_unpack by one implementation: wide 1 the AVX2 one (NATIVE_EINVAL where
 * the CPU has none), 0 the portable one (for tests that hold each to the reference). */
int native_postings_unpack_as(native_block_hdr *h, int32_t *docs, int32_t *tfs, int wide);
/* Both of the above: the number of postings (<= cap) or a negative status. */
int64_t native_postings_decode(const uint8_t *p, size_t len, int verify_crc, int32_t *docs,
                               int32_t *tfs, size_t cap);

/* ---- postings_write.c: encoding postings blocks ---------------------------------------- */

/* Bytes an encoded block of n postings can take at most. */
size_t native_postings_encoded_bound(size_t n);
/* NATIVE_OK when n in 1..65536, docs strictly increasing and >= 0, tfs >= 1; else EINVAL. */
int native_postings_check(const int32_t *docs, const int32_t *tfs, size_t n);
/* Encode one block into out (native_postings_encoded_bound(n) bytes): its length, or
 * NATIVE_EINVAL (nothing meaningful written) when the postings break the rules above. */
int64_t native_postings_encode(const int32_t *docs, const int32_t *tfs, size_t n, uint8_t *out);

/* ---- words.c: normalised text -> words, interned (llmdsdb.analysis's word rule) ------- */

/* One text: len code units of kind bytes each (1, 2 or 4: a str's storage). */
typedef struct {
    const void *data;
    size_t len;
    int kind;
} native_text;

/* The words of the texts split so far (start zeroed; release with native_words_free):
 * token i is word slots[i]; word k is arena[woff[k] .. woff[k + 1]) in code points. */
typedef struct {
    int32_t *slots;
    size_t nslots, cap_slots;
    uint32_t *arena;
    size_t narena, cap_arena;
    int64_t *woff;
    size_t cap_woff;
    uint64_t *whash;
    size_t nwords, cap_words;
    int32_t *table; /* open addressing: word numbers, -1 = empty; tcap a power of two */
    size_t tcap;
} native_words;

/* Split n texts into words (maximal runs of Py_UNICODE_ISALNUM code points, ASCII letters
 * lower-cased), appending each token's word number to w->slots and each text's token count
 * to counts[t]; new words are added to w. NATIVE_OK, NATIVE_ENOMEM, or NATIVE_EINVAL for a
 * kind other than 1, 2, 4. Runs without the GIL (reads only the texts and static tables). */
int native_words_split(native_words *w, const native_text *texts, size_t n, int64_t *counts);
void native_words_free(native_words *w);

/* ---- envelope.c: the storage envelope's fast path (llmdsdb.storage_format) ----------- */

/* The body offset (12) of the n-byte stored value at p when it is an uncompressed envelope
 * of `kind` with a version in 1..max_version, its length field and crc32 right; else -1
 * (anything else is the Python decoder's to judge). Reads only p[0..n). */
int64_t native_envelope_body(const uint8_t *p, size_t n, int kind, int max_version);
/* The offset of the id string in the n-byte document record at p when the record is a
 * fixmap whose first key is "id" and whose value is a str that fits (*len: its bytes);
 * else -1. Reads only p[0..n); the bytes are not checked to be UTF-8. */
int64_t native_record_id(const uint8_t *p, size_t n, size_t *len);

/* ---- bm25.c: BM25 top-k over postings lists ------------------------------------------- */

/* One term's postings: nb blocks, either compressed (buf != NULL: block i is
 * buf[offs[i] .. offs[i+1]), verified or not) or raw (docs/tfs, block i = postings
 * offs[i] .. offs[i+1]). skip: nb rows of 6 int64 (page, count, first doc, last doc,
 * max tf, min doc length), as llmdsdb.inverted_index keeps them. Nothing is trusted: every
 * block is checked against its row when it is loaded. */
typedef struct {
    const uint8_t *buf;
    size_t buflen;
    const int32_t *docs, *tfs;
    size_t npost;
    const int64_t *offs;
    const int64_t *skip;
    int64_t nb;
    int trusted; /* raw blocks decoded and checked against their rows by the caller */
    /* NULL, or nb exact block maxima of (tf * (k1 + 1)) / (norm[d] + tf) over each block's
     * postings for this ctx's norms, -1 where not known yet: a block bound comes from its
     * maximum once known, else from the skip row's max tf and min doc length. The kernels
     * fill an entry the first time they decode its block (relaxed atomic stores: every
     * writer stores the same value); native_bm25_block_max fills them all. */
    double *bmax;
} native_plist;

/* A query: m terms in summation order; term i is lists[list[i]], its BM25 weight idf[i]
 * and query count qtf[i], and ub[i] bounds its contribution to any document. */
typedef struct {
    int32_t m;
    const int32_t *list;
    const double *idf, *qtf, *ub;
    /* A filter (allow == NULL: none): document d may be returned only when bit ext[d] of
     * the little-endian bitmap allow[0 .. allow_len) is set (ids past it are not allowed).
     * cand != NULL: score only these ncand documents (strictly ascending doc numbers, each
     * < ndocs), document at a time -- the plan for a selective filter. */
    const uint8_t *allow;
    int64_t allow_len;
    const int32_t *cand;
    int64_t ncand;
} native_bm25_query;

/* What every query of a call shares. norm[d] = k1 * (1 - b + b * dl / avgdl), +inf for a
 * dead document; block_cap bounds the postings of one block. */
typedef struct {
    const native_plist *lists;
    int64_t nlists;
    const double *norm;
    /* NULL, or the norms dictionary-coded: ntab[nid[d]] is norm[d], bit for bit (2 bytes
     * a document for a query to read instead of 8; see native_bm25_norm_ids) */
    const uint16_t *nid;
    const double *ntab;
    const int64_t *ext; /* ndocs ids the allow bitmaps speak of (NULL when no query has one) */
    int64_t ndocs;
    double k1, b, avgdl;
    int64_t block_cap;
} native_bm25_ctx;

enum { NATIVE_BM25_EXHAUSTIVE = 0, NATIVE_BM25_PRUNED = 1 };

/* Decode every block of L (each checked against its skip row, blocks ascending) into
 * docs/tfs (room for the postings its skip rows count) and offs (nb + 1 posting offsets):
 * the raw form of the list, which may then be marked trusted. */
int native_bm25_decode_list(const native_bm25_ctx *c, const native_plist *L, int32_t *docs,
                            int32_t *tfs, int64_t *offs);

/* Dictionary-code n norms: nid[d] (n entries) indexes ntab (room for 65536) with
 * ntab[nid[d]] bitwise equal to norm[d]. The number of distinct values, or -1 when there
 * are more than 65536 (or no memory): then nid and ntab are unspecified. */
int32_t native_bm25_norm_ids(const double *norm, int64_t n, uint16_t *nid, double *ntab);

/* Fill L->bmax (L->nb doubles) with the exact block maxima for c's norms: every block
 * loaded and checked against its skip row as a query would. NATIVE_OK or the block's status
 * (cheap for raw lists; a compressed list is decoded whole). */
int native_bm25_block_max(const native_bm25_ctx *c, const native_plist *L);

/* Top k documents of a query by BM25 (score desc, then doc number asc), exact: scores are
 * summed in 64-bit fixed point, so every mode gives bit-identical results. acc (ndocs
 * int64, zero) and touched (ndocs int32) are scratch for the exhaustive mode (may be NULL
 * for pruned); acc is zero again on return. Writes *nout <= k hits to docs/scores. */
int native_bm25_topk(const native_bm25_ctx *c, const native_bm25_query *q, int mode, int64_t k,
                     int64_t *acc, int32_t *touched, int32_t *docs, double *scores,
                     int64_t *nout);
/* native_bm25_topk for nq queries on up to nthreads threads; query i runs in modes[i]
 * (mode when modes is NULL) and writes docs/scores[i * k ..] and nout[i]. Thread t uses
 * accs[t] / toucheds[t] (zeroed acc, ndocs each) when given, else scratch of its own.
 * Returns the first failing status. */
int native_bm25_batch(const native_bm25_ctx *c, const native_bm25_query *qs, int64_t nq,
                      int mode, const int8_t *modes, int64_t k, int nthreads, int64_t **accs,
                      int32_t **toucheds, int32_t *docs, double *scores, int64_t *nout);

/* Per-term statistics for planning a query in C (llmdsdb.inverted_index's arrays). */
typedef struct {
    const int64_t *df, *maxtf, *mindl; /* nterms each: live df, max tf, min doc length */
    int64_t nterms;
    int64_t nlive;        /* N */
    double avgdl;         /* mean doc length of the live documents (1.0 when none) */
    double k1, b;
} native_bm25_terms;

/* Plan a query from its m_in analysed term ids (a repeated id is a query tf > 1; every id
 * < t->nterms, checked by the caller): the distinct terms with df > 0 in decreasing order
 * of their bound ub (ties: lower term id), with idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
 * qtf and ub = idf * qtf * maxtf * (k1 + 1) / (maxtf + k1 * (1 - b + b * mindl / avgdl)),
 * formed as llmdsdb.inverted_index formed them in Python. list/idf/qtf/ub have room for
 * m_in; returns the number of terms kept and sets *postings to their df sum. */
int32_t native_bm25_plan(const native_bm25_terms *t, const int32_t *tids, int32_t m_in,
                         int32_t *list, double *idf, double *qtf, double *ub,
                         int64_t *postings);

/* ---- distance.c: vector distances (float32, runtime SIMD dispatch) -------------------- */

/* Metrics, as llmdsdb.hnsw numbers them. Smaller is closer for all three. */
enum { NATIVE_COSINE = 0, NATIVE_L2 = 1, NATIVE_IP = 2 };

/* Sum of a[i]*b[i] and sum of (a[i]-b[i])^2 over dim floats, each through the widest
 * implementation this CPU runs (chosen once at load; native_dist_isa() names it). The
 * same CPU always takes the same path, so results are deterministic per machine. */
typedef float (*native_reduce_fn)(const float *a, const float *b, size_t dim);
extern native_reduce_fn native_dot;
extern native_reduce_fn native_l2sq;
const char *native_dist_isa(void);
/* The implementations for one instruction set ("avx512", "avx2", "scalar"): 0, or -1 when
 * this CPU does not run it (the tests compare every runnable path with the scalar one). */
int native_reduce_for(const char *isa, native_reduce_fn *dot, native_reduce_fn *l2sq);

/* Distance of a metric: cosine 1 - a.b (unit vectors), l2 squared distance, ip -a.b. */
static inline float native_dist(int metric, const float *a, const float *b, size_t dim) {
    if (metric == NATIVE_L2)
        return native_l2sq(a, b, dim);
    float d = native_dot(a, b, dim);
    return metric == NATIVE_COSINE ? 1.0f - d : -d;
}

/* (distance, id) pair; ordered by distance, then id (ties go to the lower id). */
typedef struct {
    float d;
    int32_t id;
} native_pair;

static inline int native_pair_lt(native_pair a, native_pair b) {
    return a.d < b.d || (a.d == b.d && a.id < b.id);
}

/* Max-heap of pairs on (d, id) in h[0..*n): the root is the largest. */
static inline void native_heap_push(native_pair *h, size_t *n, native_pair x) {
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!native_pair_lt(h[p], x))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static inline void native_heap_pop(native_pair *h, size_t *n) {
    native_pair x = h[--(*n)];
    size_t m = *n, i = 0;
    if (!m)
        return;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && native_pair_lt(h[c], h[c + 1]))
            c++;
        if (!native_pair_lt(x, h[c]))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Drain a max-heap of n pairs into out, smallest first. */
static inline void native_heap_drain(native_pair *h, size_t n, native_pair *out) {
    while (n) {
        out[n - 1] = h[0];
        native_heap_pop(h, &n);
    }
}

/* Exact k nearest of q among rows 0..n-1 of vecs (n x dim, row stride dim), skipping rows
 * with skip[i] != 0 (skip may be NULL). heap is scratch of k pairs. Writes the hits nearest
 * first to out (ties: lower id first) and returns their number (<= k). */
size_t native_topk_scan(const float *vecs, size_t n, size_t dim, const float *q, int metric,
                        const uint8_t *skip, size_t k, native_pair *heap, native_pair *out);

/* Validate and prepare one input row of dim doubles (as llmdsdb.hnsw stores vectors): the
 * sum of squares in double; 0 when it is finite and above 1e-290 (and, unless cosine, at
 * most limit_sq), else 1 (the caller takes its careful path). On 0 writes the float32 row
 * (divided by the norm under cosine) to out and the norm to *norm. */
int native_prep_row(const double *x, size_t dim, int metric, double limit_sq, float *out,
                    double *norm);

/* ---- hnsw.c: HNSW search and insert over llmdsdb.hnsw's arrays ------------------------ */

/* The graph as llmdsdb.hnsw keeps it. Every array is owned by the caller; ids read from
 * adj0 / ladj / lrow are checked (range, padding) as the kernels reach them. */
typedef struct {
    const float *vecs;      /* node i's vector at vecs + i*dim */
    int32_t *adj0;          /* layer 0: node i's row at adj0 + i*m0, padded with -1 */
    const uint8_t *deleted; /* 1 = tombstone: traversed, never returned by a query */
    const int8_t *levels;   /* top layer of each node (read by insert only) */
    int32_t **ladj;         /* upper layer l (1..nlevels): rows of m ids at ladj[l-1] */
    const int32_t *lcount;  /* rows of each upper layer */
    int32_t **lrow;         /* upper layer l: node -> row, lrow[l-1][node] (-1: none) */
    int32_t n, dim, m0, m, nlevels, metric;
    uint8_t *locks;         /* one spin lock per node during a threaded insert, else NULL */
    uint8_t *dirty;         /* insert sets dirty[node / block] when a layer-0 row changes */
    int32_t block;
} hnsw_graph;

/* Per-thread scratch: visited stamps (epochs, cleared only on wrap), heaps, row buffers. */
typedef struct hnsw_ctx {
    uint16_t *mark;
    size_t mark_n;
    uint16_t epoch;
    native_pair *cand, *res, *tmp, *tmp2;
    size_t cand_cap, res_cap, tmp_cap;
    int32_t *row, *sel, *sel2, *fresh;
    int32_t *hop;  /* two-hop expansion of a filtered walk: m0 * (m0 + 1) ids, lazily */
    int32_t *nodes; /* allowed nodes of an exact filtered scan, lazily */
    size_t nodes_cap;
    float *q;
    double *qd;
    size_t ndist;  /* distances the current filtered walk has computed */
    size_t budget; /* a filtered walk stops past this many distances (0: no limit) */
    int over;      /* the last walk stopped at its budget */
    struct hnsw_ctx *next; /* free-list link of the owner's pool */
} hnsw_ctx;

/* Entry point and top layer, shared by the threads of one insert (lock NULL: one thread). */
typedef struct {
    int32_t entry, max_level;
    void *lock; /* pthread_mutex_t * */
} hnsw_top;

hnsw_ctx *hnsw_ctx_new(size_t nodes, int32_t m0, int32_t dim);
void hnsw_ctx_free(hnsw_ctx *c);

/* k nearest live nodes of q (nearest first, ties to the lower id) into out; *nout hits.
 * exact != 0: scan all nodes; else greedy descent from entry through layers max_level..1,
 * then a layer-0 search with a pool of ef (>= k); when that finds fewer than
 * min(k, live) live nodes (many tombstones near q) the exact scan answers instead. */
int hnsw_query(const hnsw_graph *g, hnsw_ctx *c, const float *q, int32_t entry,
               int32_t max_level, size_t ef, size_t k, size_t live, int exact,
               native_pair *out, size_t *nout);

/* A filtered query's allowed set, over vec_ids (the ids llmdsdb.hnsw reports): a
 * little-endian bitmap (vec_id v allowed when bits[v >> 3] >> (v & 7) & 1; ids past
 * 8 * nbytes never are), the same set as strictly increasing ids, and the graph's label
 * map from vec_id to node: keys (strictly increasing vec_ids of live nodes) and knodes
 * (their nodes). ext is the graph's node -> vec_id array. */
typedef struct {
    const uint8_t *bits;
    size_t nbytes;
    const int64_t *ids;
    size_t nids;
    const int64_t *keys;
    const int32_t *knodes;
    size_t nkeys;
    const int64_t *ext;
    /* NULL, or the same set over nodes: bit i set when node i is live and allowed
     * (hnsw_allow_nodes), read instead of the two lookups above inside a walk */
    const uint8_t *nodebits;
} hnsw_allow;

/* How a filtered walk treats nodes outside the allowed set. TRAVERSE: they are walked
 * like any node but never kept as results (hnswlib's filter functor). TWOHOP: they never
 * enter the candidate queue; instead their own neighbours are considered as if adjacent to
 * the node being expanded (ACORN-1's two-hop expansion). */
enum { HNSW_FILTER_TRAVERSE = 0, HNSW_FILTER_TWOHOP = 1 };

/* The live allowed nodes: each of a->ids looked up in the label map (galloping search
 * from the previous hit, so sorted ids cost O(m log(n/m))), tombstones and ids whose bit
 * is not set dropped (a node is allowed only when both views allow it). Writes up
 * to a->nids nodes to nodes and their number to *m. NATIVE_EINVAL when the map names a
 * node outside 0..n-1 or one whose vec_id differs (a map out of step with the graph). */
int hnsw_resolve_allowed(const hnsw_graph *g, const hnsw_allow *a, int32_t *nodes, size_t *m);

/* a->nodebits for a walk: nodebits ((n + 7) / 8 bytes, zeroed by the caller) gets the bit
 * of every node hnsw_resolve_allowed finds (scratch: a->nids int32); the bitmap is
 * L1-sized where the vec_id lookups it replaces are scattered over n int64s, which a
 * two-hop walk makes m0 of for every node it expands. Errors as hnsw_resolve_allowed. */
int hnsw_allow_nodes(const hnsw_graph *g, const hnsw_allow *a, uint8_t *nodebits,
                     int32_t *scratch);

/* Exact k nearest of q among the m given nodes (each 0 <= node < n, checked by the
 * caller), nearest first, ties to the lower node; *nout = min(k, m). */
int hnsw_scan_nodes(const hnsw_graph *g, hnsw_ctx *c, const float *q, const int32_t *nodes,
                    size_t m, size_t k, native_pair *out, size_t *nout);

/* How a filtered walk runs (hnsw_query_allowed). mode: HNSW_FILTER_*. budget: the walk
 * gives up once it has computed more than this many distances and the allowed nodes are
 * scanned exactly instead (0: no limit) -- the caller sets it to what the exact scan costs,
 * so a walk never costs much more than the scan it stands in for. verify: after the walk,
 * up to max(verify, distances walked / HNSW_VERIFY_SHARE) allowed nodes, evenly spaced in
 * the allowed ids, are checked against the walk's k-th distance; when HNSW_VERIFY_HITS of
 * them were never reached by the walk yet are nearer than its k-th hit, the walk has
 * demonstrably missed part of the top k (an estimated hits * m / sample of the m allowed
 * nodes) and the exact scan answers (0: no check). */
typedef struct {
    int mode;
    size_t budget;
    size_t verify;
} hnsw_filter_opts;
enum { HNSW_VERIFY_SHARE = 8, HNSW_VERIFY_HITS = 2 };

/* What answered a filtered query (hnsw_query_allowed's *ran): the walk, the exact scan
 * (asked for), or the exact scan after a walk that found fewer than k allowed nodes, ran
 * past its budget, or failed its check. */
enum {
    HNSW_RAN_WALK = 0,
    HNSW_RAN_EXACT = 1,
    HNSW_RAN_SHORT = 2,
    HNSW_RAN_BUDGET = 3,
    HNSW_RAN_VERIFY = 4
};

/* k nearest allowed live nodes of q. exact != 0: hnsw_resolve_allowed + hnsw_scan_nodes.
 * Else the greedy descent and a layer-0 search with a pool of ef (>= k) in which only
 * allowed live nodes become results (o: mode, budget, check); when the walk finds fewer
 * than k of them, runs past its budget or fails its check, the exact path answers instead,
 * so *nout = min(k, allowed live nodes). *ran: HNSW_RAN_*; *ndist: distances computed. */
int hnsw_query_allowed(const hnsw_graph *g, hnsw_ctx *c, const float *q, int32_t entry,
                       int32_t max_level, size_t ef, size_t k, const hnsw_allow *a, int exact,
                       const hnsw_filter_opts *o, native_pair *out, size_t *nout, int *ran,
                       size_t *ndist);

/* Link node x (its vector and level already stored, its rows empty) into the graph: the
 * paper's insert with ef_construction efc, neighbour-selection heuristic (Algorithm 4)
 * and heuristic pruning of overflowing back-link rows. */
int hnsw_insert(const hnsw_graph *g, hnsw_ctx *c, int32_t x, size_t efc, hnsw_top *top);

/* ---- repair.c: compaction's repair of HNSW rows that name removed nodes ---------------- */
int native_hnsw_repair(const float *vecs, int64_t nvec, int64_t dim, int metric, int32_t *A,
                       int64_t R, int64_t W, const int64_t *rownode, const int32_t *node2row,
                       const uint8_t *gone, const uint8_t *dead, const int64_t *rows, int64_t m);

#endif /* LLMDSDB_NATIVE_H */
