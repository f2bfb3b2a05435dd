/*
 * llmdsdb/_native/hnsw.c -- HNSW search and insert (Malkov & Yashunin) over the arrays
 * llmdsdb.hnsw keeps: layer-0 rows of m0 = 2M int32 ids, float32 vectors, upper layers
 * of M-wide rows reached through a node -> row map per layer. Rows are padded with -1.
 *
 * Search: greedy descent through the upper layers, then best-first search of layer 0 with
 * a candidate min-heap and a result max-heap of ef entries (both ordered by (distance,
 * id), so equal inputs give equal answers), an epoch-stamped visited table (cleared only
 * when the 16-bit epoch wraps). Tombstones are traversed but never returned; while the
 * results hold fewer than ef live nodes the search goes on (hnswlib's rule with deletions).
 *
 * Insert: the same search with ef_construction on each layer of the new node, neighbours
 * chosen by the heuristic of Algorithm 4 (a candidate is kept when it is closer to the new
 * node than to every neighbour kept before it), back-links appended, and a row that
 * overflows is re-chosen from its entries plus the new node by the same heuristic. With
 * g->locks set (threaded insert) every row is written under its node's spin lock with
 * atomic stores and read without a lock by atomic loads (see read_row), and a node that
 * raises the top layer holds the global lock for its whole insert, as in hnswlib; with one
 * thread the result depends only on the insertion order.
 *
 * Safety: every id read from a row or row map is checked before it indexes anything
 * (0 <= id < n, -1 only as padding, a row map entry inside its layer); a violation returns
 * NATIVE_ECORRUPT with nothing read out of bounds.
 */
#include "native.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* ---- scratch ------------------------------------------------------------------------- */

hnsw_ctx *hnsw_ctx_new(size_t nodes, int32_t m0, int32_t dim) {
    hnsw_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->mark_n = nodes;
    c->mark = calloc(nodes ? nodes : 1, sizeof(uint16_t));
    c->cand_cap = c->res_cap = c->tmp_cap = 64;
    c->cand = malloc(c->cand_cap * sizeof(native_pair));
    c->res = malloc(c->res_cap * sizeof(native_pair));
    c->tmp = malloc(c->tmp_cap * sizeof(native_pair));
    c->tmp2 = malloc(((size_t)m0 + 1) * sizeof(native_pair));
    c->row = malloc((size_t)m0 * sizeof(int32_t));
    c->sel = malloc((size_t)m0 * sizeof(int32_t));
    c->sel2 = malloc((size_t)m0 * sizeof(int32_t));
    c->fresh = malloc((size_t)m0 * sizeof(int32_t));
    c->q = malloc((size_t)dim * sizeof(float));
    c->qd = malloc((size_t)dim * sizeof(double));
    if (!c->mark || !c->cand || !c->res || !c->tmp || !c->tmp2 || !c->row || !c->sel ||
        !c->sel2 || !c->fresh || !c->q || !c->qd) {
        hnsw_ctx_free(c);
        return NULL;
    }
    return c;
}

void hnsw_ctx_free(hnsw_ctx *c) {
    if (!c)
        return;
    free(c->mark);
    free(c->cand);
    free(c->res);
    free(c->tmp);
    free(c->tmp2);
    free(c->row);
    free(c->sel);
    free(c->sel2);
    free(c->fresh);
    free(c->hop);
    free(c->nodes);
    free(c->q);
    free(c->qd);
    free(c);
}

static int grow(native_pair **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return NATIVE_OK;
    size_t nc = *cap * 2 > need ? *cap * 2 : need;
    native_pair *p = realloc(*buf, nc * sizeof(native_pair));
    if (!p)
        return NATIVE_ENOMEM;
    *buf = p;
    *cap = nc;
    return NATIVE_OK;
}

static uint16_t next_epoch(hnsw_ctx *c) {
    if (++c->epoch == 0) {
        memset(c->mark, 0, c->mark_n * sizeof(uint16_t));
        c->epoch = 1;
    }
    return c->epoch;
}

