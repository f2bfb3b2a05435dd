/*
 * llmdsdb/_native/bind_repair.c -- CPython binding of repair.c (compaction's HNSW repair).
 *
 * Every buffer is checked here (element type, dimensions, contiguity, lengths) before the
 * kernel sees it; the kernel runs with the GIL released and checks the ids it reads.
 */
#include "native.h"

/* hnsw_repair(vecs, metric, A, rownode, node2row | None, gone, dead, rows): native_hnsw_repair
 * over one layer (see repair.c); A is changed in place. */
static PyObject *py_hnsw_repair(PyObject *mod, PyObject *args) {
    PyObject *ov, *oa, *orn, *on2r, *og, *od, *orows;
    int metric;
    if (!PyArg_ParseTuple(args, "OiOOOOOO", &ov, &metric, &oa, &orn, &on2r, &og, &od, &orows))
        return NULL;
    if (metric != NATIVE_COSINE && metric != NATIVE_L2 && metric != NATIVE_IP) {
        PyErr_SetString(native_InvalidArgumentError, "hnsw_repair: unknown metric");
        return NULL;
    }
    /* vecs, A, rownode, gone, dead, rows, node2row: checked in this order */
    struct {
        PyObject *o;
        const char *codes;
        Py_ssize_t size;
        int ndim, writable;
        const char *what;
    } spec[7] = {
        {ov, "f", 4, 2, 0, "vecs"}, {oa, "il", 4, 2, 1, "rows A"},
        {orn, "qlL", 8, 1, 0, "rownode"}, {og, "B?b", 1, 1, 0, "gone"},
        {od, "B?b", 1, 1, 0, "dead"}, {orows, "qlL", 8, 1, 0, "rows"},
        {on2r, "il", 4, 1, 0, "node2row"},
    };
    Py_buffer b[7];
    int nb = 0, ok = 0;
    int has_map = on2r != Py_None;
    for (int i = 0; i < (has_map ? 7 : 6); i++, nb++)
        if (native_get_buffer(spec[i].o, &b[i], spec[i].codes, spec[i].size, spec[i].ndim,
                              spec[i].writable, spec[i].what) < 0)
            goto out;
    Py_ssize_t nvec = b[0].shape[0], dim = b[0].shape[1];
    Py_ssize_t R = b[1].shape[0], W = b[1].shape[1];
    if (b[2].shape[0] != R || b[3].shape[0] != nvec || b[4].shape[0] != nvec ||
        (has_map && b[6].shape[0] != nvec)) {
        PyErr_SetString(native_InvalidArgumentError, "hnsw_repair: rownode must have a row's "
                        "length, gone/dead/node2row one entry per vector");
        goto out;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = native_hnsw_repair((const float *)b[0].buf, nvec, dim, metric, (int32_t *)b[1].buf, R,
                            W, (const int64_t *)b[2].buf,
                            has_map ? (const int32_t *)b[6].buf : NULL,
                            (const uint8_t *)b[3].buf, (const uint8_t *)b[4].buf,
                            (const int64_t *)b[5].buf, b[5].shape[0]);
    Py_END_ALLOW_THREADS
    if (st != NATIVE_OK) {
        native_raise(st, st == NATIVE_ECORRUPT ? "hnsw_repair: a row names a node out of range"
                                                : "hnsw_repair: a row index or node is out of "
                                                  "range");
        goto out;
    }
    ok = 1;
out:
    for (int i = 0; i < nb; i++)
        PyBuffer_Release(&b[i]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

PyMethodDef native_repair_methods[] = {
    {"hnsw_repair", py_hnsw_repair, METH_VARARGS,
     "hnsw_repair(vecs, metric, A, rownode, node2row, gone, dead, rows): repair one layer's "
     "rows that name removed nodes, in place (compaction)"},
    {NULL, NULL, 0, NULL},
};
