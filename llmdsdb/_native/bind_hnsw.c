/*
 * llmdsdb/_native/bind_hnsw.c -- the CPython layer of the distance and HNSW kernels.
 *
 * HnswGraph holds buffer views of llmdsdb.hnsw's arrays (checked once for dtype,
 * C-contiguity and shape when it is made; the arrays stay alive and unmoved while it
 * exists) and a pool of per-thread scratch (visited stamps sized to the arrays). Each call
 * checks its scalars against the arrays (n within capacity, entry point and top layer in
 * range), releases the GIL around the kernels and maps their status with native_raise().
 * Ids inside rows are checked by the kernels as they reach them.
 *
 * Thread safety: any number of threads may search one graph at once; insert is the single
 * writer (llmdsdb.hnsw's contract), and with threads > 1 it locks rows per node itself.
 */
#include "native.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer checks ------------------------------------------------------------------- */

enum { K_F32, K_I32, K_I64, K_U8, K_I8, K_F64 };

static int fmt_ok(const char *f, int kind, Py_ssize_t itemsize) {
    if (!f)
        f = "B";
    while (*f == '<' || *f == '=' || *f == '@' || *f == '|')
        f++;
    if (f[0] == 0 || f[1] != 0)
        return 0;
    switch (kind) {
    case K_F32:
        return *f == 'f' && itemsize == 4;
    case K_I32:
        return (*f == 'i' || *f == 'l') && itemsize == 4;
    case K_I64:
        return (*f == 'l' || *f == 'q') && itemsize == 8;
    case K_U8:
        return (*f == 'B' || *f == '?') && itemsize == 1;
    case K_I8:
        return *f == 'b' && itemsize == 1;
    case K_F64:
        return *f == 'd' && itemsize == 8;
    }
    return 0;
}

static const char *kind_name[] = {"float32", "int32", "int64", "uint8/bool", "int8", "float64"};

/* Get a C-contiguous buffer of one element kind and ndim dimensions; sets
 * InvalidArgumentError (naming `what`) and returns -1 otherwise. */
static int get_buf(PyObject *o, Py_buffer *v, int kind, int ndim, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, v, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(native_InvalidArgumentError,
                     "%s must be a C-contiguous%s %s array", what, writable ? " writable" : "",
                     kind_name[kind]);
        return -1;
    }
    if (!fmt_ok(v->format, kind, v->itemsize) || v->ndim != ndim) {
        PyErr_Format(native_InvalidArgumentError, "%s must be a %d-d %s array", what, ndim,
                     kind_name[kind]);
        PyBuffer_Release(v);
        return -1;
    }
    if (native_check_aligned(v, what) < 0) {
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* ---- the graph object ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    hnsw_graph g;
    Py_ssize_t cap; /* nodes the arrays hold (their last row is llmdsdb.hnsw's sentinel) */
    Py_buffer vecs, adj0, deleted, ext, levels;
    Py_buffer *lrow, *ladj;
    int nbuf_upper;
    int32_t *lcount;
    int32_t **ladj_p, **lrow_p;
    pthread_mutex_t pool_lock;
    hnsw_ctx *pool;
    int ready;
} GraphObject;

static hnsw_ctx *ctx_get(GraphObject *self) {
    pthread_mutex_lock(&self->pool_lock);
    hnsw_ctx *c = self->pool;
    if (c)
        self->pool = c->next;
    pthread_mutex_unlock(&self->pool_lock);
    if (!c)
        c = hnsw_ctx_new((size_t)self->cap + 1, self->g.m0, self->g.dim);
    return c;
}

static void ctx_put(GraphObject *self, hnsw_ctx *c) {
    if (!c)
        return;
    pthread_mutex_lock(&self->pool_lock);
    c->next = self->pool;
    self->pool = c;
    pthread_mutex_unlock(&self->pool_lock);
}