/* ---- rows ------------------------------------------------------------------------------ */

static inline void lock_node(const hnsw_graph *g, int32_t i) {
    if (!g->locks)
        return;
    /* held for a few dozen distance computations at most; on a busy machine the holder
     * may be descheduled, so after a short spin the waiter gives its time slice away */
    for (unsigned spins = 0; __atomic_test_and_set(&g->locks[i], __ATOMIC_ACQUIRE);) {
        while (__atomic_load_n(&g->locks[i], __ATOMIC_RELAXED)) {
            if (++spins > 64)
                sched_yield();
        }
    }
}

static inline void unlock_node(const hnsw_graph *g, int32_t i) {
    if (g->locks)
        __atomic_clear(&g->locks[i], __ATOMIC_RELEASE);
}

/* The row of node i (0 <= i < n, checked by the caller) on a layer; NULL when the layer's
 * row map sends it outside the layer (corrupt). */
static inline int32_t *row_ptr(const hnsw_graph *g, int level, int32_t i) {
    if (level == 0)
        return g->adj0 + (size_t)i * (size_t)g->m0;
    int32_t r = g->lrow[level - 1][i];
    if (r < 0 || r >= g->lcount[level - 1])
        return NULL;
    return g->ladj[level - 1] + (size_t)r * (size_t)g->m;
}

/* Ids before the row's padding, each checked (0 <= id < n; padding is -1 and only
 * padding follows it); -1 when the row is corrupt. */
static inline int row_len(const hnsw_graph *g, const int32_t *row, int w) {
    int j = 0;
    for (; j < w && row[j] != -1; j++)
        if (row[j] < 0 || row[j] >= g->n)
            return -1;
    return j;
}

/* A row to read: the row itself, or during a threaded insert a copy taken id by id with
 * relaxed atomic loads and no lock. A row being rewritten may then mix old and new ids;
 * each is still a whole id, checked like any other, and a search tolerates a stale or
 * repeated neighbour (it is visited once). Only writers take the node's lock, so readers
 * never bounce lock cache lines between threads. */
static inline const int32_t *read_row(const hnsw_graph *g, hnsw_ctx *c, int level, int32_t i) {
    int32_t *r = row_ptr(g, level, i);
    if (!r || !g->locks)
        return r;
    int w = level ? g->m : g->m0;
    for (int j = 0; j < w; j++)
        c->row[j] = __atomic_load_n(&r[j], __ATOMIC_RELAXED);
    return c->row;
}

/* Store one id of a row (atomic under a threaded insert: readers take no lock). */
static inline void store_id(const hnsw_graph *g, int32_t *slot, int32_t v) {
    if (g->locks)
        __atomic_store_n(slot, v, __ATOMIC_RELAXED);
    else
        *slot = v;
}

static inline const float *vec(const hnsw_graph *g, int32_t i) {
    return g->vecs + (size_t)i * (size_t)g->dim;
}

static inline void prefetch_vec(const hnsw_graph *g, int32_t i) {
    if (i >= 0 && i < g->n) {
        const char *p = (const char *)vec(g, i);
        __builtin_prefetch(p);
        __builtin_prefetch(p + 64);
    }
}

/* ---- search ---------------------------------------------------------------------------- */

/* Greedy walk (pool of one) through layers from..to+1. */
static int greedy(const hnsw_graph *g, hnsw_ctx *c, const float *q, int from, int to,
                  int32_t *cur, float *curd) {
    size_t dim = (size_t)g->dim;
    for (int level = from; level > to; level--) {
        int changed = 1;
        while (changed) {
            changed = 0;
            const int32_t *row = read_row(g, c, level, *cur);
            int len = row ? row_len(g, row, g->m) : -1;
            if (len < 0)
                return NATIVE_ECORRUPT;
            c->ndist += (size_t)len;
            for (int j = 0; j < len; j++) {
                int32_t nb = row[j];
                float d = native_dist(g->metric, q, vec(g, nb), dim);
                if (d < *curd) {
                    *curd = d;
                    *cur = nb;
                    changed = 1;
                }
            }
        }
    }
    return NATIVE_OK;
}

