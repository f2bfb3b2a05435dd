/*
 * llmdsdb/_native/bm25.c -- exact BM25 top-k over postings lists (see native.h).
 *
 * A posting (doc d, tf) of a term with weight idf and query count qtf contributes
 *     c = ((tf * (k1 + 1)) / (norm[d] + tf)) * idf   [* qtf when qtf != 1]
 * (the operations and their order are those of llmdsdb.inverted_index, so float64 results
 * are bit-identical to it) and a document's score is the sum of its terms' contributions
 * taken in the query's term order, starting from 0.0. Both modes form that same sum:
 *
 *  - exhaustive: term after term, every posting added into a dense accumulator (a list of
 *    the touched documents makes the final selection and the reset proportional to them);
 *  - pruned: document-at-a-time MaxScore with block-max bounds (Turtle & Flood 1995; Ding &
 *    Suel 2011). Terms sorted by their upper bound split into non-essential ones (whose
 *    bounds together cannot lift a document into the top k) and essential ones, which
 *    produce the candidates; a candidate looks up the non-essential terms, best bound
 *    first, and is dropped as soon as its partial score plus the bound of the block that
 *    could hold it plus the bounds of the terms left cannot reach the k-th score. Only
 *    blocks a candidate falls in are decoded.
 *
 * Bounds and scores are formed by different operations, so every pruning test keeps a
 * relative margin of 1e-9: rounding can never drop a document that belongs in the top k.
 * Ties: the lower doc number first (documents are numbered in insertion order).
 */
#include "native.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SLACK 1e-9

static inline int above(double bound, double theta) {
    return bound * (1 + SLACK) + SLACK >= theta;
}

static inline double contrib(int32_t tf, double norm, double kp1, double idf, double qtf) {
    double t = (double)tf;
    double c = (t * kp1) / (norm + t);
    c *= idf;
    if (qtf != 1.0)
        c *= qtf;
    return c;
}

/* ---- top-k heap: the worst hit at the root (lowest score, then highest doc) ----------- */