static void graph_dealloc(GraphObject *self) {
    if (self->ready) {
        PyBuffer_Release(&self->vecs);
        PyBuffer_Release(&self->adj0);
        PyBuffer_Release(&self->deleted);
        PyBuffer_Release(&self->ext);
        PyBuffer_Release(&self->levels);
    }
    for (int i = 0; i < self->nbuf_upper; i++) {
        PyBuffer_Release(&self->lrow[i]);
        PyBuffer_Release(&self->ladj[i]);
    }
    free(self->lrow);
    free(self->ladj);
    free(self->lcount);
    free(self->ladj_p);
    free(self->lrow_p);
    while (self->pool) {
        hnsw_ctx *c = self->pool;
        self->pool = c->next;
        hnsw_ctx_free(c);
    }
    pthread_mutex_destroy(&self->pool_lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int graph_init(GraphObject *self, PyObject *args, PyObject *kw) {
    int metric, block;
    PyObject *ov, *oa, *od, *oe, *ol, *up;
    if (self->ready) {
        PyErr_SetString(native_InvalidArgumentError, "HnswGraph is already initialised");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "iiOOOOOO!", &metric, &block, &ov, &oa, &od, &oe, &ol,
                          &PyList_Type, &up))
        return -1;
    if (metric < NATIVE_COSINE || metric > NATIVE_IP || block < 1) {
        PyErr_SetString(native_InvalidArgumentError, "bad metric or block size");
        return -1;
    }
    if (get_buf(ov, &self->vecs, K_F32, 2, 0, "vecs") < 0)
        return -1;
    if (get_buf(oa, &self->adj0, K_I32, 2, 1, "adj0") < 0)
        goto fail1;
    if (get_buf(od, &self->deleted, K_U8, 1, 0, "deleted") < 0)
        goto fail2;
    if (get_buf(oe, &self->ext, K_I64, 1, 0, "ext") < 0)
        goto fail3;
    if (get_buf(ol, &self->levels, K_I8, 1, 0, "levels") < 0)
        goto fail4;
    Py_ssize_t cap = self->vecs.shape[0] - 1, dim = self->vecs.shape[1];
    Py_ssize_t m0 = self->adj0.shape[1];
    if (cap < 0 || dim < 1 || cap >= INT32_MAX || dim >= INT32_MAX ||
        self->adj0.shape[0] != cap + 1 || m0 < 2 || m0 % 2 || m0 > 65536 ||
        self->deleted.shape[0] < cap || self->ext.shape[0] < cap || self->levels.shape[0] < cap) {
        PyErr_SetString(native_InvalidArgumentError,
                        "HnswGraph arrays disagree: vecs (cap+1, dim), adj0 (cap+1, 2M), "
                        "deleted/ext/levels (>= cap)");
        goto fail5;
    }
    Py_ssize_t nl = PyList_GET_SIZE(up);
    if (nl > 127) {
        PyErr_SetString(native_InvalidArgumentError, "too many upper layers");
        goto fail5;
    }
    self->lrow = calloc((size_t)nl + 1, sizeof(Py_buffer));
    self->ladj = calloc((size_t)nl + 1, sizeof(Py_buffer));
    self->lcount = calloc((size_t)nl + 1, sizeof(int32_t));
    self->ladj_p = calloc((size_t)nl + 1, sizeof(int32_t *));
    self->lrow_p = calloc((size_t)nl + 1, sizeof(int32_t *));
    if (!self->lrow || !self->ladj || !self->lcount || !self->ladj_p || !self->lrow_p) {
        PyErr_NoMemory();
        goto fail5;
    }
    for (Py_ssize_t i = 0; i < nl; i++) {
        PyObject *t = PyList_GET_ITEM(up, i);
        PyObject *orow, *oadj;
        Py_ssize_t count;
        if (!PyTuple_Check(t) || !PyArg_ParseTuple(t, "OOn", &orow, &oadj, &count)) {
            PyErr_Clear();
            PyErr_SetString(native_InvalidArgumentError, "upper layers: (rowmap, rows, count)");
            goto fail5;
        }
        if (get_buf(orow, &self->lrow[i], K_I32, 1, 1, "upper-layer row map") < 0)
            goto fail5;
        if (get_buf(oadj, &self->ladj[i], K_I32, 2, 1, "upper-layer rows") < 0) {
            PyBuffer_Release(&self->lrow[i]);
            goto fail5;
        }
        self->nbuf_upper = (int)i + 1;
        if (self->lrow[i].shape[0] < cap + 1 || self->ladj[i].shape[1] != m0 / 2 || count < 0 ||
            count > self->ladj[i].shape[0]) {
            PyErr_SetString(native_InvalidArgumentError,
                            "upper layer arrays disagree with the layer-0 arrays");
            goto fail5;
        }
        self->lcount[i] = (int32_t)count;
        self->ladj_p[i] = self->ladj[i].buf;
        self->lrow_p[i] = self->lrow[i].buf;
    }
    self->cap = cap;
    hnsw_graph *g = &self->g;
    g->vecs = self->vecs.buf;
    g->adj0 = self->adj0.buf;
    g->deleted = self->deleted.buf;
    g->levels = self->levels.buf;
    g->ladj = self->ladj_p;
    g->lcount = self->lcount;
    g->lrow = self->lrow_p;
    g->n = 0;
    g->dim = (int32_t)dim;
    g->m0 = (int32_t)m0;
    g->m = (int32_t)(m0 / 2);
    g->nlevels = (int32_t)nl;
    g->metric = metric;
    g->locks = NULL;
    g->dirty = NULL;
    g->block = block;
    self->ready = 1;
    return 0;
fail5:
    for (int i = 0; i < self->nbuf_upper; i++) {
        PyBuffer_Release(&self->lrow[i]);
        PyBuffer_Release(&self->ladj[i]);
    }
    self->nbuf_upper = 0;
    PyBuffer_Release(&self->levels);
fail4:
    PyBuffer_Release(&self->ext);
fail3:
    PyBuffer_Release(&self->deleted);
fail2:
    PyBuffer_Release(&self->adj0);
fail1:
    PyBuffer_Release(&self->vecs);
    return -1;
}

static PyObject *graph_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    GraphObject *self = (GraphObject *)type->tp_alloc(type, 0);
    if (self)
        pthread_mutex_init(&self->pool_lock, NULL);
    return (PyObject *)self;
}

/* Scalars of a call: n nodes (<= capacity), entry point and top layer (checked by the
 * kernels against n and the layers), live count. */