/* Whether node i (0 <= i < n) may be a result: live and, under a filter, allowed. */
static inline int keep_node(const hnsw_graph *g, const hnsw_allow *a, int32_t i) {
    if (a && a->nodebits)
        return (a->nodebits[i >> 3] >> (i & 7)) & 1;
    if (g->deleted[i])
        return 0;
    if (!a)
        return 1;
    int64_t v = a->ext[i];
    return v >= 0 && (uint64_t)v >> 3 < a->nbytes && (a->bits[v >> 3] >> (v & 7)) & 1;
}

/* Best-first search of one layer from ep; leaves the result max-heap in c->res, *nres
 * entries. skip_deleted: tombstones (and, with an allowed set a, nodes outside it) are
 * expanded but not kept as results; mode HNSW_FILTER_TWOHOP (with a) instead keeps them
 * out of the candidates and expands their neighbours in their place. */
static inline __attribute__((always_inline)) int
search_layer_body(const hnsw_graph *g, hnsw_ctx *c, const float *q, native_pair ep, int level,
                  size_t ef, int skip_deleted, const hnsw_allow *a, int mode, size_t *nres) {
    size_t dim = (size_t)g->dim;
    int w = level ? g->m : g->m0;
    uint16_t e = next_epoch(c);
    uint16_t *mark = c->mark;
    size_t nc = 0, nr = 0;
    int st;
    int twohop = a && mode == HNSW_FILTER_TWOHOP && level == 0;
    if ((st = grow(&c->res, &c->res_cap, ef + 1)) != NATIVE_OK)
        return st;
    if (twohop && !c->hop) {
        c->hop = malloc((size_t)g->m0 * ((size_t)g->m0 + 1) * sizeof(int32_t));
        if (!c->hop)
            return NATIVE_ENOMEM;
    }
    mark[ep.id] = e;
    /* candidates: a max-heap of (-d, -id) is a min-heap of (d, id) */
    c->cand[nc++] = (native_pair){-ep.d, -ep.id};
    float lb = INFINITY;
    if (!skip_deleted || keep_node(g, a, ep.id)) {
        c->res[nr++] = ep;
        lb = ep.d;
    }
    c->over = 0;
    while (nc) {
        native_pair top = c->cand[0];
        if (-top.d > lb && nr >= ef)
            break;
        if (a && c->budget && c->ndist > c->budget) { /* see hnsw_filter_opts */
            c->over = 1;
            break;
        }
        native_heap_pop(c->cand, &nc);
        /* the next node to expand is likely the new top: fetch its row while this one's
         * neighbours are scored (rows live apart from vectors, so nothing else brings it) */
        if (nc && level == 0)
            __builtin_prefetch(g->adj0 + (size_t)(-c->cand[0].id) * (size_t)g->m0);
        const int32_t *row = read_row(g, c, level, -top.id);
        int len = row ? row_len(g, row, w) : -1;
        if (len < 0)
            return NATIVE_ECORRUPT;
        /* two passes: first the unvisited neighbours (marked, their vectors prefetched, so
         * the memory loads overlap), then their distances */
        int32_t *fresh = twohop ? c->hop : c->fresh;
        int nf = 0;
        for (int j = 0; j < len; j++) {
            int32_t nb = row[j];
            if (mark[nb] == e)
                continue;
            mark[nb] = e;
            if (twohop && !keep_node(g, a, nb)) {
                /* outside the set: its neighbours stand in for it (a filtered walk never
                 * runs beside an insert, so rows are read without the insert's care) */
                const int32_t *r2 = g->adj0 + (size_t)nb * (size_t)g->m0;
                int l2 = row_len(g, r2, g->m0);
                if (l2 < 0)
                    return NATIVE_ECORRUPT;
                for (int t = 0; t < l2; t++) {
                    int32_t nb2 = r2[t];
                    if (mark[nb2] == e || !keep_node(g, a, nb2))
                        continue;
                    mark[nb2] = e;
                    fresh[nf++] = nb2;
                    prefetch_vec(g, nb2);
                }
                continue;
            }
            fresh[nf++] = nb;
            prefetch_vec(g, nb);
        }
        c->ndist += (size_t)nf;
        for (int j = 0; j < nf; j++) {
            int32_t nb = fresh[j];
            float d = native_dist(g->metric, q, vec(g, nb), dim);
            if (nr < ef || d < lb) {
                if ((st = grow(&c->cand, &c->cand_cap, nc + 1)) != NATIVE_OK)
                    return st;
                native_heap_push(c->cand, &nc, (native_pair){-d, -nb});
                if (!skip_deleted || keep_node(g, a, nb)) {
                    native_heap_push(c->res, &nr, (native_pair){d, nb});
                    if (nr > ef)
                        native_heap_pop(c->res, &nr);
                }
                if (nr)
                    lb = c->res[0].d;
            }
        }
    }
    *nres = nr;
    return NATIVE_OK;
}

