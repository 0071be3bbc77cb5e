/*
 * ANI atomic environment vectors (AEVs) on the CPU: forward, vector-Jacobian product (VJP)
 * and Jacobian-vector product (JVP), all from a per-centre (CSR) full neighbour list.
 *
 * Why hand-written C: the angular AEV is a sum over ~600 neighbour pairs per aluminium atom,
 * each needing 8 non-integer powers and 8 Gaussians. PyTorch eager, torch.compile and numba
 * (scalar libm calls) were all measured 3-10x over the 100 ms / 1000 atoms budget. Forward and
 * VJP lay one centre's pairs out flat and vectorise across pairs at full vector width (glibc's
 * libmvec under -ffast-math; 16 float lanes with AVX-512), so the transcendentals fill every
 * lane and the contractions need no horizontal sums per pair; only that centre's pair terms are
 * ever stored (tens of kB, in L1/L2). The JVP (training only) vectorises over one pair's
 * 8 sections and shifts.
 *
 * Definitions follow NeuroChem / TorchANI exactly:
 *   fc(r)          = 0.5 cos(pi r / Rc) + 0.5                       (r < Rc)
 *   radial[s,a]    = sum_{j of species s} 0.25 exp(-etaR (r_ij - ShfR_a)^2) fc_R(r_ij)
 *   angular[b,a,z] = sum_{j<k, species pair b} 2 ((1 + cos(theta_ijk - ShfZ_z)) / 2)^zeta
 *                    * exp(-etaA ((r_ij + r_ik)/2 - ShfA_a)^2) fc_A(r_ij) fc_A(r_ik)
 *   with theta = acos(0.95 cos(angle)), written here without acos as
 *   cos(theta - s) = 0.95 c cos(s) + sqrt(1 - 0.9025 c^2) sin(s).
 * Feature layout per centre: [S*NR radial | npairs * NA*NZ angular], angular index a*NZ + z.
 *
 * Build flags chosen by potforge.model.kernels: -DAEV_FLOAT for float32 (default float64) and
 * -DAEV_NR/-DAEV_NA/-DAEV_NZ for the AEV shape. Every entry point returns 0 on success,
 * -1 if scratch memory could not be allocated, -2 if called with another AEV shape.
 * Units: whatever the caller uses (Angstrom in potforge). No Python API is used.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The precision is chosen by the preprocessor (not a runtime branch) so that GCC vectorises
 * the libm calls. */
#ifdef AEV_FLOAT
typedef float real;
#define r_exp expf
#define r_log logf
#define r_cos cosf
#define r_sin sinf
#define r_sqrt sqrtf
#define EXP_MIN (-87.0f)
#else
typedef double real;
#define r_exp exp
#define r_log log
#define r_cos cos
#define r_sin sin
#define r_sqrt sqrt
#define EXP_MIN (-708.0)
#endif

/* The numbers of radial shifts, angular shifts and angular sections are compile-time constants
 * (one library per AEV shape) so that the per-pair vectors live in registers, not memory. */
#ifndef AEV_NR
#define AEV_NR 32
#endif
#ifndef AEV_NA
#define AEV_NA 8
#endif
#ifndef AEV_NZ
#define AEV_NZ 8
#endif
#define NR AEV_NR
#define NA AEV_NA
#define NZ AEV_NZ
#define AZ (NA * NZ)

#if defined(__GNUC__)
#define RESTRICT __restrict__
#else
#define RESTRICT
#endif

#define PI_R ((real)3.14159265358979323846)

/* exp of a non-positive argument, clamped so that the result stays a normal number: libmvec's
 * vector exp drops to a slow scalar path when a result underflows, and Gaussians far from
 * their centre do underflow. The clamped value (1e-38 / 1e-308) is zero to the model. */
#define EXP_NEG(x) r_exp((x) < EXP_MIN ? EXP_MIN : (x))

/* Flush denormals to zero inside the kernels only (products of tiny Gaussians would otherwise
 * take microcode assists on x86); each thread restores its floating-point state on exit. */
#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#define FTZ_BEGIN unsigned int mxcsr_saved_ = _mm_getcsr(); _mm_setcsr(mxcsr_saved_ | 0x8040u);
#define FTZ_END _mm_setcsr(mxcsr_saved_);
#else
#define FTZ_BEGIN
#define FTZ_END
#endif

typedef struct {
    int S, F, radial_len;
    real Rcr, etaR, Rca, etaA, zeta;
    const real *shfR, *shfA, *cosZ, *sinZ;
    const int32_t *triu;
} params_t;

