/*
 * KIM API model driver for potforge ANI ensembles: energy, forces, virial and per-particle
 * energy of the ensemble mean, from the KIM simulator's neighbour lists.
 *
 * The numbers come from potforge's own kernels, compiled next to this file from the sources
 * that potforge itself uses (src/potforge/model/_kernels/aev.c and mlp.c, copied into the build
 * directory by `potforge export kim`): aev_forward gives the AEVs, mlp_energies_grads every
 * member's atomic energy and its AEV gradient, aev_vjp turns the members' mean gradient into
 * gradients with respect to the pair vectors. This driver only translates between KIM's
 * particle arrays and the kernels' centre-sorted (CSR) pair list, as
 * potforge.model.ensemble.ANIEnsemble.evaluate does in Python:
 *   pair vector  v_e = x_j - x_i  (i a contributing particle, j any neighbour, |v_e| < Rc)
 *   E            = sum_i [ mean_m e_m(i) + E_self(species_i) ]   (contributing particles only)
 *   F_i += g_e, F_j -= g_e          with g_e = dE/dv_e (ghost particles receive forces too)
 *   virial_ab    = sum_e v_ea g_eb  (symmetrised; KIM's sign, = dE/d(strain)); per particle,
 *                  each pair's term split equally between its two particles
 *
 * The AEV shape (radial shifts, angular shifts, sections) is a compile-time constant of aev.c,
 * so one driver is built per shape (CMake passes -DAEV_NR/-DAEV_NA/-DAEV_NZ); the parameter
 * file carries everything else. Units: Angstrom and eV (LAMMPS `units metal`), fixed.
 * Parameter file (written by potforge/export/kim.py, write_params): a text header of keywords
 * and numbers (reals in %.17g, which round-trips float64), then the weights as raw float64.
 */
#include "KIM_LogMacros.h"
#include "KIM_ModelDriverHeaders.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_SPECIES 16
#define MAX_LAYERS 8

/* potforge's kernels (float64 build), defined in aev.c and mlp.c */
int aev_forward(int64_t N, const int64_t *off, const double *vec, const int32_t *nspec, const int32_t *ip,
                const double *rp, const int32_t *triu, double *out, int nthreads);
int aev_vjp(int64_t N, int64_t E, const int64_t *off, const double *vec, const int32_t *nspec,
            const int32_t *ip, const double *rp, const int32_t *triu, int64_t M, const double *gaev,
            double *gvec, int nthreads);
int mlp_energies_grads(int64_t N, int M, int L, const int32_t *sizes, const double *const *w,
                       const double *const *b, const double *const *wt, double alpha, const double *x,
                       double *e, double *g, int want_grad, int nthreads);

typedef struct {
    int S, M, L, F;
    int32_t ip[4];           /* n_species, NR, NA, NZ: the kernels' integer parameters */
    int n_real;
    double *rp;              /* the kernels' real parameters (cutoffs, etas, shifts, cos/sin of sections) */
    int32_t *triu;           /* (S, S) angular block of each species pair */
    double sae[MAX_SPECIES]; /* self energies, eV */
    double alpha;            /* CELU alpha */
    int32_t sizes[MAX_LAYERS + 1];
    /* per species: L pointers to weights (M, in, out), biases (M, out), transposed weights (M, out, in) */
    double *w[MAX_SPECIES][MAX_LAYERS], *b[MAX_SPECIES][MAX_LAYERS], *wt[MAX_SPECIES][MAX_LAYERS];
    double cutoff, cutoff_sq, influence;
    int no_ghost_neighbors;
} model_t;

static int n_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void model_free(model_t *m) {
    if (!m) return;
    for (int s = 0; s < MAX_SPECIES; s++)
        for (int l = 0; l < MAX_LAYERS; l++) {
            free(m->w[s][l]);
            free(m->b[s][l]);
            free(m->wt[s][l]);
        }
    free(m->rp);
    free(m->triu);
    free(m);
}

/* Reads one word and checks that it is `key`; 0 when it is. */
static int expect(FILE *f, const char *key) {
    char word[64];
    return fscanf(f, "%63s", word) == 1 && strcmp(word, key) == 0 ? 0 : 1;
}

static int read_doubles(FILE *f, double *out, long n) {
    for (long k = 0; k < n; k++)
        if (fscanf(f, "%lf", &out[k]) != 1) return 1;
    return 0;
}

