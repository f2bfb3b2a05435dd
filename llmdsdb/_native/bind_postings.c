/*
 * llmdsdb/_native/bind_postings.c -- CPython bindings of postings.c and bm25.c.
 *
 * Every buffer is checked here (type, item size, contiguity, lengths) before a kernel sees
 * it; the kernels then run with the GIL released and check the data itself. Outputs are
 * new bytearray/bytes objects that the Python side views with numpy.frombuffer.
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

static PyObject *FormatVersionError = NULL;

static PyObject *raise_status(int st, const char *what, const char *why) {
    if (st == NATIVE_EVERSION) {
        if (!FormatVersionError) {
            PyObject *mod = PyImport_ImportModule("llmdsdb.errors");
            if (!mod)
                return NULL;
            FormatVersionError = PyObject_GetAttrString(mod, "FormatVersionError");
            Py_DECREF(mod);
            if (!FormatVersionError)
                return NULL;
        }
        PyErr_Format(FormatVersionError, "%s version is not supported", what);
        return NULL;
    }
    if (st == NATIVE_ECORRUPT) {
        PyErr_Format(native_CorruptionError, "%s: %s", what, why ? why : "corrupt data");
        return NULL;
    }
    return native_raise(st, what);
}

/* kind: 'b' bytes-like (itemsize 1), 'i' signed integer, 'f' float; itemsize as given. */
static int get_buf(PyObject *obj, Py_buffer *v, char kind, Py_ssize_t itemsize, int writable,
                   const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(native_InvalidArgumentError, "%s must be a contiguous%s buffer", what,
                     writable ? " writable" : "");
        return -1;
    }
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int ok = v->itemsize == itemsize && f[1] == '\0';
    if (ok) {
        if (kind == 'b')
            ok = strchr("Bbc", *f) != NULL;
        else if (kind == 'i')
            ok = strchr("bhilq", *f) != NULL;
        else
            ok = *f == 'd';
    }
    if (!ok) {
        PyErr_Format(native_InvalidArgumentError, "%s has the wrong dtype (format %s)", what,
                     v->format ? v->format : "B");
        PyBuffer_Release(v);
        return -1;
    }
    if (native_check_aligned(v, what) < 0) {
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static PyObject *new_bytearray(Py_ssize_t n, char **data) {
    PyObject *b = PyByteArray_FromStringAndSize(NULL, n > 0 ? n : 0);
    if (b)
        *data = PyByteArray_AS_STRING(b);
    return b;
}

/* ---- decoding ----------------------------------------------------------------------------- */

static PyObject *py_decode(PyObject *self, PyObject *args) {
    PyObject *arg;
    const char *isa = "auto";
    if (!PyArg_ParseTuple(args, "O|s", &arg, &isa))
        return NULL;
    int wide = strcmp(isa, "auto") == 0 ? -1 : strcmp(isa, "avx2") == 0 ? 1
             : strcmp(isa, "scalar") == 0 ? 0 : -2;
    if (wide == -2) {
        PyErr_Format(PyExc_ValueError, "isa must be 'auto', 'avx2' or 'scalar', not %R",
                     PyTuple_GET_ITEM(args, 1));
        return NULL;
    }
    Py_buffer v;
    if (get_buf(arg, &v, 'b', 1, 0, "postings block") < 0)
        return NULL;
    native_block_hdr h;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = native_postings_header(v.buf, (size_t)v.len, 1, &h);
    Py_END_ALLOW_THREADS
    if (st != NATIVE_OK) {
        PyBuffer_Release(&v);
        return raise_status(st, "postings block", h.why);
    }
    char *dp, *tp;
    PyObject *docs = new_bytearray(4 * (Py_ssize_t)h.n, &dp);
    PyObject *tfs = docs ? new_bytearray(4 * (Py_ssize_t)h.n, &tp) : NULL;
    if (!tfs) {
        Py_XDECREF(docs);
        PyBuffer_Release(&v);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = wide < 0 ? native_postings_unpack(&h, (int32_t *)dp, (int32_t *)tp)
                  : native_postings_unpack_as(&h, (int32_t *)dp, (int32_t *)tp, wide);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    if (st == NATIVE_EINVAL) { /* only from an implementation this CPU does not run */
        Py_DECREF(docs);
        Py_DECREF(tfs);
        Py_RETURN_NONE;
    }
    if (st != NATIVE_OK) {
        Py_DECREF(docs);
        Py_DECREF(tfs);
        return raise_status(st, "postings block", h.why);
    }
    return Py_BuildValue("(NN)", docs, tfs);
}

/* The buffers of a sequence of bytes-like blocks; *nb set; NULL with an exception. */
static Py_buffer *get_blocks(PyObject *seq, Py_ssize_t *nb) {
    PyObject *fast = PySequence_Fast(seq, "blocks must be a sequence of bytes");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_buffer *vs = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    if (!vs) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyObject_CheckBuffer(o) || PyUnicode_Check(o)) {
            PyErr_Format(native_CorruptionError, "postings block must be bytes, not %s",
                         Py_TYPE(o)->tp_name);
        } else if (get_buf(o, &vs[i], 'b', 1, 0, "postings block") == 0) {
            continue;
        }
        for (Py_ssize_t j = 0; j < i; j++)
            PyBuffer_Release(&vs[j]);
        PyMem_Free(vs);
        Py_DECREF(fast);
        return NULL;
    }
    Py_DECREF(fast);
    *nb = n;
    return vs;
}

static void release_blocks(Py_buffer *vs, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        PyBuffer_Release(&vs[i]);
    PyMem_Free(vs);
}

/* Headers of all blocks (crc verified); total postings in *total. */
static int parse_all(Py_buffer *vs, Py_ssize_t nb, native_block_hdr *hs, int64_t *total,
                     const char **why) {
    int64_t t = 0;
    for (Py_ssize_t i = 0; i < nb; i++) {
        int st = native_postings_header(vs[i].buf, (size_t)vs[i].len, 1, &hs[i]);
        if (st != NATIVE_OK) {
            *why = hs[i].why;
            return st;
        }
        t += hs[i].n;
    }
    *total = t;
    return NATIVE_OK;
}

