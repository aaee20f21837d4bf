/* GLCM patch kernel of evaluation/metrics/glcm.py (Table 3 GLCM score); built on first use by curation/ckernels.py. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>

#define LV 64 /* grey levels after >> 2 */
#define PS 64 /* patch side */

/* Pixel pairs of offset (dr, dc) whose first pixel lies in rows [r0, r1), cols [c0, c1). */
static void count_rect(const uint8_t *q, int dr, int dc, int r0, int r1, int c0, int c1, uint16_t *h)
{
    for (int r = r0; r < r1; ++r) {
        const uint8_t *a = q + r * PS, *b = q + (r + dr) * PS + dc;
        for (int c = c0; c < c1; ++c) h[(a[c] << 6) | b[c]]++;
    }
}

static void valid_rect(int dr, int dc, int *r0, int *r1, int *c0, int *c1)
{
    *r0 = dr < 0 ? -dr : 0; *r1 = dr > 0 ? PS - dr : PS;
    *c0 = dc < 0 ? -dc : 0; *c1 = dc > 0 ? PS - dc : PS;
}

/* Co-occurrence counts of two offsets at once: the first pixel is loaded once for both, and
   each offset counts into two sub-histograms (even / odd columns) so that increments of the
   same cell in a row (common in smooth images) do not wait on each other. Results in
   ha[0] and hb[0] (rows of present levels; the other sub-histograms are cleared). */
static void count_two(const uint8_t *q, int dra, int dca, int drb, int dcb,
                      uint16_t *ha0, uint16_t *ha1, uint16_t *hb0, uint16_t *hb1,
                      const int *lv, int nl)
{
    int ar0, ar1, ac0, ac1, br0, br1, bc0, bc1;
    valid_rect(dra, dca, &ar0, &ar1, &ac0, &ac1);
    valid_rect(drb, dcb, &br0, &br1, &bc0, &bc1);
    const int ir0 = ar0 > br0 ? ar0 : br0, ir1 = ar1 < br1 ? ar1 : br1;
    const int ic0 = ac0 > bc0 ? ac0 : bc0, ic1 = ac1 < bc1 ? ac1 : bc1;
    for (int r = ir0; r < ir1; ++r) {
        const uint8_t *a = q + r * PS;
        const uint8_t *ba = q + (r + dra) * PS + dca, *bb = q + (r + drb) * PS + dcb;
        int c = ic0;
        for (; c + 1 < ic1; c += 2) {
            const int x0 = a[c] << 6, x1 = a[c + 1] << 6;
            ha0[x0 | ba[c]]++;
            ha1[x1 | ba[c + 1]]++;
            hb0[x0 | bb[c]]++;
            hb1[x1 | bb[c + 1]]++;
        }
        for (; c < ic1; ++c) { ha0[(a[c] << 6) | ba[c]]++; hb0[(a[c] << 6) | bb[c]]++; }
    }
    /* the parts of each valid rectangle outside the joint one */
    count_rect(q, dra, dca, ar0, ir0, ac0, ac1, ha0);
    count_rect(q, dra, dca, ir1, ar1, ac0, ac1, ha0);
    count_rect(q, dra, dca, ir0, ir1, ac0, ic0, ha0);
    count_rect(q, dra, dca, ir0, ir1, ic1, ac1, ha0);
    count_rect(q, drb, dcb, br0, ir0, bc0, bc1, hb0);
    count_rect(q, drb, dcb, ir1, br1, bc0, bc1, hb0);
    count_rect(q, drb, dcb, ir0, ir1, bc0, ic0, hb0);
    count_rect(q, drb, dcb, ir0, ir1, ic1, bc1, hb0);
    for (int ii = 0; ii < nl; ++ii) { /* only rows of present levels can be non-zero */
        const int o = lv[ii] * LV;
        for (int c = 0; c < LV; ++c) {
            ha0[o + c] = (uint16_t)(ha0[o + c] + ha1[o + c]);
            hb0[o + c] = (uint16_t)(hb0[o + c] + hb1[o + c]);
            ha1[o + c] = 0;
            hb1[o + c] = 0;
        }
    }
}