/* The body above in two copies: with an allowed set (filtered queries), and without one
 * -- unfiltered queries and inserts, where the compiler drops every filter test from the
 * inner loop (a filter never costs the unfiltered path a branch). */
static int search_layer_allowed(const hnsw_graph *g, hnsw_ctx *c, const float *q,
                                native_pair ep, size_t ef, const hnsw_allow *a, int mode,
                                size_t *nres) {
    return search_layer_body(g, c, q, ep, 0, ef, 1, a, mode, nres);
}

static int search_layer(const hnsw_graph *g, hnsw_ctx *c, const float *q, native_pair ep,
                        int level, size_t ef, int skip_deleted, size_t *nres) {
    return search_layer_body(g, c, q, ep, level, ef, skip_deleted, NULL, 0, nres);
}

int hnsw_query(const hnsw_graph *g, hnsw_ctx *c, const float *q, int32_t entry,
               int32_t max_level, size_t ef, size_t k, size_t live, int exact,
               native_pair *out, size_t *nout) {
    int st;
    *nout = 0;
    if (!live || !g->n || !k)
        return NATIVE_OK;
    if (!exact) {
        if (entry < 0 || entry >= g->n || max_level < 0 || max_level > g->nlevels)
            return NATIVE_ECORRUPT;
        if (ef < k)
            ef = k;
        int32_t cur = entry;
        float curd = native_dist(g->metric, q, vec(g, cur), (size_t)g->dim);
        if ((st = greedy(g, c, q, max_level, 0, &cur, &curd)) != NATIVE_OK)
            return st;
        size_t nr;
        if ((st = search_layer(g, c, q, (native_pair){curd, cur}, 0, ef, 1, &nr)) != NATIVE_OK)
            return st;
        if ((st = grow(&c->tmp, &c->tmp_cap, nr)) != NATIVE_OK)
            return st;
        native_heap_drain(c->res, nr, c->tmp);
        size_t want = k < live ? k : live;
        if (nr >= want) {
            size_t m = nr < k ? nr : k;
            memcpy(out, c->tmp, m * sizeof(native_pair));
            *nout = m;
            return NATIVE_OK;
        }
    }
    if ((st = grow(&c->tmp, &c->tmp_cap, k)) != NATIVE_OK)
        return st;
    *nout = native_topk_scan(g->vecs, (size_t)g->n, (size_t)g->dim, q, g->metric, g->deleted,
                             k, c->tmp, out);
    return NATIVE_OK;
}

/* ---- filtered search ------------------------------------------------------------------ */

/* First position >= lo of keys[0..n) holding a key >= x (n when none): doubling steps
 * from lo, then a binary search inside the last step. */
static size_t gallop(const int64_t *keys, size_t lo, size_t n, int64_t x) {
    size_t bound = 1;
    while (lo + bound <= n && keys[lo + bound - 1] < x)
        bound *= 2;
    size_t l = lo + bound / 2, hi = lo + bound - 1 < n ? lo + bound - 1 : n;
    while (l < hi) {
        size_t mid = l + (hi - l) / 2;
        if (keys[mid] < x)
            l = mid + 1;
        else
            hi = mid;
    }
    return l;
}

