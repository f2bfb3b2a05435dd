/*
 * llmdsdb/_native/postings.c -- decoding of postings blocks (llmdsdb.codec, version 1).
 *
 * Block layout (see llmdsdb/codec.py): u8 version, varint n, varint base, [u8 dw if n > 1],
 * u8 tw, (n - 1) gap-minus-one values of dw bits, n tf-minus-one values of tw bits (each run
 * little-endian bit order, byte padded), u32 LE crc32 of everything before it.
 *
 * Every block is hostile input: each length, width and value is checked before it is used,
 * and every byte read lies inside [p, p + len). A violation is NATIVE_ECORRUPT (an unknown
 * version byte NATIVE_EVERSION), never a read outside the block.
 */
#include "native.h"

#include <pthread.h>
#include <string.h>

/* ---- crc32 (zlib's polynomial 0xEDB88320), slice-by-8 --------------------------------- */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xFF];
}

uint32_t native_crc32(uint32_t crc, const uint8_t *p, size_t n) {
    pthread_once(&crc_once, crc_init);
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        lo ^= c;
        c = crc_tab[7][lo & 0xFF] ^ crc_tab[6][(lo >> 8) & 0xFF] ^ crc_tab[5][(lo >> 16) & 0xFF] ^
            crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xFF] ^ crc_tab[2][(hi >> 8) & 0xFF] ^
            crc_tab[1][(hi >> 16) & 0xFF] ^ crc_tab[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_tab[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

/* ---- header ---------------------------------------------------------------------------- */

/* A varint of at most maxlen bytes at p[*pos], below end. 0 or -1 (truncated/overlong). */
static int read_varint(const uint8_t *p, size_t end, size_t *pos, int maxlen, uint64_t *out) {
    uint64_t v = 0;
    size_t i = *pos;
    for (int k = 0; k < maxlen; k++, i++) {
        if (i >= end)
            return -1;
        v |= (uint64_t)(p[i] & 0x7F) << (7 * k);
        if (!(p[i] & 0x80)) {
            *pos = i + 1;
            *out = v;
            return 0;
        }
    }
    return -1;
}

int native_postings_header(const uint8_t *p, size_t len, int verify_crc, native_block_hdr *h) {
    h->why = "block too short";
    if (len < 8)
        return NATIVE_ECORRUPT;
    size_t end = len - 4;
    if (verify_crc) {
        uint32_t want = (uint32_t)p[end] | (uint32_t)p[end + 1] << 8 |
                        (uint32_t)p[end + 2] << 16 | (uint32_t)p[end + 3] << 24;
        h->why = "checksum mismatch";
        if (native_crc32(0, p, end) != want)
            return NATIVE_ECORRUPT;
    }
    h->why = "version is not supported";
    if (p[0] != NATIVE_POSTINGS_VERSION)
        return NATIVE_EVERSION;
    size_t pos = 1;
    uint64_t n, base;
    /* n <= 2**16 fits 3 varint bytes and a doc number < 2**31 five: longer is corrupt */
    h->why = "truncated or overlong varint";
    if (read_varint(p, end, &pos, 3, &n) < 0)
        return NATIVE_ECORRUPT;
    h->why = "block declares a bad number of postings";
    if (n < 1 || n > NATIVE_MAX_BLOCK_POSTINGS)
        return NATIVE_ECORRUPT;
    h->why = "truncated or overlong varint";
    if (read_varint(p, end, &pos, 5, &base) < 0)
        return NATIVE_ECORRUPT;
    h->why = "first doc number out of range";
    if (base > NATIVE_MAX_DOC)
        return NATIVE_ECORRUPT;
    h->why = "block truncated";
    unsigned dw = 0, tw;
    if (n > 1) {
        if (pos >= end)
            return NATIVE_ECORRUPT;
        dw = p[pos++];
    }
    if (pos >= end)
        return NATIVE_ECORRUPT;
    tw = p[pos++];
    h->why = "bit widths out of range";
    if (dw > 31 || tw > 31)
        return NATIVE_ECORRUPT;
    size_t glen = ((n - 1) * dw + 7) / 8, tlen = (n * tw + 7) / 8;
    h->why = "block length does not match its header";
    if (pos + glen + tlen != end)
        return NATIVE_ECORRUPT;
    h->why = NULL;
    h->n = (uint32_t)n;
    h->base = (uint32_t)base;
    h->dw = dw;
    h->tw = tw;
    h->gaps = p + pos;
    h->glen = glen;
    h->tfs = p + pos + glen;
    h->tlen = tlen;
    return NATIVE_OK;
}

/* ---- bit unpacking --------------------------------------------------------------------- */

/* The little-endian u64 at byte i of a run of nbytes bytes, zero beyond its end. */
static inline uint64_t load64(const uint8_t *p, size_t nbytes, size_t i) {
    uint64_t v = 0;
    if (i + 8 <= nbytes) {
        memcpy(&v, p + i, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
#endif
        return v;
    }
    for (size_t k = 0; i + k < nbytes; k++)
        v |= (uint64_t)p[i + k] << (8 * k);
    return v;
}

/* count w-bit values (w <= 31) from a run of nbytes >= ceil(count * w / 8) bytes into out.
 * Groups of eight values (exactly w bytes) whose 8-byte loads stay inside the run take an
 * unrolled path specialised for each width (constant offsets, shifts and masks); the rest,
 * at most the last two groups, a byte-safe one. */
#define GROUPS(W)                                                                          \
    case W:                                                                                \
        for (; j + 8 <= count && (j / 8) * (W) + (W) + 7 <= nbytes; j += 8) {              \
            const uint8_t *q = p + (j / 8) * (W);                                          \
            for (int k = 0; k < 8; k++) {                                                  \
                uint64_t x;                                                                \
                memcpy(&x, q + (k * (W)) / 8, 8);                                          \
                out[j + k] = (uint32_t)((x >> ((k * (W)) & 7)) & (((uint64_t)1 << (W)) - 1)); \
            }                                                                              \
        }                                                                                  \
        break;

static void unpack_scalar(const uint8_t *p, size_t nbytes, size_t count, unsigned w,
                          uint32_t *out) {
    size_t j = 0;
    switch (w) {
    case 0:
        memset(out, 0, sizeof(uint32_t) * count);
        return;
        GROUPS(1) GROUPS(2) GROUPS(3) GROUPS(4) GROUPS(5) GROUPS(6) GROUPS(7) GROUPS(8)
        GROUPS(9) GROUPS(10) GROUPS(11) GROUPS(12) GROUPS(13) GROUPS(14) GROUPS(15)
        GROUPS(16) GROUPS(17) GROUPS(18) GROUPS(19) GROUPS(20) GROUPS(21) GROUPS(22)
        GROUPS(23) GROUPS(24) GROUPS(25) GROUPS(26) GROUPS(27) GROUPS(28) GROUPS(29)
        GROUPS(30) GROUPS(31)
    default:
        break;
    }
    const uint64_t mask = ((uint64_t)1 << w) - 1;
    for (size_t bit = j * w; j < count; j++, bit += w)
        out[j] = (uint32_t)((load64(p, nbytes, bit >> 3) >> (bit & 7)) & mask);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* unpack() eight values at a time. Value k of a group of eight starts at bit k * w of the
 * group's w bytes, so inside the 32 bytes from the group's start it lies in 32-bit word
 * (k * w) / 32 and, when it crosses, the next one: each lane fetches both words with a
 * lane permute and joins them with variable shifts (a shift by 32 gives 0 in AVX2). Groups
 * whose 32-byte load would pass the run's end read from a zero-padded copy of its last
 * bytes (fewer than 32 once the direct loads stop). */
__attribute__((target("avx2"))) static void unpack_avx2(const uint8_t *p, size_t nbytes,
                                                         size_t count, unsigned w,
                                                         uint32_t *out) {
    const __m256i kw = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                          _mm256_set1_epi32((int)w));
    const __m256i i0 = _mm256_srli_epi32(kw, 5);
    const __m256i i1 = _mm256_min_epu32(_mm256_add_epi32(i0, _mm256_set1_epi32(1)),
                                        _mm256_set1_epi32(7));
    const __m256i sr = _mm256_and_si256(kw, _mm256_set1_epi32(31));
    const __m256i sl = _mm256_sub_epi32(_mm256_set1_epi32(32), sr);
    const __m256i mask = _mm256_set1_epi32((int)((1u << w) - 1u));
    size_t j = 0, pos = 0;
#define UNPACK8(SRC, DST)                                                                   \
    do {                                                                                    \
        __m256i v_ = _mm256_loadu_si256((const __m256i *)(SRC));                            \
        __m256i lo_ = _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(v_, i0), sr);           \
        __m256i hi_ = _mm256_sllv_epi32(_mm256_permutevar8x32_epi32(v_, i1), sl);           \
        _mm256_storeu_si256((__m256i *)(DST), _mm256_and_si256(_mm256_or_si256(lo_, hi_), mask)); \
    } while (0)
    for (; j + 8 <= count && pos + 32 <= nbytes; j += 8, pos += w)
        UNPACK8(p + pos, out + j);
    if (j >= count)
        return;
    /* what is left of the run is under 32 bytes (the loop stopped at its end) or holds
     * fewer than eight values (at most 28 bytes for the widest), so a 64-byte copy holds
     * it and every 32-byte load from it */
    uint8_t tail[64] = {0};
    size_t left = nbytes - pos;
    memcpy(tail, p + pos, left < sizeof tail ? left : sizeof tail);
    size_t tp = 0;
    for (; j + 8 <= count; j += 8, tp += w)
        UNPACK8(tail + tp, out + j);
    if (j < count) {
        uint32_t last[8];
        UNPACK8(tail + tp, last);
        memcpy(out + j, last, sizeof(uint32_t) * (count - j));
    }
#undef UNPACK8
}

/* A block's doc numbers from its gaps, in place, eight running sums at a time: docs[0] =
 * base, and docs[j + 1] (gap - 1 on entry) becomes docs[j] + gap. In 32-bit lanes: the
 * caller has checked that no sum can pass NATIVE_MAX_DOC, so none overflows. */
__attribute__((target("avx2"))) static void prefix_avx2(int32_t *docs, uint32_t n, int64_t base) {
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 3, 3, 3, 3);
    __m256i carry = _mm256_set1_epi32((int32_t)base);
    docs[0] = (int32_t)base;
    uint32_t j = 0, m = n - 1; /* m sums to form, in docs[1..n) */
    for (; j + 8 <= m; j += 8) {
        __m256i x = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(docs + 1 + j)), one);
        x = _mm256_add_epi32(x, _mm256_slli_si256(x, 4));
        x = _mm256_add_epi32(x, _mm256_slli_si256(x, 8));
        x = _mm256_add_epi32(x, _mm256_blend_epi32(_mm256_setzero_si256(),
                                                   _mm256_permutevar8x32_epi32(x, spread), 0xF0));
        x = _mm256_add_epi32(x, carry);
        _mm256_storeu_si256((__m256i *)(docs + 1 + j), x);
        carry = _mm256_permutevar8x32_epi32(x, _mm256_set1_epi32(7));
    }
    int32_t d = _mm256_cvtsi256_si32(carry);
    const uint32_t *g = (const uint32_t *)docs + 1;
    for (; j < m; j++) {
        d += (int32_t)g[j] + 1;
        docs[j + 1] = d;
    }
}