static PyObject *py_decode_many(PyObject *self, PyObject *arg) {
    Py_ssize_t nb;
    Py_buffer *vs = get_blocks(arg, &nb);
    if (!vs)
        return NULL;
    native_block_hdr *hs = PyMem_Malloc(sizeof(native_block_hdr) * ((size_t)nb + 1));
    if (!hs) {
        release_blocks(vs, nb);
        return PyErr_NoMemory();
    }
    int64_t total = 0;
    int st;
    const char *why = NULL;
    Py_BEGIN_ALLOW_THREADS
    st = parse_all(vs, nb, hs, &total, &why);
    Py_END_ALLOW_THREADS
    PyObject *docs = NULL, *tfs = NULL, *counts = NULL;
    if (st != NATIVE_OK) {
        raise_status(st, "postings block", why);
        goto fail;
    }
    char *dp, *tp, *cp;
    docs = new_bytearray(4 * total, &dp);
    tfs = docs ? new_bytearray(4 * total, &tp) : NULL;
    counts = tfs ? new_bytearray(8 * nb, &cp) : NULL;
    if (!counts)
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    int64_t off = 0;
    for (Py_ssize_t i = 0; i < nb && st == NATIVE_OK; i++) {
        st = native_postings_unpack(&hs[i], (int32_t *)dp + off, (int32_t *)tp + off);
        why = hs[i].why;
        ((int64_t *)cp)[i] = hs[i].n;
        off += hs[i].n;
    }
    Py_END_ALLOW_THREADS
    if (st != NATIVE_OK) {
        raise_status(st, "postings block", why);
        goto fail;
    }
    PyMem_Free(hs);
    release_blocks(vs, nb);
    return Py_BuildValue("(NNN)", docs, tfs, counts);
fail:
    Py_XDECREF(docs);
    Py_XDECREF(tfs);
    Py_XDECREF(counts);
    PyMem_Free(hs);
    release_blocks(vs, nb);
    return NULL;
}

static PyObject *py_join(PyObject *self, PyObject *arg) {
    Py_ssize_t nb;
    Py_buffer *vs = get_blocks(arg, &nb);
    if (!vs)
        return NULL;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < nb; i++)
        total += vs[i].len;
    char *op;
    PyObject *offs = new_bytearray(8 * (nb + 1), &op);
    PyObject *buf = offs ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total) : NULL;
    if (!buf) {
        Py_XDECREF(offs);
        release_blocks(vs, nb);
        return NULL;
    }
    char *bp = PyBytes_AS_STRING(buf);
    int st = NATIVE_OK;
    native_block_hdr h;
    h.why = NULL;
    Py_BEGIN_ALLOW_THREADS
    int64_t *o = (int64_t *)op;
    int64_t pos = 0;
    for (Py_ssize_t i = 0; i < nb; i++) {
        o[i] = pos;
        if (st == NATIVE_OK)
            st = native_postings_header(vs[i].buf, (size_t)vs[i].len, 1, &h);
        memcpy(bp + pos, vs[i].buf, (size_t)vs[i].len);
        pos += vs[i].len;
    }
    o[nb] = pos;
    Py_END_ALLOW_THREADS
    release_blocks(vs, nb);
    if (st != NATIVE_OK) {
        Py_DECREF(buf);
        Py_DECREF(offs);
        return raise_status(st, "postings block", h.why);
    }
    return Py_BuildValue("(NN)", buf, offs);
}