/* ip = [n_species, NR, NA, NZ]; rp = [Rcr, etaR, Rca, etaA, zeta, ShfR.., ShfA.., cos ShfZ.., sin ShfZ..] */
static int unpack(const int32_t *ip, const real *rp, const int32_t *triu, params_t *p) {
    if (ip[1] != NR || ip[2] != NA || ip[3] != NZ || ip[0] < 1 || ip[0] > 64) return -2;
    p->S = ip[0];
    p->radial_len = p->S * NR;
    p->F = p->radial_len + (p->S * (p->S + 1) / 2) * AZ;
    p->Rcr = rp[0]; p->etaR = rp[1]; p->Rca = rp[2]; p->etaA = rp[3]; p->zeta = rp[4];
    p->shfR = rp + 5;
    p->shfA = p->shfR + NR;
    p->cosZ = p->shfA + NA;
    p->sinZ = p->cosZ + NZ;
    p->triu = triu;
    return 0;
}

static int64_t max_degree(int64_t n, const int64_t *off) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t d = off[i + 1] - off[i];
        if (d > m) m = d;
    }
    return m;
}

/* Per-thread scratch: one centre's angular neighbours and (VJP) their per-member gradients. */
typedef struct {
    real *vx, *vy, *vz, *r, *fc, *dfc;
    int32_t *spec;
    int64_t *edge;
} scratch_t;

static int scratch_alloc(scratch_t *s, int64_t n) {
    size_t nr = (size_t)(n > 0 ? n : 1);
    s->vx = malloc(sizeof(real) * nr); s->vy = malloc(sizeof(real) * nr);
    s->vz = malloc(sizeof(real) * nr); s->r = malloc(sizeof(real) * nr);
    s->fc = malloc(sizeof(real) * nr); s->dfc = malloc(sizeof(real) * nr);
    s->spec = malloc(sizeof(int32_t) * nr); s->edge = malloc(sizeof(int64_t) * nr);
    return s->vx && s->vy && s->vz && s->r && s->fc && s->dfc && s->spec && s->edge;
}

static void scratch_free(scratch_t *s) {
    free(s->vx); free(s->vy); free(s->vz); free(s->r); free(s->fc); free(s->dfc);
    free(s->spec); free(s->edge);
}

/* Gather the angular neighbours of one centre (r < Rca) into scratch; returns their count. */
static int64_t gather_angular(const params_t *P, int64_t st, int64_t en, const real *vec,
                              const int32_t *nspec, scratch_t *s) {
    int64_t na = 0;
    const real kA = PI_R / P->Rca;
    for (int64_t e = st; e < en; e++) {
        real x = vec[3 * e], y = vec[3 * e + 1], z = vec[3 * e + 2];
        real d = r_sqrt(x * x + y * y + z * z);
        if (d < P->Rca) {
            s->vx[na] = x; s->vy[na] = y; s->vz[na] = z; s->r[na] = d;
            s->fc[na] = (real)0.5 * r_cos(kA * d) + (real)0.5;
            s->dfc[na] = (real)-0.5 * kA * r_sin(kA * d);
            s->spec[na] = nspec[e];
            s->edge[na] = e;
            na++;
        }
    }
    return na;
}

/* Radial Gaussians of one edge times 0.25 fc (gR) and their derivative in r (dgR). */
static inline void radial_terms(const params_t *P, real d, real *RESTRICT gR, real *RESTRICT dgR) {
    const real kR = PI_R / P->Rcr;
    const real fc = (real)0.5 * r_cos(kR * d) + (real)0.5;
    const real dfc = (real)-0.5 * kR * r_sin(kR * d);
    const real eta = P->etaR;
    const real *RESTRICT sh = P->shfR;
#pragma omp simd
    for (int a = 0; a < NR; a++) {
        real t = d - sh[a];
        real g = (real)0.25 * EXP_NEG(-eta * t * t);
        gR[a] = g * fc;
        if (dgR) dgR[a] = g * (dfc - (real)2 * eta * t * fc);
    }
}

/* Angular factors of one pair with cos(angle) = c and mean distance rbar:
 * Fz[z] = 2 x_z^zeta, Fp = dFz/dc, Graw[a] = exp(-etaA (rbar - ShfA_a)^2), Gp = dGraw/drbar.
 * Arrays are passed explicitly so that GCC can prove they do not alias. */
