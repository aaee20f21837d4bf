/* Purification-score kernels of curation/scores.py; built on first use by curation/ckernels.py.
   uhr_flat_tiles: the flatness variances alone (patch_magnitude_variances).
   uhr_score_rows: every score of a band of image rows in one pass (purification_scores). */
#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* AVX2 / AVX-512 copies chosen at load time; the sums are formed in the same order in every
   copy (per-lane accumulators), so all copies give bit-identical results. */
#define UHR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define UHR_CLONES
#endif

/* Variance of the Sobel (ksize 3) gradient magnitude of every p x p tile of a uint8 image with
   row stride `stride`: tiles (ty, tx), ty < ny, tx < nx, each filtered on its own with
   REFLECT_101 borders (index -1 -> 1, p -> p-2), as cv2.Sobel on the tile alone.
   var = sum(gx^2 + gy^2) / n - (sum(sqrt(gx^2 + gy^2)) / n)^2, the first sum exact. */
static inline int rf(int64_t i, int64_t p) { return i < 0 ? 1 : (i >= p ? (int)(p - 2) : (int)i); }
static inline int sq_at(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, int xm, int x, int xp) {
    int gx = (r0[xp] - r0[xm]) + 2 * (r1[xp] - r1[xm]) + (r2[xp] - r2[xm]);
    int gy = (r2[xm] + 2 * r2[x] + r2[xp]) - (r0[xm] + 2 * r0[x] + r0[xp]);
    return gx * gx + gy * gy;
}

/* One row of one tile: squared gradient magnitudes into sq[0..p-1] (`sq` holds 4p + 2 ints: its
   tail is scratch for the p square roots) (rows r0, r1, r2 = above,
   this, below, already reflected inside the tile), their exact sum into *ssq and the sum of
   their square roots added to *sm in a fixed order: four lane sums over x = 4k + lane, the
   tail into lane 0, then (l0 + l1) + (l2 + l3). */
static inline void tile_row(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, int p, int *sq,
                            int64_t *ssq, double *sm) {
    sq[0] = sq_at(r0, r1, r2, 1, 0, 1);
    for (int x = 1; x < p - 1; x++) {
        int gx = (r0[x + 1] - r0[x - 1]) + 2 * (r1[x + 1] - r1[x - 1]) + (r2[x + 1] - r2[x - 1]);
        int gy = (r2[x - 1] + 2 * r2[x] + r2[x + 1]) - (r0[x - 1] + 2 * r0[x] + r0[x + 1]);
        sq[x] = gx * gx + gy * gy;
    }
    sq[p - 1] = sq_at(r0, r1, r2, p - 2, p - 1, p - 2);
    int64_t rs = 0;
    for (int x = 0; x < p; x++) rs += sq[x];
    *ssq += rs;
    /* the square roots first (independent: the widest vectors), then the sums in the fixed order */
    double *rt = (double *)(sq + p + (p & 1)); /* scratch after sq: p doubles, 8-byte aligned */
    for (int x = 0; x < p; x++) rt[x] = sqrt((double)sq[x]);
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    int x = 0;
    for (; x + 4 <= p; x += 4)
        for (int k = 0; k < 4; k++) a[k] += rt[x + k];
    for (; x < p; x++) a[0] += rt[x];
    *sm += (a[0] + a[1]) + (a[2] + a[3]);
}

static inline double tile_var(int64_t ssq, double sm, int64_t p) {
    double n = (double)(p * p), mean = sm / n, v = (double)ssq / n - mean * mean;
    return v < 0.0 ? 0.0 : v;
}

UHR_CLONES
int uhr_flat_tiles(const uint8_t *g, int64_t stride, int64_t ny, int64_t nx, int64_t p, double *out) {
    if (p < 2 || p > 8192) return 1; /* larger tiles take the OpenCV path (stack scratch 16p bytes) */
    int sq[4 * p + 2] __attribute__((aligned(32))); /* p ints, then p doubles (tile_row's scratch) */
    for (int64_t ty = 0; ty < ny; ty++) {
        for (int64_t tx = 0; tx < nx; tx++) {
            const uint8_t *base = g + ty * p * stride + tx * p;
            int64_t ssq = 0;
            double sm = 0.0;
            for (int64_t y = 0; y < p; y++)
                tile_row(base + rf(y - 1, p) * stride, base + y * stride, base + rf(y + 1, p) * stride,
                         (int)p, sq, &ssq, &sm);
            out[ty * nx + tx] = tile_var(ssq, sm, p);
        }
    }
    return 0;
}

/* REFLECT_101 row / column index of the whole image (n = its length; a length-1 axis maps to 0). */
static inline int64_t rf_img(int64_t i, int64_t n) {
    if (n == 1) return 0;
    return i < 0 ? 1 : (i >= n ? n - 2 : i);
}