static int fast_ssize(PyObject *const *args, Py_ssize_t i, Py_ssize_t *out) {
    *out = PyLong_AsSsize_t(args[i]);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int check_ready(GraphObject *self, Py_ssize_t n) {
    if (!self->ready) {
        PyErr_SetString(native_InvalidArgumentError, "HnswGraph is not initialised");
        return -1;
    }
    if (n < 0 || n > self->cap) {
        PyErr_Format(native_InvalidArgumentError, "n=%zd outside the arrays' capacity %zd", n,
                     self->cap);
        return -1;
    }
    return 0;
}

/* search(q, raw, n, entry, max_level, live, k, ef, exact) -> [(vec_id, distance), ...]
 * raw=1: q is the caller's float32/float64 vector, validated and prepared here (None when
 * it needs llmdsdb.hnsw's careful path: wrong type, non-finite, zero, too large). */
static PyObject *graph_search(GraphObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t raw, n, entry, maxl, live, k, ef, exact;
    if (nargs != 9) {
        PyErr_SetString(native_InvalidArgumentError, "search takes 9 arguments");
        return NULL;
    }
    if (fast_ssize(args, 1, &raw) || fast_ssize(args, 2, &n) || fast_ssize(args, 3, &entry) ||
        fast_ssize(args, 4, &maxl) || fast_ssize(args, 5, &live) || fast_ssize(args, 6, &k) ||
        fast_ssize(args, 7, &ef) || fast_ssize(args, 8, &exact))
        return NULL;
    if (check_ready(self, n) < 0)
        return NULL;
    if (k < 1 || ef < 1 || live < 0 || live > n || entry < -1 || entry > INT32_MAX ||
        maxl < -1 || maxl > INT32_MAX) {
        PyErr_SetString(native_InvalidArgumentError, "bad k, ef, live, entry or max_level");
        return NULL;
    }
    Py_buffer qv;
    int is64 = 0;
    size_t dim = (size_t)self->g.dim;
    if (PyObject_GetBuffer(args[0], &qv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        if (raw) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return NULL;
    }
    if (qv.ndim != 1 || (size_t)qv.shape[0] != dim ||
        !(fmt_ok(qv.format, K_F32, qv.itemsize) ||
          (raw && (is64 = fmt_ok(qv.format, K_F64, qv.itemsize))))) {
        PyBuffer_Release(&qv);
        if (raw)
            Py_RETURN_NONE;
        PyErr_Format(native_DimensionError, "query must be a float32 vector of length %zu", dim);
        return NULL;
    }
    if (native_check_aligned(&qv, "query") < 0) {
        PyBuffer_Release(&qv);
        if (raw) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return NULL;
    }
    size_t kk = (size_t)k;
    if (kk > (size_t)n)
        kk = n ? (size_t)n : 1;
    native_pair *out = malloc(kk * sizeof(native_pair));
    hnsw_ctx *c = ctx_get(self);
    if (!out || !c) {
        PyBuffer_Release(&qv);
        free(out);
        ctx_put(self, c);
        return PyErr_NoMemory();
    }
    hnsw_graph g = self->g;
    g.n = (int32_t)n;
    size_t nout = 0;
    int st = NATIVE_OK, careful = 0;
    Py_BEGIN_ALLOW_THREADS
    const float *q = qv.buf;
    if (raw) {
        for (size_t i = 0; i < dim; i++)
            c->qd[i] = is64 ? ((const double *)qv.buf)[i] : (double)((const float *)qv.buf)[i];
        double nrm;
        double lim = sqrt((double)3.4028234663852886e38) / 4;
        careful = native_prep_row(c->qd, dim, g.metric, lim * lim, c->q, &nrm);
        q = c->q;
    }
    if (!careful)
        st = hnsw_query(&g, c, q, (int32_t)entry, (int32_t)maxl, (size_t)ef, kk, (size_t)live,
                        (int)exact, out, &nout);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&qv);
    ctx_put(self, c);
    if (careful) {
        free(out);
        Py_RETURN_NONE;
    }
    if (st != NATIVE_OK) {
        free(out);
        return native_raise(st, "hnsw search: corrupt graph (neighbour id, row map or entry "
                                "point out of range)");
    }
    PyObject *res = PyList_New((Py_ssize_t)nout);
    const int64_t *ext = self->ext.buf;
    for (size_t i = 0; res && i < nout; i++) {
        PyObject *t = Py_BuildValue("(Ld)", (long long)ext[out[i].id], (double)out[i].d);
        if (!t) {
            Py_CLEAR(res);
            break;
        }
        PyList_SET_ITEM(res, (Py_ssize_t)i, t);
    }
    free(out);
    return res;
}

/* ---- threads ------------------------------------------------------------------------- */

typedef struct {
    GraphObject *self;
    hnsw_graph *g;
    size_t next, stop;
    int status;
    /* search_many */
    const float *Q;
    size_t k, ef, live;
    int32_t entry, maxl;
    int exact;
    int64_t *out_ids;
    float *out_d;
    const hnsw_allow *allow; /* search_allowed: the allowed set, else NULL */
    hnsw_filter_opts opts;
    int64_t *out_info; /* search_allowed: (nq, 2) what answered (HNSW_RAN_*), distances; or NULL */
    const int32_t *nodes; /* the exact filtered path: allowed live nodes, resolved once */
    size_t nnodes;
    /* insert */
    size_t efc;
    hnsw_top *top;
} job_t;

static void *search_worker(void *arg) {
    job_t *j = arg;
    hnsw_ctx *c = ctx_get(j->self);
    native_pair *out = malloc((j->k ? j->k : 1) * sizeof(native_pair));
    const int64_t *ext = j->self->ext.buf;
    size_t dim = (size_t)j->g->dim;
    if (!c || !out) {
        __atomic_store_n(&j->status, NATIVE_ENOMEM, __ATOMIC_RELAXED);
    } else {
        for (;;) {
            size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
            if (i >= j->stop || __atomic_load_n(&j->status, __ATOMIC_RELAXED) != NATIVE_OK)
                break;
            size_t nout = 0, ndist = 0;
            int ran = HNSW_RAN_EXACT;
            int st = j->nodes
                         ? hnsw_scan_nodes(j->g, c, j->Q + i * dim, j->nodes, j->nnodes, j->k,
                                           out, &nout)
                     : j->allow
                         ? hnsw_query_allowed(j->g, c, j->Q + i * dim, j->entry, j->maxl, j->ef,
                                              j->k, j->allow, j->exact, &j->opts, out, &nout,
                                              &ran, &ndist)
                         : hnsw_query(j->g, c, j->Q + i * dim, j->entry, j->maxl, j->ef, j->k,
                                      j->live, j->exact, out, &nout);
            if (j->nodes)
                ndist = j->nnodes;
            if (j->out_info) {
                j->out_info[2 * i] = ran;
                j->out_info[2 * i + 1] = (int64_t)ndist;
            }
            if (st != NATIVE_OK) {
                __atomic_store_n(&j->status, st, __ATOMIC_RELAXED);
                break;
            }
            for (size_t t = 0; t < j->k; t++) {
                j->out_ids[i * j->k + t] = t < nout ? ext[out[t].id] : -1;
                j->out_d[i * j->k + t] = t < nout ? out[t].d : INFINITY;
            }
        }
    }
    free(out);
    ctx_put(j->self, c);
    return NULL;
}

static void *insert_worker(void *arg) {
    job_t *j = arg;
    hnsw_ctx *c = ctx_get(j->self);
    if (!c) {
        __atomic_store_n(&j->status, NATIVE_ENOMEM, __ATOMIC_RELAXED);
        return NULL;
    }
    for (;;) {
        size_t x = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (x >= j->stop || __atomic_load_n(&j->status, __ATOMIC_RELAXED) != NATIVE_OK)
            break;
        int st = hnsw_insert(j->g, c, (int32_t)x, j->efc, j->top);
        if (st != NATIVE_OK) {
            __atomic_store_n(&j->status, st, __ATOMIC_RELAXED);
            break;
        }
    }
    ctx_put(j->self, c);
    return NULL;
}

/* Run fn on `threads` threads (the caller's thread is one of them); GIL released. */
static void run_threads(void *(*fn)(void *), job_t *j, Py_ssize_t threads) {
    pthread_t tid[64];
    Py_ssize_t started = 0;
    if (threads > 64)
        threads = 64;
    for (Py_ssize_t t = 1; t < threads; t++) {
        if (pthread_create(&tid[started], NULL, fn, j) != 0)
            break; /* fewer threads: the work is shared by those running */
        started++;
    }
    fn(j);
    for (Py_ssize_t t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
}

/* search_many(Q, n, entry, max_level, live, k, ef, exact, threads, out_ids, out_d):
 * Q float32 (nq, dim) prepared; out_ids int64 (nq, k), out_d float32 (nq, k), padded
 * with -1 / inf. */
static PyObject *graph_search_many(GraphObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t n, entry, maxl, live, k, ef, exact, threads;
    if (nargs != 11) {
        PyErr_SetString(native_InvalidArgumentError, "search_many takes 11 arguments");
        return NULL;
    }
    if (fast_ssize(args, 1, &n) || fast_ssize(args, 2, &entry) || fast_ssize(args, 3, &maxl) ||
        fast_ssize(args, 4, &live) || fast_ssize(args, 5, &k) || fast_ssize(args, 6, &ef) ||
        fast_ssize(args, 7, &exact) || fast_ssize(args, 8, &threads))
        return NULL;
    if (check_ready(self, n) < 0)
        return NULL;
    if (k < 1 || ef < 1 || live < 0 || live > n || threads < 1 || entry < -1 ||
        entry > INT32_MAX || maxl < -1 || maxl > INT32_MAX) {
        PyErr_SetString(native_InvalidArgumentError, "bad k, ef, live, threads, entry or max_level");
        return NULL;
    }
    Py_buffer qv, iv, dv;
    if (get_buf(args[0], &qv, K_F32, 2, 0, "queries") < 0)
        return NULL;
    if (get_buf(args[9], &iv, K_I64, 2, 1, "out_ids") < 0) {
        PyBuffer_Release(&qv);
        return NULL;
    }
    if (get_buf(args[10], &dv, K_F32, 2, 1, "out_d") < 0) {
        PyBuffer_Release(&qv);
        PyBuffer_Release(&iv);
        return NULL;
    }
    Py_ssize_t nq = qv.shape[0];
    if (qv.shape[1] != self->g.dim || iv.shape[0] != nq || iv.shape[1] != k ||
        dv.shape[0] != nq || dv.shape[1] != k) {
        PyBuffer_Release(&qv);
        PyBuffer_Release(&iv);
        PyBuffer_Release(&dv);
        PyErr_SetString(native_DimensionError,
                        "search_many: queries (nq, dim), out_ids / out_d (nq, k) expected");
        return NULL;
    }
    hnsw_graph g = self->g;
    g.n = (int32_t)n;
    job_t j = {0};
    j.self = self;
    j.g = &g;
    j.stop = (size_t)nq;
    j.Q = qv.buf;
    j.k = (size_t)k;
    j.ef = (size_t)ef;
    j.live = (size_t)live;
    j.entry = (int32_t)entry;
    j.maxl = (int32_t)maxl;
    j.exact = (int)exact;
    j.out_ids = iv.buf;
    j.out_d = dv.buf;
    if (threads > nq)
        threads = nq ? nq : 1;
    Py_BEGIN_ALLOW_THREADS
    run_threads(search_worker, &j, threads);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&qv);
    PyBuffer_Release(&iv);
    PyBuffer_Release(&dv);
    if (j.status != NATIVE_OK)
        return native_raise(j.status, "hnsw search: corrupt graph (neighbour id, row map or "
                                      "entry point out of range)");
    Py_RETURN_NONE;
}

/* search_allowed(Q, n, entry, max_level, k, ef, exact, mode, threads, bits, ids, keys,
 * knodes, out_ids, out_d[, budget, verify, out_info]): search_many restricted to an
 * allowed set (hnsw_query_allowed). bits: uint8 (any length) bitmap over vec_ids; ids:
 * int64 strictly increasing vec_ids; keys / knodes: int64 / int32 of one length, the label
 * map (vec_id -> node, keys increasing; a map out of step with the graph is an
 * InvalidArgumentError, never a read out of bounds). Q float32 (nq, dim) prepared; outs
 * (nq, k) padded with -1 / inf. budget, verify: hnsw_filter_opts (default 0: none);
 * out_info: int64 (nq, 2), per query what answered (HNSW_RAN_*) and the distances
 * computed. */
static PyObject *graph_search_allowed(GraphObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t n, entry, maxl, k, ef, exact, mode, threads, budget = 0, verify = 0;
    if (nargs != 15 && nargs != 18) {
        PyErr_SetString(native_InvalidArgumentError, "search_allowed takes 15 or 18 arguments");
        return NULL;
    }
    if (fast_ssize(args, 1, &n) || fast_ssize(args, 2, &entry) || fast_ssize(args, 3, &maxl) ||
        fast_ssize(args, 4, &k) || fast_ssize(args, 5, &ef) || fast_ssize(args, 6, &exact) ||
        fast_ssize(args, 7, &mode) || fast_ssize(args, 8, &threads) ||
        (nargs == 18 && (fast_ssize(args, 15, &budget) || fast_ssize(args, 16, &verify))))
        return NULL;
    if (check_ready(self, n) < 0)
        return NULL;
    if (k < 1 || ef < 1 || threads < 1 || entry < -1 || entry > INT32_MAX || maxl < -1 ||
        maxl > INT32_MAX || (mode != HNSW_FILTER_TRAVERSE && mode != HNSW_FILTER_TWOHOP) ||
        budget < 0 || verify < 0) {
        PyErr_SetString(native_InvalidArgumentError,
                        "bad k, ef, threads, entry, max_level, filter mode, budget or verify");
        return NULL;
    }
    Py_buffer b[8];
    static const int kinds[8] = {K_F32, K_U8, K_I64, K_I64, K_I32, K_I64, K_F32, K_I64};
    static const int dims[8] = {2, 1, 1, 1, 1, 2, 2, 2};
    static const int slot[8] = {0, 9, 10, 11, 12, 13, 14, 17};
    static const char *what[8] = {"queries", "allow bitmap", "allowed ids", "label keys",
                                  "label nodes", "out_ids", "out_d", "out_info"};
    int nb = nargs == 18 && args[17] != Py_None ? 8 : 7;
    int got = 0;
    for (; got < nb; got++)
        if (get_buf(args[slot[got]], &b[got], kinds[got], dims[got], got >= 5, what[got]) < 0)
            break;
    PyObject *ret = NULL;
    if (got < nb)
        goto done;
    Py_ssize_t nq = b[0].shape[0], nids = b[2].shape[0];
    if (b[0].shape[1] != self->g.dim || b[5].shape[0] != nq || b[5].shape[1] != k ||
        b[6].shape[0] != nq || b[6].shape[1] != k ||
        (nb == 8 && (b[7].shape[0] != nq || b[7].shape[1] != 2))) {
        PyErr_SetString(native_DimensionError,
                        "search_allowed: queries (nq, dim), out_ids / out_d (nq, k), "
                        "out_info (nq, 2) expected");
        goto done;
    }
    if (b[3].shape[0] != b[4].shape[0]) {
        PyErr_SetString(native_InvalidArgumentError, "label keys and nodes differ in length");
        goto done;
    }
    const int64_t *ids = b[2].buf;
    for (Py_ssize_t i = 1; i < nids; i++)
        if (ids[i] <= ids[i - 1]) {
            PyErr_SetString(native_InvalidArgumentError,
                            "allowed ids must be strictly increasing");
            goto done;
        }
    hnsw_allow a = {b[1].buf, (size_t)b[1].shape[0], ids, (size_t)nids, b[3].buf, b[4].buf,
                    (size_t)b[3].shape[0], self->ext.buf, NULL};
    hnsw_graph g = self->g;
    g.n = (int32_t)n;
    job_t j = {0};
    j.self = self;
    j.g = &g;
    j.stop = (size_t)nq;
    j.Q = b[0].buf;
    j.k = (size_t)k;
    j.ef = (size_t)ef;
    j.entry = (int32_t)entry;
    j.maxl = (int32_t)maxl;
    j.exact = (int)exact;
    j.out_ids = b[5].buf;
    j.out_d = b[6].buf;
    j.allow = &a;
    j.opts = (hnsw_filter_opts){(int)mode, (size_t)budget, (size_t)verify};
    j.out_info = nb == 8 ? b[7].buf : NULL;
    if (threads > nq)
        threads = nq ? nq : 1;
    int32_t *nodes = NULL;
    uint8_t *nodebits = NULL;
    /* one lookup of the allowed ids serves every query: the nodes of an exact scan, or
     * the node bitmap of a two-hop walk (hnsw_allow_nodes) */
    int scan = exact && nq > 1, twohop = !exact && mode == HNSW_FILTER_TWOHOP;
    if ((scan || twohop) && nq && nids && n > 0) {
        nodes = malloc((size_t)nids * sizeof(int32_t));
        nodebits = twohop ? calloc(((size_t)n + 7) / 8, 1) : NULL;
        if (!nodes || (twohop && !nodebits)) {
            free(nodes);
            free(nodebits);
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    if (nodebits) {
        j.status = hnsw_allow_nodes(&g, &a, nodebits, nodes);
        a.nodebits = nodebits;
    } else if (nodes) {
        j.status = hnsw_resolve_allowed(&g, &a, nodes, &j.nnodes);
        j.nodes = nodes;
    }
    if (j.status == NATIVE_OK)
        run_threads(search_worker, &j, threads);
    Py_END_ALLOW_THREADS
    free(nodes);
    free(nodebits);
    if (j.status != NATIVE_OK)
        native_raise(j.status, j.status == NATIVE_EINVAL
                                   ? "hnsw search: the label map is out of step with the graph"
                                   : "hnsw search: corrupt graph (neighbour id, row map or "
                                     "entry point out of range)");
    else
        ret = Py_NewRef(Py_None);
done:
    while (got-- > 0)
        PyBuffer_Release(&b[got]);
    return ret;
}

/* insert(start, stop, entry, max_level, efc, threads, dirty) -> (entry, max_level):
 * link nodes start..stop-1 (stored, rows empty; n = stop) in that order (threads = 1) or in
 * parallel; dirty (uint8, one flag per block of nodes) gets the layer-0 rows changed. */
static PyObject *graph_insert(GraphObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t start, stop, entry, maxl, efc, threads;
    if (nargs != 7) {
        PyErr_SetString(native_InvalidArgumentError, "insert takes 7 arguments");
        return NULL;
    }
    if (fast_ssize(args, 0, &start) || fast_ssize(args, 1, &stop) ||
        fast_ssize(args, 2, &entry) || fast_ssize(args, 3, &maxl) || fast_ssize(args, 4, &efc) ||
        fast_ssize(args, 5, &threads))
        return NULL;
    if (check_ready(self, stop) < 0)
        return NULL;
    if (start < 0 || start > stop || efc < 1 || threads < 1 || entry < -1 || entry >= stop ||
        maxl < -1 || maxl > self->g.nlevels || (entry >= 0) != (maxl >= 0)) {
        PyErr_SetString(native_InvalidArgumentError,
                        "bad start, stop, ef_construction, threads, entry or max_level");
        return NULL;
    }
    Py_buffer dv;
    if (get_buf(args[6], &dv, K_U8, 1, 1, "dirty") < 0)
        return NULL;
    if (dv.shape[0] < (stop + self->g.block - 1) / self->g.block) {
        PyBuffer_Release(&dv);
        PyErr_SetString(native_InvalidArgumentError, "dirty has fewer flags than blocks");
        return NULL;
    }
    hnsw_graph g = self->g;
    g.n = (int32_t)stop;
    g.dirty = dv.buf;
    pthread_mutex_t glock;
    hnsw_top top = {(int32_t)entry, (int32_t)maxl, NULL};
    if (threads > stop - start)
        threads = stop - start > 0 ? stop - start : 1;
    if (threads > 1) {
        g.locks = calloc((size_t)stop + 1, 1);
        if (!g.locks) {
            PyBuffer_Release(&dv);
            return PyErr_NoMemory();
        }
        pthread_mutex_init(&glock, NULL);
        top.lock = &glock;
    }
    job_t j = {0};
    j.self = self;
    j.g = &g;
    j.next = (size_t)start;
    j.stop = (size_t)stop;
    j.efc = (size_t)efc;
    j.top = &top;
    Py_BEGIN_ALLOW_THREADS
    run_threads(insert_worker, &j, threads);
    Py_END_ALLOW_THREADS
    if (threads > 1) {
        pthread_mutex_destroy(&glock);
        free(g.locks);
    }
    PyBuffer_Release(&dv);
    if (j.status != NATIVE_OK)
        return native_raise(j.status, "hnsw insert: corrupt graph (neighbour id, row map, "
                                      "level or entry point out of range)");
    return Py_BuildValue("(ii)", (int)top.entry, (int)top.max_level);
}

/* set_counts(counts): the rows in use of each upper layer (a list of ints, one per layer,
 * each within its array), after the caller registered new nodes in arrays it kept. */
static PyObject *graph_set_counts(GraphObject *self, PyObject *arg) {
    if (!self->ready || !PyList_Check(arg) || PyList_GET_SIZE(arg) != self->g.nlevels) {
        PyErr_SetString(native_InvalidArgumentError, "set_counts: one count per upper layer");
        return NULL;
    }
    int32_t tmp[128];
    for (int i = 0; i < self->g.nlevels; i++) {
        Py_ssize_t c = PyLong_AsSsize_t(PyList_GET_ITEM(arg, i));
        if (c == -1 && PyErr_Occurred())
            return NULL;
        if (c < 0 || c > self->ladj[i].shape[0]) {
            PyErr_SetString(native_InvalidArgumentError, "set_counts: count beyond the layer's rows");
            return NULL;
        }
        tmp[i] = (int32_t)c;
    }
    memcpy(self->lcount, tmp, (size_t)self->g.nlevels * sizeof(int32_t));
    Py_RETURN_NONE;
}

/* _set_epoch(e): set the visited-stamp epoch of every pooled scratch (tests of the wrap). */
static PyObject *graph_set_epoch(GraphObject *self, PyObject *arg) {
    long e = PyLong_AsLong(arg);
    if (e == -1 && PyErr_Occurred())
        return NULL;
    if (!self->ready || e < 0 || e > 65535) {
        PyErr_SetString(native_InvalidArgumentError, "epoch must be in 0..65535");
        return NULL;
    }
    hnsw_ctx *c = ctx_get(self);
    if (!c)
        return PyErr_NoMemory();
    ctx_put(self, c);
    pthread_mutex_lock(&self->pool_lock);
    for (hnsw_ctx *p = self->pool; p; p = p->next)
        p->epoch = (uint16_t)e;
    pthread_mutex_unlock(&self->pool_lock);
    Py_RETURN_NONE;
}

static PyObject *graph_epochs(GraphObject *self, PyObject *noargs) {
    PyObject *l = PyList_New(0);
    pthread_mutex_lock(&self->pool_lock);
    for (hnsw_ctx *p = self->pool; l && p; p = p->next) {
        PyObject *v = PyLong_FromLong(p->epoch);
        if (!v || PyList_Append(l, v) < 0)
            Py_CLEAR(l);
        Py_XDECREF(v);
    }
    pthread_mutex_unlock(&self->pool_lock);
    return l;
}

static PyObject *graph_scratch_bytes(GraphObject *self, PyObject *noargs) {
    size_t total = 0;
    pthread_mutex_lock(&self->pool_lock);
    for (hnsw_ctx *p = self->pool; p; p = p->next)
        total += p->mark_n * sizeof(uint16_t) +
                 (p->cand_cap + p->res_cap + p->tmp_cap) * sizeof(native_pair);
    pthread_mutex_unlock(&self->pool_lock);
    return PyLong_FromSize_t(total);
}

static PyMethodDef graph_methods[] = {
    {"search", (PyCFunction)(void (*)(void))graph_search, METH_FASTCALL,
     "search(q, raw, n, entry, max_level, live, k, ef, exact) -> list of (vec_id, distance)"},
    {"search_many", (PyCFunction)(void (*)(void))graph_search_many, METH_FASTCALL,
     "search_many(Q, n, entry, max_level, live, k, ef, exact, threads, out_ids, out_d)"},
    {"search_allowed", (PyCFunction)(void (*)(void))graph_search_allowed, METH_FASTCALL,
     "search_allowed(Q, n, entry, max_level, k, ef, exact, mode, threads, bits, ids, keys, "
     "knodes, out_ids, out_d)"},
    {"insert", (PyCFunction)(void (*)(void))graph_insert, METH_FASTCALL,
     "insert(start, stop, entry, max_level, efc, threads, dirty) -> (entry, max_level)"},
    {"set_counts", (PyCFunction)graph_set_counts, METH_O,
     "set_counts(counts): rows in use of each upper layer"},
    {"_set_epoch", (PyCFunction)graph_set_epoch, METH_O, "set every scratch's visited epoch"},
    {"_epochs", (PyCFunction)graph_epochs, METH_NOARGS, "the pooled scratches' epochs"},
    {"scratch_bytes", (PyCFunction)graph_scratch_bytes, METH_NOARGS,
     "bytes of pooled search scratch (visited stamps and heaps)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GraphType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "llmdsdb._native._core.HnswGraph",
    .tp_basicsize = sizeof(GraphObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "HnswGraph(metric, block, vecs, adj0, deleted, ext, levels, upper): the HNSW "
              "kernels over llmdsdb.hnsw's arrays (upper: list of (rowmap, rows, count)).",
    .tp_new = graph_new,
    .tp_init = (initproc)graph_init,
    .tp_dealloc = (destructor)graph_dealloc,
    .tp_methods = graph_methods,
};

/* ---- module functions ---------------------------------------------------------------- */

/* HnswGraph(...): the type is made ready on first use (module.c adds functions only). */
static PyObject *py_hnsw_graph(PyObject *mod, PyObject *args) {
    if (!(GraphType.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&GraphType) < 0)
        return NULL;
    return PyObject_CallObject((PyObject *)&GraphType, args);
}

/* prep_rows(X, metric, limit_sq, out, norms, bad) -> number of rows flagged in bad (uint8
 * (n,)) for the caller's careful path (non-finite, zero or tiny, too large); every other
 * row is prepared into out (float32 (n, dim)) and norms (float64 (n,)). X float64 (n, dim). */
static PyObject *py_prep_rows(PyObject *mod, PyObject *args) {
    PyObject *ox, *oo, *on, *ob;
    int metric;
    double limit_sq;
    if (!PyArg_ParseTuple(args, "OidOOO", &ox, &metric, &limit_sq, &oo, &on, &ob))
        return NULL;
    Py_buffer x, o, nv, bv;
    if (get_buf(ox, &x, K_F64, 2, 0, "X") < 0)
        return NULL;
    if (get_buf(oo, &o, K_F32, 2, 1, "out") < 0)
        goto f1;
    if (get_buf(on, &nv, K_F64, 1, 1, "norms") < 0)
        goto f2;
    if (get_buf(ob, &bv, K_U8, 1, 1, "bad") < 0)
        goto f3;
    Py_ssize_t n = x.shape[0], dim = x.shape[1], nbad = 0;
    if (o.shape[0] != n || o.shape[1] != dim || nv.shape[0] != n || bv.shape[0] != n) {
        PyErr_SetString(native_DimensionError, "prep_rows: out (n, dim), norms and bad (n,) expected");
        goto f4;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int b = native_prep_row((const double *)x.buf + i * dim, (size_t)dim, metric, limit_sq,
                                (float *)o.buf + i * dim, (double *)nv.buf + i);
        ((uint8_t *)bv.buf)[i] = (uint8_t)b;
        nbad += b;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&bv);
    PyBuffer_Release(&nv);
    PyBuffer_Release(&o);
    PyBuffer_Release(&x);
    return PyLong_FromSsize_t(nbad);
f4:
    PyBuffer_Release(&bv);
f3:
    PyBuffer_Release(&nv);
f2:
    PyBuffer_Release(&o);
f1:
    PyBuffer_Release(&x);
    return NULL;
}

/* dist_rows(A, B, metric, isa, out): out[i] = distance(A[i], B[i]) by one implementation
 * ("avx512", "avx2", "scalar" or "auto"); False when this CPU does not run it. */
static PyObject *py_dist_rows(PyObject *mod, PyObject *args) {
    PyObject *oa, *ob, *oo;
    int metric;
    const char *isa;
    if (!PyArg_ParseTuple(args, "OOisO", &oa, &ob, &metric, &isa, &oo))
        return NULL;
    native_reduce_fn dot = native_dot, l2 = native_l2sq;
    if (strcmp(isa, "auto") != 0 && native_reduce_for(isa, &dot, &l2) < 0)
        Py_RETURN_FALSE;
    Py_buffer a, b, o;
    if (get_buf(oa, &a, K_F32, 2, 0, "A") < 0)
        return NULL;
    if (get_buf(ob, &b, K_F32, 2, 0, "B") < 0) {
        PyBuffer_Release(&a);
        return NULL;
    }
    if (get_buf(oo, &o, K_F32, 1, 1, "out") < 0) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        return NULL;
    }
    Py_ssize_t n = a.shape[0], dim = a.shape[1];
    if (b.shape[0] != n || b.shape[1] != dim || o.shape[0] != n) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        PyBuffer_Release(&o);
        PyErr_SetString(native_DimensionError, "dist_rows: A, B (n, dim) and out (n,) expected");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const float *x = (const float *)a.buf + i * dim, *y = (const float *)b.buf + i * dim;
        float d;
        if (metric == NATIVE_L2)
            d = l2(x, y, (size_t)dim);
        else {
            d = dot(x, y, (size_t)dim);
            d = metric == NATIVE_COSINE ? 1.0f - d : -d;
        }
        ((float *)o.buf)[i] = d;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&o);
    Py_RETURN_TRUE;
}

/* exact_topk(V, Q, metric, skip, out_ids, out_d) -> None: for each row of Q the k nearest
 * rows of V (k = out_ids.shape[1]), skipping rows with skip[i] != 0 (skip: uint8/bool (n,)
 * or None); padded with -1 / inf. */
static PyObject *py_exact_topk(PyObject *mod, PyObject *args) {
    PyObject *ov, *oq, *os, *oi, *od;
    int metric;
    if (!PyArg_ParseTuple(args, "OOiOOO", &ov, &oq, &metric, &os, &oi, &od))
        return NULL;
    if (metric < NATIVE_COSINE || metric > NATIVE_IP) {
        PyErr_SetString(native_InvalidArgumentError, "bad metric");
        return NULL;
    }
    Py_buffer v, q, s = {0}, iv, dv;
    int has_skip = os != Py_None;
    if (get_buf(ov, &v, K_F32, 2, 0, "V") < 0)
        return NULL;
    if (get_buf(oq, &q, K_F32, 2, 0, "Q") < 0)
        goto f1;
    if (has_skip && get_buf(os, &s, K_U8, 1, 0, "skip") < 0)
        goto f2;
    if (get_buf(oi, &iv, K_I64, 2, 1, "out_ids") < 0)
        goto f3;
    if (get_buf(od, &dv, K_F32, 2, 1, "out_d") < 0)
        goto f4;
    Py_ssize_t n = v.shape[0], dim = v.shape[1], nq = q.shape[0], k = iv.shape[1];
    if (q.shape[1] != dim || (has_skip && s.shape[0] != n) || iv.shape[0] != nq ||
        dv.shape[0] != nq || dv.shape[1] != k || n > INT32_MAX) {
        PyErr_SetString(native_DimensionError,
                        "exact_topk: V (n, dim), Q (nq, dim), skip (n,), outs (nq, k) expected");
        goto f5;
    }
    native_pair *heap = malloc(((size_t)k + 1) * sizeof(native_pair));
    native_pair *out = malloc(((size_t)k + 1) * sizeof(native_pair));
    if (!heap || !out) {
        free(heap);
        free(out);
        PyErr_NoMemory();
        goto f5;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nq; i++) {
        size_t m = native_topk_scan(v.buf, (size_t)n, (size_t)dim, (const float *)q.buf + i * dim,
                                    metric, has_skip ? s.buf : NULL, (size_t)k, heap, out);
        for (Py_ssize_t t = 0; t < k; t++) {
            ((int64_t *)iv.buf)[i * k + t] = (size_t)t < m ? out[t].id : -1;
            ((float *)dv.buf)[i * k + t] = (size_t)t < m ? out[t].d : INFINITY;
        }
    }
    Py_END_ALLOW_THREADS
    free(heap);
    free(out);
    PyBuffer_Release(&dv);
    PyBuffer_Release(&iv);
    if (has_skip)
        PyBuffer_Release(&s);
    PyBuffer_Release(&q);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
f5:
    PyBuffer_Release(&dv);
f4:
    PyBuffer_Release(&iv);
f3:
    if (has_skip)
        PyBuffer_Release(&s);
f2:
    PyBuffer_Release(&q);
f1:
    PyBuffer_Release(&v);
    return NULL;
}

static PyObject *py_dist_isa(PyObject *mod, PyObject *noargs) {
    return PyUnicode_FromString(native_dist_isa());
}

PyMethodDef native_hnsw_methods[] = {
    {"HnswGraph", py_hnsw_graph, METH_VARARGS,
     "HnswGraph(metric, block, vecs, adj0, deleted, ext, levels, upper) -> the HNSW kernels "
     "over llmdsdb.hnsw's arrays."},
    {"prep_rows", py_prep_rows, METH_VARARGS,
     "prep_rows(X, metric, limit_sq, out, norms, bad) -> rows left to the careful path"},
    {"dist_rows", py_dist_rows, METH_VARARGS,
     "dist_rows(A, B, metric, isa, out) -> False when this CPU does not run isa"},
    {"exact_topk", py_exact_topk, METH_VARARGS,
     "exact_topk(V, Q, metric, skip, out_ids, out_d): exact k nearest rows of V per query"},
    {"dist_isa", py_dist_isa, METH_NOARGS,
     "dist_isa() -> the instruction set the distance kernels run (avx512, avx2, scalar)"},
    {NULL, NULL, 0, NULL},
};