static int use_avx2;

/* The same test as every other kernel's dispatch (native_isa: AVX-512 CPUs run AVX2). */
__attribute__((constructor)) static void postings_dispatch(void) {
    const char *isa = native_isa();
    use_avx2 = strcmp(isa, "avx2") == 0 || strcmp(isa, "avx512") == 0;
}
#else
static const int use_avx2 = 0;
#define unpack_avx2 unpack_scalar
static inline void prefix_avx2(int32_t *docs, uint32_t n, int64_t base) {
    (void)docs, (void)n, (void)base;
}
#endif

static inline void unpack(int wide, const uint8_t *p, size_t nbytes, size_t count, unsigned w,
                          uint32_t *out) {
    if (wide && w > 0 && count >= 8)
        unpack_avx2(p, nbytes, count, w, out);
    else
        unpack_scalar(p, nbytes, count, w, out);
}

static int unpack_docs(int wide, native_block_hdr *h, int32_t *docs) {
    const uint32_t n = h->n;
    /* gap - 1 values land in docs[1..] as uint32 */
    unpack(wide, h->gaps, h->glen, n - 1, h->dw, (uint32_t *)docs + 1);
    /* each gap is at most 2**dw, so the last doc is at most base + (n - 1) * 2**dw: when
     * that stays in range no sum can overflow 32 bits (the wide lanes' case); otherwise
     * the sums are formed in 64 bits and checked */
    if (wide && (int64_t)h->base + ((int64_t)(n - 1) << h->dw) <= NATIVE_MAX_DOC) {
        prefix_avx2(docs, n, h->base);
        h->why = NULL;
        return NATIVE_OK;
    }
    const uint32_t *g = (const uint32_t *)docs + 1;
    int64_t d = h->base;
    docs[0] = (int32_t)d;
    for (uint32_t j = 0; j + 1 < n; j++) {
        d += (int64_t)g[j] + 1;
        docs[j + 1] = (int32_t)d;
    }
    /* the last doc is the largest (gaps are >= 1), and int64 cannot overflow here */
    h->why = "doc number out of range";
    if (d > NATIVE_MAX_DOC)
        return NATIVE_ECORRUPT;
    h->why = NULL;
    return NATIVE_OK;
}

