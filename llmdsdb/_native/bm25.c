/*
 * llmdsdb/_native/bm25.c -- exact BM25 top-k over postings lists (see native.h).
 *
 * A posting (doc d, tf) of a term with weight idf and query count qtf contributes
 *     c = ((tf * (k1 + 1)) / (norm[d] + tf)) * idf   [* qtf when qtf != 1]
 * with norm[d] = k1 * (1 - b + b * dl / avgdl), and a document's score is the sum of its
 * terms' contributions, added in 64-bit fixed point (see make_fixed) so that every order
 * of evaluation gives the same score to the last bit. Two modes:
 *
 *  - exhaustive: term after term, every posting added into a dense accumulator (a list of
 *    the touched documents makes the final selection and the reset proportional to them
 *    when they are few);
 *  - pruned: block-max MaxScore over windows of documents (Turtle & Flood 1995; Ding &
 *    Suel 2011; the window shape of Lucene's MaxScoreBulkScorer): see topk_pruned.
 *
 * Bounds and scores are formed by different operations, so every bound keeps a relative
 * margin of 1e-9 and one fixed-point unit: rounding can never drop a document that belongs
 * in the top k. Ties: the lower doc number first (documents are numbered in insertion
 * order).
 */
#include "native.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SLACK 1e-9

/* (x * 1.0 is x exactly, so qtf == 1 needs no branch.) */
static inline double contrib(int32_t tf, double norm, double kp1, double idf, double qtf) {
    double t = (double)tf;
    double c = (t * kp1) / (norm + t);
    return c * idf * qtf;
}

/* contrib() of n postings (docs d, tfs t) into out: the same operations in the same order,
 * so the same bits, but vectorised where the CPU allows (the division dominates a
 * posting's cost; IEEE division and multiplication round the same in every width). */
__attribute__((target_clones("avx2", "default"))) static void
contrib_run(const int32_t *restrict d, const int32_t *restrict t, int64_t n,
            const double *restrict norm, double kp1, double idf, double qtf,
            double *restrict out) {
    for (int64_t j = 0; j < n; j++) {
        double tf = (double)t[j];
        out[j] = (tf * kp1) / (norm[d[j]] + tf) * idf * qtf;
    }
}

/* contrib_run with the norms read through their dictionary (native_bm25_norm_ids): the
 * same values, so the same bits, from 2 bytes a document instead of 8 -- the norms are the
 * one array a query reads at random over the whole collection. */
__attribute__((target_clones("avx2", "default"))) static void
contrib_run_ids(const int32_t *restrict d, const int32_t *restrict t, int64_t n,
                const uint16_t *restrict nid, const double *restrict ntab, double kp1,
                double idf, double qtf, double *restrict out) {
    double nm[64];
    for (int64_t j0 = 0; j0 < n; j0 += 64) {
        int64_t m = n - j0 < 64 ? n - j0 : 64;
        for (int64_t j = 0; j < m; j++)
            nm[j] = ntab[nid[d[j0 + j]]];
        for (int64_t j = 0; j < m; j++) {
            double tf = (double)t[j0 + j];
            out[j0 + j] = (tf * kp1) / (nm[j] + tf) * idf * qtf;
        }
    }
}

/* norm[d], through the dictionary when there is one (a lookup's one load). */
static inline double norm_at(const native_bm25_ctx *c, int32_t d) {
    return c->nid ? c->ntab[c->nid[d]] : c->norm[d];
}

/* The contributions of n postings of a term (weight idf, query count qtf) into out. */
static inline void contribs(const native_bm25_ctx *c, const int32_t *d, const int32_t *t,
                            int64_t n, double idf, double qtf, double *out) {
    if (c->nid)
        contrib_run_ids(d, t, n, c->nid, c->ntab, c->k1 + 1.0, idf, qtf, out);
    else
        contrib_run(d, t, n, c->norm, c->k1 + 1.0, idf, qtf, out);
}

int32_t native_bm25_norm_ids(const double *norm, int64_t n, uint16_t *nid, double *ntab) {
    /* open addressing on the values' bits, at least twice as many slots as values can
     * come (a small index makes a small table: a state is made after every write) */
    enum { MAXV = 1 << 16 };
    int bits = 4;
    while (bits < 17 && ((int64_t)1 << bits) < 2 * n)
        bits++;
    const int64_t slots = (int64_t)1 << bits;
    uint64_t *key = malloc(sizeof(uint64_t) * (size_t)slots);
    int32_t *val = malloc(sizeof(int32_t) * (size_t)slots);
    if (!key || !val) {
        free(key);
        free(val);
        return -1;
    }
    for (int64_t i = 0; i < slots; i++)
        val[i] = -1;
    int32_t nv = 0;
    for (int64_t d = 0; d < n; d++) {
        uint64_t x;
        memcpy(&x, norm + d, sizeof x);
        uint64_t h = (x * 0x9E3779B97F4A7C15ull) >> (64 - bits);
        while (val[h] >= 0 && key[h] != x)
            h = (h + 1) & (slots - 1);
        if (val[h] < 0) {
            if (nv == MAXV) {
                nv = -1;
                break;
            }
            key[h] = x;
            val[h] = nv;
            ntab[nv++] = norm[d];
        }
        nid[d] = (uint16_t)val[h];
    }
    free(key);
    free(val);
    return nv;
}

/* ---- exact block maxima ------------------------------------------------------------------ */

static inline double bmax_get(const native_plist *L, int64_t bi) {
    double g;
    __atomic_load(&L->bmax[bi], &g, __ATOMIC_RELAXED);
    return g;
}

/* The largest contrib_run factor (idf = qtf = 1) of a block's n postings, by the same
 * operations as contrib_run, so that times idf and qtf it bounds each contribution. */
static double block_factor_max(const native_bm25_ctx *c, const int32_t *d, const int32_t *t,
                               int64_t n) {
    const double kp1 = c->k1 + 1.0;
    double mx = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double tf = (double)t[j];
        double g = (tf * kp1) / (c->norm[d[j]] + tf);
        mx = g > mx ? g : mx;
    }
    return mx;
}

/* Note block bi's exact maximum the first time it is decoded (any thread may). */
static inline void bmax_learn(const native_bm25_ctx *c, const native_plist *L, int64_t bi,
                              const int32_t *d, const int32_t *t, int64_t n) {
    if (L->bmax && bmax_get(L, bi) < 0.0) {
        double g = block_factor_max(c, d, t, n);
        __atomic_store(&L->bmax[bi], &g, __ATOMIC_RELAXED);
    }
}

