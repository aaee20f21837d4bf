/* PNG row unfiltering (PNG spec, section 9: filter types 0-4), in place, one band of rows.
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