static inline void pair_terms(const params_t *P, real c, real rbar, real *RESTRICT Fz,
                              real *RESTRICT Fp, real *RESTRICT Graw, real *RESTRICT Gp) {
    const real c95 = (real)0.95 * c;
    const real s95 = r_sqrt((real)1 - c95 * c95);
    const real zeta = P->zeta, eta = P->etaA;
    const real *RESTRICT cz = P->cosZ, *RESTRICT sz = P->sinZ, *RESTRICT sh = P->shfA;
    real x[NZ];
#pragma omp simd
    for (int z = 0; z < NZ; z++) {
        x[z] = (real)0.5 * ((real)1 + c95 * cz[z] + s95 * sz[z]);
        Fz[z] = (real)2 * EXP_NEG(zeta * r_log(x[z]));
    }
#pragma omp simd
    for (int a = 0; a < NA; a++) {
        real t = rbar - sh[a];
        Graw[a] = EXP_NEG(-eta * t * t);
    }
    if (Fp) {
        const real ds95 = (real)-0.9025 * c / s95;
#pragma omp simd
        for (int z = 0; z < NZ; z++) {
            real dx = (real)0.5 * ((real)0.95 * cz[z] + ds95 * sz[z]);
            Fp[z] = zeta * Fz[z] / x[z] * dx;
        }
#pragma omp simd
        for (int a = 0; a < NA; a++) Gp[a] = (real)-2 * eta * (rbar - sh[a]) * Graw[a];
    }
}

/* Derivatives of c = cos(angle) between bond vectors p and q with respect to each vector. */
static inline void dcos(const scratch_t *s, int64_t p, int64_t q, real c, real *dcp, real *dcq) {
    real ipq = (real)1 / (s->r[p] * s->r[q]);
    real crp = c / (s->r[p] * s->r[p]), crq = c / (s->r[q] * s->r[q]);
    dcp[0] = s->vx[q] * ipq - crp * s->vx[p];
    dcp[1] = s->vy[q] * ipq - crp * s->vy[p];
    dcp[2] = s->vz[q] * ipq - crp * s->vz[p];
    dcq[0] = s->vx[p] * ipq - crq * s->vx[q];
    dcq[1] = s->vy[p] * ipq - crq * s->vy[q];
    dcq[2] = s->vz[p] * ipq - crq * s->vz[q];
}

static inline real pair_cos(const scratch_t *s, int64_t p, int64_t q) {
    return (s->vx[p] * s->vx[q] + s->vy[p] * s->vy[q] + s->vz[p] * s->vz[q]) / (s->r[p] * s->r[q]);
}

/* ------------------------------------------------------------------------------------------ */
/* Forward and VJP vectorise across the angular pairs of one centre rather than across the 8
 * sections or shifts of one pair: a centre's pairs are laid out flat, grouped by species pair,
 * their geometry computed once, then each transcendental (8 log + 16 exp per pair) runs over
 * every pair in full-width SIMD, and the contractions have no horizontal sums per pair. */

/* Pairs are processed PAIR_CHUNK at a time (lanes innermost); blocks are padded to a multiple. */
#define PAIR_CHUNK 16

/* Per-thread flat pair arrays of one centre, grown on demand. */
typedef struct {
    int64_t cap;
    real *c, *s95, *rbar, *f12, *wp, *wq, *irp, *irq, *al, *be, *ga;
    real *Fz, *G; /* (NZ, cap), (NA, cap) */
    real *gx, *gy, *gz; /* per-neighbour gradient (M, na) */
    int64_t gcap;
    int32_t *seg; /* species segments of the sorted angular neighbours (S + 1) */
    int64_t *blk_start, *blk_end; /* pairs [start, end) of each species pair block; each block
                                   * padded with neutral pairs to a multiple of PAIR_CHUNK */
} pairs_t;

static void pairs_free(pairs_t *w) {
    free(w->c); free(w->s95); free(w->rbar); free(w->f12); free(w->wp); free(w->wq);
    free(w->irp); free(w->irq); free(w->al); free(w->be); free(w->ga); free(w->Fz); free(w->G);
    free(w->gx); free(w->gy); free(w->gz); free(w->seg); free(w->blk_start); free(w->blk_end);
    memset(w, 0, sizeof(*w));
}

static int pairs_init(pairs_t *w, int S) {
    memset(w, 0, sizeof(*w));
    w->seg = malloc(sizeof(int32_t) * (size_t)(S + 1));
    w->blk_start = malloc(sizeof(int64_t) * (size_t)(S * (S + 1) / 2));
    w->blk_end = malloc(sizeof(int64_t) * (size_t)(S * (S + 1) / 2));
    return w->seg && w->blk_start && w->blk_end;
}