/* Every purification score of image rows [y0, y1) of a uint8 grey image h x w, in one pass per row.
   `buf` holds image rows [b0, b0 + rows in buf) with row stride `stride`; it must include rows
   max(0, y0 - 1) .. min(h - 1, y1) (the one-row halo of the Laplacian; tile rows only ever read
   rows of their own tile, which the halo covers at a band edge).
   acc[0..255]   += 256-bin histogram counts;
   acc[256]      += sum of the ksize-1 Laplacian (kernel [[0,1,0],[1,-4,1],[0,1,0]], REFLECT_101
                    image borders), acc[257] += sum of its squares (exact integers);
   tile_ssq[tx], tile_sm[tx]: running sums of the p x p tile (ty = y / p, tx < nx) the row
                    belongs to, carried between calls; at a tile's last row its magnitude variance
                    (as uhr_flat_tiles) goes to flat_out[ty * nx + tx] and the sums restart.
   Only rows y < ny * p feed tiles. Returns 0, or 1 for bad arguments. */
UHR_CLONES
int uhr_score_rows(const uint8_t *buf, int64_t stride, int64_t b0, int64_t y0, int64_t y1, int64_t h, int64_t w,
                   int64_t p, int64_t ny, int64_t nx, int64_t *acc, int64_t *tile_ssq, double *tile_sm,
                   double *flat_out) {
    if (w < 1 || h < 1 || y0 < 0 || y1 > h || (nx > 0 && (p < 2 || p > 8192 || nx * p > w))) return 1;
    uint32_t hist[4][256];
    memset(hist, 0, sizeof(hist));
    int sq[4 * (p > 1 ? p : 1) + 2] __attribute__((aligned(32))); /* p ints, then p doubles (tile_row) */
    int64_t since_flush = 0;
    for (int64_t y = y0; y < y1; y++) {
        const uint8_t *c = buf + (y - b0) * stride;
        const uint8_t *u = buf + (rf_img(y - 1, h) - b0) * stride;
        const uint8_t *d = buf + (rf_img(y + 1, h) - b0) * stride;
        /* histogram: four sub-histograms so that equal neighbours do not wait on each other */
        int64_t x = 0;
        for (; x + 4 <= w; x += 4) {
            hist[0][c[x]]++; hist[1][c[x + 1]]++; hist[2][c[x + 2]]++; hist[3][c[x + 3]]++;
        }
        for (; x < w; x++) hist[0][c[x]]++;
        since_flush += w;
        if (since_flush > ((int64_t)1 << 30) || y + 1 == y1) {
            for (int v = 0; v < 256; v++) {
                acc[v] += (int64_t)hist[0][v] + hist[1][v] + hist[2][v] + hist[3][v];
                hist[0][v] = hist[1][v] = hist[2][v] = hist[3][v] = 0;
            }
            since_flush = 0;
        }
        /* Laplacian */
        int64_t ls = 0, lq = 0;
        if (w == 1) {
            int l = u[0] + d[0] - 2 * c[0];
            ls = l; lq = (int64_t)l * l;
        } else {
            int l = u[0] + d[0] + 2 * c[1] - 4 * c[0];
            ls += l; lq += (int64_t)l * l;
            for (int64_t x0 = 1; x0 < w - 1; x0 += 1024) { /* int32 partial sums: 1024 * 1020^2 < 2^31 */
                int64_t x1 = x0 + 1024 < w - 1 ? x0 + 1024 : w - 1;
                int32_t s = 0, q = 0;
                for (int64_t xx = x0; xx < x1; xx++) {
                    int v = u[xx] + d[xx] + c[xx - 1] + c[xx + 1] - 4 * c[xx];
                    s += v; q += v * v;
                }
                ls += s; lq += (uint32_t)q;
            }
            l = u[w - 1] + d[w - 1] + 2 * c[w - 2] - 4 * c[w - 1];
            ls += l; lq += (int64_t)l * l;
        }
        acc[256] += ls;
        acc[257] += lq;
        /* flatness tiles */
        if (nx > 0 && y < ny * p) {
            const int64_t ty = y / p, yt = y - ty * p, top = ty * p;
            const uint8_t *r0 = buf + (top + rf(yt - 1, p) - b0) * stride;
            const uint8_t *r2 = buf + (top + rf(yt + 1, p) - b0) * stride;
            for (int64_t tx = 0; tx < nx; tx++)
                tile_row(r0 + tx * p, c + tx * p, r2 + tx * p, (int)p, sq, &tile_ssq[tx], &tile_sm[tx]);
            if (yt == p - 1) {
                for (int64_t tx = 0; tx < nx; tx++) {
                    flat_out[ty * nx + tx] = tile_var(tile_ssq[tx], tile_sm[tx], p);
                    tile_ssq[tx] = 0;
                    tile_sm[tx] = 0.0;
                }
            }
        }
    }
    return 0;
}