static PyObject *py_crc32(PyObject *self, PyObject *arg) {
    Py_buffer v;
    if (get_buf(arg, &v, 'b', 1, 0, "data") < 0)
        return NULL;
    uint32_t c;
    Py_BEGIN_ALLOW_THREADS
    c = native_crc32(0, v.buf, (size_t)v.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(c);
}

/* ---- BM25 top-k --------------------------------------------------------------------------- */

/* Views held for one search call. */
typedef struct {
    Py_buffer *v;
    Py_ssize_t n, cap;
} views;

static Py_buffer *views_add(views *vw) {
    if (vw->n == vw->cap) {
        Py_ssize_t cap = vw->cap ? 2 * vw->cap : 64;
        Py_buffer *nv = PyMem_Realloc(vw->v, sizeof(Py_buffer) * (size_t)cap);
        if (!nv) {
            PyErr_NoMemory();
            return NULL;
        }
        vw->v = nv;
        vw->cap = cap;
    }
    return &vw->v[vw->n];
}

static int views_get(views *vw, PyObject *o, char kind, Py_ssize_t itemsize, int writable,
                     const char *what) {
    Py_buffer *v = views_add(vw);
    if (!v || get_buf(o, v, kind, itemsize, writable, what) < 0)
        return -1;
    vw->n++;
    return 0;
}

static void views_release(views *vw) {
    for (Py_ssize_t i = 0; i < vw->n; i++)
        PyBuffer_Release(&vw->v[i]);
    PyMem_Free(vw->v);
}

#define LAST(vw) (&(vw)->v[(vw)->n - 1])

/* PySequence_Fast(seq) and a zeroed array of its length (+1) of itemsize-byte records;
 * NULL with an exception set. */
static PyObject *seq_items(PyObject *seq, const char *msg, size_t itemsize, Py_ssize_t *n,
                           void **items) {
    PyObject *fast = PySequence_Fast(seq, msg);
    if (!fast)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    *items = PyMem_Calloc((size_t)*n + 1, itemsize);
    if (!*items) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    return fast;
}

/* lists: sequence of (buf or None, offs int64, skip int64 (nb, 6), docs or None, tfs or None).
 */
static int parse_lists(PyObject *seq, views *vw, native_plist **out, Py_ssize_t *n) {
    Py_ssize_t nl;
    native_plist *ls;
    PyObject *fast = seq_items(seq, "lists must be a sequence", sizeof(native_plist), &nl,
                               (void **)&ls);
    if (!fast)
        return -1;
    for (Py_ssize_t i = 0; i < nl; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(fast, i);
        PyObject *buf, *offs, *skip, *docs, *tfs;
        if (!PyTuple_Check(t) ||
            !PyArg_ParseTuple(t, "OOOOO;a postings list is (buf, offs, skip, docs, tfs)", &buf,
                              &offs, &skip, &docs, &tfs))
            goto fail;
        native_plist *L = &ls[i];
        if (views_get(vw, offs, 'i', 8, 0, "offs") < 0)
            goto fail;
        Py_ssize_t no = LAST(vw)->len / 8;
        L->offs = LAST(vw)->buf;
        if (views_get(vw, skip, 'i', 8, 0, "skip") < 0)
            goto fail;
        L->skip = LAST(vw)->buf;
        L->nb = LAST(vw)->len / 48;
        if (LAST(vw)->len % 48 || no != L->nb + 1) {
            PyErr_SetString(native_InvalidArgumentError,
                            "skip must hold 6 int64 per block and offs one more than blocks");
            goto fail;
        }
        if (buf != Py_None) {
            if (views_get(vw, buf, 'b', 1, 0, "buf") < 0)
                goto fail;
            L->buf = LAST(vw)->buf;
            L->buflen = (size_t)LAST(vw)->len;
        } else {
            if (views_get(vw, docs, 'i', 4, 0, "docs") < 0)
                goto fail;
            L->docs = LAST(vw)->buf;
            L->npost = (size_t)(LAST(vw)->len / 4);
            if (views_get(vw, tfs, 'i', 4, 0, "tfs") < 0)
                goto fail;
            L->tfs = LAST(vw)->buf;
            if ((size_t)(LAST(vw)->len / 4) != L->npost) {
                PyErr_SetString(native_InvalidArgumentError, "docs and tfs differ in length");
                goto fail;
            }
        }
    }
    Py_DECREF(fast);
    *out = ls;
    *n = nl;
    return 0;
fail:
    Py_DECREF(fast);
    PyMem_Free(ls);
    return -1;
}

/* queries: sequence of (list idx int32, idf f64, qtf f64, ub f64[, allow, cand]), the four
 * arrays of one length; allow (a uint8 bitmap) and cand (ascending int32 doc numbers) may
 * be None. */
static int parse_queries(PyObject *seq, views *vw, native_bm25_query **out, Py_ssize_t *n) {
    Py_ssize_t nq;
    native_bm25_query *qs;
    PyObject *fast = seq_items(seq, "queries must be a sequence", sizeof(native_bm25_query),
                               &nq, (void **)&qs);
    if (!fast)
        return -1;
    for (Py_ssize_t i = 0; i < nq; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(fast, i);
        PyObject *li, *idf, *qtf, *ub, *allow = Py_None, *cand = Py_None;
        if (!PyTuple_Check(t) ||
            !PyArg_ParseTuple(t, "OOOO|OO;a query is (lists, idf, qtf, ub[, allow, cand])", &li,
                              &idf, &qtf, &ub, &allow, &cand))
            goto fail;
        native_bm25_query *q = &qs[i];
        if (views_get(vw, li, 'i', 4, 0, "query lists") < 0)
            goto fail;
        Py_ssize_t m = LAST(vw)->len / 4;
        q->list = LAST(vw)->buf;
        if (views_get(vw, idf, 'f', 8, 0, "idf") < 0 || LAST(vw)->len / 8 != m)
            goto bad;
        q->idf = LAST(vw)->buf;
        if (views_get(vw, qtf, 'f', 8, 0, "qtf") < 0 || LAST(vw)->len / 8 != m)
            goto bad;
        q->qtf = LAST(vw)->buf;
        if (views_get(vw, ub, 'f', 8, 0, "ub") < 0 || LAST(vw)->len / 8 != m)
            goto bad;
        q->ub = LAST(vw)->buf;
        if (m > INT32_MAX)
            goto bad;
        q->m = (int32_t)m;
        if (allow != Py_None) {
            if (views_get(vw, allow, 'b', 1, 0, "allow") < 0)
                goto fail;
            q->allow = LAST(vw)->buf;
            q->allow_len = LAST(vw)->len;
        }
        if (cand != Py_None) {
            if (views_get(vw, cand, 'i', 4, 0, "cand") < 0)
                goto fail;
            /* a non-NULL pointer even when empty: an empty candidate list scores nothing */
            q->cand = LAST(vw)->len ? LAST(vw)->buf : (const int32_t *)"";
            q->ncand = LAST(vw)->len / 4;
        }
    }
    Py_DECREF(fast);
    *out = qs;
    *n = nq;
    return 0;
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(native_InvalidArgumentError, "query arrays differ in length");
fail:
    Py_DECREF(fast);
    PyMem_Free(qs);
    return -1;
}

static PyObject *py_bm25_search(PyObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"lists", "queries", "norm", "k", "k1", "b", "avgdl", "block_cap",
                            "mode", "threads", "acc", "touched", "ext", NULL};
    PyObject *lists, *queries, *norm, *acc = Py_None, *touched = Py_None, *ext = Py_None;
    long long k, block_cap;
    double k1, b, avgdl;
    int mode, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOLdddLi|iOOO", names, &lists, &queries, &norm,
                                     &k, &k1, &b, &avgdl, &block_cap, &mode, &threads, &acc,
                                     &touched, &ext))
        return NULL;
    if (k < 1 || block_cap < 1 || block_cap > NATIVE_MAX_BLOCK_POSTINGS ||
        (mode != NATIVE_BM25_EXHAUSTIVE && mode != NATIVE_BM25_PRUNED) || threads < 1) {
        PyErr_SetString(native_InvalidArgumentError, "bad k, block_cap, mode or threads");
        return NULL;
    }
    views vw = {NULL, 0, 0};
    native_plist *ls = NULL;
    native_bm25_query *qs = NULL;
    Py_ssize_t nl = 0, nq = 0;
    PyObject *result = NULL;
    int32_t *od = NULL;
    double *os = NULL;
    int64_t *on = NULL;
    if (views_get(&vw, norm, 'f', 8, 0, "norm") < 0)
        goto done;
    native_bm25_ctx c = {0};
    c.norm = LAST(&vw)->buf;
    c.ndocs = LAST(&vw)->len / 8;
    if (c.ndocs >= INT32_MAX) {
        PyErr_SetString(native_InvalidArgumentError, "too many documents");
        goto done;
    }
    c.k1 = k1;
    c.b = b;
    c.avgdl = avgdl;
    c.block_cap = block_cap;
    c.ext = NULL;
    if (ext != Py_None) {
        if (views_get(&vw, ext, 'i', 8, 0, "ext") < 0)
            goto done;
        if (LAST(&vw)->len / 8 < c.ndocs) {
            PyErr_SetString(native_InvalidArgumentError, "ext shorter than norm");
            goto done;
        }
        c.ext = LAST(&vw)->buf;
    }
    if (parse_lists(lists, &vw, &ls, &nl) < 0 || parse_queries(queries, &vw, &qs, &nq) < 0)
        goto done;
    c.lists = ls;
    c.nlists = nl;
    for (Py_ssize_t i = 0; i < nq; i++) {
        for (int32_t j = 0; j < qs[i].m; j++)
            if (qs[i].list[j] < 0 || qs[i].list[j] >= nl) {
                PyErr_SetString(native_InvalidArgumentError, "query term list out of range");
                goto done;
            }
        if (qs[i].allow && !c.ext) {
            PyErr_SetString(native_InvalidArgumentError, "an allow bitmap needs ext");
            goto done;
        }
        for (int64_t j = 0; j < qs[i].ncand; j++)
            if (qs[i].cand[j] < 0 || qs[i].cand[j] >= c.ndocs ||
                (j && qs[i].cand[j] <= qs[i].cand[j - 1])) {
                PyErr_SetString(native_InvalidArgumentError,
                                "cand must be ascending doc numbers below len(norm)");
                goto done;
            }
    }
    int64_t kk = k < c.ndocs ? k : (c.ndocs > 0 ? c.ndocs : 1);
    od = PyMem_Malloc(sizeof(int32_t) * (size_t)(kk * nq + 1));
    os = PyMem_Malloc(sizeof(double) * (size_t)(kk * nq + 1));
    on = PyMem_Calloc((size_t)nq + 1, sizeof(int64_t));
    if (!od || !os || !on) {
        PyErr_NoMemory();
        goto done;
    }
    int st;
    if (threads == 1 && (mode == NATIVE_BM25_PRUNED || acc != Py_None)) {
        int64_t *ap = NULL;
        int32_t *tp = NULL;
        if (mode == NATIVE_BM25_EXHAUSTIVE) {
            if (views_get(&vw, acc, 'i', 8, 1, "acc") < 0)
                goto done;
            ap = LAST(&vw)->buf;
            Py_ssize_t alen = LAST(&vw)->len / 8;
            if (views_get(&vw, touched, 'i', 4, 1, "touched") < 0)
                goto done;
            tp = LAST(&vw)->buf;
            /* touched: ndocs + 1 entries, the exhaustive loop stores each posting's doc
             * at touched[nt] before it knows whether the doc is new (branch-free) */
            if (alen < c.ndocs || LAST(&vw)->len / 4 < c.ndocs + 1) {
                PyErr_SetString(native_InvalidArgumentError, "scratch shorter than norm (acc) "
                                "or than norm + 1 (touched)");
                goto done;
            }
        }
        /* one thread: the caller's scratch, queries in turn */
        Py_BEGIN_ALLOW_THREADS
        st = NATIVE_OK;
        for (Py_ssize_t i = 0; i < nq && st == NATIVE_OK; i++)
            st = native_bm25_topk(&c, &qs[i], mode, kk, ap, tp, od + i * kk, os + i * kk, on + i);
        Py_END_ALLOW_THREADS
    } else {
        Py_BEGIN_ALLOW_THREADS
        st = native_bm25_batch(&c, qs, nq, mode, NULL, kk, threads, NULL, NULL, od, os, on);
        Py_END_ALLOW_THREADS
    }
    if (st != NATIVE_OK) {
        raise_status(st, "bm25 search", "a postings block or skip row is corrupt");
        goto done;
    }
    result = PyList_New(nq);
    if (!result)
        goto done;
    for (Py_ssize_t i = 0; i < nq; i++) {
        PyObject *t = Py_BuildValue("(y#y#)", (const char *)(od + i * kk),
                                    (Py_ssize_t)(4 * on[i]), (const char *)(os + i * kk),
                                    (Py_ssize_t)(8 * on[i]));
        if (!t) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, t);
    }