typedef struct {
    int32_t *hg;      /* (group, s) -> number of entries with value s / T_group, this patch */
    int64_t *touched; /* (group, s) bins hit this patch */
    int64_t nt;       /* number of touched bins */
    int64_t nnz;      /* non-zero entries this patch */
    uint32_t sdiag[LV], sbuf[LV * (LV - 1) / 2];
    uint32_t sdiag2[LV], sbuf2[LV * (LV - 1) / 2];
} acc_t;

/* Add the (group, s) bins of the non-zero symmetric counts sd[0..nd) (diagonal, one entry,
   S = 2 C[i][i]) and sb[0..nb) (off-diagonal, two entries S[i][j] and S[j][i]); return the
   sum over those entries of S log2 S. */
static double bin_counts(const uint32_t *sd, int nd, const uint32_t *sb, int nb, int64_t gbase, int32_t m,
                         const double *flog, acc_t *A)
{
    int32_t *hk = A->hg + gbase;
    double d = 0.0, o = 0.0;
    for (int t = 0; t < nd; ++t) {
        const uint32_t s = sd[t];
        d += flog[s];
        const int32_t old = hk[s];
        A->touched[A->nt] = gbase + s;
        A->nt += old == 0;
        hk[s] = old + m;
    }
    for (int t = 0; t < nb; ++t) {
        const uint32_t s = sb[t];
        o += flog[s];
        const int32_t old = hk[s];
        A->touched[A->nt] = gbase + s;
        A->nt += old == 0;
        hk[s] = old + 2 * m;
    }
    A->nnz += (int64_t)nd * m + (int64_t)nb * 2 * m;
    return d + 2.0 * o;
}

/* Read and clear the symmetric counts S = C + C^T of one offset (cells of present levels);
   add its entries to the (group, s) bins and return sum over its entries of S log2 S. */
static double extract(uint16_t *h, const int *lv, int nl, int64_t gbase, int32_t m,
                      const double *flog, acc_t *A)
{
    int nd = 0, nb = 0;
    for (int ii = 0; ii < nl; ++ii) {
        const int i = lv[ii];
        uint32_t s = 2u * h[i * LV + i];
        h[i * LV + i] = 0;
        A->sdiag[nd] = s;
        nd += s != 0;
        for (int jj = ii + 1; jj < nl; ++jj) {
            const int j = lv[jj];
            s = (uint32_t)h[i * LV + j] + h[j * LV + i];
            h[i * LV + j] = 0;
            h[j * LV + i] = 0;
            A->sbuf[nb] = s; /* branch-free compaction of the non-zero counts */
            nb += s != 0;
        }
    }
    return bin_counts(A->sdiag, nd, A->sbuf, nb, gbase, m, flog, A);
}

/* Two offsets' tables (ha, hb) read and cleared in one scan of the present cells. */
static void scan_two(uint16_t *ha, uint16_t *hb, const int *lv, int nl, acc_t *A, int *nda, int *nba, int *ndb, int *nbb)
{
    int da = 0, ba = 0, db = 0, bb = 0;
    for (int ii = 0; ii < nl; ++ii) {
        const int i = lv[ii];
        uint16_t *ra = ha + i * LV, *rb = hb + i * LV;
        uint32_t s = 2u * ra[i], t = 2u * rb[i];
        A->sdiag[da] = s; da += s != 0;
        A->sdiag2[db] = t; db += t != 0;
        for (int jj = ii + 1; jj < nl; ++jj) {
            const int j = lv[jj];
            s = (uint32_t)ra[j] + ha[j * LV + i];
            t = (uint32_t)rb[j] + hb[j * LV + i];
            A->sbuf[ba] = s; ba += s != 0;
            A->sbuf2[bb] = t; bb += t != 0;
        }
    }
    for (int ii = 0; ii < nl; ++ii) {
        memset(ha + lv[ii] * LV, 0, LV * sizeof(uint16_t));
        memset(hb + lv[ii] * LV, 0, LV * sizeof(uint16_t));
    }
    *nda = da; *nba = ba; *ndb = db; *nbb = bb;
}

/* One worker's buffers: four 64x64 count tables, the class counts and the (group, s) bins. */
typedef struct {
    uint16_t (*h)[LV * LV];
    int32_t *cnt;
    acc_t *A;
} bufs_t;