static int read_ints(FILE *f, int32_t *out, long n) {
    for (long k = 0; k < n; k++) {
        int v;
        if (fscanf(f, "%d", &v) != 1) return 1;
        out[k] = v;
    }
    return 0;
}

/* Parses the parameter file into `m` and registers the species; returns a message or NULL. */
static const char *read_params(FILE *f, model_t *m, KIM_ModelDriverCreate *create) {
    int version, nr, na, nz;
    if (expect(f, "potforge-kim-params") || fscanf(f, "%d", &version) != 1 || version != 1)
        return "not a potforge-kim-params version 1 file";
    if (expect(f, "n_species") || fscanf(f, "%d", &m->S) != 1 || m->S < 1 || m->S > MAX_SPECIES)
        return "bad n_species";
    if (expect(f, "species")) return "missing species";
    for (int s = 0; s < m->S; s++) {
        char name[16];
        if (fscanf(f, "%15s", name) != 1) return "bad species list";
        if (KIM_ModelDriverCreate_SetSpeciesCode(create, KIM_SpeciesName_FromString(name), s))
            return "KIM does not know a species of the model";
    }
    if (expect(f, "aev_shape") || fscanf(f, "%d %d %d", &nr, &na, &nz) != 3) return "bad aev_shape";
    if (nr != AEV_NR || na != AEV_NA || nz != AEV_NZ)
        return "the parameter file's AEV shape differs from the one this driver was compiled for";
    m->ip[0] = m->S; m->ip[1] = nr; m->ip[2] = na; m->ip[3] = nz;
    m->F = m->S * nr + m->S * (m->S + 1) / 2 * na * nz;
    if (expect(f, "real_params") || fscanf(f, "%d", &m->n_real) != 1 || m->n_real != 5 + nr + na + 2 * nz)
        return "bad real_params count";
    m->rp = malloc(sizeof(double) * m->n_real);
    m->triu = malloc(sizeof(int32_t) * m->S * m->S);
    if (!m->rp || !m->triu) return "out of memory";
    if (read_doubles(f, m->rp, m->n_real)) return "bad real_params";
    if (expect(f, "triu") || read_ints(f, m->triu, (long)m->S * m->S)) return "bad triu";
    if (expect(f, "self_energies_eV") || read_doubles(f, m->sae, m->S)) return "bad self_energies_eV";
    if (expect(f, "celu_alpha") || fscanf(f, "%lf", &m->alpha) != 1) return "bad celu_alpha";
    if (expect(f, "n_members") || fscanf(f, "%d", &m->M) != 1 || m->M < 1) return "bad n_members";
    if (expect(f, "layer_sizes") || fscanf(f, "%d", &m->L) != 1 || m->L < 1 || m->L > MAX_LAYERS)
        return "bad layer count";
    if (read_ints(f, m->sizes, m->L + 1) || m->sizes[0] != m->F || m->sizes[m->L] != 1)
        return "layer sizes do not match the AEV length or do not end in 1";
    /* the weights follow as raw little-endian float64 (a text file three times the size would
     * make the KIM build, which embeds the file in the model library, several times slower) */
    long n_weights = 0, count;
    for (int l = 0; l < m->L; l++) n_weights += (long)m->M * (m->sizes[l] * m->sizes[l + 1] + m->sizes[l + 1]);
    n_weights *= m->S;
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) return "this driver reads little-endian weights on little-endian hosts only";
    if (expect(f, "weights_float64_le") || fscanf(f, "%ld", &count) != 1 || count != n_weights || fgetc(f) != '\n')
        return "the weight count does not match the layer sizes";
    for (int s = 0; s < m->S; s++) {
        for (int l = 0; l < m->L; l++) {
            const long n_in = m->sizes[l], n_out = m->sizes[l + 1], M = m->M;
            m->w[s][l] = malloc(sizeof(double) * M * n_in * n_out);
            m->b[s][l] = malloc(sizeof(double) * M * n_out);
            m->wt[s][l] = malloc(sizeof(double) * M * n_in * n_out);
            if (!m->w[s][l] || !m->b[s][l] || !m->wt[s][l]) return "out of memory";
            if (fread(m->w[s][l], sizeof(double), M * n_in * n_out, f) != (size_t)(M * n_in * n_out) ||
                fread(m->b[s][l], sizeof(double), M * n_out, f) != (size_t)(M * n_out))
                return "truncated weights";
            for (long k = 0; k < M; k++) /* the backward pass reads the transposed weights */
                for (long i = 0; i < n_in; i++)
                    for (long j = 0; j < n_out; j++)
                        m->wt[s][l][(k * n_out + j) * n_in + i] = m->w[s][l][(k * n_in + i) * n_out + j];
        }
    }
    if (expect(f, "end")) return "missing end marker (truncated file?)";
    m->cutoff = m->rp[0]; /* the radial cutoff: the interaction range */
    m->cutoff_sq = m->cutoff * m->cutoff;
    m->influence = m->cutoff;
    m->no_ghost_neighbors = 1; /* energies are summed over contributing particles only */
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
#undef KIM_LOGGER_FUNCTION_NAME
#define KIM_LOGGER_FUNCTION_NAME KIM_ModelCompute_LogEntry
#undef KIM_LOGGER_OBJECT_NAME
#define KIM_LOGGER_OBJECT_NAME modelCompute

