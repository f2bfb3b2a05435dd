/*
 * llmdsdb/_native/bind_words.c -- CPython binding of words.c.
 *
 * words_split(texts) -> (slots, counts, words): the words of every text (a sequence of
 * str; ASCII ones as they are, the others NFKC + casefolded by the caller, as
 * llmdsdb.analysis.Analyzer.normalize does), numbered by first appearance: slots is the
 * int32 word number of each token in order (bytes), counts the int64 token count of each
 * text (bytes), words the list of distinct words (str). The texts are held by a tuple of
 * their own while the kernel reads them with the GIL released.
 */
#include "native.h"

static PyObject *py_words_split(PyObject *self, PyObject *arg) {
    PyObject *tup = PySequence_Tuple(arg);
    if (!tup)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(tup);
    native_text *texts = PyMem_Malloc(sizeof(native_text) * ((size_t)n + 1));
    int64_t *counts = PyMem_Malloc(sizeof(int64_t) * ((size_t)n + 1));
    PyObject *out = NULL;
    native_words w;
    memset(&w, 0, sizeof(w));
    if (!texts || !counts) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyTuple_GET_ITEM(tup, i);
        if (!PyUnicode_Check(s)) {
            PyErr_Format(native_InvalidArgumentError, "words_split: texts[%zd] must be str, "
                         "not %.100s", i, Py_TYPE(s)->tp_name);
            goto done;
        }
        if (PyUnicode_READY(s) < 0)
            goto done;
        texts[i].data = PyUnicode_DATA(s);
        texts[i].len = (size_t)PyUnicode_GET_LENGTH(s);
        texts[i].kind = (int)PyUnicode_KIND(s);
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = native_words_split(&w, texts, (size_t)n, counts);
    Py_END_ALLOW_THREADS
    if (st != NATIVE_OK) {
        native_raise(st, "words_split: out of memory or a str of unknown kind");
        goto done;
    }
    PyObject *slots = PyBytes_FromStringAndSize((const char *)w.slots,
                                                (Py_ssize_t)(w.nslots * sizeof(int32_t)));
    PyObject *cnt = PyBytes_FromStringAndSize((const char *)counts,
                                              (Py_ssize_t)((size_t)n * sizeof(int64_t)));
    PyObject *words = PyList_New((Py_ssize_t)w.nwords);
    if (!slots || !cnt || !words) {
        Py_XDECREF(slots);
        Py_XDECREF(cnt);
        Py_XDECREF(words);
        goto done;
    }
    for (size_t k = 0; k < w.nwords; k++) {
        PyObject *s = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, w.arena + w.woff[k],
                                                (Py_ssize_t)(w.woff[k + 1] - w.woff[k]));
        if (!s) {
            Py_DECREF(slots);
            Py_DECREF(cnt);
            Py_DECREF(words);
            goto done;
        }
        PyList_SET_ITEM(words, (Py_ssize_t)k, s);
    }
    out = PyTuple_Pack(3, slots, cnt, words);
    Py_DECREF(slots);
    Py_DECREF(cnt);
    Py_DECREF(words);
done:
    native_words_free(&w);
    PyMem_Free(texts);
    PyMem_Free(counts);
    Py_DECREF(tup);
    return out;
}

PyMethodDef native_words_methods[] = {
    {"words_split", py_words_split, METH_O,
     "words_split(texts) -> (slots: bytes of int32, counts: bytes of int64, words: list[str]):"
     " each text's words (llmdsdb.analysis's rule; non-ASCII texts normalised by the caller),"
     " every token as the number of its distinct word; GIL released while splitting."},
    {NULL, NULL, 0, NULL},
};
