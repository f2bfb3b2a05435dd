/*
 * llmdsdb/_native/repair.c -- compaction's repair of HNSW rows that point at removed nodes.
 *
 * The repair hnswlib runs for markDelete/replace and FreshDiskANN for delete consolidation:
 * each row that names a removed node is chosen again from its own surviving neighbours plus
 * the removed nodes' live neighbours, with the HNSW selection heuristic (Malkov & Yashunin,
 * Algorithm 4; hnswlib's getNeighborsByHeuristic2). No Python objects, no I/O; the only
 * allocations are scratch freed before returning. Every id read from the rows is
 * bounds-checked (a row read back from disk is hostile): NATIVE_ECORRUPT, never a crash.
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

static int pair_cmp(const void *a, const void *b) {
    native_pair x = *(const native_pair *)a, y = *(const native_pair *)b;
    return native_pair_lt(x, y) ? -1 : native_pair_lt(y, x) ? 1 : 0;
}

/*
 * Repair rows[0..m) of one layer, in that order, in place.
 *
 * vecs: nvec x dim float32 vectors; A: R x W int32 rows of the layer (-1 padding after the
 * entries); rownode[r]: the node of row r; node2row[v]: the row of node v in this layer
 * (-1: none), or NULL when row == node (layer 0); gone[v] != 0: v is being removed;
 * dead[v] != 0: v is deleted (gone nodes are dead too).
 *
 * For a row r of node u: base = its entries that are not gone, in row order. A dead u gets
 * base. A live u gets candidates = base plus, for every gone entry d, the entries of d's
 * row that are neither dead, gone nor u (each id once), ordered by (distance to u, id);
 * all of them when at most W, else the heuristic: a candidate is kept when no candidate
 * kept before it is closer to it than u is (dist(c, s) >= dist(c, u) for every kept s),
 * at most W. The row becomes the kept ids, -1 padded.
 *
 * Returns NATIVE_OK, NATIVE_EINVAL (a row index or node out of range) or NATIVE_ECORRUPT
 * (an entry out of range), NATIVE_ENOMEM.
 */
int native_hnsw_repair(const float *vecs, int64_t nvec, int64_t dim, int metric, int32_t *A,
                       int64_t R, int64_t W, const int64_t *rownode, const int32_t *node2row,
                       const uint8_t *gone, const uint8_t *dead, const int64_t *rows, int64_t m) {
    if (W <= 0 || dim <= 0 || nvec <= 0)
        return m ? NATIVE_EINVAL : NATIVE_OK;
    size_t cap = (size_t)W * (size_t)(W + 1);
    int32_t *cand = malloc(cap * sizeof *cand);
    native_pair *pr = malloc(cap * sizeof *pr);
    uint8_t *blocked = malloc(cap);
    int32_t *keep = malloc((size_t)W * sizeof *keep);
    uint32_t *stamp = calloc((size_t)nvec, sizeof *stamp);
    int st = NATIVE_OK;
    if (!cand || !pr || !blocked || !keep || !stamp) {
        st = NATIVE_ENOMEM;
        goto done;
    }
    for (int64_t i = 0; i < m; i++) {
        int64_t r = rows[i];
        if (r < 0 || r >= R) {
            st = NATIVE_EINVAL;
            goto done;
        }
        int64_t u = rownode[r];
        if (u < 0 || u >= nvec) {
            st = NATIVE_EINVAL;
            goto done;
        }
        uint32_t sv = (uint32_t)(i + 1);
        int32_t *row = A + r * W;
        size_t nc = 0;
        stamp[u] = sv;
        for (int64_t j = 0; j < W; j++) {
            int32_t e = row[j];
            if (e < 0)
                continue;
            if (e >= nvec) {
                st = NATIVE_ECORRUPT;
                goto done;
            }
            if (!gone[e] && stamp[e] != sv) {
                stamp[e] = sv;
                cand[nc++] = e;
            }
        }
        size_t nkeep = 0;
        if (dead[u]) {
            memcpy(keep, cand, nc * sizeof *cand);
            nkeep = nc;
        } else {
            for (int64_t j = 0; j < W; j++) {
                int32_t d = row[j];
                if (d < 0 || !gone[d])
                    continue;
                int64_t dr = node2row ? node2row[d] : d;
                if (dr < 0)
                    continue;
                if (dr >= R) {
                    st = NATIVE_ECORRUPT;
                    goto done;
                }
                const int32_t *drow = A + dr * W;
                for (int64_t k = 0; k < W; k++) {
                    int32_t x = drow[k];
                    if (x < 0)
                        continue;
                    if (x >= nvec) {
                        st = NATIVE_ECORRUPT;
                        goto done;
                    }
                    if (!dead[x] && !gone[x] && stamp[x] != sv && nc < cap) {
                        stamp[x] = sv;
                        cand[nc++] = x;
                    }
                }
            }
            const float *vu = vecs + u * dim;
            for (size_t k = 0; k < nc; k++) {
                pr[k].d = native_dist(metric, vecs + (int64_t)cand[k] * dim, vu, (size_t)dim);
                pr[k].id = cand[k];
            }
            qsort(pr, nc, sizeof *pr, pair_cmp);
            if (nc <= (size_t)W) {
                for (size_t k = 0; k < nc; k++)
                    keep[nkeep++] = pr[k].id;
            } else {
                memset(blocked, 0, nc);
                size_t a = 0;
                for (;;) {
                    keep[nkeep++] = pr[a].id;
                    if (nkeep >= (size_t)W)
                        break;
                    const float *va = vecs + (int64_t)pr[a].id * dim;
                    size_t next = nc;
                    for (size_t k = a + 1; k < nc; k++) {
                        if (blocked[k])
                            continue;
                        float dk = native_dist(metric, vecs + (int64_t)pr[k].id * dim, va,
                                               (size_t)dim);
                        if (dk < pr[k].d)
                            blocked[k] = 1;
                        else if (next == nc)
                            next = k;
                    }
                    if (next == nc)
                        break;
                    a = next;
                }
            }
        }
        for (int64_t j = 0; j < W; j++)
            row[j] = (size_t)j < nkeep ? keep[j] : -1;
    }
done:
    free(cand);
    free(pr);
    free(blocked);
    free(keep);
    free(stamp);
    return st;
}