static int unpack_tfs(int wide, native_block_hdr *h, int32_t *tfs) {
    const uint32_t n = h->n;
    uint32_t *t = (uint32_t *)tfs;
    unpack(wide, h->tfs, h->tlen, n, h->tw, t);
    uint32_t tmax = 0;
    for (uint32_t j = 0; j < n; j++) {
        tmax = t[j] > tmax ? t[j] : tmax;
        tfs[j] = (int32_t)(t[j] + 1);
    }
    h->why = "term frequency out of range";
    if (tmax >= NATIVE_MAX_DOC) /* tf - 1 must be < 2**31 - 1 */
        return NATIVE_ECORRUPT;
    h->tfmax = tmax + 1;
    h->why = NULL;
    return NATIVE_OK;
}

int native_postings_unpack_docs(native_block_hdr *h, int32_t *docs) {
    return unpack_docs(use_avx2, h, docs);
}

int native_postings_unpack_tfs(native_block_hdr *h, int32_t *tfs) {
    return unpack_tfs(use_avx2, h, tfs);
}

int native_postings_unpack_as(native_block_hdr *h, int32_t *docs, int32_t *tfs, int wide) {
    if (wide && !use_avx2)
        return NATIVE_EINVAL;
    int st = unpack_docs(wide, h, docs);
    return st != NATIVE_OK ? st : unpack_tfs(wide, h, tfs);
}

int native_postings_unpack(native_block_hdr *h, int32_t *docs, int32_t *tfs) {
    return native_postings_unpack_as(h, docs, tfs, use_avx2);
}

int64_t native_postings_tf_at(const native_block_hdr *h, uint32_t j) {
    if (j >= h->n)
        return NATIVE_EINVAL;
    const uint64_t mask = ((uint64_t)1 << h->tw) - 1;
    size_t bit = (size_t)j * h->tw;
    uint64_t v = (load64(h->tfs, h->tlen, bit >> 3) >> (bit & 7)) & mask;
    return v >= NATIVE_MAX_DOC ? NATIVE_ECORRUPT : (int64_t)v + 1;
}

int64_t native_postings_decode(const uint8_t *p, size_t len, int verify_crc, int32_t *docs,
                               int32_t *tfs, size_t cap) {
    native_block_hdr h;
    int st = native_postings_header(p, len, verify_crc, &h);
    if (st != NATIVE_OK)
        return st;
    if (h.n > cap)
        return NATIVE_EINVAL;
    st = native_postings_unpack(&h, docs, tfs);
    return st != NATIVE_OK ? st : (int64_t)h.n;
}
