/* Decoder kernels (curation/decoders.py), compiled on first use by curation/ckernels.py.
 *
 * PNG row unfiltering (PNG spec, section 9: filter types 0-4), in place, one band of rows.
 *
 * rows:     nrows rows of (1 + rowbytes) bytes each: the filter-type byte, then the filtered
 *           scanline; on return each scanline (bytes 1..rowbytes) holds the reconstructed bytes.
 * prev:     rowbytes bytes, the reconstructed scanline above the band (all zero before the
 *           first row of an image or interlace pass); on return, the band's last scanline.
 * bpp:      bytes per complete pixel, rounded up to 1 (the spec's "bpp" for filtering).
 * Returns 0, or 1 + the index of the first row whose filter type is not 0..4.
 */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

static inline uint8_t paeth(int a, int b, int c) {
    int p = a + b - c;
    int pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    if (pa <= pb && pa <= pc) return (uint8_t)a;
    if (pb <= pc) return (uint8_t)b;
    return (uint8_t)c;
}

int64_t uhr_png_unfilter(uint8_t *rows, int64_t nrows, int64_t rowbytes, int64_t bpp, uint8_t *prev) {
    for (int64_t r = 0; r < nrows; r++) {
        uint8_t *line = rows + r * (rowbytes + 1);
        uint8_t ft = line[0];
        uint8_t *x = line + 1;
        const uint8_t *up = (r == 0) ? prev : (rows + (r - 1) * (rowbytes + 1) + 1);
        int64_t i;
        switch (ft) {
        case 0:
            break;
        case 1: /* Sub */
            for (i = bpp; i < rowbytes; i++) x[i] = (uint8_t)(x[i] + x[i - bpp]);
            break;
        case 2: /* Up */
            for (i = 0; i < rowbytes; i++) x[i] = (uint8_t)(x[i] + up[i]);
            break;
        case 3: /* Average */
            for (i = 0; i < bpp && i < rowbytes; i++) x[i] = (uint8_t)(x[i] + (up[i] >> 1));
            for (; i < rowbytes; i++) x[i] = (uint8_t)(x[i] + ((x[i - bpp] + up[i]) >> 1));
            break;
        case 4: /* Paeth */
            for (i = 0; i < bpp && i < rowbytes; i++) x[i] = (uint8_t)(x[i] + up[i]);
            for (; i < rowbytes; i++) x[i] = (uint8_t)(x[i] + paeth(x[i - bpp], up[i], up[i - bpp]));
            break;
        default:
            return r + 1;
        }
    }
    if (nrows > 0) memcpy(prev, rows + (nrows - 1) * (rowbytes + 1) + 1, (size_t)rowbytes);
    return 0;
}

/* 16-bit colour + alpha over white -> 8-bit, in the float32 arithmetic of the whole-image rule
 * (numpy: a = A / 65535.0f; c = C / 65535.0f; out = c * a + (1 - a)  [associated: c + (1 - a)];
 * rint(out * 255) clipped to 0..255). Every operation is one IEEE float32 operation in the
 * same order, so the bytes equal numpy's (no FMA contraction: -std=c99 keeps -ffp-contract=off;
 * out >= 0, so adding and removing 2^23 is rint in the default rounding mode).
 *
 * src:      n pixels of nch 16-bit samples (colour first, alpha last), byte order big_endian
 *           (PNG) or native; read through bytes, so any alignment works.
 * dst:      n pixels of nch - 1 bytes.
 */
static inline uint16_t rd16(const uint8_t *p, int be) {
    if (be) return (uint16_t)((p[0] << 8) | p[1]);
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

int64_t uhr_composite16(const uint8_t *src, int64_t n, int64_t nch, int64_t big_endian, int64_t associated,
                        uint8_t *dst) {
    const int64_t nc = nch - 1;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = src + i * nch * 2;
        float a = (float)rd16(p + nc * 2, (int)big_endian) / 65535.0f;
        float inv = 1.0f - a;
        for (int64_t k = 0; k < nc; k++) {
            float c = (float)rd16(p + k * 2, (int)big_endian) / 65535.0f;
            float o = associated ? c + inv : c * a + inv;
            o = o * 255.0f;
            o = (o + 8388608.0f) - 8388608.0f; /* rint for 0 <= o < 2^23: ties to even, as np.rint */
            dst[i * nc + k] = (uint8_t)(o < 0.0f ? 0.0f : (o > 255.0f ? 255.0f : o));
        }
    }
    return 0;
}

/* CMYK as a JPEG stores it (Adobe, inverted) -> RGB by OpenCV's rule v = k - ((255 - v) * k >> 8),
 * in place: pixel i's 4 bytes at 4i are read before its 3 bytes go to 3i (3i + 2 < 4(i + 1)), so a
 * forward pass never overwrites a byte it has still to read. buf: n pixels; returns 0. */
int64_t uhr_cmyk_to_rgb(uint8_t *buf, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const int c = buf[4 * i], m = buf[4 * i + 1], y = buf[4 * i + 2], k = buf[4 * i + 3];
        buf[3 * i] = (uint8_t)(k - (((255 - c) * k) >> 8));
        buf[3 * i + 1] = (uint8_t)(k - (((255 - m) * k) >> 8));
        buf[3 * i + 2] = (uint8_t)(k - (((255 - y) * k) >> 8));
    }
    return 0;
}