/* ---- exact sums: 64-bit fixed point -------------------------------------------------------
 *
 * A contribution c (a double, formed as above) enters every sum as round(c * S), S = 2^e a
 * power of two chosen per query from the sum U of its terms' bounds so that any score stays
 * below 2^61 (e = 60 - ceil(log2 U), clamped to [0, 60]): integer sums are exact, so every
 * evaluation order -- term at a time, document at a time, window by window -- gives the same
 * score, bit for bit, and a score is within m / (2 S) of the real-valued sum (~1e-16 here).
 * Each contribution is also capped so that no sum can overflow even with a wrong bound.
 */

typedef struct {
    double scale, inv;
    int64_t cap;
    double capd; /* (double)cap */
} fixedpt;

static fixedpt make_fixed(const native_bm25_query *q) {
    double u = 0.0;
    for (int32_t i = 0; i < q->m; i++)
        u += q->ub[i] >= 0.0 ? q->ub[i] : INFINITY; /* NaN / negative: no usable bound */
    int e = 32;
    if (u > 0.0 && isfinite(u)) {
        int ex;
        frexp(u, &ex); /* u < 2^ex */
        e = 60 - ex;
        e = e < 0 ? 0 : e > 60 ? 60 : e;
    }
    fixedpt f;
    f.scale = ldexp(1.0, e);
    f.inv = ldexp(1.0, -e);
    f.cap = INT64_MAX / (2 * (int64_t)q->m + 2);
    f.capd = (double)f.cap;
    return f;
}

static inline int64_t fix(double c, const fixedpt *f) {
    double x = c * f->scale;
    if (!(x > 0.0))
        return 0;
    if (x >= f->capd)
        return f->cap;
    return (int64_t)(x + 0.5);
}

/* A bound of fix(c) for every c <= u (u formed by other operations than c: margin). */
static inline int64_t fix_bound(double u, const fixedpt *f) {
    if (u != u || u >= f->capd * f->inv)
        return f->cap;
    return fix(u * (1.0 + SLACK) + SLACK * f->inv, f) + 1;
}

/* ---- top-k heap: the worst hit at the root (lowest score, then highest doc) ----------- */

typedef struct {
    int64_t s;
    int32_t d;
} hit;

static inline int worse(hit a, hit b) { return a.s < b.s || (a.s == b.s && a.d > b.d); }