typedef struct {
    double s;
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
static inline int heap_offer(hit *h, int64_t *n, int64_t k, double s, int32_t d) {
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

static void heap_emit(hit *h, int64_t n, int32_t *docs, double *scores, int64_t *nout) {
    qsort(h, (size_t)n, sizeof(hit), cmp_best);
    for (int64_t i = 0; i < n; i++) {
        docs[i] = h[i].d;
        scores[i] = h[i].s;
    }
    *nout = n;
}

/* ---- loading a block, checked against its skip row ------------------------------------ */

/* Block bi of list L: its postings in *docs / *tfs (pointing into L for raw lists, into the
 * scratch dbuf/tbuf of c->block_cap entries otherwise); the count or a negative status. */
static int64_t load_block(const native_bm25_ctx *c, const native_plist *L, int64_t bi,
                          int32_t *dbuf, int32_t *tbuf, const int32_t **docs,
                          const int32_t **tfs) {
    const int64_t *row = L->skip + 6 * bi;
    int64_t lo = L->offs[bi], hi = L->offs[bi + 1];
    int64_t n;
    if (L->buf) {
        if (lo < 0 || hi <= lo || (uint64_t)hi > L->buflen)
            return NATIVE_ECORRUPT;
        n = native_postings_decode(L->buf + lo, (size_t)(hi - lo), 0, dbuf, tbuf,
                                   (size_t)c->block_cap);
        if (n == NATIVE_EINVAL)
            return NATIVE_ECORRUPT; /* more postings than any block of this index holds */
        if (n < 0)
            return n;
        *docs = dbuf;
        *tfs = tbuf;
    } else {
        if (lo < 0 || hi <= lo || (uint64_t)hi > L->npost || hi - lo > c->block_cap)
            return NATIVE_ECORRUPT;
        n = hi - lo;
        *docs = L->docs + lo;
        *tfs = L->tfs + lo;
        for (int64_t j = 1; j < n; j++)
            if ((*docs)[j] <= (*docs)[j - 1])
                return NATIVE_ECORRUPT;
        if ((*docs)[0] < 0)
            return NATIVE_ECORRUPT;
    }
    if (n != row[1] || (*docs)[0] != row[2] || (*docs)[n - 1] != row[3] ||
        (*docs)[n - 1] >= c->ndocs)
        return NATIVE_ECORRUPT;
    int32_t tmax = 0;
    for (int64_t j = 0; j < n; j++)
        tmax = (*tfs)[j] > tmax ? (*tfs)[j] : tmax;
    if (tmax > row[4] || (*tfs)[0] < 1)
        return NATIVE_ECORRUPT;
    return n;
}

static int check_list(const native_bm25_ctx *c, int32_t li) {
    if (li < 0 || li >= c->nlists)
        return NATIVE_EINVAL;
    return NATIVE_OK;
}

/* ---- exhaustive ------------------------------------------------------------------------ */

static int topk_exhaustive(const native_bm25_ctx *c, const native_bm25_query *q, int64_t k,
                           double *acc, int32_t *touched, int32_t *out_d, double *out_s,
                           int64_t *nout) {
    const double kp1 = c->k1 + 1.0;
    const double *norm = c->norm;
    int64_t nt = 0;
    int st = NATIVE_OK;
    int32_t *dbuf = malloc(sizeof(int32_t) * 2 * (size_t)c->block_cap);
    hit *heap = malloc(sizeof(hit) * (size_t)(k < c->ndocs ? k : c->ndocs) + sizeof(hit));
    if (!dbuf || !heap) {
        free(dbuf);
        free(heap);
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
            for (int64_t j = 0; j < n; j++) {
                int32_t doc = d[j];
                double v = contrib(t[j], norm[doc], kp1, idf, qtf);
                double a = acc[doc];
                /* branch-free: whether a doc is new is a coin toss for the predictor */
                touched[nt] = doc;
                nt += (a == 0.0) & (v > 0.0);
                acc[doc] = a + v;
            }
        }
    }
    int64_t nh = 0;
    const int64_t kk = k < c->ndocs ? k : c->ndocs;
    if (st == NATIVE_OK) {
        if (nt * 8 < c->ndocs) {
            for (int64_t j = 0; j < nt; j++)
                heap_offer(heap, &nh, kk, acc[touched[j]], touched[j]);
        } else {
            /* in doc order: a later doc with the k-th score loses the tie */
            double thr = 0.0; /* 0 until the heap is full, then the k-th score */
            for (int64_t dd = 0; dd < c->ndocs; dd++) {
                double s = acc[dd];
                if (s > thr && heap_offer(heap, &nh, kk, s, (int32_t)dd))
                    thr = heap[0].s;
            }
        }
        heap_emit(heap, nh, out_d, out_s, nout);
    }
    if (nt * 8 < c->ndocs) {
        for (int64_t j = 0; j < nt; j++)
            acc[touched[j]] = 0.0;
    } else {
        memset(acc, 0, sizeof(double) * (size_t)c->ndocs);
    }
    free(dbuf);
    free(heap);
    return st;
}

/* ---- pruned: block-max MaxScore, document at a time ------------------------------------ */

typedef struct {
    const native_plist *L;
    double idf, qtf, w, ub;
    int32_t *dbuf, *tbuf;
    const int32_t *d, *t; /* the loaded block */
    int64_t bi;           /* index of the loaded block, -1 before the first */
    int64_t n, j;         /* its postings, position */
    int32_t doc;          /* current doc, INT32_MAX when exhausted */
    int32_t prev_last;    /* last doc of the block loaded before (blocks must ascend) */
    int64_t sbi;          /* skip-row pointer of the block bound lookups */
} cursor;

#define DONE INT32_MAX

static int cur_load(const native_bm25_ctx *c, cursor *u, int64_t bi) {
    if (bi >= u->L->nb) {
        u->doc = DONE;
        u->bi = u->L->nb;
        return NATIVE_OK;
    }
    int64_t n = load_block(c, u->L, bi, u->dbuf, u->tbuf, &u->d, &u->t);
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

static inline int cur_next(const native_bm25_ctx *c, cursor *u) {
    if (++u->j < u->n) {
        u->doc = u->d[u->j];
        return NATIVE_OK;
    }
    return cur_load(c, u, u->bi + 1);
}

/* Move to the first posting with doc >= target (target > current doc). */
static int cur_advance(const native_bm25_ctx *c, cursor *u, int32_t target) {
    if (u->doc >= target)
        return NATIVE_OK;
    const int64_t *skip = u->L->skip;
    if (u->d[u->n - 1] < target) {
        int64_t bi = u->bi + 1;
        while (bi < u->L->nb && skip[6 * bi + 3] < target)
            bi++;
        int st = cur_load(c, u, bi);
        if (st != NATIVE_OK || u->doc >= target)
            return st;
    }
    /* target lies within the loaded block: binary search after j */
    int64_t lo = u->j + 1, hi = u->n - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (u->d[mid] < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    u->j = lo;
    u->doc = u->d[lo];
    return NATIVE_OK;
}

/* Bound of u's contribution to doc target (>= the current doc): 0 when no block of u can
 * hold it, else the max bound of the block whose range holds it. */
static inline double cur_block_ub(const native_bm25_ctx *c, cursor *u, int32_t target) {
    const int64_t *skip = u->L->skip;
    int64_t nb = u->L->nb;
    while (u->sbi < nb && skip[6 * u->sbi + 3] < target)
        u->sbi++;
    if (u->sbi >= nb || skip[6 * u->sbi + 2] > target)
        return 0.0;
    const int64_t *row = skip + 6 * u->sbi;
    double mt = (double)row[4];
    double nrm = c->k1 * (1.0 - c->b + c->b * ((double)row[5] / c->avgdl));
    double ub = u->w * mt * (c->k1 + 1.0) / (mt + nrm);
    return ub == ub ? ub : INFINITY;
}

static int topk_pruned(const native_bm25_ctx *c, const native_bm25_query *q, int64_t k,
                       int32_t *out_d, double *out_s, int64_t *nout) {
    const int32_t m = q->m;
    const double kp1 = c->k1 + 1.0;
    const double *norm = c->norm;
    const int64_t kk = k < c->ndocs ? k : c->ndocs;
    int st = NATIVE_OK;
    size_t cap = (size_t)c->block_cap;
    cursor *cur = calloc((size_t)m, sizeof(cursor));
    int32_t *ord = malloc(sizeof(int32_t) * (size_t)m);
    int32_t *mark = malloc(sizeof(int32_t) * (size_t)m);
    double *val = malloc(sizeof(double) * (size_t)m);
    double *pre = malloc(sizeof(double) * ((size_t)m + 1));
    int32_t *bufs = malloc(sizeof(int32_t) * 2 * cap * (size_t)m);
    hit *heap = malloc(sizeof(hit) * (size_t)kk + sizeof(hit));
    if (!cur || !ord || !mark || !val || !pre || !bufs || !heap) {
        st = NATIVE_ENOMEM;
        goto out;
    }
    for (int32_t i = 0; i < m; i++) {
        if ((st = check_list(c, q->list[i])) != NATIVE_OK)
            goto out;
        cursor *u = cur + i;
        u->L = c->lists + q->list[i];
        u->idf = q->idf[i];
        u->qtf = q->qtf[i];
        u->w = q->idf[i] * q->qtf[i];
        u->ub = q->ub[i] == q->ub[i] ? q->ub[i] : INFINITY;
        u->dbuf = bufs + 2 * cap * (size_t)i;
        u->tbuf = u->dbuf + cap;
        u->prev_last = -1;
        u->bi = -1;
        if ((st = cur_load(c, u, 0)) != NATIVE_OK)
            goto out;
        mark[i] = -1;
        ord[i] = i;
    }
    /* terms by ascending bound (insertion sort: queries have few terms) */
    for (int32_t i = 1; i < m; i++) {
        int32_t x = ord[i], j = i;
        while (j > 0 && cur[ord[j - 1]].ub > cur[x].ub) {
            ord[j] = ord[j - 1];
            j--;
        }
        ord[j] = x;
    }
    pre[0] = 0.0;
    for (int32_t r = 0; r < m; r++)
        pre[r + 1] = pre[r] + cur[ord[r]].ub;
    double theta = -INFINITY;
    int32_t ne = 0; /* ord[0..ne) are non-essential */
    int64_t nh = 0;
    for (;;) {
        int32_t cand = DONE;
        for (int32_t r = ne; r < m; r++)
            if (cur[ord[r]].doc < cand)
                cand = cur[ord[r]].doc;
        if (cand == DONE)
            break;
        double part = 0.0;
        for (int32_t r = ne; r < m; r++) {
            int32_t i = ord[r];
            cursor *u = cur + i;
            if (u->doc == cand) {
                double v = contrib(u->t[u->j], norm[cand], kp1, u->idf, u->qtf);
                val[i] = v;
                mark[i] = cand;
                part += v;
                if ((st = cur_next(c, u)) != NATIVE_OK)
                    goto out;
            }
        }
        int pruned = 0;
        for (int32_t r = ne - 1; r >= 0; r--) {
            if (!above(part + pre[r + 1], theta)) {
                pruned = 1;
                break;
            }
            int32_t i = ord[r];
            cursor *u = cur + i;
            if (u->doc > cand)
                continue; /* already past: absent */
            double bub = cur_block_ub(c, u, cand);
            if (bub == 0.0)
                continue;
            if (!above(part + bub + pre[r], theta)) {
                pruned = 1;
                break;
            }
            if ((st = cur_advance(c, u, cand)) != NATIVE_OK)
                goto out;
            if (u->doc == cand) {
                double v = contrib(u->t[u->j], norm[cand], kp1, u->idf, u->qtf);
                val[i] = v;
                mark[i] = cand;
                part += v;
            }
        }
        if (pruned)
            continue;
        double s = 0.0;
        for (int32_t i = 0; i < m; i++)
            if (mark[i] == cand)
                s += val[i];
        if (s > 0.0 && (nh < kk || s > heap[0].s) && heap_offer(heap, &nh, kk, s, cand)) {
            theta = heap[0].s;
            while (ne < m && !above(pre[ne + 1], theta))
                ne++;
        }
    }
    heap_emit(heap, nh, out_d, out_s, nout);
out:
    free(cur);
    free(ord);
    free(mark);
    free(val);
    free(pre);
    free(bufs);
    free(heap);
    return st;
}

int native_bm25_topk(const native_bm25_ctx *c, const native_bm25_query *q, int mode, int64_t k,
                     double *acc, int32_t *touched, int32_t *docs, double *scores,
                     int64_t *nout) {
    *nout = 0;
    if (k < 1 || c->block_cap < 1 || c->block_cap > NATIVE_MAX_BLOCK_POSTINGS)
        return NATIVE_EINVAL;
    if (q->m == 0 || c->ndocs == 0)
        return NATIVE_OK;
    if (mode == NATIVE_BM25_PRUNED)
        return topk_pruned(c, q, k, docs, scores, nout);
    if (!acc || !touched)
        return NATIVE_EINVAL;
    return topk_exhaustive(c, q, k, acc, touched, docs, scores, nout);
}

/* ---- batches on threads ------------------------------------------------------------------ */

typedef struct {
    const native_bm25_ctx *c;
    const native_bm25_query *qs;
    int64_t nq, k;
    int mode;
    int32_t *docs;
    double *scores;
    int64_t *nout;
    int64_t next; /* next query to take (atomic) */
    int status;   /* first failure (atomic compare-and-swap) */
} batch_job;

static void *batch_worker(void *arg) {
    batch_job *b = arg;
    double *acc = NULL;
    int32_t *touched = NULL;
    if (b->mode == NATIVE_BM25_EXHAUSTIVE) {
        acc = calloc((size_t)b->c->ndocs + 1, sizeof(double));
        touched = malloc(sizeof(int32_t) * ((size_t)b->c->ndocs + 1));
        if (!acc || !touched) {
            int zero = 0;
            __atomic_compare_exchange_n(&b->status, &zero, NATIVE_ENOMEM, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
            free(acc);
            free(touched);
            return NULL;
        }
    }
    for (;;) {
        int64_t i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->nq || __atomic_load_n(&b->status, __ATOMIC_RELAXED) != NATIVE_OK)
            break;
        int st = native_bm25_topk(b->c, b->qs + i, b->mode, b->k, acc, touched,
                                  b->docs + i * b->k, b->scores + i * b->k, b->nout + i);
        if (st != NATIVE_OK) {
            int zero = 0;
            __atomic_compare_exchange_n(&b->status, &zero, st, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
        }
    }
    free(acc);
    free(touched);
    return NULL;
}

int native_bm25_batch(const native_bm25_ctx *c, const native_bm25_query *qs, int64_t nq,
                      int mode, int64_t k, int nthreads, int32_t *docs, double *scores,
                      int64_t *nout) {
    batch_job b = {c, qs, nq, k, mode, docs, scores, nout, 0, NATIVE_OK};
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