static int pairs_reserve(pairs_t *w, int64_t npairs, int64_t ngrad) {
    if (npairs > w->cap) {
        int64_t cap = npairs + npairs / 4 + 16;
        real **arrs[] = {&w->c, &w->s95, &w->rbar, &w->f12, &w->wp, &w->wq, &w->irp, &w->irq,
                         &w->al, &w->be, &w->ga};
        for (size_t k = 0; k < sizeof(arrs) / sizeof(arrs[0]); k++) {
            free(*arrs[k]);
            *arrs[k] = malloc(sizeof(real) * (size_t)cap);
            if (!*arrs[k]) return 0;
        }
        free(w->Fz); free(w->G);
        w->Fz = malloc(sizeof(real) * (size_t)cap * NZ);
        w->G = malloc(sizeof(real) * (size_t)cap * NA);
        if (!w->Fz || !w->G) return 0;
        w->cap = cap;
    }
    if (ngrad > w->gcap) {
        int64_t cap = ngrad + ngrad / 4 + 16;
        free(w->gx); free(w->gy); free(w->gz);
        w->gx = malloc(sizeof(real) * (size_t)cap);
        w->gy = malloc(sizeof(real) * (size_t)cap);
        w->gz = malloc(sizeof(real) * (size_t)cap);
        if (!w->gx || !w->gy || !w->gz) return 0;
        w->gcap = cap;
    }
    return 1;
}

/* Gather the angular neighbours of one centre (r < Rca) into scratch, sorted by species (stable),
 * with w->seg the species segments. Returns their count. */
static int64_t gather_sorted(const params_t *P, int64_t st, int64_t en, const real *vec,
                             const int32_t *nspec, scratch_t *s, pairs_t *w) {
    const int S = P->S;
    if (S == 1) {
        int64_t na = gather_angular(P, st, en, vec, nspec, s);
        w->seg[0] = 0;
        w->seg[1] = (int32_t)na;
        return na;
    }
    const real kA = PI_R / P->Rca;
    for (int t = 0; t <= S; t++) w->seg[t] = 0;
    for (int64_t e = st; e < en; e++) {
        real x = vec[3 * e], y = vec[3 * e + 1], z = vec[3 * e + 2];
        if (x * x + y * y + z * z < P->Rca * P->Rca) w->seg[nspec[e] + 1]++;
    }
    for (int t = 0; t < S; t++) w->seg[t + 1] += w->seg[t];
    int64_t fill[64];
    for (int t = 0; t < S; t++) fill[t] = w->seg[t]; /* S <= 64: unpack */
    for (int64_t e = st; e < en; e++) {
        real x = vec[3 * e], y = vec[3 * e + 1], z = vec[3 * e + 2];
        real d2 = x * x + y * y + z * z;
        if (d2 >= P->Rca * P->Rca) continue;
        real d = r_sqrt(d2);
        int64_t k = fill[nspec[e]]++;
        s->vx[k] = x; s->vy[k] = y; s->vz[k] = z; s->r[k] = d;
        s->fc[k] = (real)0.5 * r_cos(kA * d) + (real)0.5;
        s->dfc[k] = (real)-0.5 * kA * r_sin(kA * d);
        s->spec[k] = nspec[e];
        s->edge[k] = e;
    }
    return w->seg[S];
}

/* The q-range of pair rows of centre p in the block of species (sp, sq), sp <= sq. */
#define Q_RANGE(w, sp, sq, p, q0, q1)                                   \
    int64_t q0 = ((sp) == (sq)) ? (p) + 1 : (int64_t)(w)->seg[sq];     \
    int64_t q1 = (int64_t)(w)->seg[(sq) + 1];

/* Lay out the pairs of one centre flat, block by block, with their geometry. Returns the count
 * including padding. */
