/*
 * ANI atomic environment vectors (AEVs) on the CPU: forward, vector-Jacobian product (VJP)
 * and Jacobian-vector product (JVP), all from a per-centre (CSR) full neighbour list.
 *
 * Why hand-written C: the angular AEV is a sum over ~600 neighbour pairs per aluminium atom,
 * each needing 8 non-integer powers and 8 Gaussians. PyTorch eager, torch.compile and numba
 * (scalar libm calls) were all measured 3-10x over the 100 ms / 1000 atoms budget; here every
 * pair is visited once, the 8-wide section/shift loops are SIMD-vectorised (glibc's libmvec
 * under -ffast-math), and nothing of size (pairs x features) is ever stored.
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
    if (ip[1] != NR || ip[2] != NA || ip[3] != NZ) return -2;
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
    real *vx, *vy, *vz, *r, *fc, *dfc, *gv;
    int32_t *spec;
    int64_t *edge;
} scratch_t;

static int scratch_alloc(scratch_t *s, int64_t n, int64_t M) {
    size_t nr = (size_t)(n > 0 ? n : 1);
    size_t ng = nr * 3 * (size_t)(M > 0 ? M : 1);
    s->vx = malloc(sizeof(real) * nr); s->vy = malloc(sizeof(real) * nr);
    s->vz = malloc(sizeof(real) * nr); s->r = malloc(sizeof(real) * nr);
    s->fc = malloc(sizeof(real) * nr); s->dfc = malloc(sizeof(real) * nr);
    s->gv = malloc(sizeof(real) * ng);
    s->spec = malloc(sizeof(int32_t) * nr); s->edge = malloc(sizeof(int64_t) * nr);
    return s->vx && s->vy && s->vz && s->r && s->fc && s->dfc && s->gv && s->spec && s->edge;
}

static void scratch_free(scratch_t *s) {
    free(s->vx); free(s->vy); free(s->vz); free(s->r); free(s->fc); free(s->dfc);
    free(s->gv); free(s->spec); free(s->edge);
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
/* Forward: aev (N, F). */
int aev_forward(int64_t N, const int64_t *off, const real *vec, const int32_t *nspec,
                const int32_t *ip, const real *rp, const int32_t *triu, real *out, int nthreads) {
    params_t P;
    if (unpack(ip, rp, triu, &P)) return -2;
    const int64_t maxn = max_degree(N, off);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        scratch_t s;
        if (!scratch_alloc(&s, maxn, 1)) failed = 1;
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
            const int64_t na = gather_angular(&P, st, en, vec, nspec, &s);
            for (int64_t p = 0; p < na; p++) {
                for (int64_t q = p + 1; q < na; q++) {
                    real Fz[NZ], Graw[NA];
                    pair_terms(&P, pair_cos(&s, p, q), (real)0.5 * (s.r[p] + s.r[q]), Fz, NULL, Graw, NULL);
                    real f12 = s.fc[p] * s.fc[q];
                    real *RESTRICT oa = o + P.radial_len + P.triu[s.spec[p] * P.S + s.spec[q]] * AZ;
                    for (int a = 0; a < NA; a++) {
                        real ga = Graw[a] * f12;
#pragma omp simd
                        for (int z = 0; z < NZ; z++) oa[a * NZ + z] += ga * Fz[z];
                    }
                }
            }
        }
        FTZ_END
        scratch_free(&s);
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
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        scratch_t s;
        if (!scratch_alloc(&s, maxn, M)) failed = 1;
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
            /* angular: the pair terms once, then every member's contraction */
            const int64_t na = gather_angular(&P, st, en, vec, nspec, &s);
            memset(s.gv, 0, sizeof(real) * 3 * na * M);
            for (int64_t p = 0; p < na; p++) {
                for (int64_t q = p + 1; q < na; q++) {
                    real Fz[NZ], Fp[NZ], Graw[NA], Gp[NA];
                    real c = pair_cos(&s, p, q);
                    pair_terms(&P, c, (real)0.5 * (s.r[p] + s.r[q]), Fz, Fp, Graw, Gp);
                    real f12 = s.fc[p] * s.fc[q];
                    int64_t blk = P.triu[s.spec[p] * P.S + s.spec[q]];
                    real dcp[3], dcq[3];
                    dcos(&s, p, q, c, dcp, dcq);
                    real wfp = s.dfc[p] * s.fc[q], wfq = s.fc[p] * s.dfc[q];
                    for (int64_t m = 0; m < M; m++) {
                        const real *RESTRICT gb = gaev + (m * N + i) * P.F + P.radial_len + blk * AZ;
                        /* U[z] = sum_a Graw[a] g[a,z], V[z] = sum_a Gp[a] g[a,z]: vector sums over
                         * a, leaving three horizontal sums per pair */
                        real U[NZ], V[NZ];
#pragma omp simd
                        for (int z = 0; z < NZ; z++) { U[z] = 0; V[z] = 0; }
                        for (int a = 0; a < NA; a++) {
                            const real wa = Graw[a], va = Gp[a];
#pragma omp simd
                            for (int z = 0; z < NZ; z++) {
                                U[z] += wa * gb[a * NZ + z];
                                V[z] += va * gb[a * NZ + z];
                            }
                        }
                        real dLdc = 0, dLdrbar = 0, dLdf12 = 0;
#pragma omp simd reduction(+ : dLdc, dLdrbar, dLdf12)
                        for (int z = 0; z < NZ; z++) {
                            dLdc += Fp[z] * U[z];
                            dLdf12 += Fz[z] * U[z];
                            dLdrbar += Fz[z] * V[z];
                        }
                        dLdc *= f12;
                        real half = (real)0.5 * f12 * dLdrbar;
                        real ap = (half + dLdf12 * wfp) / s.r[p];
                        real aq = (half + dLdf12 * wfq) / s.r[q];
                        real *gp = s.gv + 3 * (m * na + p), *gq = s.gv + 3 * (m * na + q);
                        gp[0] += dLdc * dcp[0] + ap * s.vx[p];
                        gp[1] += dLdc * dcp[1] + ap * s.vy[p];
                        gp[2] += dLdc * dcp[2] + ap * s.vz[p];
                        gq[0] += dLdc * dcq[0] + aq * s.vx[q];
                        gq[1] += dLdc * dcq[1] + aq * s.vy[q];
                        gq[2] += dLdc * dcq[2] + aq * s.vz[q];
                    }
                }
            }
            for (int64_t m = 0; m < M; m++) {
                for (int64_t p = 0; p < na; p++) {
                    real *gv = gvec + (s.edge[p] * M + m) * 3;
                    const real *g = s.gv + 3 * (m * na + p);
                    gv[0] += g[0]; gv[1] += g[1]; gv[2] += g[2];
                }
            }
        }
        FTZ_END
        scratch_free(&s);
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
        if (!scratch_alloc(&s, maxn, 1)) failed = 1;
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
