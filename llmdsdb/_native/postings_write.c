/*
 * llmdsdb/_native/postings_write.c -- encoding of postings blocks (llmdsdb.codec, version 1).
 *
 * The write side of postings.c: frame-of-reference bit packing of the d-gaps and the term
 * frequencies, byte for byte the layout llmdsdb/codec.py documents (and the numpy encoder
 * in tests/codec_reference.py writes, which the tests compare this kernel against):
 *
 *   u8 version, varint n, varint base, [u8 dw if n > 1], u8 tw,
 *   (n - 1) values of (gap - 1) in dw bits, n values of (tf - 1) in tw bits
 *   (each run little-endian bit order, byte padded), u32 LE crc32 of everything before.
 *
 * The input comes from the caller, not from disk, but is still checked in full: doc numbers
 * strictly increasing inside a block and in [0, 2**31), tfs in [1, 2**31), 1..65536
 * postings a block. A violation is NATIVE_EINVAL and nothing is written.
 */
#include "native.h"

#include <string.h>

static int bit_width(uint32_t v) {
    return v ? 32 - __builtin_clz(v) : 0;
}

size_t native_postings_encoded_bound(size_t n) {
    /* version, two varints of at most 5 bytes, two widths, both runs at 31 bits, crc */
    return 1 + 5 + 5 + 2 + (n * 31 + 7) / 8 * 2 + 4;
}

static size_t put_varint(uint8_t *p, uint32_t v) {
    size_t i = 0;
    while (v >= 0x80) {
        p[i++] = (uint8_t)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    p[i++] = (uint8_t)v;
    return i;
}

int native_postings_check(const int32_t *docs, const int32_t *tfs, size_t n) {
    if (n < 1 || n > NATIVE_MAX_BLOCK_POSTINGS)
        return NATIVE_EINVAL;
    if (docs[0] < 0)
        return NATIVE_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (tfs[i] < 1)
            return NATIVE_EINVAL;
        if (i && docs[i] <= docs[i - 1])
            return NATIVE_EINVAL;
    }
    return NATIVE_OK;
}

int64_t native_postings_encode(const int32_t *docs, const int32_t *tfs, size_t n, uint8_t *out) {
    int st = native_postings_check(docs, tfs, n);
    if (st != NATIVE_OK)
        return st;
    uint32_t gmax = 0, tmax = 0;
    for (size_t i = 1; i < n; i++) {
        uint32_t g = (uint32_t)(docs[i] - docs[i - 1] - 1);
        gmax |= g;
    }
    for (size_t i = 0; i < n; i++)
        tmax |= (uint32_t)(tfs[i] - 1);
    /* OR of the values has the same bit width as their maximum */
    int dw = bit_width(gmax), tw = bit_width(tmax);
    uint8_t *p = out;
    *p++ = NATIVE_POSTINGS_VERSION;
    p += put_varint(p, (uint32_t)n);
    p += put_varint(p, (uint32_t)docs[0]);
    if (n > 1)
        *p++ = (uint8_t)dw;
    *p++ = (uint8_t)tw;
    /* the two runs, each byte padded */
    for (int run = 0; run < 2; run++) {
        int w = run ? tw : dw;
        size_t cnt = run ? n : n - 1;
        if (!w || !cnt)
            continue;
        uint64_t acc = 0;
        int nb = 0;
        for (size_t i = 0; i < cnt; i++) {
            uint32_t v = run ? (uint32_t)(tfs[i] - 1) : (uint32_t)(docs[i + 1] - docs[i] - 1);
            acc |= (uint64_t)v << nb;
            nb += w;
            while (nb >= 8) {
                *p++ = (uint8_t)acc;
                acc >>= 8;
                nb -= 8;
            }
        }
        if (nb > 0)
            *p++ = (uint8_t)acc;
    }
    uint32_t crc = native_crc32(0, out, (size_t)(p - out));
    p[0] = (uint8_t)crc;
    p[1] = (uint8_t)(crc >> 8);
    p[2] = (uint8_t)(crc >> 16);
    p[3] = (uint8_t)(crc >> 24);
    p += 4;
    return (int64_t)(p - out);
}
