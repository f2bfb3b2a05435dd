/*
 * llmdsdb/_native/native.h -- the one header of the compiled kernels.
 *
 * Layout: one C file per kernel family (distance.c, hnsw.c, postings.c, bm25.c, ...) holds
 * the kernels, which see plain pointers, lengths and strides only: no Python objects, no
 * I/O, no allocation that outlives the call unless the caller passes scratch in. Each
 * family's binding (bind_<family>.c) is the thin CPython layer: it checks every buffer
 * (dtype, contiguity, shape, index ranges) before a kernel touches it, releases the GIL
 * around the kernel, and turns the kernel's status code into one llmdsdb.errors class.
 *
 * Data that came from disk is hostile: every id, length and offset a kernel reads from it
 * is bounds-checked before use, and a violation is NATIVE_ECORRUPT, never a crash.
 */
#ifndef LLMDSDB_NATIVE_H
#define LLMDSDB_NATIVE_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* Kernel status codes; the bindings map them with native_raise(). */
enum {
    NATIVE_OK = 0,
    NATIVE_ECORRUPT = -1, /* input data violates its format: llmdsdb.errors.CorruptionError */
    NATIVE_EINVAL = -2,   /* caller passed a bad argument: InvalidArgumentError */
    NATIVE_ENOMEM = -3,   /* allocation failed: MemoryError */
};

/* Error classes from llmdsdb.errors, loaded once at module init (borrowed for the
 * module's lifetime). */
extern PyObject *native_CorruptionError;
extern PyObject *native_InvalidArgumentError;
extern PyObject *native_DimensionError;

/* Set the Python exception for a kernel status (msg may be NULL) and return NULL. */
PyObject *native_raise(int status, const char *msg);

/* Runtime instruction-set dispatch: the widest x86-64 level this CPU runs ("avx512",
 * "avx2", "sse2") or "neon"/"scalar" elsewhere. Kernels built with target_clones pick
 * their clone by the same CPU features. */
const char *native_isa(void);

/*
 * Kernel families register their Python-visible functions here: each bind_<family>.c
 * defines one NULL-terminated PyMethodDef table, and module.c lists the tables in
 * native_families[]. To add a family, define its table and add one line there.
 */
extern PyMethodDef native_info_methods[];

#endif /* LLMDSDB_NATIVE_H */
