/*
 * llmdsdb/_native/bind_postings_write.c -- CPython binding of postings_write.c.
 *
 * postings_encode_many(docs, tfs, bounds) -> list of bytes: block i holds the postings
 * docs[bounds[i] .. bounds[i+1]) (int32 doc numbers, int32 tfs, int64 bounds). Every buffer
 * and every bound is checked here before the kernel runs (GIL released); the kernel checks
 * the postings themselves.
 */
#include "native.h"

static PyObject *py_encode_many(PyObject *self, PyObject *args) {
    PyObject *od, *ot, *ob;
    if (!PyArg_ParseTuple(args, "OOO:postings_encode_many", &od, &ot, &ob))
        return NULL;
    Py_buffer vd, vt, vb;
    if (native_get_buffer(od, &vd, "ilq", 4, -1, 0, "docs") < 0)
        return NULL;
    if (native_get_buffer(ot, &vt, "ilq", 4, -1, 0, "tfs") < 0) {
        PyBuffer_Release(&vd);
        return NULL;
    }
    if (native_get_buffer(ob, &vb, "ilq", 8, -1, 0, "bounds") < 0) {
        PyBuffer_Release(&vd);
        PyBuffer_Release(&vt);
        return NULL;
    }
    PyObject *out = NULL;
    uint8_t *scratch = NULL;
    int64_t *lens = NULL;
    const int32_t *docs = vd.buf, *tfs = vt.buf;
    const int64_t *b = vb.buf;
    Py_ssize_t npost = vd.len / 4, nbnd = vb.len / 8;
    const char *why = NULL;
    if (vt.len != vd.len)
        why = "docs and tfs differ in length";
    else if (nbnd < 1 || b[0] != 0 || b[nbnd - 1] != npost)
        why = "bounds must run from 0 to len(docs)";
    size_t cap = 0;
    Py_ssize_t nb = nbnd - 1;
    for (Py_ssize_t i = 0; !why && i < nb; i++) {
        int64_t n = b[i + 1] - b[i];
        if (n < 1 || n > NATIVE_MAX_BLOCK_POSTINGS)
            why = "each block must hold 1..65536 postings";
        else
            cap += native_postings_encoded_bound((size_t)n);
    }
    if (why) {
        PyErr_Format(native_InvalidArgumentError, "postings_encode_many: %s", why);
        goto done;
    }
    scratch = PyMem_Malloc(cap + 1);
    lens = PyMem_Malloc(sizeof(int64_t) * ((size_t)nb + 1));
    if (!scratch || !lens) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t st = 0;
    Py_BEGIN_ALLOW_THREADS
    size_t off = 0;
    for (Py_ssize_t i = 0; i < nb; i++) {
        st = native_postings_encode(docs + b[i], tfs + b[i], (size_t)(b[i + 1] - b[i]),
                                    scratch + off);
        if (st < 0)
            break;
        lens[i] = st;
        off += (size_t)st;
    }
    Py_END_ALLOW_THREADS
    if (st < 0) {
        native_raise((int)st, "postings_encode_many: doc numbers must be strictly increasing "
                              "in [0, 2**31) and tfs in [1, 2**31) within every block");
        goto done;
    }
    out = PyList_New(nb);
    if (!out)
        goto done;
    size_t o = 0;
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *s = PyBytes_FromStringAndSize((const char *)scratch + o, (Py_ssize_t)lens[i]);
        if (!s) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, s);
        o += (size_t)lens[i];
    }
done:
    PyMem_Free(scratch);
    PyMem_Free(lens);
    PyBuffer_Release(&vd);
    PyBuffer_Release(&vt);
    PyBuffer_Release(&vb);
    return out;
}

PyMethodDef native_postings_write_methods[] = {
    {"postings_encode_many", py_encode_many, METH_VARARGS,
     "postings_encode_many(docs int32, tfs int32, bounds int64) -> list[bytes]: one encoded "
     "block (llmdsdb.codec format 1) per bounds interval; GIL released."},
    {NULL, NULL, 0, NULL},
};