/* Scratch of one compute call, freed on every exit path. */
typedef struct {
    int *centers, *nbr;
    int64_t *off;
    double *vec, *aev, *x, *e, *g, *cot, *gvec, *eatom;
    int32_t *nspec;
    int *rows;
} scratch_t;

static void scratch_free(scratch_t *s) {
    free(s->centers); free(s->nbr); free(s->off); free(s->vec); free(s->aev); free(s->x);
    free(s->e); free(s->g); free(s->cot); free(s->gvec); free(s->eatom); free(s->nspec); free(s->rows);
}

static int compute_core(KIM_ModelCompute const *const modelCompute,
                        KIM_ModelComputeArguments const *const args, model_t const *m, scratch_t *s) {
    int *n_parts, *codes, *contributing;
    double *x, *energy, *forces, *particle_energy, *virial, *particle_virial;
    if (KIM_ModelComputeArguments_GetArgumentPointerInteger(args, KIM_COMPUTE_ARGUMENT_NAME_numberOfParticles,
                                                           &n_parts) ||
        KIM_ModelComputeArguments_GetArgumentPointerInteger(args, KIM_COMPUTE_ARGUMENT_NAME_particleSpeciesCodes,
                                                           &codes) ||
        KIM_ModelComputeArguments_GetArgumentPointerInteger(args, KIM_COMPUTE_ARGUMENT_NAME_particleContributing,
                                                           &contributing) ||
        KIM_ModelComputeArguments_GetArgumentPointerDouble(args, KIM_COMPUTE_ARGUMENT_NAME_coordinates, &x) ||
        KIM_ModelComputeArguments_GetArgumentPointerDouble(args, KIM_COMPUTE_ARGUMENT_NAME_partialEnergy,
                                                          &energy) ||
        KIM_ModelComputeArguments_GetArgumentPointerDouble(args, KIM_COMPUTE_ARGUMENT_NAME_partialForces,
                                                          &forces) ||
        KIM_ModelComputeArguments_GetArgumentPointerDouble(
            args, KIM_COMPUTE_ARGUMENT_NAME_partialParticleEnergy, &particle_energy) ||
        KIM_ModelComputeArguments_GetArgumentPointerDouble(args, KIM_COMPUTE_ARGUMENT_NAME_partialVirial,
                                                          &virial) ||
        KIM_ModelComputeArguments_GetArgumentPointerDouble(
            args, KIM_COMPUTE_ARGUMENT_NAME_partialParticleVirial, &particle_virial)) {
        LOG_ERROR("cannot get the compute arguments");
        return 1;
    }
    const int n = *n_parts, nthreads = n_threads();
    const int want_grad = forces != NULL || virial != NULL || particle_virial != NULL;
    for (int i = 0; i < n; i++)
        if (codes[i] < 0 || codes[i] >= m->S) {
            LOG_ERROR("a particle has a species code the model does not know");
            return 1;
        }
    if (energy) *energy = 0.0;
    if (particle_energy) memset(particle_energy, 0, sizeof(double) * n);
    if (forces) memset(forces, 0, sizeof(double) * 3 * n);
    if (virial) memset(virial, 0, sizeof(double) * 6);
    if (particle_virial) memset(particle_virial, 0, sizeof(double) * 6 * n);

    /* CSR pair list of the contributing particles, pairs beyond the cutoff dropped (the
     * simulator's lists include its skin) */
    int nc = 0;
    int64_t n_edges = 0;
    s->centers = malloc(sizeof(int) * (n > 0 ? n : 1));
    s->off = malloc(sizeof(int64_t) * (n + 1));
    if (!s->centers || !s->off) return 1;
    s->off[0] = 0;
    for (int i = 0; i < n; i++) {
        if (!contributing[i]) continue;
        int nn;
        int const *list;
        if (KIM_ModelComputeArguments_GetNeighborList(args, 0, i, &nn, &list)) {
            LOG_ERROR("cannot get a neighbour list");
            return 1;
        }
        for (int k = 0; k < nn; k++) {
            const int j = list[k];
            const double dx = x[3 * j] - x[3 * i], dy = x[3 * j + 1] - x[3 * i + 1], dz = x[3 * j + 2] - x[3 * i + 2];
            if (dx * dx + dy * dy + dz * dz < m->cutoff_sq) n_edges++;
        }
        s->centers[nc++] = i;
        s->off[nc] = n_edges;
    }
    if (nc == 0) return 0;
    const int64_t E = n_edges, F = m->F;
    s->nbr = malloc(sizeof(int) * (E > 0 ? E : 1));
    s->vec = malloc(sizeof(double) * 3 * (E > 0 ? E : 1));
    s->nspec = malloc(sizeof(int32_t) * (E > 0 ? E : 1));
    s->aev = malloc(sizeof(double) * nc * F);
    s->eatom = malloc(sizeof(double) * nc);
    if (!s->nbr || !s->vec || !s->nspec || !s->aev || !s->eatom) return 1;
    int64_t e = 0;
    for (int c = 0; c < nc; c++) {
        const int i = s->centers[c];
        int nn;
        int const *list;
        KIM_ModelComputeArguments_GetNeighborList(args, 0, i, &nn, &list);
        for (int k = 0; k < nn; k++) {
            const int j = list[k];
            const double dx = x[3 * j] - x[3 * i], dy = x[3 * j + 1] - x[3 * i + 1], dz = x[3 * j + 2] - x[3 * i + 2];
            if (dx * dx + dy * dy + dz * dz >= m->cutoff_sq) continue;
            s->vec[3 * e] = dx; s->vec[3 * e + 1] = dy; s->vec[3 * e + 2] = dz;
            s->nspec[e] = codes[j];
            s->nbr[e] = j;
            e++;
        }
    }
    if (aev_forward(nc, s->off, s->vec, s->nspec, m->ip, m->rp, m->triu, s->aev, nthreads)) {
        LOG_ERROR("AEV kernel failed");
        return 1;
    }

    /* every member's atomic energies and AEV gradients, species by species; the members' mean
     * gradient is accumulated member by member as potforge's member_moments does */
    const int M = m->M;
    s->rows = malloc(sizeof(int) * nc);
    s->x = malloc(sizeof(double) * nc * F);
    s->e = malloc(sizeof(double) * M * nc);
    s->g = want_grad ? malloc(sizeof(double) * M * nc * F) : malloc(sizeof(double));
    s->cot = want_grad ? malloc(sizeof(double) * nc * F) : NULL;
    if (!s->rows || !s->x || !s->e || !s->g || (want_grad && !s->cot)) return 1;
    for (int sp = 0; sp < m->S; sp++) {
        int nk = 0;
        for (int c = 0; c < nc; c++)
            if (codes[s->centers[c]] == sp) {
                s->rows[nk] = c;
                memcpy(s->x + (int64_t)nk * F, s->aev + (int64_t)c * F, sizeof(double) * F);
                nk++;
            }
        if (nk == 0) continue;
        int code = mlp_energies_grads(nk, M, m->L, m->sizes, (const double *const *)m->w[sp],
                                      (const double *const *)m->b[sp], (const double *const *)m->wt[sp], m->alpha,
                                      s->x, s->e, s->g, want_grad, nthreads);
        if (code) {
            LOG_ERROR("network kernel failed");
            return 1;
        }
        for (int r = 0; r < nk; r++) {
            const int c = s->rows[r];
            double total = s->e[r];
            for (int k = 1; k < M; k++) total += s->e[(int64_t)k * nk + r];
            s->eatom[c] = total / M + m->sae[sp];
            if (!want_grad) continue;
            double *cot = s->cot + (int64_t)c * F;
            for (int64_t f = 0; f < F; f++) {
                double t = s->g[(int64_t)r * F + f];
                for (int k = 1; k < M; k++) t += s->g[((int64_t)k * nk + r) * F + f];
                cot[f] = t / M;
            }
        }
    }
    for (int c = 0; c < nc; c++) {
        if (energy) *energy += s->eatom[c];
        if (particle_energy) particle_energy[s->centers[c]] = s->eatom[c];
    }
    if (!want_grad) return 0;

    s->gvec = malloc(sizeof(double) * 3 * (E > 0 ? E : 1));
    if (!s->gvec) return 1;
    if (aev_vjp(nc, E, s->off, s->vec, s->nspec, m->ip, m->rp, m->triu, 1, s->cot, s->gvec, nthreads)) {
        LOG_ERROR("AEV gradient kernel failed");
        return 1;
    }
    double w[6] = {0, 0, 0, 0, 0, 0};
    for (int c = 0; c < nc; c++) {
        const int i = s->centers[c];
        for (int64_t k = s->off[c]; k < s->off[c + 1]; k++) {
            const double *g = s->gvec + 3 * k, *v = s->vec + 3 * k;
            if (forces) {
                const int j = s->nbr[k];
                forces[3 * i] += g[0]; forces[3 * i + 1] += g[1]; forces[3 * i + 2] += g[2];
                forces[3 * j] -= g[0]; forces[3 * j + 1] -= g[1]; forces[3 * j + 2] -= g[2];
            }
            const double pw[6] = {v[0] * g[0], v[1] * g[1], v[2] * g[2], 0.5 * (v[1] * g[2] + v[2] * g[1]),
                                  0.5 * (v[0] * g[2] + v[2] * g[0]), 0.5 * (v[0] * g[1] + v[1] * g[0])};
            for (int q = 0; q < 6; q++) w[q] += pw[q];
            if (particle_virial) { /* a pair's term shared equally by its two particles */
                const int j = s->nbr[k];
                for (int q = 0; q < 6; q++) {
                    particle_virial[6 * i + q] += 0.5 * pw[q];
                    particle_virial[6 * j + q] += 0.5 * pw[q];
                }
            }
        }
    }
    if (virial) memcpy(virial, w, sizeof w); /* KIM order: xx yy zz yz xz xy */
    return 0;
}