/* The node of allowed id v through the label map: 0 and *x set when found, 1 when the id
 * is not in the map, NATIVE_EINVAL when the map points at a node whose label is not v.
 * pos and prev carry the gallop between calls (ids not increasing: search from the start). */
static int lookup_allowed(const hnsw_graph *g, const hnsw_allow *a, int64_t v, size_t *pos,
                          int64_t *prev, int32_t *x) {
    if (v < *prev)
        *pos = 0;
    *prev = v;
    *pos = gallop(a->keys, *pos, a->nkeys, v);
    if (*pos >= a->nkeys || a->keys[*pos] != v)
        return 1;
    *x = a->knodes[*pos];
    if (*x < 0 || *x >= g->n || a->ext[*x] != v)
        return NATIVE_EINVAL;
    return 0;
}

int hnsw_resolve_allowed(const hnsw_graph *g, const hnsw_allow *a, int32_t *nodes, size_t *m) {
    size_t pos = 0, cnt = 0;
    int64_t prev = INT64_MIN;
    for (size_t i = 0; i < a->nids; i++) {
        int32_t x;
        int st = lookup_allowed(g, a, a->ids[i], &pos, &prev, &x);
        if (st == NATIVE_EINVAL)
            return st;
        if (st == 0 && keep_node(g, a, x)) /* live, and its bit set too: both views must allow it */
            nodes[cnt++] = x;
    }
    *m = cnt;
    return NATIVE_OK;
}

int hnsw_allow_nodes(const hnsw_graph *g, const hnsw_allow *a, uint8_t *nodebits,
                     int32_t *scratch) {
    size_t m;
    int st = hnsw_resolve_allowed(g, a, scratch, &m);
    if (st != NATIVE_OK)
        return st;
    for (size_t i = 0; i < m; i++)
        nodebits[scratch[i] >> 3] |= (uint8_t)(1u << (scratch[i] & 7));
    return NATIVE_OK;
}

int hnsw_scan_nodes(const hnsw_graph *g, hnsw_ctx *c, const float *q, const int32_t *nodes,
                    size_t m, size_t k, native_pair *out, size_t *nout) {
    size_t dim = (size_t)g->dim, h = 0;
    int st;
    *nout = 0;
    if (!k)
        return NATIVE_OK;
    if ((st = grow(&c->res, &c->res_cap, k + 1)) != NATIVE_OK)
        return st;
    native_pair *heap = c->res;
    for (size_t i = 0; i < m; i++) {
        /* rows are scattered: fetch a few ahead while this one is scored */
        if (i + 4 < m)
            prefetch_vec(g, nodes[i + 4]);
        native_pair p = {native_dist(g->metric, q, vec(g, nodes[i]), dim), nodes[i]};
        if (h < k) {
            native_heap_push(heap, &h, p);
        } else if (native_pair_lt(p, heap[0])) {
            native_heap_pop(heap, &h);
            native_heap_push(heap, &h, p);
        }
    }
    *nout = h;
    native_heap_drain(heap, h, out);
    return NATIVE_OK;
}

/* The exact answer: resolve the allowed ids into c->nodes, then scan them. */
static int allowed_exact(const hnsw_graph *g, hnsw_ctx *c, const float *q, const hnsw_allow *a,
                         size_t k, native_pair *out, size_t *nout) {
    size_t m;
    int st;
    if (a->nids > c->nodes_cap) {
        int32_t *p = realloc(c->nodes, a->nids * sizeof(int32_t));
        if (!p)
            return NATIVE_ENOMEM;
        c->nodes = p;
        c->nodes_cap = a->nids;
    }
    if ((st = hnsw_resolve_allowed(g, a, c->nodes, &m)) != NATIVE_OK)
        return st;
    c->ndist += m;
    return hnsw_scan_nodes(g, c, q, c->nodes, m, k, out, nout);
}