static void heap_down(hit *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, w = i;
        if (l < n && worse(h[l], h[w]))
            w = l;
        if (l + 1 < n && worse(h[l + 1], h[w]))
            w = l + 1;
        if (w == i)
            return;
        hit t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Offer (s, d); returns 1 when the heap is full afterwards (its root is then the k-th). */
static inline int heap_offer(hit *h, int64_t *n, int64_t k, int64_t s, int32_t d) {
    hit x = {s, d};
    if (*n < k) {
        int64_t i = (*n)++;
        h[i] = x;
        while (i > 0) {
            int64_t p = (i - 1) / 2;
            if (!worse(h[i], h[p]))
                break;
            hit t = h[i];
            h[i] = h[p];
            h[p] = t;
            i = p;
        }
    } else if (worse(h[0], x)) {
        h[0] = x;
        heap_down(h, *n, 0);
    }
    return *n == k;
}

static int cmp_best(const void *a, const void *b) {
    hit x = *(const hit *)a, y = *(const hit *)b;
    return worse(y, x) ? -1 : worse(x, y) ? 1 : 0;
}

static void heap_emit(hit *h, int64_t n, const fixedpt *f, int32_t *docs, double *scores,
                      int64_t *nout) {
    qsort(h, (size_t)n, sizeof(hit), cmp_best);
    for (int64_t i = 0; i < n; i++) {
        docs[i] = h[i].d;
        scores[i] = (double)h[i].s * f->inv;
    }
    *nout = n;
}

/* ---- loading a block, checked against its skip row ------------------------------------ */

/* Block bi of list L: its postings in *docs / *tfs (pointing into L for raw lists, into the
 * scratch dbuf/tbuf of c->block_cap entries otherwise); the count or a negative status.
 * With lazy set (a cursor that may only look a few documents up) a packed block's tfs stay
 * packed -- *tfs is NULL and *lazy holds the checked header to read them from (cur_tf,
 * cur_tfs) -- unless the block's maximum is still to be learnt, which needs them all. */
static int64_t load_block_as(const native_bm25_ctx *c, const native_plist *L, int64_t bi,
                             int32_t *dbuf, int32_t *tbuf, const int32_t **docs,
                             const int32_t **tfs, native_block_hdr *lazy) {
    const int64_t *row = L->skip + 6 * bi;
    int64_t lo = L->offs[bi], hi = L->offs[bi + 1];
    int64_t n;
    if (L->buf) {
        if (lo < 0 || hi <= lo || (uint64_t)hi > L->buflen)
            return NATIVE_ECORRUPT;
        native_block_hdr h;
        int st = native_postings_header(L->buf + lo, (size_t)(hi - lo), 0, &h);
        if (st != NATIVE_OK)
            return st;
        if (h.n > (uint64_t)c->block_cap)
            return NATIVE_ECORRUPT; /* more postings than any block of this index holds */
        if ((st = native_postings_unpack_docs(&h, dbuf)) != NATIVE_OK)
            return st;
        n = h.n;
        *docs = dbuf;
        /* the decoder checked order and range; the row must describe the block */
        if (n != row[1] || dbuf[0] != row[2] || dbuf[n - 1] != row[3] || dbuf[n - 1] >= c->ndocs)
            return NATIVE_ECORRUPT;
        if (lazy && !(L->bmax && bmax_get(L, bi) < 0.0)) {
            *lazy = h;
            *tfs = NULL;
            return n;
        }
        /* tf >= 1 by construction, and no tf above the row's maximum (its bounds rest on it) */
        if ((st = native_postings_unpack_tfs(&h, tbuf)) != NATIVE_OK)
            return st;
        if ((int64_t)h.tfmax > row[4])
            return NATIVE_ECORRUPT;
        *tfs = tbuf;
        bmax_learn(c, L, bi, dbuf, tbuf, n);
        return n;
    } else {
        if (lo < 0 || hi <= lo || (uint64_t)hi > L->npost || hi - lo > c->block_cap)
            return NATIVE_ECORRUPT;
        n = hi - lo;
        *docs = L->docs + lo;
        *tfs = L->tfs + lo;
        if (L->trusted)
            return n;
        for (int64_t j = 1; j < n; j++)
            if ((*docs)[j] <= (*docs)[j - 1])
                return NATIVE_ECORRUPT;
        if ((*docs)[0] < 0)
            return NATIVE_ECORRUPT;
    }
    if (n != row[1] || (*docs)[0] != row[2] || (*docs)[n - 1] != row[3] ||
        (*docs)[n - 1] >= c->ndocs)
        return NATIVE_ECORRUPT;
    int32_t tmax = 0, tmin = INT32_MAX;
    for (int64_t j = 0; j < n; j++) {
        tmax = (*tfs)[j] > tmax ? (*tfs)[j] : tmax;
        tmin = (*tfs)[j] < tmin ? (*tfs)[j] : tmin;
    }
    if (tmax > row[4] || tmin < 1)
        return NATIVE_ECORRUPT;
    bmax_learn(c, L, bi, *docs, *tfs, n);
    return n;
}

static inline int64_t load_block(const native_bm25_ctx *c, const native_plist *L, int64_t bi,
                                 int32_t *dbuf, int32_t *tbuf, const int32_t **docs,
                                 const int32_t **tfs) {
    return load_block_as(c, L, bi, dbuf, tbuf, docs, tfs, NULL);
}

/* Whether document d passes the query's filter (bounds-checked: an id outside the bitmap
 * is not allowed). */
static inline int allowed(const native_bm25_ctx *c, const native_bm25_query *q, int32_t d) {
    if (!q->allow)
        return 1;
    int64_t e = c->ext[d];
    return e >= 0 && (e >> 3) < q->allow_len && ((q->allow[e >> 3] >> (e & 7)) & 1);
}

int native_bm25_decode_list(const native_bm25_ctx *c, const native_plist *L, int32_t *docs,
                            int32_t *tfs, int64_t *offs) {
    int64_t pos = 0;
    offs[0] = 0;
    for (int64_t bi = 0; bi < L->nb; bi++) {
        const int32_t *d = NULL, *t = NULL;
        int64_t n = load_block(c, L, bi, docs + pos, tfs + pos, &d, &t);
        if (n < 0)
            return (int)n;
        if (d != docs + pos) { /* a raw list: copy */
            memcpy(docs + pos, d, sizeof(int32_t) * (size_t)n);
            memcpy(tfs + pos, t, sizeof(int32_t) * (size_t)n);
        }
        if (bi > 0 && docs[pos] <= docs[pos - 1])
            return NATIVE_ECORRUPT; /* blocks must ascend */
        pos += n;
        offs[bi + 1] = pos;
    }
    return NATIVE_OK;
}

int native_bm25_block_max(const native_bm25_ctx *c, const native_plist *L) {
    if (c->block_cap < 1 || c->block_cap > NATIVE_MAX_BLOCK_POSTINGS || !L->bmax)
        return NATIVE_EINVAL;
    int32_t *dbuf = malloc(sizeof(int32_t) * 2 * (size_t)c->block_cap);
    if (!dbuf)
        return NATIVE_ENOMEM;
    int st = NATIVE_OK;
    for (int64_t bi = 0; bi < L->nb; bi++) {
        const int32_t *d = NULL, *t = NULL;
        int64_t n = load_block(c, L, bi, dbuf, dbuf + c->block_cap, &d, &t);
        if (n < 0) {
            st = (int)n;
            break;
        }
        double g = block_factor_max(c, d, t, n);
        __atomic_store(&L->bmax[bi], &g, __ATOMIC_RELAXED);
    }
    free(dbuf);
    return st;
}

static int check_list(const native_bm25_ctx *c, int32_t li) {
    return li < 0 || li >= c->nlists ? NATIVE_EINVAL : NATIVE_OK;
}

/* ---- exhaustive ------------------------------------------------------------------------ */

static int topk_exhaustive(const native_bm25_ctx *c, const native_bm25_query *q, int64_t k,
                           int64_t *acc, int32_t *touched, int32_t *out_d, double *out_s,
                           int64_t *nout) {
    const fixedpt f = make_fixed(q);
    int64_t nt = 0;
    int st = NATIVE_OK;
    const int64_t kk = k < c->ndocs ? k : c->ndocs;
    int32_t *dbuf = malloc(sizeof(int32_t) * 2 * (size_t)c->block_cap);
    hit *heap = malloc(sizeof(hit) * (size_t)kk + sizeof(hit));
    double *cbuf = malloc(sizeof(double) * (size_t)c->block_cap);
    if (!dbuf || !heap || !cbuf) {
        free(dbuf);
        free(heap);
        free(cbuf);
        return NATIVE_ENOMEM;
    }
    int32_t *tbuf = dbuf + c->block_cap;
    for (int32_t i = 0; i < q->m && st == NATIVE_OK; i++) {
        if ((st = check_list(c, q->list[i])) != NATIVE_OK)
            break;
        const native_plist *L = c->lists + q->list[i];
        const double idf = q->idf[i], qtf = q->qtf[i];
        for (int64_t bi = 0; bi < L->nb; bi++) {
            const int32_t *d, *t;
            int64_t n = load_block(c, L, bi, dbuf, tbuf, &d, &t);
            if (n < 0) {
                st = (int)n;
                break;
            }
            contribs(c, d, t, n, idf, qtf, cbuf);
            for (int64_t j = 0; j < n; j++) {
                int32_t doc = d[j];
                int64_t v = fix(cbuf[j], &f);
                int64_t a = acc[doc];
                /* branch-free: whether a doc is new is a coin toss for the predictor */
                touched[nt] = doc;
                nt += (a == 0) & (v > 0);
                acc[doc] = a + v;
            }
        }
    }
    int64_t nh = 0;
    if (st == NATIVE_OK) {
        if (nt * 8 < c->ndocs) {
            for (int64_t j = 0; j < nt; j++)
                if (allowed(c, q, touched[j]))
                    heap_offer(heap, &nh, kk, acc[touched[j]], touched[j]);
        } else {
            /* in doc order: a later doc with the k-th score loses the tie. Chunks of 64
             * with no score above thr are passed over by one vectorisable test (scores and
             * thr lie in [0, 2^62]: thr - s is negative exactly when s > thr), and each
             * chunk is zeroed while it is in cache. */
            int64_t thr = 0; /* 0 until the heap is full, then the k-th score */
            for (int64_t base = 0; base < c->ndocs; base += 64) {
                int64_t end = base + 64 < c->ndocs ? base + 64 : c->ndocs;
                uint64_t any = 0;
                for (int64_t dd = base; dd < end; dd++)
                    any |= (uint64_t)(thr - acc[dd]);
                if (any >> 63) {
                    for (int64_t dd = base; dd < end; dd++) {
                        int64_t s = acc[dd];
                        if (s > thr && allowed(c, q, (int32_t)dd) &&
                            heap_offer(heap, &nh, kk, s, (int32_t)dd))
                            thr = heap[0].s;
                    }
                }
                memset(acc + base, 0, sizeof(int64_t) * (size_t)(end - base));
            }
            nt = -1; /* zeroed already */
        }
        heap_emit(heap, nh, &f, out_d, out_s, nout);
    }
    if (nt >= 0 && nt * 8 < c->ndocs) {
        for (int64_t j = 0; j < nt; j++)
            acc[touched[j]] = 0;
    } else if (nt >= 0) {
        memset(acc, 0, sizeof(int64_t) * (size_t)c->ndocs);
    }
    free(dbuf);
    free(heap);
    free(cbuf);
    return st;
}

/* ---- pruned: block-max MaxScore over windows of documents ------------------------------
 *
 * The documents are taken in windows of WIN doc numbers (Lucene's MaxScoreBulkScorer has
 * the same shape). For a window, each term's bound is the largest block bound among its
 * blocks overlapping the window (0 when it has none): a window whose bounds add up to no
 * more than theta (the k-th score so far) is skipped without decoding anything. Otherwise
 * the terms sorted by window bound split into non-essential ones (their bounds together
 * cannot exceed theta) and essential ones; then, by cost, the best-bounded non-essential
 * terms with fewer postings in the window than the documents the last window gathered
 * join the essential ones (a looked-up document costs several added postings; a larger
 * essential set is as exact, it only prunes less). The essential terms' postings in the
 * window are added term at a time into a window accumulator. The documents they touch
 * whose score plus the non-essential bounds can beat theta are gathered, and the
 * non-essential terms, best bound first, are then looked up term at a time over the
 * documents still gathered (one cursor walking forward through one list at a time, which
 * the branch predictor and the caches follow far better than every term per document; or,
 * when the term has few postings here for the documents left, its tfs laid out in a window
 * array and read for all of them at once, see TFA_FACTOR): before each term, a document
 * whose score plus the bounds of the terms left cannot exceed theta is dropped,
 * and so is one whose score plus the bound of the block that could hold it plus the
 * bounds after it cannot. theta stays as it was for the whole window, which only prunes
 * less. A document equal to theta loses the tie to the earlier document, so bounds <=
 * theta prune.
 */

#define WIN 4096
/* A non-essential term whose postings in the window number fewer than TFA_FACTOR times the
 * documents still to look it up is read whole into a window array instead: filling it
 * costs a few cycles a posting, a lookup tens of cycles (1M-document A/B: 4 and 8 alike,
 * 1.08-1.15x over lookups alone; 16 and 32 slower). */
#define TFA_FACTOR 8

typedef struct {
    const native_plist *L;
    double idf, qtf, w;
    int32_t *dbuf, *tbuf;
    const int32_t *d, *t; /* the loaded block */
    int64_t bi;           /* index of the loaded block */
    int64_t n, j;         /* its postings, position */
    int32_t doc;          /* current doc, DONE when exhausted */
    int32_t prev_last;    /* last doc of the block loaded before (blocks must ascend) */
    int64_t wbi;          /* first block whose last doc >= the window start */
    int64_t lbi;          /* first block whose last doc >= the last looked-up doc */
    int64_t lbi_ub;       /* its bound (-1: not computed yet) */
    int64_t wub;          /* bound in this window */
    int64_t wpost;        /* postings in its blocks overlapping the window */
    native_block_hdr hdr; /* the loaded block's header while its tfs are packed (t NULL) */
} cursor;

#define DONE INT32_MAX

static int cur_load(const native_bm25_ctx *c, cursor *u, int64_t bi) {
    if (bi >= u->L->nb) {
        u->doc = DONE;
        u->bi = u->L->nb;
        return NATIVE_OK;
    }
    int64_t n = load_block_as(c, u->L, bi, u->dbuf, u->tbuf, &u->d, &u->t, &u->hdr);
    if (n < 0)
        return (int)n;
    if (u->d[0] <= u->prev_last)
        return NATIVE_ECORRUPT;
    u->prev_last = u->d[n - 1];
    u->bi = bi;
    u->n = n;
    u->j = 0;
    u->doc = u->d[0];
    return NATIVE_OK;
}

/* The loaded block's tfs, unpacked now if they were left packed. */
static int cur_tfs(cursor *u) {
    if (u->t)
        return NATIVE_OK;
    int st = native_postings_unpack_tfs(&u->hdr, u->tbuf);
    if (st != NATIVE_OK)
        return st;
    if ((int64_t)u->hdr.tfmax > u->L->skip[6 * u->bi + 4])
        return NATIVE_ECORRUPT;
    u->t = u->tbuf;
    return NATIVE_OK;
}

/* The tf at the cursor: one value read from the packed bits when the block's tfs are
 * packed, held to the row's maximum like a whole block's. */
static inline int cur_tf(const cursor *u, int32_t *tf) {
    if (u->t) {
        *tf = u->t[u->j];
        return NATIVE_OK;
    }
    int64_t v = native_postings_tf_at(&u->hdr, (uint32_t)u->j);
    if (v < 0)
        return (int)v;
    if (v > u->L->skip[6 * u->bi + 4])
        return NATIVE_ECORRUPT;
    *tf = (int32_t)v;
    return NATIVE_OK;
}

/* The first index in [lo, hi] whose doc is >= target, given d[hi] >= target (ascending d). */
static inline int64_t first_at_least(const int32_t *d, int64_t lo, int64_t hi, int32_t target) {
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (d[mid] < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Within the loaded block, whose last doc is >= target: move to the first posting >= target.
 * Lookups mostly land a few postings ahead, so a short scan comes before the galloping. */
static inline void cur_seek(cursor *u, int32_t target) {
    const int32_t *d = u->d;
    int64_t j = u->j + 1, last = u->n - 1;
    int64_t stop = j + 8 < last ? j + 8 : last;
    while (j < stop && d[j] < target)
        j++;
    if (d[j] < target) { /* j == stop < last */
        int64_t lo = j + 1, hi = last, step = 1;
        while (lo + step < hi && d[lo + step] < target) {
            lo += step + 1;
            step <<= 1;
        }
        j = first_at_least(d, lo, lo + step < hi ? lo + step : hi, target);
    }
    u->j = j;
    u->doc = d[j];
}

/* cur_advance past the loaded block: load the block that can hold target. */
static __attribute__((noinline)) int cur_advance_block(const native_bm25_ctx *c, cursor *u,
                                                       int32_t target) {
    const int64_t *skip = u->L->skip;
    int64_t bi = u->bi + 1;
    while (bi < u->L->nb && skip[6 * bi + 3] < target)
        bi++;
    int st = cur_load(c, u, bi);
    if (st != NATIVE_OK || u->doc >= target)
        return st;
    cur_seek(u, target);
    return NATIVE_OK;
}

/* Move to the first posting with doc >= target, decoding only the block that can hold it. */
static inline int cur_advance(const native_bm25_ctx *c, cursor *u, int32_t target) {
    if (u->doc >= target)
        return NATIVE_OK;
    if (u->bi < 0 || u->d[u->n - 1] < target)
        return cur_advance_block(c, u, target);
    cur_seek(u, target);
    return NATIVE_OK;
}

static inline int64_t block_ub(const native_bm25_ctx *c, const cursor *u, int64_t bi,
                               const fixedpt *f) {
    if (u->L->bmax) {
        double g = bmax_get(u->L, bi);
        if (g >= 0.0)
            return fix_bound(u->w * g, f);
    }
    const int64_t *row = u->L->skip + 6 * bi;
    double mt = (double)row[4];
    double den = mt + c->k1 * (1.0 - c->b + c->b * ((double)row[5] / c->avgdl));
    if (!(mt >= 1.0) || !(den > 0.0))
        return f->cap; /* a damaged row bounds nothing; loading the block will tell */
    return fix_bound(u->w * mt * (c->k1 + 1.0) / den, f);
}

/* The largest block bound of u among its blocks overlapping [lo, hi). */
static int64_t window_ub(const native_bm25_ctx *c, cursor *u, int32_t lo, int32_t hi,
                         const fixedpt *f) {
    const int64_t *skip = u->L->skip;
    const int64_t nb = u->L->nb;
    while (u->wbi < nb && skip[6 * u->wbi + 3] < lo)
        u->wbi++;
    int64_t best = 0, np = 0;
    for (int64_t b = u->wbi; b < nb && skip[6 * b + 2] < hi; b++) {
        int64_t x = block_ub(c, u, b, f);
        best = x > best ? x : best;
        int64_t cnt = skip[6 * b + 1]; /* a row not checked yet: held to the block cap */
        np += cnt >= 0 && cnt <= c->block_cap ? cnt : c->block_cap;
    }
    u->wpost = np;
    return best;
}

/* Bound of u at doc d (d never decreases between calls): 0 when no block can hold d. */
static inline int64_t lookup_ub(const native_bm25_ctx *c, cursor *u, int32_t d,
                                const fixedpt *f) {
    const int64_t *skip = u->L->skip;
    const int64_t nb = u->L->nb;
    if (u->lbi < nb && skip[6 * u->lbi + 3] < d) {
        do
            u->lbi++;
        while (u->lbi < nb && skip[6 * u->lbi + 3] < d);
        u->lbi_ub = -1;
    }
    if (u->lbi >= nb || skip[6 * u->lbi + 2] > d)
        return 0;
    if (u->lbi_ub < 0)
        u->lbi_ub = block_ub(c, u, u->lbi, f);
    return u->lbi_ub;
}

/* One cursor per query term, nothing loaded yet; bufs holds 2 * block_cap int32 a term. */
static int cursors_init(const native_bm25_ctx *c, const native_bm25_query *q, cursor *cur,
                        int32_t *bufs) {
    const size_t cap = (size_t)c->block_cap;
    for (int32_t i = 0; i < q->m; i++) {
        int st = check_list(c, q->list[i]);
        if (st != NATIVE_OK)
            return st;
        cursor *u = cur + i;
        u->L = c->lists + q->list[i];
        u->idf = q->idf[i];
        u->qtf = q->qtf[i];
        u->w = q->idf[i] * q->qtf[i];
        u->dbuf = bufs + 2 * cap * (size_t)i;
        u->tbuf = u->dbuf + cap;
        u->prev_last = -1;
        u->bi = -1;
        u->doc = u->L->nb > 0 ? -1 : DONE; /* -1: nothing loaded yet */
        u->lbi_ub = -1;
    }
    return NATIVE_OK;
}

/* A window's scratch (see topk_pruned). */
typedef struct {
    int64_t *wsc;   /* essential scores by offset */
    uint64_t *bits; /* offsets touched */
    double *cbuf;   /* contributions of a run */
    int32_t *tfa;   /* a term's tfs by offset, zero elsewhere */
    int32_t *ctf;   /* the tfs of a term's hits among the candidates */
    int32_t *hix;   /* the hits' indexes in cd */
    int32_t *hd;    /* and their documents */
    int32_t *cd;    /* documents still in the running */
    int64_t *cs;    /* and their scores so far */
} window;

/* u's postings in [lo, hi), a block's run at a time: fill 0 adds their contributions into
 * the window's scores, fill 1 lays their tfs out by offset in tfa. Each has its own copy
 * (essential_add, tfa_fill), whose loops keep their pointers in registers. */
static inline __attribute__((always_inline)) int
window_pass(const native_bm25_ctx *c, cursor *u, int64_t lo, int64_t hi, const fixedpt *f,
            const window *w, int fill) {
    int st;
    if (u->doc < lo && (st = cur_advance(c, u, (int32_t)lo)) != NATIVE_OK)
        return st;
    int64_t *restrict wsc = w->wsc;
    uint64_t *restrict bits = w->bits;
    int32_t *restrict tfa = w->tfa;
    double *restrict cbuf = w->cbuf;
    while (u->doc < hi) {
        if ((st = cur_tfs(u)) != NATIVE_OK)
            return st;
        const int32_t *d = u->d, *t = u->t;
        int64_t j = u->j, n = u->n, e = n;
        if (d[n - 1] >= hi)
            e = first_at_least(d, j, n - 1, (int32_t)hi);
        if (fill) {
            for (; j < e; j++)
                tfa[d[j] - lo] = t[j];
        } else {
            contribs(c, d + j, t + j, e - j, u->idf, u->qtf, cbuf);
            for (int64_t x = 0; j < e; j++, x++) {
                int64_t off = d[j] - lo;
                wsc[off] += fix(cbuf[x], f);
                bits[off >> 6] |= (uint64_t)1 << (off & 63);
            }
        }
        if (e < n) {
            u->j = e;
            u->doc = d[e];
            break;
        }
        if ((st = cur_load(c, u, u->bi + 1)) != NATIVE_OK)
            return st;
    }
    return NATIVE_OK;
}

static __attribute__((noinline)) int essential_add(const native_bm25_ctx *c, cursor *u,
                                                   int64_t lo, int64_t hi, const fixedpt *f,
                                                   const window *w) {
    return window_pass(c, u, lo, hi, f, w, 0);
}

static __attribute__((noinline)) int tfa_fill(const native_bm25_ctx *c, cursor *u, int64_t lo,
                                              int64_t hi, const fixedpt *f, const window *w) {
    return window_pass(c, u, lo, hi, f, w, 1);
}

/* The touched documents of the window starting at lo, in doc order, whose essential score
 * exceeds lim: gathered into cd/cs (branch-free), the accumulator cleared; their count. */
static __attribute__((noinline)) int64_t gather(const window *w, int64_t lo, int64_t lim) {
    int64_t *restrict wsc = w->wsc;
    uint64_t *restrict bits = w->bits;
    int32_t *restrict cd = w->cd;
    int64_t *restrict cs = w->cs;
    int64_t nc = 0;
    for (int64_t wi = 0; wi < WIN / 64; wi++) {
        uint64_t word = bits[wi];
        bits[wi] = 0;
        while (word) {
            int64_t off = wi * 64 + __builtin_ctzll(word);
            word &= word - 1;
            int64_t sc = wsc[off];
            wsc[off] = 0;
            cd[nc] = (int32_t)(lo + off);
            cs[nc] = sc;
            nc += sc > lim;
        }
    }
    return nc;
}

/* u's contributions, from the tfs tfa_fill laid out, added to the nc candidates whose
 * score exceeds lim (the others dropped; tf 0 adds 0); tfa cleared. The candidates kept. */
static __attribute__((noinline)) int64_t tfa_add(const native_bm25_ctx *c, const cursor *u,
                                                 const window *w, int64_t nc, int64_t lo,
                                                 int64_t lim, const fixedpt *f) {
    int32_t *restrict cd = w->cd;
    int64_t *restrict cs = w->cs;
    int32_t *restrict ctf = w->ctf;
    int32_t *restrict hix = w->hix;
    int32_t *restrict hd = w->hd;
    const int32_t *restrict tfa = w->tfa;
    double *restrict cbuf = w->cbuf;
    int64_t kept = 0, nh = 0;
    for (int64_t x = 0; x < nc; x++) {
        int64_t sc = cs[x];
        int32_t d = cd[x];
        int32_t tf = tfa[d - lo];
        int in = sc > lim;
        cd[kept] = d;
        cs[kept] = sc;
        hix[nh] = (int32_t)kept;
        hd[nh] = d;
        ctf[nh] = tf;
        nh += in & (tf > 0);
        kept += in;
    }
    memset(w->tfa, 0, sizeof(int32_t) * WIN);
    contribs(c, hd, ctf, nh, u->idf, u->qtf, cbuf);
    for (int64_t x = 0; x < nh; x++)
        cs[hix[x]] += fix(cbuf[x], f);
    return kept;
}

/* u looked up for each of the nc candidates whose score exceeds lim and could still beat
 * theta with the bound of u's block that could hold it plus rest (the bounds of the terms
 * after u); *kept receives how many stay. */
static __attribute__((noinline)) int lookups(const native_bm25_ctx *c, cursor *u,
                                             const window *w, int64_t nc, int64_t lim,
                                             int64_t rest, int64_t theta, const fixedpt *f,
                                             int64_t *kept_out) {
    int32_t *restrict cd = w->cd;
    int64_t *restrict cs = w->cs;
    const double kp1 = c->k1 + 1.0;
    int64_t kept = 0;
    int st = NATIVE_OK;
    for (int64_t x = 0; x < nc; x++) {
        int32_t d = cd[x];
        int64_t sc = cs[x];
        if (sc <= lim)
            continue; /* cannot beat theta even with every term left */
        cd[kept] = d;
        cs[kept++] = sc;
        if (u->doc > d)
            continue; /* already past d: absent */
        int64_t bub = lookup_ub(c, u, d, f);
        if (bub == 0)
            continue;
        if (sc + bub + rest <= theta) {
            kept--; /* cannot enter */
            continue;
        }
        if ((st = cur_advance(c, u, d)) != NATIVE_OK)
            break;
        if (u->doc == d) {
            int32_t tf = 0;
            if ((st = cur_tf(u, &tf)) != NATIVE_OK)
                break;
            cs[kept - 1] += fix(contrib(tf, norm_at(c, d), kp1, u->idf, u->qtf), f);
        }
    }
    *kept_out = kept;
    return st;
}

static int topk_pruned(const native_bm25_ctx *c, const native_bm25_query *q, int64_t k,
                       int32_t *out_d, double *out_s, int64_t *nout) {
    const int32_t m = q->m;
    const int64_t kk = k < c->ndocs ? k : c->ndocs;
    const fixedpt f = make_fixed(q);
    int st = NATIVE_OK;
    size_t cap = (size_t)c->block_cap;
    cursor *cur = calloc((size_t)m, sizeof(cursor));
    int32_t *ord = malloc(sizeof(int32_t) * (size_t)m);
    int64_t *pre = malloc(sizeof(int64_t) * ((size_t)m + 1));
    int32_t *bufs = malloc(sizeof(int32_t) * 2 * cap * (size_t)m);
    hit *heap = malloc(sizeof(hit) * (size_t)kk + sizeof(hit));
    int64_t *wsc = calloc(WIN, sizeof(int64_t));
    uint64_t *bits = calloc(WIN / 64, sizeof(uint64_t));
    double *cbuf = malloc(sizeof(double) * (cap > WIN ? cap : WIN));
    int32_t *tfa = calloc(WIN, sizeof(int32_t)); /* a term's tfs in the window, by offset */
    int32_t *ctf = malloc(sizeof(int32_t) * WIN); /* a term's hits: tfs, */
    int32_t *hix = malloc(sizeof(int32_t) * WIN); /* indexes in cd */
    int32_t *hd = malloc(sizeof(int32_t) * WIN);  /* and documents */
    int32_t *cd = malloc(sizeof(int32_t) * WIN); /* a window's documents still in the running */
    int64_t *cs = malloc(sizeof(int64_t) * WIN); /* and their scores so far */
    if (!cur || !ord || !pre || !bufs || !heap || !wsc || !bits || !cbuf || !cd || !cs || !tfa ||
        !ctf || !hix || !hd) {
        st = NATIVE_ENOMEM;
        goto out;
    }
    if ((st = cursors_init(c, q, cur, bufs)) != NATIVE_OK)
        goto out;
    const window w = {wsc, bits, cbuf, tfa, ctf, hix, hd, cd, cs};
    for (int32_t i = 0; i < m; i++)
        ord[i] = i;
    int64_t theta = -1; /* the k-th score once the heap is full */
    int64_t nh = 0;
    int64_t ngathered = 0; /* documents the last window gathered */
    int64_t lo = 0;
    while (lo < c->ndocs) {
        int64_t hi = lo + WIN < c->ndocs ? lo + WIN : c->ndocs;
        int64_t total = 0;
        for (int32_t i = 0; i < m; i++) {
            cur[i].wub = window_ub(c, cur + i, (int32_t)lo, (int32_t)hi, &f);
            total += cur[i].wub; /* m bounds of at most cap each: no overflow */
        }
        if (total <= theta || total == 0) {
            /* nothing here can enter: go on at the next block start past the window */
            int64_t next = c->ndocs;
            for (int32_t i = 0; i < m; i++) {
                const int64_t *skip = cur[i].L->skip;
                int64_t b = cur[i].wbi;
                while (b < cur[i].L->nb && skip[6 * b + 3] < hi)
                    b++;
                if (b < cur[i].L->nb) {
                    int64_t s = skip[6 * b + 2] > hi ? skip[6 * b + 2] : hi;
                    next = s < next ? s : next;
                }
            }
            lo = next > hi ? next : hi;
            continue;
        }
        /* terms by ascending window bound (insertion sort: queries have few terms) */
        for (int32_t i = 1; i < m; i++) {
            int32_t x = ord[i], j = i;
            while (j > 0 && cur[ord[j - 1]].wub > cur[x].wub) {
                ord[j] = ord[j - 1];
                j--;
            }
            ord[j] = x;
        }
        pre[0] = 0;
        for (int32_t r = 0; r < m; r++)
            pre[r + 1] = pre[r] + cur[ord[r]].wub;
        int32_t ne = 0;
        while (ne < m && pre[ne + 1] <= theta)
            ne++;
        /* a non-essential term with fewer postings here than the documents that would
         * look it up (as many as the last window gathered) is cheaper added term at a
         * time: it joins the essential ones (a larger essential set only prunes less) */
        while (ne > 0 && cur[ord[ne - 1]].wpost < ngathered)
            ne--;
        /* essential terms, term at a time, into the window accumulator: a block's
         * postings in the window in one tight loop */
        for (int32_t r = ne; r < m; r++)
            if ((st = essential_add(c, cur + ord[r], lo, hi, &f, &w)) != NATIVE_OK)
                goto out;
        /* the documents they touched, in doc order, that may still beat theta: their
         * partial scores and numbers gathered (branch-free) */
        int64_t nc = gather(&w, lo, theta - pre[ne]);
        ngathered = nc;
        if (q->allow) {
            int64_t n2 = 0;
            for (int64_t x = 0; x < nc; x++) {
                cd[n2] = cd[x];
                cs[n2] = cs[x];
                n2 += allowed(c, q, cd[x]);
            }
            nc = n2;
        }
        /* the non-essential terms, best bound first, each looked up over the documents
         * still gathered */
        for (int32_t r = ne - 1; r >= 0 && nc > 0; r--) {
            const int64_t lim = theta - pre[r + 1];
            cursor *u = cur + ord[r];
            if (u->wpost < TFA_FACTOR * nc) {
                /* few postings for the documents to look up: the term's tfs in the window
                 * laid out by offset, every candidate's read from there at once */
                if ((st = tfa_fill(c, u, lo, hi, &f, &w)) != NATIVE_OK)
                    goto out;
                nc = tfa_add(c, u, &w, nc, lo, lim, &f);
                continue;
            }
            int64_t kept = 0;
            if ((st = lookups(c, u, &w, nc, lim, pre[r], theta, &f, &kept)) != NATIVE_OK)
                goto out;
            nc = kept;
        }
        for (int64_t x = 0; x < nc; x++) {
            int64_t sc = cs[x];
            if (sc > 0 && (nh < kk || sc > heap[0].s) && heap_offer(heap, &nh, kk, sc, cd[x]))
                theta = heap[0].s;
        }
        lo = hi;
    }
    heap_emit(heap, nh, &f, out_d, out_s, nout);
out:
    free(cur);
    free(ord);
    free(pre);
    free(bufs);
    free(heap);
    free(wsc);
    free(bits);
    free(cbuf);
    free(cd);
    free(cs);
    free(tfa);
    free(ctf);
    free(hix);
    free(hd);
    return st;
}

/* ---- candidates: a selective filter's documents, one at a time ---------------------------
 *
 * Each allowed document (ascending) looks up the terms, best term bound first, while its
 * score plus the bound of the block that could hold the term plus the bounds of the terms
 * left can still beat theta; only the blocks holding candidates are decoded. Cost:
 * O(candidates x terms x log blocks + blocks that hold a candidate).
 */
static int topk_candidates(const native_bm25_ctx *c, const native_bm25_query *q, int64_t k,
                           int32_t *out_d, double *out_s, int64_t *nout) {
    const int32_t m = q->m;
    const double kp1 = c->k1 + 1.0;
    const int64_t kk = k < c->ndocs ? k : c->ndocs;
    const fixedpt f = make_fixed(q);
    int st = NATIVE_OK;
    size_t cap = (size_t)c->block_cap;
    cursor *cur = calloc((size_t)m, sizeof(cursor));
    int64_t *rest = malloc(sizeof(int64_t) * ((size_t)m + 1));
    int32_t *bufs = malloc(sizeof(int32_t) * 2 * cap * (size_t)m);
    hit *heap = malloc(sizeof(hit) * (size_t)kk + sizeof(hit));
    if (!cur || !rest || !bufs || !heap) {
        st = NATIVE_ENOMEM;
        goto out;
    }
    if ((st = cursors_init(c, q, cur, bufs)) != NATIVE_OK)
        goto out;
    /* rest[i]: bound of terms i.. together (each term's largest block bound) */
    rest[m] = 0;
    for (int32_t i = m - 1; i >= 0; i--) {
        int64_t best = 0;
        for (int64_t b = 0; b < cur[i].L->nb; b++) {
            int64_t x = block_ub(c, cur + i, b, &f);
            best = x > best ? x : best;
        }
        rest[i] = rest[i + 1] + best;
    }
    int64_t theta = -1, nh = 0;
    int32_t prev = -1;
    for (int64_t ci = 0; ci < q->ncand; ci++) {
        int32_t d = q->cand[ci];
        if (d <= prev || d >= c->ndocs) {
            st = NATIVE_EINVAL;
            goto out;
        }
        prev = d;
        if (!allowed(c, q, d))
            continue;
        int64_t s = 0;
        int pruned = 0;
        for (int32_t i = 0; i < m; i++) {
            if (s + rest[i] <= theta) {
                pruned = 1;
                break;
            }
            cursor *u = cur + i;
            if (u->doc > d)
                continue;
            int64_t bub = lookup_ub(c, u, d, &f);
            if (bub == 0)
                continue;
            if (s + bub + rest[i + 1] <= theta) {
                pruned = 1;
                break;
            }
            if ((st = cur_advance(c, u, d)) != NATIVE_OK)
                goto out;
            if (u->doc == d) {
                int32_t tf = 0;
                if ((st = cur_tf(u, &tf)) != NATIVE_OK)
                    goto out;
                s += fix(contrib(tf, norm_at(c, d), kp1, u->idf, u->qtf), &f);
            }
        }
        if (!pruned && s > 0 && (nh < kk || s > heap[0].s) && heap_offer(heap, &nh, kk, s, d))
            theta = heap[0].s;
    }
    heap_emit(heap, nh, &f, out_d, out_s, nout);
out:
    free(cur);
    free(rest);
    free(bufs);
    free(heap);
    return st;
}

int native_bm25_topk(const native_bm25_ctx *c, const native_bm25_query *q, int mode, int64_t k,
                     int64_t *acc, int32_t *touched, int32_t *docs, double *scores,
                     int64_t *nout) {
    *nout = 0;
    if (k < 1 || c->block_cap < 1 || c->block_cap > NATIVE_MAX_BLOCK_POSTINGS)
        return NATIVE_EINVAL;
    if (q->allow && !c->ext)
        return NATIVE_EINVAL;
    if (q->m == 0 || c->ndocs == 0)
        return NATIVE_OK;
    if (q->cand)
        return topk_candidates(c, q, k, docs, scores, nout);
    if (mode == NATIVE_BM25_PRUNED)
        return topk_pruned(c, q, k, docs, scores, nout);
    if (!acc || !touched)
        return NATIVE_EINVAL;
    return topk_exhaustive(c, q, k, acc, touched, docs, scores, nout);
}

/* ---- planning ------------------------------------------------------------------------------ */

typedef struct {
    double ub;
    int32_t tid, qtf;
} plan_row;

static int cmp_plan(const void *a, const void *b) {
    const plan_row *x = a, *y = b;
    if (x->ub != y->ub)
        return x->ub > y->ub ? -1 : 1;
    return x->tid < y->tid ? -1 : x->tid > y->tid;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

int32_t native_bm25_plan(const native_bm25_terms *t, const int32_t *tids, int32_t m_in,
                         int32_t *list, double *idf, double *qtf, double *ub,
                         int64_t *postings) {
    *postings = 0;
    if (m_in <= 0)
        return 0;
    /* distinct ids with their counts: sort a copy (queries have few terms) */
    int32_t small[64];
    int32_t *srt = m_in <= 64 ? small : malloc(sizeof(int32_t) * (size_t)m_in);
    plan_row rsmall[64];
    plan_row *rows = m_in <= 64 ? rsmall : malloc(sizeof(plan_row) * (size_t)m_in);
    if (!srt || !rows) {
        if (srt != small)
            free(srt);
        if (rows != rsmall)
            free(rows);
        return -1;
    }
    memcpy(srt, tids, sizeof(int32_t) * (size_t)m_in);
    qsort(srt, (size_t)m_in, sizeof(int32_t), cmp_i32);
    const double n = (double)t->nlive, k1 = t->k1, b = t->b, avgdl = t->avgdl;
    int32_t m = 0;
    int64_t total = 0;
    for (int32_t i = 0; i < m_in;) {
        int32_t j = i;
        while (j < m_in && srt[j] == srt[i])
            j++;
        int32_t tid = srt[i], cnt = j - i;
        i = j;
        int64_t df = t->df[tid];
        if (df <= 0)
            continue;
        double dfd = (double)df;
        double w_idf = log1p((n - dfd + 0.5) / (dfd + 0.5));
        double wt = w_idf * (double)cnt;
        double mt = (double)t->maxtf[tid];
        double bound = wt * mt * (k1 + 1.0) /
                       (mt + k1 * (1.0 - b + b * ((double)t->mindl[tid] / avgdl)));
        rows[m].ub = bound;
        rows[m].tid = tid;
        rows[m].qtf = cnt;
        m++;
        total += df;
    }
    qsort(rows, (size_t)m, sizeof(plan_row), cmp_plan);
    for (int32_t r = 0; r < m; r++) {
        int64_t df = t->df[rows[r].tid];
        double dfd = (double)df;
        list[r] = rows[r].tid;
        idf[r] = log1p((n - dfd + 0.5) / (dfd + 0.5));
        qtf[r] = (double)rows[r].qtf;
        ub[r] = rows[r].ub;
    }
    if (srt != small)
        free(srt);
    if (rows != rsmall)
        free(rows);
    *postings = total;
    return m;
}

/* ---- batches on threads ------------------------------------------------------------------ */

typedef struct {
    const native_bm25_ctx *c;
    const native_bm25_query *qs;
    int64_t nq, k;
    int mode;
    const int8_t *modes;
    int64_t **accs;
    int32_t **toucheds;
    int32_t *docs;
    double *scores;
    int64_t *nout;
    int64_t next;   /* next query to take (atomic) */
    int next_slot;  /* next scratch slot (atomic) */
    int status;     /* first failure (atomic compare-and-swap) */
} batch_job;

/* Record st as the batch's status unless an earlier failure is there already. */
static void batch_fail(batch_job *b, int st) {
    int zero = 0;
    __atomic_compare_exchange_n(&b->status, &zero, st, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static void *batch_worker(void *arg) {
    batch_job *b = arg;
    int slot = __atomic_fetch_add(&b->next_slot, 1, __ATOMIC_RELAXED);
    int64_t *acc = b->accs ? b->accs[slot] : NULL;
    int32_t *touched = b->toucheds ? b->toucheds[slot] : NULL;
    int own = 0;
    if (!acc || !touched) {
        acc = calloc((size_t)b->c->ndocs + 1, sizeof(int64_t));
        touched = malloc(sizeof(int32_t) * ((size_t)b->c->ndocs + 1));
        own = 1;
        if (!acc || !touched) {
            batch_fail(b, NATIVE_ENOMEM);
            free(acc);
            free(touched);
            return NULL;
        }
    }
    for (;;) {
        int64_t i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->nq || __atomic_load_n(&b->status, __ATOMIC_RELAXED) != NATIVE_OK)
            break;
        int mode = b->modes ? b->modes[i] : b->mode;
        int st = native_bm25_topk(b->c, b->qs + i, mode, b->k, acc, touched,
                                  b->docs + i * b->k, b->scores + i * b->k, b->nout + i);
        if (st != NATIVE_OK)
            batch_fail(b, st);
    }
    if (own) {
        free(acc);
        free(touched);
    }
    return NULL;
}

int native_bm25_batch(const native_bm25_ctx *c, const native_bm25_query *qs, int64_t nq,
                      int mode, const int8_t *modes, int64_t k, int nthreads, int64_t **accs,
                      int32_t **toucheds, int32_t *docs, double *scores, int64_t *nout) {
    batch_job b = {c, qs, nq, k, mode, modes, accs, toucheds, docs, scores, nout, 0, 0,
                   NATIVE_OK};
    for (int64_t i = 0; i < nq; i++)
        nout[i] = 0;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > nq)
        nthreads = nq > 0 ? (int)nq : 1;
    pthread_t *tid = malloc(sizeof(pthread_t) * (size_t)nthreads);
    if (!tid)
        return NATIVE_ENOMEM;
    int started = 0;
    for (int t = 1; t < nthreads; t++) {
        if (pthread_create(&tid[t], NULL, batch_worker, &b) != 0)
            break;
        started++;
    }
    batch_worker(&b);
    for (int t = 1; t <= started; t++)
        pthread_join(tid[t], NULL);
    free(tid);
    return b.status;
}