static int compute_routine(KIM_ModelCompute const *const modelCompute,
                           KIM_ModelComputeArguments const *const args) {
    model_t *m;
    KIM_ModelCompute_GetModelBufferPointer(modelCompute, (void **)&m);
    scratch_t s;
    memset(&s, 0, sizeof s);
    int ier = compute_core(modelCompute, args, m, &s);
    scratch_free(&s);
    if (ier) LOG_ERROR("potforge driver: compute failed (out of memory or bad input)");
    return ier;
}

/* ------------------------------------------------------------------------------------------ */
#undef KIM_LOGGER_FUNCTION_NAME
#define KIM_LOGGER_FUNCTION_NAME KIM_ModelComputeArgumentsCreate_LogEntry
#undef KIM_LOGGER_OBJECT_NAME
#define KIM_LOGGER_OBJECT_NAME create

static int compute_arguments_create(KIM_ModelCompute const *const modelCompute,
                                    KIM_ModelComputeArgumentsCreate *const create) {
    (void)modelCompute;
    const KIM_ComputeArgumentName names[5] = {
        KIM_COMPUTE_ARGUMENT_NAME_partialEnergy, KIM_COMPUTE_ARGUMENT_NAME_partialForces,
        KIM_COMPUTE_ARGUMENT_NAME_partialParticleEnergy, KIM_COMPUTE_ARGUMENT_NAME_partialVirial,
        KIM_COMPUTE_ARGUMENT_NAME_partialParticleVirial};
    for (int k = 0; k < 5; k++)
        if (KIM_ModelComputeArgumentsCreate_SetArgumentSupportStatus(create, names[k], KIM_SUPPORT_STATUS_optional)) {
            LOG_ERROR("cannot register a compute argument");
            return 1;
        }
    return 0;
}