/* The check of a finished walk (see hnsw_filter_opts): r allowed ids evenly spaced in
 * a->ids, each looked up in the label map; a live allowed node the walk never reached
 * (its mark is not the walk's epoch) that is nearer than dk is a hit. *missed = 1 once
 * HNSW_VERIFY_HITS hits are found. A node the walk reached and that is nearer than dk is
 * among the walk's hits already (the pool keeps the ef nearest allowed nodes it reached),
 * so every hit is a node of the true top k the walk did not return. */
static int verify_walk(const hnsw_graph *g, hnsw_ctx *c, const float *q, const hnsw_allow *a,
                       size_t r, float dk, int *missed) {
    size_t m = a->nids, pos = 0, hits = 0;
    uint16_t e = c->epoch;
    int64_t prev = INT64_MIN;
    *missed = 0;
    if (r > m)
        r = m;
    size_t step = r ? m / r : 0, rem = r ? m % r : 0;
    for (size_t j = 0; j < r; j++) {
        int32_t x;
        int st = lookup_allowed(g, a, a->ids[j * step + (j * rem) / r], /* floor(j*m/r) < m */
                                &pos, &prev, &x);
        if (st == NATIVE_EINVAL)
            return st;
        if (st != 0 || c->mark[x] == e || !keep_node(g, a, x))
            continue;
        c->ndist++;
        if (native_dist(g->metric, q, vec(g, x), (size_t)g->dim) < dk && ++hits >= HNSW_VERIFY_HITS) {
            *missed = 1;
            break;
        }
    }
    return NATIVE_OK;
}

int hnsw_query_allowed(const hnsw_graph *g, hnsw_ctx *c, const float *q, int32_t entry,
                       int32_t max_level, size_t ef, size_t k, const hnsw_allow *a, int exact,
                       const hnsw_filter_opts *o, native_pair *out, size_t *nout, int *ran,
                       size_t *ndist) {
    int st;
    *nout = 0;
    *ran = exact ? HNSW_RAN_EXACT : HNSW_RAN_WALK;
    c->ndist = 0;
    *ndist = 0;
    if (!g->n || !k || !a->nids)
        return NATIVE_OK;
    if (!exact) {
        if (entry < 0 || entry >= g->n || max_level < 0 || max_level > g->nlevels)
            return NATIVE_ECORRUPT;
        if (ef < k)
            ef = k;
        int32_t cur = entry;
        float curd = native_dist(g->metric, q, vec(g, cur), (size_t)g->dim);
        c->ndist = 1;
        if ((st = greedy(g, c, q, max_level, 0, &cur, &curd)) != NATIVE_OK)
            return st;
        size_t nr;
        c->budget = o->budget;
        st = search_layer_allowed(g, c, q, (native_pair){curd, cur}, ef, a, o->mode, &nr);
        c->budget = 0;
        if (st != NATIVE_OK)
            return st;
        if (c->over) {
            *ran = HNSW_RAN_BUDGET;
        } else if (nr < k) {
            /* fewer than k allowed nodes reached: the exact path knows whether more exist */
            *ran = HNSW_RAN_SHORT;
        } else {
            if ((st = grow(&c->tmp, &c->tmp_cap, nr)) != NATIVE_OK)
                return st;
            native_heap_drain(c->res, nr, c->tmp);
            int missed = 0;
            if (o->verify) {
                size_t r = c->ndist / HNSW_VERIFY_SHARE;
                if ((st = verify_walk(g, c, q, a, r > o->verify ? r : o->verify,
                                      c->tmp[k - 1].d, &missed)) != NATIVE_OK)
                    return st;
            }
            if (!missed) {
                memcpy(out, c->tmp, k * sizeof(native_pair));
                *nout = k;
                *ndist = c->ndist;
                return NATIVE_OK;
            }
            *ran = HNSW_RAN_VERIFY;
        }
    }
    st = allowed_exact(g, c, q, a, k, out, nout);
    *ndist = c->ndist;
    return st;
}

/* ---- insert ---------------------------------------------------------------------------- */