static int64_t pair_geometry(const params_t *P, const scratch_t *s, pairs_t *w, int with_grad) {
    const int S = P->S;
    int64_t k = 0;
    for (int sp = 0; sp < S; sp++)
        for (int sq = sp; sq < S; sq++) {
            w->blk_start[P->triu[sp * S + sq]] = k;
            for (int64_t p = w->seg[sp]; p < w->seg[sp + 1]; p++) {
                Q_RANGE(w, sp, sq, p, q0, q1)
                const real xp = s->vx[p], yp = s->vy[p], zp = s->vz[p], rp = s->r[p];
                const real fcp = s->fc[p], dfcp = s->dfc[p], irp = (real)1 / rp;
                real *RESTRICT c = w->c + k - q0, *RESTRICT s95 = w->s95 + k - q0;
                real *RESTRICT rb = w->rbar + k - q0, *RESTRICT f12 = w->f12 + k - q0;
#pragma omp simd
                for (int64_t q = q0; q < q1; q++) {
                    real irq = (real)1 / s->r[q];
                    real cc = (xp * s->vx[q] + yp * s->vy[q] + zp * s->vz[q]) * irp * irq;
                    real c95 = (real)0.95 * cc;
                    c[q] = cc;
                    s95[q] = r_sqrt((real)1 - c95 * c95);
                    rb[q] = (real)0.5 * (rp + s->r[q]);
                    f12[q] = fcp * s->fc[q];
                }
                if (with_grad) {
                    real *RESTRICT wp = w->wp + k - q0, *RESTRICT wq = w->wq + k - q0;
                    real *RESTRICT ip = w->irp + k - q0, *RESTRICT iq = w->irq + k - q0;
#pragma omp simd
                    for (int64_t q = q0; q < q1; q++) {
                        real irq = (real)1 / s->r[q];
                        wp[q] = dfcp * s->fc[q] * irp;
                        wq[q] = fcp * s->dfc[q] * irq;
                        ip[q] = irp;
                        iq[q] = irq;
                    }
                }
                k += q1 - q0;
            }
            const int b = P->triu[sp * S + sq];
            w->blk_end[b] = k;
            for (; k % PAIR_CHUNK; k++) { /* neutral padding: finite, and f12 = 0 */
                w->c[k] = 0; w->s95[k] = 1; w->rbar[k] = 0; w->f12[k] = 0;
                w->wp[k] = 0; w->wq[k] = 0; w->irp[k] = 1; w->irq[k] = 1;
            }
        }
    return k;
}

/* Fz[z, k] = 2 x_z^zeta and G[a, k] = exp(-etaA (rbar_k - ShfA_a)^2) for every pair k. */
static void pair_transcendentals(const params_t *P, pairs_t *w, int64_t np) {
    const real zeta = P->zeta, eta = P->etaA;
    const real *RESTRICT c = w->c, *RESTRICT s95 = w->s95, *RESTRICT rb = w->rbar;
    for (int z = 0; z < NZ; z++) {
        const real cz = (real)0.95 * P->cosZ[z], sz = P->sinZ[z];
        real *RESTRICT F = w->Fz + (int64_t)z * w->cap;
#pragma omp simd
        for (int64_t k = 0; k < np; k++) {
            real x = (real)0.5 * ((real)1 + c[k] * cz + s95[k] * sz);
            F[k] = (real)2 * EXP_NEG(zeta * r_log(x));
        }
    }
    for (int a = 0; a < NA; a++) {
        const real sh = P->shfA[a];
        real *RESTRICT G = w->G + (int64_t)a * w->cap;
#pragma omp simd
        for (int64_t k = 0; k < np; k++) {
            real t = rb[k] - sh;
            G[k] = EXP_NEG(-eta * t * t);
        }
    }
}