done:
    PyMem_Free(od);
    PyMem_Free(os);
    PyMem_Free(on);
    PyMem_Free(ls);
    PyMem_Free(qs);
    views_release(&vw);
    return result;
}

/* ---- Bm25State: one generation of an index, a query in one call ----------------------------
 *
 * What a query needs, held between calls: the per-document norms and ids, the per-term df /
 * max tf / min doc length, and the postings lists of the terms queried so far (registered
 * by set_lists: the buffers the page cache holds, viewed, not copied). search() takes the
 * analysed term ids of each query and does the rest in C -- planning (idf, bounds, order),
 * the mode, the top k, the ids -- with the GIL released, on threads for a batch. A query
 * whose lists are not all registered yet gets the missing term ids back instead, and the
 * caller registers them and asks again. Entries are never replaced or dropped while the
 * state lives (a search without the GIL reads only entries it saw registered), so a state
 * serves one generation of the index and the owner makes a new one after a write.
 */

typedef struct {
    Py_buffer v[4];
    int nv;
    int32_t *own;      /* decoded docs then tfs (NULL: the list is viewed, not decoded) */
    int64_t *own_offs; /* their block offsets */
    double *own_bmax;  /* the list's block maxima (L->bmax), -1 until known */
} term_views;

typedef struct scratch {
    int64_t *acc;
    int32_t *touched;
    struct scratch *next;
} scratch;

typedef struct {
    PyObject_HEAD
    native_plist *lists; /* nterms; offs == NULL: not registered */
    term_views *tv;
    Py_buffer fixed[5]; /* norm, ext, df, maxtf, mindl */
    int nfixed;
    native_bm25_terms terms;
    native_bm25_ctx ctx;
    uint16_t *nid; /* ctx.nid, ctx.ntab: owned */
    double *ntab;
    int32_t nvals; /* distinct norms coded, -1: read whole */
    int64_t nbytes, nloaded;
    int64_t decoded, decode_budget; /* bytes of lists held decoded, and their budget */
    scratch *pool; /* exhaustive scratch, taken and given back with the GIL held */
} StateObject;

static void scratch_free(scratch *s) {
    if (s) {
        free(s->acc);
        free(s->touched);
        free(s);
    }
}

static scratch *scratch_take(StateObject *o) {
    scratch *s = o->pool;
    if (s) {
        o->pool = s->next;
        return s;
    }
    s = calloc(1, sizeof(scratch));
    if (s) {
        s->acc = calloc((size_t)o->ctx.ndocs + 1, sizeof(int64_t));
        s->touched = malloc(sizeof(int32_t) * ((size_t)o->ctx.ndocs + 1));
    }
    if (!s || !s->acc || !s->touched) {
        scratch_free(s);
        PyErr_NoMemory();
        return NULL;
    }
    return s;
}

static void scratch_give(StateObject *o, scratch *s) {
    s->next = o->pool;
    o->pool = s;
}

static void state_dealloc(StateObject *o) {
    if (o->tv) {
        for (int64_t t = 0; t < o->terms.nterms; t++) {
            for (int i = 0; i < o->tv[t].nv; i++)
                PyBuffer_Release(&o->tv[t].v[i]);
            free(o->tv[t].own);
            free(o->tv[t].own_offs);
            free(o->tv[t].own_bmax);
        }
    }
    PyMem_Free(o->tv);
    PyMem_Free(o->lists);
    for (int i = 0; i < o->nfixed; i++)
        PyBuffer_Release(&o->fixed[i]);
    free(o->nid);
    free(o->ntab);
    while (o->pool) {
        scratch *s = o->pool;
        o->pool = s->next;
        scratch_free(s);
    }
    Py_TYPE(o)->tp_free((PyObject *)o);
}