/* Algorithm 4 without extensions: cand sorted nearest first by distance to the base node;
 * keep one when it is closer to the base than to every one kept before it. */
static int select_heuristic(const hnsw_graph *g, const native_pair *cand, size_t nc, int mmax,
                            int32_t *sel) {
    int ns = 0;
    size_t dim = (size_t)g->dim;
    for (size_t i = 0; i < nc && ns < mmax; i++) {
        if (!isfinite(cand[i].d))
            continue;
        const float *v = vec(g, cand[i].id);
        int good = 1;
        for (int j = 0; j < ns; j++) {
            if (native_dist(g->metric, v, vec(g, sel[j]), dim) < cand[i].d) {
                good = 0;
                break;
            }
        }
        if (good)
            sel[ns++] = cand[i].id;
    }
    return ns;
}

static inline void mark_dirty(const hnsw_graph *g, int level, int32_t i) {
    /* read first: a store per back-link would bounce the flags' cache line between
     * threads, though almost every flag is already set */
    if (level == 0 && g->dirty && !__atomic_load_n(&g->dirty[i / g->block], __ATOMIC_RELAXED))
        __atomic_store_n(&g->dirty[i / g->block], 1, __ATOMIC_RELAXED);
}

/* Sort n (distance, id) pairs nearest first: insertion sort, as a row's candidates number
 * at most 3M. */
static void sort_pairs(native_pair *t, int n) {
    for (int i = 1; i < n; i++) {
        native_pair p = t[i];
        int j = i - 1;
        while (j >= 0 && native_pair_lt(p, t[j])) {
            t[j + 1] = t[j];
            j--;
        }
        t[j + 1] = p;
    }
}

/* Add the edge s -> x on a layer; a full row is re-chosen by the heuristic. */
static int link_back(const hnsw_graph *g, hnsw_ctx *c, int32_t s, int32_t x, int level) {
    int mmax = level ? g->m : g->m0;
    size_t dim = (size_t)g->dim;
    int st = NATIVE_OK;
    lock_node(g, s);
    int32_t *row = row_ptr(g, level, s);
    if (!row) {
        st = NATIVE_ECORRUPT;
        goto done;
    }
    int cnt = row_len(g, row, mmax);
    if (cnt < 0) {
        st = NATIVE_ECORRUPT;
        goto done;
    }
    for (int j = 0; j < cnt; j++)
        if (row[j] == x)
            goto done;
    if (cnt < mmax) {
        store_id(g, &row[cnt], x);
    } else {
        const float *vs = vec(g, s);
        native_pair *t = c->tmp2;
        for (int j = 0; j < mmax; j++)
            t[j] = (native_pair){native_dist(g->metric, vs, vec(g, row[j]), dim), row[j]};
        t[mmax] = (native_pair){native_dist(g->metric, vs, vec(g, x), dim), x};
        sort_pairs(t, mmax + 1);
        int ns = select_heuristic(g, t, (size_t)mmax + 1, mmax, c->sel2);
        for (int j = 0; j < mmax; j++)
            store_id(g, &row[j], j < ns ? c->sel2[j] : -1);
    }
    mark_dirty(g, level, s);
done:
    unlock_node(g, s);
    return st;
}

/* Store the new node x's row on a layer (x's lock held): its chosen neighbours c->sel[:ns]
 * together with whatever the row already holds. A fresh row is empty under one thread;
 * under a threaded insert a concurrent insert may already have stored its back-link here
 * (it reached x through an upper layer before x's row on this layer was written).
 * Overwriting that link would leave the other node with one in-link fewer -- at times
 * none, and then no search reaches it -- so the row keeps both, re-chosen by the heuristic
 * when together they do not fit. */
