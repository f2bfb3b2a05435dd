/*
 * llmdsdb/_native/bind_lmdbguard.c -- the bounds check of an LMDB value before it is read.
 *
 * LMDB 0.9 trusts the value size and the overflow page number stored in a leaf node, and
 * py-lmdb touches every page of a value as it returns it: a damaged size or page number
 * whose value runs past the end of data.mdb kills the process with SIGBUS. The key a
 * cursor returns (a buffer into the leaf page, right after the node's 8-byte header) leads
 * to that header; this checks the value's extent against the file before the value is
 * asked for (llmdsdb.storage_mapspan).
 *
 * Memory is read only inside a mapping the caller names and only below that mapping's
 * start plus the file's length: the 8 bytes before the key and, for an overflow value, the
 * 8 bytes after it.
 */
#include "native.h"

#include <string.h>

#define LMDB_F_BIGDATA 0x01
#define LMDB_PAGE_HEADER 16
#define LMDB_NODE_HEADER 8

/* The status of the value whose key starts at k (ks bytes) in the mapping [lo, lo + n):
 * NATIVE_OK, or NATIVE_ECORRUPT with *why set. */
static int value_extent(uintptr_t k, size_t ks, uintptr_t lo, size_t n, size_t psize,
                        const char **why) {
    size_t kin = k - lo; /* offset of the key in the file */
    if (kin < 2 * psize || kin > n) {
        *why = "a key lies outside the data pages of the file";
        return NATIVE_ECORRUPT;
    }
    size_t page = kin - kin % psize; /* offset of its page */
    if (kin - page < LMDB_PAGE_HEADER + LMDB_NODE_HEADER || ks > page + psize - kin ||
        page + psize > n) {
        *why = "a key does not fit in its leaf page";
        return NATIVE_ECORRUPT;
    }
    size_t node = kin - LMDB_NODE_HEADER; /* offset of the node: same page, after its header */
    uint8_t h[LMDB_NODE_HEADER];
    memcpy(h, (const void *)(lo + node), sizeof h);
    size_t dsize = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    unsigned flags = (unsigned)h[4] | (unsigned)h[5] << 8;
    size_t ksize = (size_t)h[6] | (size_t)h[7] << 8;
    if (ksize != ks) {
        *why = "a leaf node's key size does not match its key";
        return NATIVE_ECORRUPT;
    }
    size_t data = node + LMDB_NODE_HEADER + ks; /* offset of the node's data */
    if (flags & LMDB_F_BIGDATA) {
        uint64_t pgno;
        if (sizeof pgno > page + psize - data) {
            *why = "an overflow page number runs past its leaf page";
            return NATIVE_ECORRUPT;
        }
        memcpy(&pgno, (const void *)(lo + data), sizeof pgno);
        size_t npages = n / psize;
        if (pgno < 2 || pgno >= npages ||
            dsize > (npages - pgno) * psize - LMDB_PAGE_HEADER) {
            *why = "an overflow value runs past the end of the file (a damaged page number "
                   "or size)";
            return NATIVE_ECORRUPT;
        }
    } else if (dsize > page + psize - data) {
        *why = "a value runs past its leaf page (a damaged size)";
        return NATIVE_ECORRUPT;
    }
    return NATIVE_OK;
}

/* lmdb_value_check(key, map_start, map_end, file_bytes, page_size) -> bool. O(1): the GIL
 * is kept (releasing it would cost more than the check). */
static PyObject *py_lmdb_value_check(PyObject *mod, PyObject *args) {
    PyObject *ok;
    unsigned long long lo, hi, file_bytes, psize;
    if (!PyArg_ParseTuple(args, "OKKKK", &ok, &lo, &hi, &file_bytes, &psize))
        return NULL;
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)) || lo > hi) {
        PyErr_SetString(native_InvalidArgumentError, "lmdb_value_check: page_size must be a "
                        "power of two in 512..65536 and the mapping must not end before it "
                        "starts");
        return NULL;
    }
    Py_buffer kb;
    if (PyObject_GetBuffer(ok, &kb, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_SetString(native_InvalidArgumentError, "lmdb_value_check: key must be a "
                        "contiguous buffer");
        return NULL;
    }
    uintptr_t k = (uintptr_t)kb.buf;
    Py_ssize_t ks = kb.len;
    PyBuffer_Release(&kb); /* only the address and length are used, not the bytes */
    /* LMDB keys are never empty: an empty buffer is no key of the map */
    if (ks == 0 || k < lo || k >= hi)
        Py_RETURN_FALSE;
    size_t n = (size_t)(hi - lo);
    if (file_bytes < n)
        n = (size_t)file_bytes;
    const char *why = NULL;
    int st = value_extent(k, (size_t)ks, (uintptr_t)lo, n, (size_t)psize, &why);
    if (st != NATIVE_OK)
        return native_raise(st, why);
    Py_RETURN_TRUE;
}

PyMethodDef native_lmdbguard_methods[] = {
    {"lmdb_value_check", py_lmdb_value_check, METH_VARARGS,
     "lmdb_value_check(key, map_start, map_end, file_bytes, page_size) -> bool: key is the "
     "buffer an LMDB cursor returned, [map_start, map_end) the addresses of a mapping of "
     "data.mdb. False when the key lies outside it (another mapping, or a write "
     "transaction's own page); True when its leaf node's value (inline or overflow) ends "
     "inside the first file_bytes of the mapping; else CorruptionError, before anything "
     "past the file is read."},
    {NULL, NULL, 0, NULL},
};