static void free_bufs(bufs_t *B)
{
    free(B->h);
    free(B->cnt);
    if (B->A) { free(B->A->hg); free(B->A->touched); free(B->A); }
}

static int alloc_bufs(bufs_t *B, int32_t n_off, const int32_t *grp, int64_t cid_stride, int64_t n_classes)
{
    int32_t n_groups = 0;
    for (int k = 0; k < n_off; ++k) if (grp[k] + 1 > n_groups) n_groups = grp[k] + 1;
    B->h = calloc(4, sizeof(*B->h));
    B->cnt = (int32_t *)calloc((size_t)n_classes, sizeof(int32_t));
    B->A = (acc_t *)calloc(1, sizeof(acc_t));
    if (B->A) {
        B->A->hg = (int32_t *)calloc((size_t)n_groups * (size_t)cid_stride, sizeof(int32_t));
        B->A->touched = (int64_t *)malloc(sizeof(int64_t) * ((size_t)n_off * LV * LV + 1));
    }
    if (!B->h || !B->cnt || !B->A || !B->A->hg || !B->A->touched) { free_bufs(B); return -1; }
    return 0;
}

typedef struct {
    const uint8_t *img; int64_t stride, pr0, pr1, npc;
    int32_t n_off; const int32_t *dr, *dc, *mult; const double *tot; const int32_t *grp, *cid;
    int64_t cid_stride, n_classes; const double *flog; int32_t n_slices;
    double *out_values, *out_slices;
    int64_t next;  /* next patch row to take (atomic) */
    int failed;    /* a worker could not allocate (atomic; informational) */
} job_t;

/* Both scores of patch (pr, pc) into out_values[o], out_slices[o]. */
static void one_patch(const job_t *J, bufs_t *B, int64_t pr, int64_t pc, int64_t o)
{
    uint16_t (*h)[LV * LV] = B->h;
    acc_t *A = B->A;
    int32_t *cnt = B->cnt;
    const int32_t n_off = J->n_off;
    const double n_entries = (double)LV * LV * J->n_slices;
    uint8_t q[PS * PS];
    const uint8_t *p = J->img + pr * PS * J->stride + pc * PS;
    uint64_t present = 0;
    int lv[LV], nl = 0;
    for (int r = 0; r < PS; ++r) {
        const uint8_t *row = p + r * J->stride;
        uint8_t *qr = q + r * PS;
        for (int c = 0; c < PS; ++c) qr[c] = row[c] >> 2;
        for (int c = 0; c < PS; ++c) present |= 1ull << qr[c];
    }
    for (int v = 0; v < LV; ++v) if (present >> v & 1u) lv[nl++] = v;
    A->nt = 0;
    A->nnz = 0;
    double slice_acc = 0.0;
    for (int k = 0; k < n_off; k += 2) {
        const int kb = k + 1 < n_off ? k + 1 : k;
        if (kb != k) {
            count_two(q, J->dr[k], J->dc[k], J->dr[kb], J->dc[kb], h[0], h[1], h[2], h[3], lv, nl);
        } else {
            int r0, r1, c0, c1;
            valid_rect(J->dr[k], J->dc[k], &r0, &r1, &c0, &c1);
            count_rect(q, J->dr[k], J->dc[k], r0, r1, c0, c1, h[0]);
        }
        if (kb != k) {
            int nda, nba, ndb, nbb;
            scan_two(h[0], h[2], lv, nl, A, &nda, &nba, &ndb, &nbb);
            double sl = bin_counts(A->sdiag, nda, A->sbuf, nba, (int64_t)J->grp[k] * J->cid_stride, J->mult[k], J->flog, A);
            slice_acc += J->mult[k] * (log2(J->tot[k]) - sl / J->tot[k]);
            sl = bin_counts(A->sdiag2, ndb, A->sbuf2, nbb, (int64_t)J->grp[kb] * J->cid_stride, J->mult[kb], J->flog, A);
            slice_acc += J->mult[kb] * (log2(J->tot[kb]) - sl / J->tot[kb]);
        } else {
            const double sl = extract(h[0], lv, nl, (int64_t)J->grp[k] * J->cid_stride, J->mult[k], J->flog, A);
            slice_acc += J->mult[k] * (log2(J->tot[k]) - sl / J->tot[k]);
        }
    }
    /* merge (group, s) bins into value classes (equal fractions across groups), then
       sum n log2 n over the classes; the zero class has n_entries - nnz entries */
    double acc = 0.0;
    const double n0 = n_entries - (double)A->nnz;
    if (n0 > 0) acc += n0 * log2(n0);
    for (int64_t t = 0; t < A->nt; ++t) cnt[J->cid[A->touched[t]]] += A->hg[A->touched[t]];
    for (int64_t t = 0; t < A->nt; ++t) {
        const int32_t id = J->cid[A->touched[t]];
        A->hg[A->touched[t]] = 0;
        if (cnt[id]) {
            const double n = (double)cnt[id];
            acc += n * log2(n);
            cnt[id] = 0;
        }
    }
    J->out_values[o] = log2(n_entries) - acc / n_entries;
    J->out_slices[o] = slice_acc / J->n_slices;
}

