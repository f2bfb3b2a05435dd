/*
 * llmdsdb/_native/bind_envelope.c -- CPython binding of envelope.c.
 *
 * docs_open(values, kind, max_version) -> (bodies, ids): for each stored value (a buffer,
 * e.g. LMDB's memoryview, or None), its verified body as bytes when it is an uncompressed
 * envelope of `kind` that passes every check, else None (the caller decodes that one in
 * Python, which decompresses or raises); and the document id (str) read from the front of
 * that body when it is a record packed as llmdsdb.records packs them, else None. The
 * checks run with the GIL released; the bytes and str objects are made after.
 */
#include "native.h"

#include <string.h>

static PyObject *py_docs_open(PyObject *self, PyObject *args) {
    PyObject *seq;
    int kind, maxv;
    if (!PyArg_ParseTuple(args, "Oii:docs_open", &seq, &kind, &maxv))
        return NULL;
    PyObject *fast = PySequence_Fast(seq, "docs_open: values must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_buffer *views = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    int64_t *body = PyMem_Malloc(sizeof(int64_t) * ((size_t)n + 1));
    int64_t *idoff = PyMem_Malloc(sizeof(int64_t) * ((size_t)n + 1));
    size_t *idlen = PyMem_Malloc(sizeof(size_t) * ((size_t)n + 1));
    PyObject *bodies = NULL, *ids = NULL, *out = NULL;
    Py_ssize_t got = 0;
    if (!views || !body || !idoff || !idlen) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *v = PySequence_Fast_GET_ITEM(fast, got);
        if (v == Py_None) {
            views[got].buf = NULL;
            views[got].len = 0;
            views[got].obj = NULL;
            continue;
        }
        if (PyObject_GetBuffer(v, &views[got], PyBUF_SIMPLE) < 0)
            goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        body[i] = -1;
        idoff[i] = -1;
        if (!views[i].buf)
            continue;
        const uint8_t *p = views[i].buf;
        size_t len = (size_t)views[i].len;
        body[i] = native_envelope_body(p, len, kind, maxv);
        if (body[i] >= 0)
            idoff[i] = native_record_id(p + body[i], len - (size_t)body[i], &idlen[i]);
    }
    Py_END_ALLOW_THREADS
    bodies = PyList_New(n);
    ids = PyList_New(n);
    if (!bodies || !ids)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b, *s = NULL;
        if (body[i] >= 0) {
            const char *p = (const char *)views[i].buf + body[i];
            b = PyBytes_FromStringAndSize(p, views[i].len - (Py_ssize_t)body[i]);
            if (!b)
                goto done;
            if (idoff[i] >= 0) {
                s = PyUnicode_DecodeUTF8(p + idoff[i], (Py_ssize_t)idlen[i], "strict");
                if (!s)
                    PyErr_Clear(); /* not UTF-8: the Python reader reports it */
            }
        } else {
            b = Py_None;
            Py_INCREF(b);
        }
        if (!s) {
            s = Py_None;
            Py_INCREF(s);
        }
        PyList_SET_ITEM(bodies, i, b);
        PyList_SET_ITEM(ids, i, s);
    }
    out = PyTuple_Pack(2, bodies, ids);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        if (views[i].obj)
            PyBuffer_Release(&views[i]);
    Py_XDECREF(bodies);
    Py_XDECREF(ids);
    PyMem_Free(views);
    PyMem_Free(body);
    PyMem_Free(idoff);
    PyMem_Free(idlen);
    Py_DECREF(fast);
    return out;
}

PyMethodDef native_envelope_methods[] = {
    {"docs_open", py_docs_open, METH_VARARGS,
     "docs_open(values, kind, max_version) -> (bodies, ids): each value's verified body "
     "(bytes) when it is an uncompressed envelope of kind passing every check, else None; "
     "and the record's id (str) when its body starts as llmdsdb.records packs it, else None."},
    {NULL, NULL, 0, NULL},
};
