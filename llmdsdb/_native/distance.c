/*
 * llmdsdb/_native/distance.c -- float32 distances with runtime SIMD dispatch, the exact
 * top-k scan, and the row preparation (validation, normalisation) of stored vectors.
 *
 * Dispatch: one implementation per instruction set (AVX-512F, AVX2+FMA on x86-64; a
 * portable scalar loop with four accumulators everywhere else), each compiled with a gcc
 * target attribute so the default build needs no -march flag. A load-time constructor
 * picks the widest one the CPU runs, by the same test as native_isa(), and stores it in
 * the native_dot / native_l2sq pointers (hnswlib's space_l2.h / space_ip.h do the same
 * behind one function-pointer type).
 *
 * Contract: pointers are valid for dim floats (callers check); no allocation.
 */
#include "native.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NATIVE_X86 1
#endif

/* ---- scalar (every platform) -------------------------------------------------------- */

static float dot_scalar(const float *a, const float *b, size_t d) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < d; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static float l2sq_scalar(const float *a, const float *b, size_t d) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        float t0 = a[i] - b[i], t1 = a[i + 1] - b[i + 1];
        float t2 = a[i + 2] - b[i + 2], t3 = a[i + 3] - b[i + 3];
        s0 += t0 * t0;
        s1 += t1 * t1;
        s2 += t2 * t2;
        s3 += t3 * t3;
    }
    for (; i < d; i++) {
        float t = a[i] - b[i];
        s0 += t * t;
    }
    return (s0 + s1) + (s2 + s3);
}

#ifdef NATIVE_X86
/* ---- AVX2 + FMA ---------------------------------------------------------------------- */

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b,
                                                         size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++)
        s += a[i] * b[i];
    return s;
}

__attribute__((target("avx2,fma"))) static float l2sq_avx2(const float *a, const float *b,
                                                          size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        __m256 t2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
        __m256 t3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
        s0 = _mm256_fmadd_ps(t0, t0, s0);
        s1 = _mm256_fmadd_ps(t1, t1, s1);
        s2 = _mm256_fmadd_ps(t2, t2, s2);
        s3 = _mm256_fmadd_ps(t3, t3, s3);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 t = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(t, t, s0);
    }
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++) {
        float t = a[i] - b[i];
        s += t * t;
    }
    return s;
}

/* ---- AVX-512F ------------------------------------------------------------------------ */

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b,
                                                          size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= d; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < d) {
        __mmask16 m = (__mmask16)((1u << (d - i)) - 1u);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f"))) static float l2sq_avx512(const float *a, const float *b,
                                                           size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        s0 = _mm512_fmadd_ps(t0, t0, s0);
        s1 = _mm512_fmadd_ps(t1, t1, s1);
    }
    for (; i + 16 <= d; i += 16) {
        __m512 t = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        s0 = _mm512_fmadd_ps(t, t, s0);
    }
    if (i < d) {
        __mmask16 m = (__mmask16)((1u << (d - i)) - 1u);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s1 = _mm512_fmadd_ps(t, t, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif /* NATIVE_X86 */

native_reduce_fn native_dot = dot_scalar;
native_reduce_fn native_l2sq = l2sq_scalar;
static const char *dist_isa = "scalar";

/* The implementations this CPU runs, widest first; level 2 = AVX-512F, 1 = AVX2+FMA. */
static int cpu_level(void) {
#ifdef NATIVE_X86
    const char *isa = native_isa();
    return strcmp(isa, "avx512") == 0 ? 2 : strcmp(isa, "avx2") == 0 ? 1 : 0;
#else
    return 0;
#endif
}

int native_reduce_for(const char *isa, native_reduce_fn *dot, native_reduce_fn *l2sq) {
    int want = strcmp(isa, "avx512") == 0 ? 2 : strcmp(isa, "avx2") == 0 ? 1
             : strcmp(isa, "scalar") == 0 ? 0 : -1;
    if (want < 0 || want > cpu_level())
        return -1;
#ifdef NATIVE_X86
    if (want == 2) {
        *dot = dot_avx512;
        *l2sq = l2sq_avx512;
        return 0;
    }
    if (want == 1) {
        *dot = dot_avx2;
        *l2sq = l2sq_avx2;
        return 0;
    }
#endif
    *dot = dot_scalar;
    *l2sq = l2sq_scalar;
    return 0;
}

/* Chosen once when the extension loads, before any kernel can run. */
__attribute__((constructor)) static void distance_dispatch(void) {
    static const char *names[] = {"scalar", "avx2", "avx512"};
    int level = cpu_level();
    native_reduce_for(names[level], &native_dot, &native_l2sq);
    dist_isa = names[level];
}

const char *native_dist_isa(void) { return dist_isa; }

/* ---- exact top-k --------------------------------------------------------------------- */

size_t native_topk_scan(const float *vecs, size_t n, size_t dim, const float *q, int metric,
                        const uint8_t *skip, size_t k, native_pair *heap, native_pair *out) {
    size_t m = 0;
    if (!k)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (skip && skip[i])
            continue;
        native_pair p = {native_dist(metric, q, vecs + i * dim, dim), (int32_t)i};
        if (m < k) {
            native_heap_push(heap, &m, p);
        } else if (native_pair_lt(p, heap[0])) { /* replaces the worst hit kept */
            native_heap_pop(heap, &m);
            native_heap_push(heap, &m, p);
        }
    }
    native_heap_drain(heap, m, out);
    return m;
}

/* ---- row preparation ------------------------------------------------------------------ */

int native_prep_row(const double *x, size_t dim, int metric, double limit_sq, float *out,
                    double *norm) {
    double ss = 0.0;
    for (size_t i = 0; i < dim; i++)
        ss += x[i] * x[i];
    if (!(ss > 1e-290) || !isfinite(ss))
        return 1;
    /* ss above FLT_MAX^2 may hold a component no float32 can (the cast would be undefined);
     * a NaN limit flags every row rather than none. */
    if (metric != NATIVE_COSINE && (!(ss <= limit_sq) || ss > (double)FLT_MAX * FLT_MAX))
        return 1;
    double nrm = sqrt(ss);
    *norm = nrm;
    if (metric == NATIVE_COSINE) {
        for (size_t i = 0; i < dim; i++)
            out[i] = (float)(x[i] / nrm);
    } else {
        for (size_t i = 0; i < dim; i++)
            out[i] = (float)x[i];
    }
    return 0;
}