/* A worker: its own buffers, then patch rows taken one at a time from the shared counter (a
   thread that draws smooth, cheap rows takes more of them), so the split follows the content. */
static void *worker(void *arg)
{
    job_t *J = (job_t *)arg;
    bufs_t B = {0};
    if (alloc_bufs(&B, J->n_off, J->grp, J->cid_stride, J->n_classes) != 0) {
        __atomic_store_n(&J->failed, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    for (;;) {
        const int64_t pr = __atomic_fetch_add(&J->next, 1, __ATOMIC_RELAXED);
        if (pr >= J->pr1) break;
        for (int64_t pc = 0; pc < J->npc; ++pc) one_patch(J, &B, pr, pc, (pr - J->pr0) * J->npc + pc);
    }
    free_bufs(&B);
    return NULL;
}

/* GLCM scores of the 64x64 patches of an 8-bit grey image (quantised here with >> 2).
   For patch rows [pr0, pr1) and patch columns [0, npc) writes, per patch (row-major from
   (pr0, 0)):
   out_values = base-2 entropy of the distribution of the LV x LV x n_slices normalised
                symmetric GLCM values (skimage.measure.shannon_entropy of graycomatrix(...,
                symmetric=True, normed=True)), zeros included;
   out_slices = mean over the slices of each slice's -sum p log2 p.
   The n_off offsets are unique; mult[k] slices share offset k, whose slice total is tot[k]
   and whose value group (distinct total) is grp[k]; cid maps (group, s) to the class of the
   fraction s / T_group. `threads` workers (this thread and threads - 1 POSIX threads; fewer if
   they cannot be started) share the patch rows. Each patch is computed by one worker in a fixed
   order, so the results do not depend on `threads`. Returns 0, or -1 when memory cannot be
   allocated. */
int uhr_glcm_patch_rows(const uint8_t *img, int64_t stride, int64_t pr0, int64_t pr1,
                        int64_t npc, int32_t n_off, const int32_t *dr, const int32_t *dc,
                        const int32_t *mult, const double *tot, const int32_t *grp,
                        const int32_t *cid, int64_t cid_stride, int64_t n_classes,
                        const double *flog, int32_t n_slices,
                        double *out_values, double *out_slices, int32_t threads)
{
    job_t J = {img, stride, pr0, pr1, npc, n_off, dr, dc, mult, tot, grp, cid, cid_stride, n_classes,
               flog, n_slices, out_values, out_slices, pr0, 0};
    if (threads > 256) threads = 256;
    if (threads > pr1 - pr0) threads = (int32_t)(pr1 - pr0);
    pthread_t tid[256];
    int started = 0;
    for (int i = 1; i < threads; ++i) {
        if (pthread_create(&tid[started], NULL, worker, &J) != 0) break;
        ++started;
    }
    worker(&J);
    for (int i = 0; i < started; ++i) pthread_join(tid[i], NULL);
    /* a worker that could not allocate leaves its rows to the others; -1 only if rows are left */
    return J.next < pr1 ? -1 : 0;
}