/* Forward: aev (N, F). */
int aev_forward(int64_t N, const int64_t *off, const real *vec, const int32_t *nspec,
                const int32_t *ip, const real *rp, const int32_t *triu, real *out, int nthreads) {
    params_t P;
    if (unpack(ip, rp, triu, &P)) return -2;
    const int64_t maxn = max_degree(N, off);
    const int nblk = P.S * (P.S + 1) / 2;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        scratch_t s;
        pairs_t w;
        if (!scratch_alloc(&s, maxn) || !pairs_init(&w, P.S)) failed = 1;
        FTZ_BEGIN
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < N; i++) {
            if (failed) continue;
            real *o = out + i * P.F;
            memset(o, 0, sizeof(real) * P.F);
            const int64_t st = off[i], en = off[i + 1];
            for (int64_t e = st; e < en; e++) {
                real x = vec[3 * e], y = vec[3 * e + 1], z = vec[3 * e + 2];
                real d = r_sqrt(x * x + y * y + z * z);
                if (d >= P.Rcr) continue;
                real gR[NR];
                radial_terms(&P, d, gR, NULL);
                real *RESTRICT orad = o + nspec[e] * NR;
#pragma omp simd
                for (int a = 0; a < NR; a++) orad[a] += gR[a];
            }
            const int64_t na = gather_sorted(&P, st, en, vec, nspec, &s, &w);
            if (na < 2) continue;
            if (!pairs_reserve(&w, na * (na - 1) / 2 + nblk * PAIR_CHUNK, 0)) { failed = 1; continue; }
            const int64_t np = pair_geometry(&P, &s, &w, 0);
            pair_transcendentals(&P, &w, np);
            for (int b = 0; b < nblk; b++) {
                const int64_t k0 = w.blk_start[b], k1 = w.blk_end[b];
                if (k1 == k0) continue;
                real *RESTRICT oa = o + P.radial_len + (int64_t)b * AZ;
                const real *RESTRICT f12 = w.f12;
                for (int a = 0; a < NA; a++) {
                    const real *RESTRICT G = w.G + (int64_t)a * w.cap;
                    for (int z = 0; z < NZ; z++) {
                        const real *RESTRICT F = w.Fz + (int64_t)z * w.cap;
                        real acc = 0;
#pragma omp simd reduction(+ : acc)
                        for (int64_t k = k0; k < k1; k++) acc += G[k] * f12[k] * F[k];
                        oa[a * NZ + z] = acc;
                    }
                }
            }
        }
        FTZ_END
        scratch_free(&s);
        pairs_free(&w);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* VJP: given cotangents gaev (M, N, F) return gvec (E, M, 3) = sum_f gaev[m,i,f] d aev[i,f] / d vec[e]. */