static PyObject *state_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"norm", "ext", "df", "maxtf", "mindl", "nterms", "nlive", "avgdl",
                            "k1", "b", "block_cap", "decode_budget", "norm_ids", NULL};
    PyObject *on, *oe, *od, *om, *ol;
    long long nterms, nlive, block_cap, decode_budget = 0;
    double avgdl, k1, b;
    int norm_ids = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOLLdddL|Lp", names, &on, &oe, &od, &om,
                                     &ol, &nterms, &nlive, &avgdl, &k1, &b, &block_cap,
                                     &decode_budget, &norm_ids))
        return NULL;
    if (nterms < 0 || nlive < 0 || block_cap < 1 || block_cap > NATIVE_MAX_BLOCK_POSTINGS ||
        !(avgdl > 0.0)) {
        PyErr_SetString(native_InvalidArgumentError, "bad nterms, nlive, avgdl or block_cap");
        return NULL;
    }
    StateObject *o = (StateObject *)type->tp_alloc(type, 0);
    if (!o)
        return NULL;
    o->decode_budget = decode_budget;
    PyObject *objs[5] = {on, oe, od, om, ol};
    const char *what[5] = {"norm", "ext", "df", "maxtf", "mindl"};
    for (int i = 0; i < 5; i++) {
        if (get_buf(objs[i], &o->fixed[i], i == 0 ? 'f' : 'i', 8, 0, what[i]) < 0)
            goto fail;
        o->nfixed++;
    }
    Py_ssize_t ndocs = o->fixed[0].len / 8;
    if (ndocs >= INT32_MAX || o->fixed[1].len / 8 < ndocs) {
        PyErr_SetString(native_InvalidArgumentError, "too many documents, or ext shorter than norm");
        goto fail;
    }
    for (int i = 2; i < 5; i++)
        if (o->fixed[i].len / 8 < nterms) {
            PyErr_SetString(native_InvalidArgumentError, "term arrays shorter than nterms");
            goto fail;
        }
    o->lists = PyMem_Calloc((size_t)nterms + 1, sizeof(native_plist));
    o->tv = PyMem_Calloc((size_t)nterms + 1, sizeof(term_views));
    if (!o->lists || !o->tv) {
        PyErr_NoMemory();
        goto fail;
    }
    o->terms.df = o->fixed[2].buf;
    o->terms.maxtf = o->fixed[3].buf;
    o->terms.mindl = o->fixed[4].buf;
    o->terms.nterms = nterms;
    o->terms.nlive = nlive;
    o->terms.avgdl = avgdl;
    o->terms.k1 = k1;
    o->terms.b = b;
    o->ctx.lists = o->lists;
    o->ctx.nlists = nterms;
    o->ctx.norm = o->fixed[0].buf;
    o->ctx.ext = o->fixed[1].buf;
    o->ctx.ndocs = ndocs;
    o->ctx.k1 = k1;
    o->ctx.b = b;
    o->ctx.avgdl = avgdl;
    o->ctx.block_cap = block_cap;
    /* the norms dictionary-coded when they take few values (as many as the distinct
     * document lengths); otherwise the kernels read them whole */
    o->nvals = -1;
    o->nid = norm_ids ? malloc(sizeof(uint16_t) * ((size_t)ndocs + 1)) : NULL;
    o->ntab = norm_ids ? malloc(sizeof(double) * 65536) : NULL;
    if (o->nid && o->ntab) {
        int32_t nv;
        Py_BEGIN_ALLOW_THREADS /* O(documents): the norm buffer is held by the state */
        nv = native_bm25_norm_ids(o->ctx.norm, ndocs, o->nid, o->ntab);
        Py_END_ALLOW_THREADS
        o->nvals = nv;
    }
    if (o->nvals >= 0) {
        double *fit = realloc(o->ntab, sizeof(double) * ((size_t)o->nvals + 1));
        if (fit)
            o->ntab = fit; /* the table kept to its values */
        o->ctx.nid = o->nid;
        o->ctx.ntab = o->ntab;
    } else {
        free(o->nid);
        free(o->ntab);
        o->nid = NULL;
        o->ntab = NULL;
    }
    return (PyObject *)o;
fail:
    Py_DECREF(o);
    return NULL;
}

/* Decode a compressed list into memory the state owns when the decode budget allows:
 * every block checked against its row once, here, so that searches read it raw and trusted
 * (no decoding, no checks). On success L and tv describe the decoded list (the compressed
 * buffer's view released) and *bytes counts it; a list over budget stays compressed.
 * -1 with an exception when a block is corrupt. */
static int st_decode(StateObject *o, native_plist *L, term_views *tv, int64_t *bytes) {
    int64_t total = 0;
    for (int64_t bi = 0; bi < L->nb; bi++) {
        int64_t cnt = L->skip[6 * bi + 1];
        if (cnt < 1 || cnt > o->ctx.block_cap) {
            PyErr_SetString(native_CorruptionError, "bm25 search: a skip row is corrupt");
            return -1;
        }
        total += cnt;
    }
    if (o->decoded + 8 * total > o->decode_budget)
        return 0;
    /* + block_cap: a block may hold more postings than its row says until it is checked */
    int32_t *own = malloc(sizeof(int32_t) * 2 * ((size_t)total + (size_t)o->ctx.block_cap));
    int64_t *offs = malloc(sizeof(int64_t) * ((size_t)L->nb + 1));
    if (!own || !offs) {
        free(own);
        free(offs);
        return 0; /* stays compressed */
    }
    int32_t *tfs = own + total + o->ctx.block_cap;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = native_bm25_decode_list(&o->ctx, L, own, tfs, offs);
    Py_END_ALLOW_THREADS
    if (st != NATIVE_OK) {
        free(own);
        free(offs);
        raise_status(st, "bm25 search", "a postings block or skip row is corrupt");
        return -1;
    }
    /* the compressed buffer is the last view: release it */
    PyBuffer_Release(&tv->v[--tv->nv]);
    *bytes -= (int64_t)L->buflen;
    L->buf = NULL;
    L->buflen = 0;
    L->docs = own;
    L->tfs = tfs;
    L->npost = (size_t)total;
    L->offs = offs;
    L->trusted = 1;
    tv->own = own;
    tv->own_offs = offs;
    *bytes += 8 * total + 8 * (L->nb + 1);
    o->decoded += 8 * total;
    return 0;
}

/* Room for L's exact block maxima (each -1: not known yet; the kernels learn a block's the
 * first time they decode it). A list held decoded gets them all now: a pass over its
 * postings, no decoding. Without memory the list keeps the skip-row bounds. -1 with an
 * exception when a block is corrupt. */
static int st_block_max(StateObject *o, native_plist *L, term_views *tv, int64_t *bytes) {
    double *bmax = malloc(sizeof(double) * ((size_t)L->nb + 1));
    if (!bmax)
        return 0;
    for (int64_t bi = 0; bi < L->nb; bi++)
        bmax[bi] = -1.0;
    L->bmax = bmax;
    if (L->trusted) {
        int st;
        Py_BEGIN_ALLOW_THREADS
        st = native_bm25_block_max(&o->ctx, L);
        Py_END_ALLOW_THREADS
        if (st != NATIVE_OK) {
            L->bmax = NULL;
            free(bmax);
            if (st == NATIVE_ENOMEM)
                return 0;
            raise_status(st, "bm25 search", "a postings block or skip row is corrupt");
            return -1;
        }
    }
    tv->own_bmax = bmax;
    *bytes += 8 * L->nb;
    return 0;
}