static int write_own_row(const hnsw_graph *g, hnsw_ctx *c, int32_t x, int level, int ns) {
    int w = level ? g->m : g->m0;
    int32_t *row = row_ptr(g, level, x);
    if (!row)
        return NATIVE_ECORRUPT;
    int cnt = row_len(g, row, w);
    if (cnt < 0)
        return NATIVE_ECORRUPT;
    int extra = 0;
    for (int j = 0; j < cnt; j++) { /* links stored by others, not among the chosen */
        int dup = row[j] == x;
        for (int i = 0; i < ns && !dup; i++)
            dup = row[j] == c->sel[i];
        if (!dup)
            c->fresh[extra++] = row[j];
    }
    if (ns + extra <= w) {
        for (int j = 0; j < w; j++)
            store_id(g, &row[j], j < ns ? c->sel[j] : j < ns + extra ? c->fresh[j - ns] : -1);
        return NATIVE_OK;
    }
    int st = grow(&c->cand, &c->cand_cap, (size_t)(ns + extra));
    if (st != NATIVE_OK)
        return st;
    const float *vx = vec(g, x);
    size_t dim = (size_t)g->dim;
    native_pair *t = c->cand;
    for (int j = 0; j < ns + extra; j++) {
        int32_t id = j < ns ? c->sel[j] : c->fresh[j - ns];
        t[j] = (native_pair){native_dist(g->metric, vx, vec(g, id), dim), id};
    }
    sort_pairs(t, ns + extra);
    int nk = select_heuristic(g, t, (size_t)(ns + extra), w, c->sel2);
    for (int j = 0; j < w; j++)
        store_id(g, &row[j], j < nk ? c->sel2[j] : -1);
    return NATIVE_OK;
}

int hnsw_insert(const hnsw_graph *g, hnsw_ctx *c, int32_t x, size_t efc, hnsw_top *top) {
    pthread_mutex_t *glock = top->lock;
    int st = NATIVE_OK;
    if (x < 0 || x >= g->n)
        return NATIVE_EINVAL;
    int L = g->levels[x];
    if (L < 0 || L > g->nlevels)
        return NATIVE_ECORRUPT;
    if (glock)
        pthread_mutex_lock(glock);
    int32_t ep = top->entry, maxl = top->max_level;
    if (ep < 0) {
        top->entry = x;
        top->max_level = L;
        if (glock)
            pthread_mutex_unlock(glock);
        return NATIVE_OK;
    }
    int hold = L > maxl;
    if (glock && !hold)
        pthread_mutex_unlock(glock);
    if (ep >= g->n || maxl < 0 || maxl > g->nlevels) {
        st = NATIVE_ECORRUPT;
        goto out;
    }
    const float *q = vec(g, x);
    size_t dim = (size_t)g->dim;
    int32_t cur = ep;
    float curd = native_dist(g->metric, q, vec(g, cur), dim);
    if ((st = greedy(g, c, q, maxl, L, &cur, &curd)) != NATIVE_OK)
        goto out;
    for (int level = L < maxl ? L : maxl; level >= 0; level--) {
        size_t nr, nc = 0;
        if ((st = search_layer(g, c, q, (native_pair){curd, cur}, level, efc, 0, &nr)) != NATIVE_OK)
            goto out;
        if ((st = grow(&c->tmp, &c->tmp_cap, nr)) != NATIVE_OK)
            goto out;
        native_heap_drain(c->res, nr, c->tmp);
        for (size_t i = 0; i < nr; i++) /* drop x itself (a concurrent back-link) */
            if (c->tmp[i].id != x)
                c->tmp[nc++] = c->tmp[i];
        int ns = select_heuristic(g, c->tmp, nc, g->m, c->sel);
        lock_node(g, x);
        st = write_own_row(g, c, x, level, ns);
        unlock_node(g, x);
        if (st != NATIVE_OK)
            goto out;
        mark_dirty(g, level, x);
        for (int j = 0; j < ns; j++)
            if ((st = link_back(g, c, c->sel[j], x, level)) != NATIVE_OK)
                goto out;
        if (nc) {
            cur = c->tmp[0].id;
            curd = c->tmp[0].d;
        }
    }
out:
    if (hold) {
        if (st == NATIVE_OK && L > top->max_level) {
            top->entry = x;
            top->max_level = L;
        }
        if (glock)
            pthread_mutex_unlock(glock);
    }
    return st;
}