int aev_vjp(int64_t N, int64_t E, const int64_t *off, const real *vec, const int32_t *nspec,
            const int32_t *ip, const real *rp, const int32_t *triu, int64_t M, const real *gaev,
            real *gvec, int nthreads) {
    params_t P;
    if (unpack(ip, rp, triu, &P)) return -2;
    const int64_t maxn = max_degree(N, off);
    const int S = P.S;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        scratch_t s;
        pairs_t w;
        if (!scratch_alloc(&s, maxn) || !pairs_init(&w, S)) failed = 1;
        FTZ_BEGIN
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < N; i++) {
            if (failed) continue;
            const int64_t st = off[i], en = off[i + 1];
            /* radial: each edge's gradient is initialised here */
            for (int64_t e = st; e < en; e++) {
                real x = vec[3 * e], y = vec[3 * e + 1], z = vec[3 * e + 2];
                real d = r_sqrt(x * x + y * y + z * z);
                real gR[NR], dgR[NR];
                int inside = d < P.Rcr;
                if (inside) radial_terms(&P, d, gR, dgR);
                for (int64_t m = 0; m < M; m++) {
                    real k = 0;
                    if (inside) {
                        const real *RESTRICT g = gaev + (m * N + i) * P.F + nspec[e] * NR;
                        real dd = 0;
#pragma omp simd reduction(+ : dd)
                        for (int a = 0; a < NR; a++) dd += g[a] * dgR[a];
                        k = dd / d;
                    }
                    real *gv = gvec + (e * M + m) * 3;
                    gv[0] = k * x; gv[1] = k * y; gv[2] = k * z;
                }
            }
            const int64_t na = gather_sorted(&P, st, en, vec, nspec, &s, &w);
            if (na < 2) continue;
            if (!pairs_reserve(&w, na * (na - 1) / 2 + S * (S + 1) / 2 * PAIR_CHUNK, na * M)) { failed = 1; continue; }
            const int64_t np = pair_geometry(&P, &s, &w, 1);
            pair_transcendentals(&P, &w, np);
            memset(w.gx, 0, sizeof(real) * na * M);
            memset(w.gy, 0, sizeof(real) * na * M);
            memset(w.gz, 0, sizeof(real) * na * M);
            for (int64_t m = 0; m < M; m++) {
                real *RESTRICT gx = w.gx + m * na, *RESTRICT gy = w.gy + m * na, *RESTRICT gz = w.gz + m * na;
                for (int sp = 0; sp < S; sp++)
                    for (int sq = sp; sq < S; sq++) {
                        const int b = P.triu[sp * S + sq];
                        const int64_t k0 = w.blk_start[b], k1 = w.blk_end[b];
                        if (k1 == k0) continue;
                        const real *RESTRICT g = gaev + (m * N + i) * P.F + P.radial_len + (int64_t)b * AZ;
                        /* per pair: dL/dc, dL/drbar, dL/df12, then the coefficients of the
                         * gradient on v_p and v_q: g_p += al v_q + be v_p, g_q += al v_p + ga v_q */
                        const real zeta = P.zeta, eta = P.etaA;
                        const real *RESTRICT c = w.c, *RESTRICT s95 = w.s95, *RESTRICT rb = w.rbar;
                        const real *RESTRICT f12 = w.f12, *RESTRICT wp = w.wp, *RESTRICT wq = w.wq;
                        const real *RESTRICT irp = w.irp, *RESTRICT irq = w.irq;
                        const real *RESTRICT Fz = w.Fz, *RESTRICT G = w.G;
                        real *RESTRICT al = w.al, *RESTRICT be = w.be, *RESTRICT ga = w.ga;
                        const int64_t cap = w.cap;
                        for (int64_t kc = k0; kc < k1; kc += PAIR_CHUNK) {
                            real U[NZ][PAIR_CHUNK], V[NZ][PAIR_CHUNK], H[PAIR_CHUNK];
                            for (int z = 0; z < NZ; z++)
#pragma omp simd
                                for (int l = 0; l < PAIR_CHUNK; l++) { U[z][l] = 0; V[z][l] = 0; }
                            for (int a = 0; a < NA; a++) {
                                const real *RESTRICT Ga = G + a * cap + kc;
                                const real sh = P.shfA[a];
#pragma omp simd
                                for (int l = 0; l < PAIR_CHUNK; l++) H[l] = (rb[kc + l] - sh) * Ga[l];
                                for (int z = 0; z < NZ; z++) {
                                    const real gaz = g[a * NZ + z];
#pragma omp simd
                                    for (int l = 0; l < PAIR_CHUNK; l++) {
                                        U[z][l] += Ga[l] * gaz;
                                        V[z][l] += H[l] * gaz;
                                    }
                                }
                            }
                            real dLdc[PAIR_CHUNK], dLdf12[PAIR_CHUNK], dLdr[PAIR_CHUNK], ds95[PAIR_CHUNK];
#pragma omp simd
                            for (int l = 0; l < PAIR_CHUNK; l++) {
                                dLdc[l] = 0; dLdf12[l] = 0; dLdr[l] = 0;
                                ds95[l] = (real)-0.9025 * c[kc + l] / s95[kc + l];
                            }
                            for (int z = 0; z < NZ; z++) {
                                const real cz = (real)0.95 * P.cosZ[z], sz = P.sinZ[z];
                                const real *RESTRICT F = Fz + z * cap + kc;
#pragma omp simd
                                for (int l = 0; l < PAIR_CHUNK; l++) {
                                    const real x = (real)0.5 * ((real)1 + c[kc + l] * cz + s95[kc + l] * sz);
                                    const real dx = (real)0.5 * (cz + ds95[l] * sz);
                                    dLdc[l] += zeta * F[l] / x * dx * U[z][l];
                                    dLdf12[l] += F[l] * U[z][l];
                                    dLdr[l] += F[l] * V[z][l];
                                }
                            }
#pragma omp simd
                            for (int l = 0; l < PAIR_CHUNK; l++) {
                                const int64_t k = kc + l;
                                const real dc = dLdc[l] * f12[k];
                                const real half = (real)-1 * eta * f12[k] * dLdr[l];
                                const real ap = half * irp[k] + dLdf12[l] * wp[k];
                                const real aq = half * irq[k] + dLdf12[l] * wq[k];
                                al[k] = dc * irp[k] * irq[k];
                                be[k] = ap - dc * c[k] * irp[k] * irp[k];
                                ga[k] = aq - dc * c[k] * irq[k] * irq[k];
                            }
                        }
                        /* scatter: rows p-major as pair_geometry laid them out */
                        int64_t k = k0;
                        for (int64_t p = w.seg[sp]; p < w.seg[sp + 1]; p++) {
                            Q_RANGE(&w, sp, sq, p, q0, q1)
                            const real xp = s.vx[p], yp = s.vy[p], zp = s.vz[p];
                            const real *RESTRICT alp = al + k - q0, *RESTRICT bep = be + k - q0;
                            const real *RESTRICT gap = ga + k - q0;
                            real sx = 0, sy = 0, sz = 0, sb = 0;
#pragma omp simd reduction(+ : sx, sy, sz, sb)
                            for (int64_t q = q0; q < q1; q++) {
                                gx[q] += alp[q] * xp + gap[q] * s.vx[q];
                                gy[q] += alp[q] * yp + gap[q] * s.vy[q];
                                gz[q] += alp[q] * zp + gap[q] * s.vz[q];
                                sx += alp[q] * s.vx[q];
                                sy += alp[q] * s.vy[q];
                                sz += alp[q] * s.vz[q];
                                sb += bep[q];
                            }
                            gx[p] += sx + sb * xp;
                            gy[p] += sy + sb * yp;
                            gz[p] += sz + sb * zp;
                            k += q1 - q0;
                        }
                    }
            }
            for (int64_t m = 0; m < M; m++) {
                for (int64_t p = 0; p < na; p++) {
                    real *gv = gvec + (s.edge[p] * M + m) * 3;
                    gv[0] += w.gx[m * na + p]; gv[1] += w.gy[m * na + p]; gv[2] += w.gz[m * na + p];
                }
            }
        }
        FTZ_END
        scratch_free(&s);
        pairs_free(&w);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* JVP: given tangents tvec (E, M, 3) return taev (M, N, F) = sum_e d aev / d vec_e . tvec[e,m]. */
