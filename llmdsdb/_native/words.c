/*
 * llmdsdb/_native/words.c -- normalised text -> words, each distinct word numbered once.
 *
 * The word rule is llmdsdb.analysis's: a word is a maximal run of code points c with
 * str.isalnum(c) (Py_UNICODE_ISALNUM: the same predicate, a pure function of the code point
 * over the interpreter's static Unicode tables), and every other code point separates. ASCII
 * letters are lower-cased on the way (the caller passes ASCII text as is and other text
 * already NFKC + casefolded, in which no upper-case ASCII letter is left, so this equals
 * analysis.Analyzer.words). Each word is looked up in an open-addressing table of the words
 * met so far in this call; a token becomes the number of its word (numbered by first
 * appearance), and the words themselves are kept once each, as code points in an arena.
 *
 * Invariant after native_words_split: slots[0 .. nslots) are word numbers < nwords, word i
 * is arena[woff[i] .. woff[i + 1]) (at least one code point), no two words are equal, and
 * counts[t] is the number of tokens text t gave (they sum to nslots).
 *
 * Complexity: O(total code points) expected; memory O(tokens + distinct word lengths).
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

/* 1 for [0-9a-zA-Z]: ASCII's word characters (what str.isalnum says for c < 128). */
static const uint8_t ascii_alnum[128] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
};

/* Grow *p (elements of size sz, capacity *cap) to hold at least need: 0 or -1. */
static int grow(void **p, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 1024;
    while (n < need) {
        if (n > SIZE_MAX / 2 / sz)
            return -1;
        n *= 2;
    }
    void *q = realloc(*p, n * sz);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Rebuild the table with twice the slots (or 4096 at first): 0 or -1. */
static int rehash(native_words *w) {
    size_t ncap = w->tcap ? w->tcap * 2 : 4096;
    int32_t *t = malloc(ncap * sizeof(int32_t));
    if (!t)
        return -1;
    memset(t, 0xff, ncap * sizeof(int32_t));
    size_t mask = ncap - 1;
    for (size_t i = 0; i < w->nwords; i++) {
        size_t j = (size_t)w->whash[i] & mask;
        while (t[j] >= 0)
            j = (j + 1) & mask;
        t[j] = (int32_t)i;
    }
    free(w->table);
    w->table = t;
    w->tcap = ncap;
    return 0;
}

/* The word just written at arena[narena .. narena + len) with hash h: its number (a new
 * word is kept), or -1 when memory ran out. */
static int64_t intern(native_words *w, size_t len, uint64_t h) {
    if ((w->nwords + 1) * 2 > w->tcap && rehash(w) < 0)
        return -1;
    const uint32_t *s = w->arena + w->narena;
    size_t mask = w->tcap - 1, j = (size_t)h & mask;
    for (;;) {
        int32_t k = w->table[j];
        if (k < 0)
            break;
        if (w->whash[k] == h) {
            size_t o = (size_t)w->woff[k], l = (size_t)w->woff[k + 1] - o;
            if (l == len && !memcmp(w->arena + o, s, len * sizeof(uint32_t)))
                return k;
        }
        j = (j + 1) & mask;
    }
    if (w->nwords >= INT32_MAX - 1)
        return -1;
    if (grow((void **)&w->whash, &w->cap_words, w->nwords + 1, sizeof(uint64_t)) < 0 ||
        grow((void **)&w->woff, &w->cap_woff, w->nwords + 2, sizeof(int64_t)) < 0)
        return -1;
    int32_t k = (int32_t)w->nwords++;
    w->whash[k] = h;
    w->narena += len;
    w->woff[k + 1] = (int64_t)w->narena;
    w->table[j] = k;
    return k;
}

/* Split one text of `len` code units of type T (uint8_t, uint16_t or uint32_t). */
#define SPLIT_TEXT(T)                                                                          \
    static int split_##T(native_words *w, const T *s, size_t len, int64_t *count) {            \
        size_t i = 0;                                                                          \
        int64_t n = 0;                                                                         \
        while (i < len) {                                                                      \
            uint32_t c = s[i];                                                                 \
            int word = c < 128 ? ascii_alnum[c] : Py_UNICODE_ISALNUM((Py_UCS4)c);              \
            if (!word) {                                                                       \
                i++;                                                                           \
                continue;                                                                      \
            }                                                                                  \
            size_t wl = 0;                                                                     \
            uint64_t h = 0xcbf29ce484222325ULL;                                                \
            do {                                                                               \
                if (c - 'A' < 26u)                                                             \
                    c += 32;                                                                   \
                if (w->narena + wl >= w->cap_arena &&                                          \
                    grow((void **)&w->arena, &w->cap_arena, w->narena + wl + 1,                \
                         sizeof(uint32_t)) < 0)                                                \
                    return NATIVE_ENOMEM;                                                      \
                w->arena[w->narena + wl++] = c;                                                \
                h = (h ^ c) * 0x100000001b3ULL;                                                \
                if (++i == len)                                                                \
                    break;                                                                     \
                c = s[i];                                                                      \
                word = c < 128 ? ascii_alnum[c] : Py_UNICODE_ISALNUM((Py_UCS4)c);              \
            } while (word);                                                                    \
            int64_t k = intern(w, wl, mix64(h ^ wl));                                          \
            if (k < 0)                                                                         \
                return NATIVE_ENOMEM;                                                          \
            if (w->nslots >= w->cap_slots &&                                                   \
                grow((void **)&w->slots, &w->cap_slots, w->nslots + 1, sizeof(int32_t)) < 0)   \
                return NATIVE_ENOMEM;                                                          \
            w->slots[w->nslots++] = (int32_t)k;                                                \
            n++;                                                                               \
        }                                                                                      \
        *count = n;                                                                            \
        return NATIVE_OK;                                                                      \
    }

SPLIT_TEXT(uint8_t)
SPLIT_TEXT(uint16_t)
SPLIT_TEXT(uint32_t)

int native_words_split(native_words *w, const native_text *texts, size_t n, int64_t *counts) {
    if (grow((void **)&w->woff, &w->cap_woff, w->nwords + 1, sizeof(int64_t)) < 0)
        return NATIVE_ENOMEM;
    w->woff[w->nwords] = (int64_t)w->narena;
    for (size_t t = 0; t < n; t++) {
        int st;
        switch (texts[t].kind) {
        case 1:
            st = split_uint8_t(w, texts[t].data, texts[t].len, &counts[t]);
            break;
        case 2:
            st = split_uint16_t(w, texts[t].data, texts[t].len, &counts[t]);
            break;
        case 4:
            st = split_uint32_t(w, texts[t].data, texts[t].len, &counts[t]);
            break;
        default:
            st = NATIVE_EINVAL;
        }
        if (st != NATIVE_OK)
            return st;
    }
    return NATIVE_OK;
}

void native_words_free(native_words *w) {
    free(w->slots);
    free(w->arena);
    free(w->woff);
    free(w->whash);
    free(w->table);
    memset(w, 0, sizeof(*w));
}