static int compute_arguments_destroy(KIM_ModelCompute const *const modelCompute,
                                     KIM_ModelComputeArgumentsDestroy *const destroy) {
    (void)modelCompute;
    (void)destroy;
    return 0;
}

static int destroy_routine(KIM_ModelDestroy *const destroy) {
    model_t *m;
    KIM_ModelDestroy_GetModelBufferPointer(destroy, (void **)&m);
    model_free(m);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
#undef KIM_LOGGER_FUNCTION_NAME
#define KIM_LOGGER_FUNCTION_NAME KIM_ModelDriverCreate_LogEntry
#undef KIM_LOGGER_OBJECT_NAME
#define KIM_LOGGER_OBJECT_NAME create

int potforge_model_driver_create(KIM_ModelDriverCreate *const create, KIM_LengthUnit const requestedLengthUnit,
                                 KIM_EnergyUnit const requestedEnergyUnit,
                                 KIM_ChargeUnit const requestedChargeUnit,
                                 KIM_TemperatureUnit const requestedTemperatureUnit,
                                 KIM_TimeUnit const requestedTimeUnit) {
    (void)requestedLengthUnit; (void)requestedEnergyUnit; (void)requestedChargeUnit;
    (void)requestedTemperatureUnit; (void)requestedTimeUnit;
    /* the model's own units; a simulator asking for others converts (or refuses) itself */
    if (KIM_ModelDriverCreate_SetUnits(create, KIM_LENGTH_UNIT_A, KIM_ENERGY_UNIT_eV, KIM_CHARGE_UNIT_unused,
                                       KIM_TEMPERATURE_UNIT_unused, KIM_TIME_UNIT_unused) ||
        KIM_ModelDriverCreate_SetModelNumbering(create, KIM_NUMBERING_zeroBased)) {
        LOG_ERROR("cannot set units or numbering");
        return 1;
    }
    int n_files;
    KIM_ModelDriverCreate_GetNumberOfParameterFiles(create, &n_files);
    char const *dir, *base;
    KIM_ModelDriverCreate_GetParameterFileDirectoryName(create, &dir);
    if (n_files != 1 || KIM_ModelDriverCreate_GetParameterFileBasename(create, 0, &base)) {
        LOG_ERROR("a potforge KIM model has exactly one parameter file");
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, base);
    FILE *f = fopen(path, "rb");
    if (!f) {
        LOG_ERROR("cannot open the parameter file");
        return 1;
    }
    model_t *m = calloc(1, sizeof(model_t));
    const char *problem = m ? read_params(f, m, create) : "out of memory";
    fclose(f);
    if (problem) {
        LOG_ERROR(problem);
        model_free(m);
        return 1;
    }
    /* no parameters are published (the weights are fixed once trained), hence no Refresh routine */
    KIM_ModelDriverCreate_SetModelBufferPointer(create, m);
    KIM_ModelDriverCreate_SetInfluenceDistancePointer(create, &m->influence);
    KIM_ModelDriverCreate_SetNeighborListPointers(create, 1, &m->cutoff, &m->no_ghost_neighbors);
    KIM_ModelComputeArgumentsCreateFunction *ca_create = compute_arguments_create;
    KIM_ModelComputeFunction *compute = compute_routine;
    KIM_ModelComputeArgumentsDestroyFunction *ca_destroy = compute_arguments_destroy;
    KIM_ModelDestroyFunction *destroy = destroy_routine;
    if (KIM_ModelDriverCreate_SetRoutinePointer(create, KIM_MODEL_ROUTINE_NAME_ComputeArgumentsCreate,
                                                KIM_LANGUAGE_NAME_c, 1, (KIM_Function *)ca_create) ||
        KIM_ModelDriverCreate_SetRoutinePointer(create, KIM_MODEL_ROUTINE_NAME_Compute, KIM_LANGUAGE_NAME_c, 1,
                                                (KIM_Function *)compute) ||
        KIM_ModelDriverCreate_SetRoutinePointer(create, KIM_MODEL_ROUTINE_NAME_ComputeArgumentsDestroy,
                                                KIM_LANGUAGE_NAME_c, 1, (KIM_Function *)ca_destroy) ||
        KIM_ModelDriverCreate_SetRoutinePointer(create, KIM_MODEL_ROUTINE_NAME_Destroy, KIM_LANGUAGE_NAME_c, 1,
                                                (KIM_Function *)destroy)) {
        LOG_ERROR("cannot register the driver's routines");
        model_free(m);
        return 1;
    }
    return 0;
}
