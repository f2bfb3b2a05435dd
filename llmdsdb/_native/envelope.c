/*
 * llmdsdb/_native/envelope.c -- the fast path of the storage envelope check
 * (llmdsdb.storage_format.Envelope, storage/FORMAT.md): a value is a 12-byte header
 * (magic 0xD5, format version, kind, flags, big-endian crc32, big-endian body length) and
 * its body; the crc32 covers header bytes 0..4 and 8..12 and the body.
 *
 * Only the common case is decided here: an uncompressed value (flags 0) that passes every
 * check. Anything else -- a compressed body, or any failed check -- is left to the Python
 * decoder, which decompresses or raises the error that names what is wrong, so the two
 * never disagree on what a bad value is.
 */
#include "native.h"

#define ENV_MAGIC 0xD5
#define ENV_HDR 12

int64_t native_envelope_body(const uint8_t *p, size_t n, int kind, int max_version) {
    if (n < ENV_HDR || p[0] != ENV_MAGIC || p[1] == 0 || p[1] > max_version || p[2] != kind ||
        p[3] != 0)
        return -1;
    uint32_t crc = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
    uint32_t len = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
    if ((size_t)len != n - ENV_HDR)
        return -1;
    uint32_t c = native_crc32(native_crc32(native_crc32(0, p, 4), p + 8, 4), p + ENV_HDR, len);
    return c == crc ? ENV_HDR : -1;
}

int64_t native_record_id(const uint8_t *p, size_t n, size_t *len) {
    /* {"id": <str>, ...}: a fixmap whose first key is "id", as llmdsdb.records packs it */
    if (n < 5 || p[0] < 0x81 || p[0] > 0x8F || p[1] != 0xA2 || p[2] != 'i' || p[3] != 'd')
        return -1;
    uint8_t h = p[4];
    size_t start, size;
    if (h >= 0xA0 && h <= 0xBF) {
        start = 5;
        size = h - 0xA0u;
    } else if (h == 0xD9 && n >= 6) {
        start = 6;
        size = p[5];
    } else if (h == 0xDA && n >= 7) {
        start = 7;
        size = (size_t)p[5] << 8 | p[6];
    } else {
        return -1;
    }
    if (start + size > n)
        return -1;
    *len = size;
    return (int64_t)start;
}
