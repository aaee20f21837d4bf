/* Flatness kernel of curation/scores.py (patch_magnitude_variances); built on first use by curation/ckernels.py. */
#include <stdint.h>
#include <math.h>
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
int uhr_flat_tiles(const uint8_t *g, int64_t stride, int64_t ny, int64_t nx, int64_t p, double *out) {
    if (p < 2 || p > 65536) return 1;
    int sq[p];
    for (int64_t ty = 0; ty < ny; ty++) {
        for (int64_t tx = 0; tx < nx; tx++) {
            const uint8_t *base = g + ty * p * stride + tx * p;
            int64_t ssq = 0;
            double sm = 0.0;
            for (int64_t y = 0; y < p; y++) {
                const uint8_t *r0 = base + rf(y - 1, p) * stride;
                const uint8_t *r1 = base + y * stride;
                const uint8_t *r2 = base + rf(y + 1, p) * stride;
                sq[0] = sq_at(r0, r1, r2, 1, 0, 1);
                for (int x = 1; x < p - 1; x++) sq[x] = sq_at(r0, r1, r2, x - 1, x, x + 1);
                sq[p - 1] = sq_at(r0, r1, r2, (int)p - 2, (int)p - 1, (int)p - 2);
                int64_t rs = 0;
                for (int x = 0; x < p; x++) rs += sq[x];
                ssq += rs;
                double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
                int x = 0;
                for (; x + 4 <= p; x += 4) {
                    a0 += sqrt((double)sq[x]); a1 += sqrt((double)sq[x + 1]);
                    a2 += sqrt((double)sq[x + 2]); a3 += sqrt((double)sq[x + 3]);
                }
                for (; x < p; x++) a0 += sqrt((double)sq[x]);
                sm += (a0 + a1) + (a2 + a3);
            }
            double n = (double)(p * p), mean = sm / n, v = (double)ssq / n - mean * mean;
            out[ty * nx + tx] = v < 0.0 ? 0.0 : v;
        }
    }
    return 0;
}
