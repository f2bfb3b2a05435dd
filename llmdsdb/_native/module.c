/*
 * llmdsdb/_native/module.c -- the llmdsdb._native._core extension module: collects the
 * kernel families' method tables and loads the error classes the bindings raise.
 */
#include "native.h"

#include <string.h>

PyObject *native_CorruptionError = NULL;
PyObject *native_InvalidArgumentError = NULL;
PyObject *native_DimensionError = NULL;

/* One line per kernel family (see native.h). */
static PyMethodDef *native_families[] = {
    native_info_methods,
    native_postings_methods,
    native_postings_write_methods,
    native_hnsw_methods,
    native_repair_methods,
    native_words_methods,
    native_lmdbguard_methods,
    native_envelope_methods,
    NULL,
};

PyObject *native_raise(int status, const char *msg) {
    switch (status) {
    case NATIVE_ECORRUPT:
        PyErr_SetString(native_CorruptionError, msg ? msg : "corrupt data given to a kernel");
        break;
    case NATIVE_ENOMEM:
        PyErr_NoMemory();
        break;
    case NATIVE_EINVAL:
    default:
        PyErr_SetString(native_InvalidArgumentError, msg ? msg : "invalid kernel argument");
        break;
    }
    return NULL;
}

int native_get_buffer(PyObject *o, Py_buffer *v, const char *codes, Py_ssize_t itemsize,
                      int ndim, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, v, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(native_InvalidArgumentError, "%s must be a C-contiguous%s array", what,
                     writable ? " writable" : "");
        return -1;
    }
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if ((ndim >= 0 && v->ndim != ndim) || v->itemsize != itemsize || !f[0] || f[1] ||
        !strchr(codes, f[0])) {
        PyErr_Format(native_InvalidArgumentError, "%s has the wrong type or shape (format %s, "
                     "%d dimensions)", what, v->format ? v->format : "B", v->ndim);
        PyBuffer_Release(v);
        return -1;
    }
    if (native_check_aligned(v, what) < 0) {
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

const char *native_isa(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "avx2";
    return "sse2";
#elif defined(__aarch64__)
    return "neon";
#else
    return "scalar";
#endif
}

static PyObject *py_kernel_info(PyObject *self, PyObject *noargs) {
    PyObject *names = PyList_New(0);
    if (!names)
        return NULL;
    for (PyMethodDef **fam = native_families; *fam; fam++) {
        for (PyMethodDef *m = *fam; m->ml_name; m++) {
            PyObject *s = PyUnicode_FromString(m->ml_name);
            if (!s || PyList_Append(names, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(names);
                return NULL;
            }
            Py_DECREF(s);
        }
    }
    return Py_BuildValue("{s:s,s:N,s:s}", "isa", native_isa(), "kernels", names,
                         "compiler", __VERSION__);
}

PyMethodDef native_info_methods[] = {
    {"kernel_info", py_kernel_info, METH_NOARGS,
     "kernel_info() -> dict: the instruction set the kernels dispatch to, the kernel "
     "functions built in, and the compiler."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "llmdsdb._native._core",
    "Compiled kernels of llmdsdb (see llmdsdb/_native/native.h).", -1, NULL,
};

static int load_error(PyObject *errors, const char *name, PyObject **slot) {
    *slot = PyObject_GetAttrString(errors, name);
    return *slot ? 0 : -1;
}

PyMODINIT_FUNC PyInit__core(void) {
    PyObject *errors = PyImport_ImportModule("llmdsdb.errors");
    if (!errors)
        return NULL;
    if (load_error(errors, "CorruptionError", &native_CorruptionError) < 0 ||
        load_error(errors, "InvalidArgumentError", &native_InvalidArgumentError) < 0 ||
        load_error(errors, "DimensionError", &native_DimensionError) < 0) {
        Py_DECREF(errors);
        return NULL;
    }
    Py_DECREF(errors);
    PyObject *m = PyModule_Create(&native_module);
    if (!m)
        return NULL;
    for (PyMethodDef **fam = native_families; *fam; fam++) {
        if (PyModule_AddFunctions(m, *fam) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