/* set_lists(tids, lists): register the postings lists of these terms (each as
 * bm25_search takes them); a term registered already keeps its list. */
static PyObject *state_set_lists(StateObject *o, PyObject *args) {
    PyObject *otids, *olists;
    if (!PyArg_ParseTuple(args, "OO", &otids, &olists))
        return NULL;
    PyObject *ft = PySequence_Fast(otids, "tids must be a sequence");
    if (!ft)
        return NULL;
    PyObject *fl = PySequence_Fast(olists, "lists must be a sequence");
    if (!fl) {
        Py_DECREF(ft);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ft);
    if (PySequence_Fast_GET_SIZE(fl) != n) {
        PyErr_SetString(native_InvalidArgumentError, "tids and lists differ in length");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long tid = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(ft, i));
        if (tid == -1 && PyErr_Occurred())
            goto fail;
        if (tid < 0 || tid >= o->terms.nterms) {
            PyErr_SetString(native_InvalidArgumentError, "term id out of range");
            goto fail;
        }
        if (o->lists[tid].offs)
            continue;
        PyObject *t = PySequence_Fast_GET_ITEM(fl, i);
        PyObject *buf, *offs, *skip, *docs, *tfs;
        if (!PyTuple_Check(t) ||
            !PyArg_ParseTuple(t, "OOOOO;a postings list is (buf, offs, skip, docs, tfs)", &buf,
                              &offs, &skip, &docs, &tfs))
            goto fail;
        term_views tv;
        memset(&tv, 0, sizeof(tv));
        native_plist L;
        memset(&L, 0, sizeof(L));
        int64_t bytes = 0;
        if (get_buf(offs, &tv.v[tv.nv], 'i', 8, 0, "offs") < 0)
            goto bad;
        Py_ssize_t no = tv.v[tv.nv].len / 8;
        L.offs = tv.v[tv.nv].buf;
        bytes += tv.v[tv.nv++].len;
        if (get_buf(skip, &tv.v[tv.nv], 'i', 8, 0, "skip") < 0)
            goto bad;
        L.skip = tv.v[tv.nv].buf;
        L.nb = tv.v[tv.nv].len / 48;
        bytes += tv.v[tv.nv].len;
        if (tv.v[tv.nv++].len % 48 || no != L.nb + 1) {
            PyErr_SetString(native_InvalidArgumentError,
                            "skip must hold 6 int64 per block and offs one more than blocks");
            goto bad;
        }
        if (buf != Py_None) {
            if (get_buf(buf, &tv.v[tv.nv], 'b', 1, 0, "buf") < 0)
                goto bad;
            L.buf = tv.v[tv.nv].buf;
            L.buflen = (size_t)tv.v[tv.nv].len;
            bytes += tv.v[tv.nv++].len;
        } else {
            if (get_buf(docs, &tv.v[tv.nv], 'i', 4, 0, "docs") < 0)
                goto bad;
            L.docs = tv.v[tv.nv].buf;
            L.npost = (size_t)(tv.v[tv.nv].len / 4);
            bytes += tv.v[tv.nv++].len;
            if (get_buf(tfs, &tv.v[tv.nv], 'i', 4, 0, "tfs") < 0)
                goto bad;
            L.tfs = tv.v[tv.nv].buf;
            bytes += tv.v[tv.nv].len;
            if ((size_t)(tv.v[tv.nv++].len / 4) != L.npost) {
                PyErr_SetString(native_InvalidArgumentError, "docs and tfs differ in length");
                goto bad;
            }
        }
        if (L.buf && (st_decode(o, &L, &tv, &bytes) < 0))
            goto bad;
        if (st_block_max(o, &L, &tv, &bytes) < 0)
            goto bad;
        o->tv[tid] = tv;
        o->lists[tid] = L;
        o->nbytes += bytes + 256;
        o->nloaded++;
        continue;
    bad:
        for (int j = 0; j < tv.nv; j++)
            PyBuffer_Release(&tv.v[j]);
        free(tv.own);
        free(tv.own_offs);
        free(tv.own_bmax);
        goto fail;
    }
    Py_DECREF(ft);
    Py_DECREF(fl);
    Py_RETURN_NONE;
fail:
    Py_DECREF(ft);
    Py_DECREF(fl);
    return NULL;
}

/* The term ids of a query (a sequence of ints, each in [0, nterms)) into out (room for n). */
static int query_tids(StateObject *o, PyObject *seq, int32_t **out, Py_ssize_t *n) {
    PyObject *f = PySequence_Fast(seq, "a query is a sequence of term ids");
    if (!f)
        return -1;
    *n = PySequence_Fast_GET_SIZE(f);
    *out = PyMem_Malloc(sizeof(int32_t) * ((size_t)*n + 1));
    if (!*out) {
        Py_DECREF(f);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        long long t = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(f, i));
        if (t == -1 && PyErr_Occurred())
            goto fail;
        if (t < 0 || t >= o->terms.nterms) {
            PyErr_SetString(native_InvalidArgumentError, "term id out of range");
            goto fail;
        }
        (*out)[i] = (int32_t)t;
    }
    Py_DECREF(f);
    return 0;
fail:
    Py_DECREF(f);
    PyMem_Free(*out);
    *out = NULL;
    return -1;
}

/* search(queries, k, mode, auto_max, threads=1, allows=None) -> (results, None), or
 * (None, missing term ids) when some query's lists are not registered. queries: a sequence
 * of term-id sequences; mode 0 exhaustive, 1 pruned, 2 auto (exhaustive when the terms hold
 * at most auto_max postings); allows: None or one entry per query, None or
 * (bitmap or None, candidate docnos or None). results: per query a list of (id, score). */