int aev_jvp(int64_t N, int64_t E, const int64_t *off, const real *vec, const int32_t *nspec,
            const int32_t *ip, const real *rp, const int32_t *triu, int64_t M, const real *tvec,
            real *taev, int nthreads) {
    params_t P;
    if (unpack(ip, rp, triu, &P)) return -2;
    const int64_t maxn = max_degree(N, off);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        scratch_t s;
        if (!scratch_alloc(&s, maxn)) failed = 1;
        FTZ_BEGIN
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < N; i++) {
            if (failed) continue;
            const int64_t st = off[i], en = off[i + 1];
            for (int64_t m = 0; m < M; m++) memset(taev + (m * N + i) * P.F, 0, sizeof(real) * P.F);
            for (int64_t e = st; e < en; e++) {
                real x = vec[3 * e], y = vec[3 * e + 1], z = vec[3 * e + 2];
                real d = r_sqrt(x * x + y * y + z * z);
                if (d >= P.Rcr) continue;
                real gR[NR], dgR[NR];
                radial_terms(&P, d, gR, dgR);
                for (int64_t m = 0; m < M; m++) {
                    const real *t = tvec + (e * M + m) * 3;
                    real dd = (x * t[0] + y * t[1] + z * t[2]) / d;
                    real *RESTRICT o = taev + (m * N + i) * P.F + nspec[e] * NR;
#pragma omp simd
                    for (int a = 0; a < NR; a++) o[a] += dgR[a] * dd;
                }
            }
            const int64_t na = gather_angular(&P, st, en, vec, nspec, &s);
            for (int64_t p = 0; p < na; p++) {
                for (int64_t q = p + 1; q < na; q++) {
                    real Fz[NZ], Fp[NZ], Graw[NA], Gp[NA];
                    real c = pair_cos(&s, p, q);
                    pair_terms(&P, c, (real)0.5 * (s.r[p] + s.r[q]), Fz, Fp, Graw, Gp);
                    real f12 = s.fc[p] * s.fc[q];
                    int64_t blk = P.triu[s.spec[p] * P.S + s.spec[q]];
                    real dcp[3], dcq[3];
                    dcos(&s, p, q, c, dcp, dcq);
                    for (int64_t m = 0; m < M; m++) {
                        const real *tp = tvec + (s.edge[p] * M + m) * 3;
                        const real *tq = tvec + (s.edge[q] * M + m) * 3;
                        real dc = dcp[0] * tp[0] + dcp[1] * tp[1] + dcp[2] * tp[2] +
                                  dcq[0] * tq[0] + dcq[1] * tq[1] + dcq[2] * tq[2];
                        real drp = (s.vx[p] * tp[0] + s.vy[p] * tp[1] + s.vz[p] * tp[2]) / s.r[p];
                        real drq = (s.vx[q] * tq[0] + s.vy[q] * tq[1] + s.vz[q] * tq[2]) / s.r[q];
                        real drbar = (real)0.5 * (drp + drq);
                        real df12 = s.dfc[p] * s.fc[q] * drp + s.fc[p] * s.dfc[q] * drq;
                        real *RESTRICT o = taev + (m * N + i) * P.F + P.radial_len + blk * AZ;
                        for (int a = 0; a < NA; a++) {
                            real ga = Graw[a] * f12;
                            real dga = Gp[a] * f12 * drbar + Graw[a] * df12;
                            real gdc = ga * dc;
#pragma omp simd
                            for (int z = 0; z < NZ; z++) o[a * NZ + z] += dga * Fz[z] + gdc * Fp[z];
                        }
                    }
                }
            }
        }
        FTZ_END
        scratch_free(&s);
    }
    return failed ? -1 : 0;
}