static PyObject *state_search(StateObject *o, PyObject *args, PyObject *kw) {
    static char *names[] = {"queries", "k", "mode", "auto_max", "threads", "allows", NULL};
    PyObject *oq, *oallows = Py_None;
    long long k, auto_max;
    int mode, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OLiL|iO", names, &oq, &k, &mode, &auto_max,
                                     &threads, &oallows))
        return NULL;
    if (k < 1 || mode < 0 || mode > 2 || threads < 1) {
        PyErr_SetString(native_InvalidArgumentError, "bad k, mode or threads");
        return NULL;
    }
    PyObject *fq = PySequence_Fast(oq, "queries must be a sequence");
    if (!fq)
        return NULL;
    Py_ssize_t nq = PySequence_Fast_GET_SIZE(fq);
    PyObject *fa = NULL, *result = NULL, *missing = NULL;
    native_bm25_query *qs = PyMem_Calloc((size_t)nq + 1, sizeof(native_bm25_query));
    int32_t **tids = PyMem_Calloc((size_t)nq + 1, sizeof(int32_t *));
    int8_t *modes = PyMem_Calloc((size_t)nq + 1, 1);
    views vw = {NULL, 0, 0};
    double *fbuf = NULL;
    int32_t *lbuf = NULL;
    int32_t *od = NULL;
    double *os = NULL;
    int64_t *on = NULL;
    scratch **scr = NULL;
    int nscr = 0;
    if (!qs || !tids || !modes) {
        PyErr_NoMemory();
        goto done;
    }
    if (oallows != Py_None) {
        fa = PySequence_Fast(oallows, "allows must be a sequence");
        if (!fa)
            goto done;
        if (PySequence_Fast_GET_SIZE(fa) != nq) {
            PyErr_SetString(native_InvalidArgumentError, "one allow entry per query");
            goto done;
        }
    }
    /* term ids, and room for the plans */
    Py_ssize_t total = 0;
    Py_ssize_t *m_in = PyMem_Calloc((size_t)nq + 1, sizeof(Py_ssize_t));
    if (!m_in) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nq; i++) {
        if (query_tids(o, PySequence_Fast_GET_ITEM(fq, i), &tids[i], &m_in[i]) < 0) {
            PyMem_Free(m_in);
            goto done;
        }
        if (m_in[i] > INT32_MAX) {
            PyMem_Free(m_in);
            PyErr_SetString(native_InvalidArgumentError, "query too long");
            goto done;
        }
        total += m_in[i];
    }
    fbuf = PyMem_Malloc(sizeof(double) * 3 * ((size_t)total + 1));
    lbuf = PyMem_Malloc(sizeof(int32_t) * ((size_t)total + 1));
    if (!fbuf || !lbuf) {
        PyMem_Free(m_in);
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t off = 0;
    for (Py_ssize_t i = 0; i < nq; i++) {
        native_bm25_query *q = &qs[i];
        int32_t *list = lbuf + off;
        double *idf = fbuf + 3 * off, *qtf = idf + m_in[i], *ub = qtf + m_in[i];
        int64_t postings = 0;
        int32_t m = native_bm25_plan(&o->terms, tids[i], (int32_t)m_in[i], list, idf, qtf, ub,
                                     &postings);
        if (m < 0) {
            PyMem_Free(m_in);
            PyErr_NoMemory();
            goto done;
        }
        off += m_in[i];
        q->m = m;
        q->list = list;
        q->idf = idf;
        q->qtf = qtf;
        q->ub = ub;
        modes[i] = (int8_t)(mode == 2 ? (postings <= auto_max ? NATIVE_BM25_EXHAUSTIVE
                                                              : NATIVE_BM25_PRUNED)
                                      : mode);
        for (int32_t j = 0; j < m; j++) {
            if (o->lists[list[j]].offs)
                continue;
            if (!missing && !(missing = PyList_New(0))) {
                PyMem_Free(m_in);
                goto done;
            }
            PyObject *t = PyLong_FromLong(list[j]);
            if (!t || PyList_Append(missing, t) < 0) {
                Py_XDECREF(t);
                PyMem_Free(m_in);
                goto done;
            }
            Py_DECREF(t);
        }
        if (fa) {
            PyObject *a = PySequence_Fast_GET_ITEM(fa, i), *bits, *cand;
            if (a == Py_None)
                continue;
            if (!PyTuple_Check(a) || !PyArg_ParseTuple(a, "OO;an allow entry is (bits, cand)",
                                                       &bits, &cand)) {
                PyMem_Free(m_in);
                goto done;
            }
            if (bits != Py_None) {
                if (views_get(&vw, bits, 'b', 1, 0, "allow") < 0) {
                    PyMem_Free(m_in);
                    goto done;
                }
                q->allow = LAST(&vw)->buf;
                q->allow_len = LAST(&vw)->len;
            }
            if (cand != Py_None) {
                if (views_get(&vw, cand, 'i', 4, 0, "cand") < 0) {
                    PyMem_Free(m_in);
                    goto done;
                }
                q->cand = LAST(&vw)->len ? LAST(&vw)->buf : (const int32_t *)"";
                q->ncand = LAST(&vw)->len / 4;
                for (int64_t j = 0; j < q->ncand; j++)
                    if (q->cand[j] < 0 || q->cand[j] >= o->ctx.ndocs ||
                        (j && q->cand[j] <= q->cand[j - 1])) {
                        PyErr_SetString(native_InvalidArgumentError,
                                        "cand must be ascending doc numbers below ndocs");
                        PyMem_Free(m_in);
                        goto done;
                    }
            }
        }
    }
    PyMem_Free(m_in);
    if (missing) {
        result = Py_BuildValue("(OO)", Py_None, missing);
        goto done;
    }
    int64_t kk = k < o->ctx.ndocs ? k : (o->ctx.ndocs > 0 ? o->ctx.ndocs : 1);
    od = PyMem_Malloc(sizeof(int32_t) * (size_t)(kk * nq + 1));
    os = PyMem_Malloc(sizeof(double) * (size_t)(kk * nq + 1));
    on = PyMem_Calloc((size_t)nq + 1, sizeof(int64_t));
    if (threads > nq)
        threads = nq > 0 ? (int)nq : 1;
    scr = PyMem_Calloc((size_t)threads + 1, sizeof(scratch *));
    int64_t **accs = PyMem_Calloc((size_t)threads + 1, sizeof(int64_t *));
    int32_t **tchs = PyMem_Calloc((size_t)threads + 1, sizeof(int32_t *));
    if (!od || !os || !on || !scr || !accs || !tchs) {
        PyMem_Free(accs);
        PyMem_Free(tchs);
        PyErr_NoMemory();
        goto done;
    }
    int need_scratch = 0;
    for (Py_ssize_t i = 0; i < nq; i++)
        need_scratch |= modes[i] == NATIVE_BM25_EXHAUSTIVE && qs[i].m > 0 && !qs[i].cand;
    for (; need_scratch && nscr < threads; nscr++) {
        if (!(scr[nscr] = scratch_take(o))) {
            PyMem_Free(accs);
            PyMem_Free(tchs);
            goto done;
        }
        accs[nscr] = scr[nscr]->acc;
        tchs[nscr] = scr[nscr]->touched;
    }
    int st;
    Py_INCREF(o); /* the lists stay alive while the GIL is released */
    Py_BEGIN_ALLOW_THREADS
    if (threads == 1) {
        st = NATIVE_OK;
        for (Py_ssize_t i = 0; i < nq && st == NATIVE_OK; i++)
            st = native_bm25_topk(&o->ctx, &qs[i], modes[i], kk, accs[0], tchs[0],
                                  od + i * kk, os + i * kk, on + i);
    } else {
        st = native_bm25_batch(&o->ctx, qs, nq, 0, modes, kk, threads,
                               need_scratch ? accs : NULL, need_scratch ? tchs : NULL, od, os,
                               on);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(o);
    PyMem_Free(accs);
    PyMem_Free(tchs);
    if (st != NATIVE_OK) {
        raise_status(st, "bm25 search", "a postings block or skip row is corrupt");
        goto done;
    }
    PyObject *res = PyList_New(nq);
    if (!res)
        goto done;
    const int64_t *ext = o->ctx.ext;
    for (Py_ssize_t i = 0; i < nq; i++) {
        PyObject *hits = PyList_New((Py_ssize_t)on[i]);
        if (!hits) {
            Py_DECREF(res);
            goto done;
        }
        PyList_SET_ITEM(res, i, hits);
        for (int64_t j = 0; j < on[i]; j++) {
            int32_t d = od[i * kk + j];
            PyObject *t = Py_BuildValue("(Ld)", (long long)ext[d], os[i * kk + j]);
            if (!t) {
                Py_DECREF(res);
                goto done;
            }
            PyList_SET_ITEM(hits, j, t);
        }
    }
    result = Py_BuildValue("(NO)", res, Py_None);
done:
    for (int i = 0; i < nscr; i++)
        scratch_give(o, scr[i]);
    PyMem_Free(scr);
    Py_XDECREF(missing);
    Py_XDECREF(fa);
    Py_DECREF(fq);
    if (tids)
        for (Py_ssize_t i = 0; i < nq; i++)
            PyMem_Free(tids[i]);
    PyMem_Free(tids);
    PyMem_Free(qs);
    PyMem_Free(modes);
    PyMem_Free(fbuf);
    PyMem_Free(lbuf);
    PyMem_Free(od);
    PyMem_Free(os);
    PyMem_Free(on);
    views_release(&vw);
    return result;
}

static PyObject *state_nbytes(StateObject *o, void *closure) { return PyLong_FromLongLong(o->nbytes); }
static PyObject *state_nvals(StateObject *o, void *closure) { return PyLong_FromLong(o->nvals); }
static PyObject *state_nloaded(StateObject *o, void *closure) {
    return PyLong_FromLongLong(o->nloaded);
}
static PyObject *state_decoded(StateObject *o, void *closure) {
    return PyLong_FromLongLong(o->decoded);
}

static PyGetSetDef state_getset[] = {
    {"nbytes", (getter)state_nbytes, NULL, "bytes of the registered lists (+256 each)", NULL},
    {"norm_values", (getter)state_nvals, NULL,
     "distinct norms the kernels read through a dictionary (-1: they read norm whole)", NULL},
    {"nloaded", (getter)state_nloaded, NULL, "terms whose lists are registered", NULL},
    {"decoded", (getter)state_decoded, NULL, "bytes of postings held decoded", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* block_max(tid) -> float64 bytes of the term's exact block maxima (-1: not known yet), or
 * None when its list is not registered (or kept the skip-row bounds): for tests. */
static PyObject *state_block_max(StateObject *o, PyObject *arg) {
    long long tid = PyLong_AsLongLong(arg);
    if (tid == -1 && PyErr_Occurred())
        return NULL;
    if (tid < 0 || tid >= o->terms.nterms) {
        PyErr_SetString(native_InvalidArgumentError, "term id out of range");
        return NULL;
    }
    const native_plist *L = &o->lists[tid];
    if (!L->offs || !L->bmax)
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(8 * L->nb));
    if (!out)
        return NULL;
    double *p = (double *)PyBytes_AS_STRING(out);
    for (int64_t bi = 0; bi < L->nb; bi++)
        __atomic_load(&L->bmax[bi], &p[bi], __ATOMIC_RELAXED);
    return out;
}

static PyMethodDef state_methods[] = {
    {"set_lists", (PyCFunction)state_set_lists, METH_VARARGS,
     "set_lists(tids, lists): register postings lists (buf, offs, skip, docs, tfs)"},
    {"block_max", (PyCFunction)state_block_max, METH_O,
     "block_max(tid) -> float64 bytes: the exact block maxima of tf (k1 + 1) / (norm + tf) "
     "(-1: not known yet), or None when the term's list is not registered"},
    {"search", (PyCFunction)(void (*)(void))state_search, METH_VARARGS | METH_KEYWORDS,
     "search(queries, k, mode, auto_max, threads=1, allows=None) -> (results, missing)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StateType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "llmdsdb._native._core.Bm25State",
    .tp_basicsize = sizeof(StateObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bm25State(norm, ext, df, maxtf, mindl, nterms, nlive, avgdl, k1, b, "
              "block_cap, decode_budget=0, norm_ids=True): one generation of an inverted "
              "index for one-call queries (norm_ids: read the norms through a dictionary "
              "when they take at most 65536 values).",
    .tp_new = state_new,
    .tp_dealloc = (destructor)state_dealloc,
    .tp_methods = state_methods,
    .tp_getset = state_getset,
};

static PyObject *py_bm25_state(PyObject *mod, PyObject *args, PyObject *kw) {
    if (!(StateType.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&StateType) < 0)
        return NULL;
    return PyObject_Call((PyObject *)&StateType, args, kw);
}

PyMethodDef native_postings_methods[] = {
    {"Bm25State", (PyCFunction)(void (*)(void))py_bm25_state, METH_VARARGS | METH_KEYWORDS,
     "Bm25State(norm, ext, df, maxtf, mindl, nterms, nlive, avgdl, k1, b, block_cap) -> a "
     "query state of one index generation (set_lists, search)."},
    {"postings_decode", py_decode, METH_VARARGS,
     "postings_decode(block, isa='auto') -> (docs, tfs): one codec block (crc checked) as two "
     "bytearrays of int32; isa 'avx2' or 'scalar' runs that implementation of the unpacking "
     "(None when this CPU does not run it)."},
    {"postings_decode_many", py_decode_many, METH_O,
     "postings_decode_many(blocks) -> (docs, tfs, counts): blocks concatenated, int32, and "
     "int64 counts."},
    {"postings_join", py_join, METH_O,
     "postings_join(blocks) -> (buf, offs): the blocks (each checked) back to back, and "
     "nb + 1 int64 byte offsets."},
    {"crc32", py_crc32, METH_O, "crc32(data) -> int: zlib-compatible crc32."},
    {"bm25_search", (PyCFunction)(void (*)(void))py_bm25_search, METH_VARARGS | METH_KEYWORDS,
     "bm25_search(lists, queries, norm, k, k1, b, avgdl, block_cap, mode, threads=1, "
     "acc=None, touched=None, ext=None) -> [(docs int32 bytes, scores float64 bytes)] per "
     "query; a query is (lists, idf, qtf, ub[, allow bitmap, cand docnos]). Caller scratch: "
     "acc int64 zeros of len(norm), touched int32 of len(norm) + 1."},
    {NULL, NULL, 0, NULL},
};
