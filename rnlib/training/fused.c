/* Fused CPU passes for the batched trainer (rnlib/training/fused.py): each neuron's activation, forward and
 * hand-derived backward, one row of units at a time, plus the thin first layer and a one-output MSE head.
 *
 * Tensors are float32 and contiguous, with a leading replica axis m < M: pre-activations, saved
 * intermediates and activations (M, N, W); per-unit vectors (M, 1, W); weights as rnlib holds them,
 * (M, in, out). Every pass overwrites its outputs and spreads its rows over `threads` OpenMP threads (the
 * runtime PyTorch itself loads, so the passes share its thread pool). Sums over the N points accumulate in
 * double per block of BLOCK points, and the blocks' partial sums add up in a fixed order afterwards, so a
 * build gives the same bits on every run and at every thread count. Built with -ffp-contract=off:
 * the arithmetic is the source's. sin, cos, exp, tanh and log1p come 8 lanes at a time from glibc's AVX2
 * vector math library (libmvec); a row's tail goes through the same vector call, padded, so every element
 * of a row is computed the same way wherever it sits.
 *
 * Each neuron is an entry of the NEURONS table (after the neurons' passes): its registry name, as
 * rnlib/core/neurons.py registers it, how many rows its forward saves, and its forward and backward.
 * rnlib.training.fused reads the table through rn_neuron_count, rn_neuron_name and rn_saved_rows and keeps
 * no copy of it; a neuron with no entry trains with autograd. The equations are protocol §2's, as
 * rnlib/core/neurons.py writes them (tanh, sigmoid and softplus in their textbook forms).
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAXW 1024  /* widest row the passes take; Python reads it with rn_max_width */
#define MAXZ 5     /* most matrices per layer (v9) */
#define MAXV 3     /* most per-unit vectors per layer (v15) */
#define MAXS 5     /* most saved rows per unit */
#define BLOCK 64   /* points per partial sum: the unit of work a thread takes in a pass that sums */

__m256 _ZGVdN8v_sinf(__m256 x);
__m256 _ZGVdN8v_cosf(__m256 x);
__m256 _ZGVdN8v_expf(__m256 x);
__m256 _ZGVdN8v_tanhf(__m256 x);
__m256 _ZGVdN8v_log1pf(__m256 x);

long rn_max_width(void) { return MAXW; }

/* out[j] = f(in[j]) for j < W, 8 lanes per call; the tail is padded with zeros through the same call. */
#define VECTOR_MAP(name, f)                                                           \
    static inline void name(long W, const float *in, float *out) {                    \
        long j = 0;                                                                   \
        for (; j + 8 <= W; j += 8) _mm256_storeu_ps(out + j, f(_mm256_loadu_ps(in + j))); \
        if (j < W) {                                                                  \
            float buf[8] = {0};                                                       \
            memcpy(buf, in + j, sizeof(float) * (W - j));                             \
            _mm256_storeu_ps(buf, f(_mm256_loadu_ps(buf)));                           \
            memcpy(out + j, buf, sizeof(float) * (W - j));                            \
        }                                                                             \
    }
VECTOR_MAP(v_sin, _ZGVdN8v_sinf)
VECTOR_MAP(v_cos, _ZGVdN8v_cosf)
VECTOR_MAP(v_exp, _ZGVdN8v_expf)
VECTOR_MAP(v_tanh, _ZGVdN8v_tanhf)
VECTOR_MAP(v_log1p, _ZGVdN8v_log1pf)

/* out = sigmoid(in) = 1 / (1 + exp(-in)) */
static inline void v_sigmoid(long W, const float *in, float *out) {
    float t[MAXW];
    for (long j = 0; j < W; j++) t[j] = -in[j];
    v_exp(W, t, t);
    for (long j = 0; j < W; j++) out[j] = 1.0f / (1.0f + t[j]);
}

/* One row of one layer: pre-activations z[k], the replica's vectors, saved intermediates, widths. */
typedef struct {
    long W;
    float omega;
    const float *z[MAXZ];
    const float *vec[MAXV];
    float *save[MAXS];
} Row;

/* What a backward row hands back: gradients at the pre-activations and this row's share of the vectors'. */
typedef struct {
    float *dz[MAXZ];
    double *gvec[MAXV];
} Grad;

static inline void sincos_row(long W, const float *arg, float *s, float *c) {
    v_sin(W, arg, s);
    v_cos(W, arg, c);
}

/* LayerNorm over the row with the replica's affine (vec[0], vec[1]); torch's biased variance, eps 1e-5.
 * Writes x-hat to xhat and returns 1/sqrt(var + eps). */
static inline float layer_norm_row(long W, const float *p, const float *w, const float *b, float *xhat,
                                   float *h) {
    double mean = 0.0, var = 0.0;
    for (long j = 0; j < W; j++) mean += p[j];
    mean /= (double)W;
    for (long j = 0; j < W; j++) var += (p[j] - mean) * (p[j] - mean);
    var /= (double)W;
    const float rstd = (float)(1.0 / sqrt(var + 1e-5));
    const float mu = (float)mean;
    for (long j = 0; j < W; j++) {
        xhat[j] = (p[j] - mu) * rstd;
        h[j] = xhat[j] * w[j] + b[j];
    }
    return rstd;
}

/* LayerNorm backward: dp from dh, with the affine's gradients accumulated into gw, gb. */
static inline void layer_norm_back_row(long W, const float *dh, const float *xhat, float rstd, const float *w,
                                       float *dp, double *gw, double *gb) {
    double mean_g = 0.0, mean_gx = 0.0;
    for (long j = 0; j < W; j++) {
        const float g = dh[j] * w[j];
        mean_g += g;
        mean_gx += g * xhat[j];
        gw[j] += dh[j] * xhat[j];
        gb[j] += dh[j];
    }
    const float a = (float)(mean_g / (double)W), c = (float)(mean_gx / (double)W);
    for (long j = 0; j < W; j++) dp[j] = rstd * (dh[j] * w[j] - a - xhat[j] * c);
}

/* ---------------------------------------------------------------- the neurons, forward and backward
 * Each forward writes h and the saved rows its backward reads; each backward writes every dz and adds
 * to the vector gradients. "arg" is the sine's argument, s and c its sin and cos. */

/* vanilla: relu(z); nothing saved (the mask is z > 0, as torch's relu backward uses it). */
static void fwd_vanilla(const Row *r, float *h) {
    for (long j = 0; j < r->W; j++) h[j] = r->z[0][j] < 0.0f ? 0.0f : r->z[0][j]; /* NaN stays NaN */
}
static void bwd_vanilla(const Row *r, const float *dh, Grad *g) {
    for (long j = 0; j < r->W; j++) g->dz[0][j] = r->z[0][j] > 0.0f ? dh[j] : 0.0f;
}

/* singlu: sin(ω g) v; saves s, c. */
static void fwd_singlu(const Row *r, float *h) {
    float arg[MAXW];
    for (long j = 0; j < r->W; j++) arg[j] = r->omega * r->z[0][j];
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    for (long j = 0; j < r->W; j++) h[j] = r->save[0][j] * r->z[1][j];
}
static void bwd_singlu(const Row *r, const float *dh, Grad *g) {
    for (long j = 0; j < r->W; j++) {
        g->dz[0][j] = dh[j] * r->z[1][j] * r->save[1][j] * r->omega;
        g->dz[1][j] = dh[j] * r->save[0][j];
    }
}

/* siren: sin(ω z); saves c. */
static void fwd_siren(const Row *r, float *h) {
    float arg[MAXW];
    for (long j = 0; j < r->W; j++) arg[j] = r->omega * r->z[0][j];
    sincos_row(r->W, arg, h, r->save[0]);
}
static void bwd_siren(const Row *r, const float *dh, Grad *g) {
    for (long j = 0; j < r->W; j++) g->dz[0][j] = dh[j] * r->save[0][j] * r->omega;
}

/* bilinear: z1 z2. */
static void fwd_bilinear(const Row *r, float *h) {
    for (long j = 0; j < r->W; j++) h[j] = r->z[0][j] * r->z[1][j];
}
static void bwd_bilinear(const Row *r, const float *dh, Grad *g) {
    for (long j = 0; j < r->W; j++) {
        g->dz[0][j] = dh[j] * r->z[1][j];
        g->dz[1][j] = dh[j] * r->z[0][j];
    }
}

/* The v1 family: p = u sin(ω z2) (+ u), then LayerNorm with vec = (ln_weight, ln_bias) (or not).
 * Saves s, c and, with the norm, x-hat and (in save[3][0]) 1/std. */
static void fwd_v1(const Row *r, float *h, int residual, int norm) {
    float arg[MAXW], p[MAXW];
    const float *u = r->z[0];
    for (long j = 0; j < r->W; j++) arg[j] = r->omega * r->z[1][j];
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    float *out = norm ? p : h;
    for (long j = 0; j < r->W; j++) out[j] = residual ? u[j] * r->save[0][j] + u[j] : u[j] * r->save[0][j];
    if (norm) r->save[3][0] = layer_norm_row(r->W, p, r->vec[0], r->vec[1], r->save[2], h);
}
static void bwd_v1(const Row *r, const float *dh, Grad *g, int residual, int norm) {
    float dp[MAXW];
    if (norm)
        layer_norm_back_row(r->W, dh, r->save[2], r->save[3][0], r->vec[0], dp, g->gvec[0], g->gvec[1]);
    else
        memcpy(dp, dh, sizeof(float) * r->W);
    const float *u = r->z[0];
    for (long j = 0; j < r->W; j++) {
        g->dz[0][j] = residual ? dp[j] * (r->save[0][j] + 1.0f) : dp[j] * r->save[0][j];
        g->dz[1][j] = dp[j] * u[j] * r->save[1][j] * r->omega;
    }
}
static void fwd_v1_rich(const Row *r, float *h) { fwd_v1(r, h, 1, 1); }
static void bwd_v1_rich(const Row *r, const float *dh, Grad *g) { bwd_v1(r, dh, g, 1, 1); }
static void fwd_v1_no_residual(const Row *r, float *h) { fwd_v1(r, h, 0, 1); }
static void bwd_v1_no_residual(const Row *r, const float *dh, Grad *g) { bwd_v1(r, dh, g, 0, 1); }
static void fwd_v1_no_norm(const Row *r, float *h) { fwd_v1(r, h, 1, 0); }
static void bwd_v1_no_norm(const Row *r, const float *dh, Grad *g) { bwd_v1(r, dh, g, 1, 0); }

/* v4_shared: u sin(ω u) + u; saves s, c. */
static void fwd_v4_shared(const Row *r, float *h) {
    float arg[MAXW];
    const float *u = r->z[0];
    for (long j = 0; j < r->W; j++) arg[j] = r->omega * u[j];
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    for (long j = 0; j < r->W; j++) h[j] = u[j] * r->save[0][j] + u[j];
}
static void bwd_v4_shared(const Row *r, const float *dh, Grad *g) {
    const float *u = r->z[0];
    for (long j = 0; j < r->W; j++)
        g->dz[0][j] = dh[j] * (r->save[0][j] + u[j] * r->save[1][j] * r->omega + 1.0f);
}

/* v6_routing, z = (g, v, a): α sin(ω g) v + (1 − α) v, α = σ(a); saves s, c, α. */
static void fwd_v6(const Row *r, float *h) {
    float arg[MAXW];
    for (long j = 0; j < r->W; j++) arg[j] = r->omega * r->z[0][j];
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    v_sigmoid(r->W, r->z[2], r->save[2]);
    for (long j = 0; j < r->W; j++) {
        const float a = r->save[2][j], v = r->z[1][j];
        h[j] = a * (r->save[0][j] * v) + (1.0f - a) * v;
    }
}
static void bwd_v6(const Row *r, const float *dh, Grad *g) {
    for (long j = 0; j < r->W; j++) {
        const float a = r->save[2][j], v = r->z[1][j], s = r->save[0][j];
        g->dz[0][j] = dh[j] * a * v * r->save[1][j] * r->omega;
        g->dz[1][j] = dh[j] * (a * s + (1.0f - a));
        g->dz[2][j] = dh[j] * v * (s - 1.0f) * a * (1.0f - a);
    }
}

/* v7_learned_freq, z = (g, v, ω-pre): sin(ω(x) g) v, ω(x) = ω softplus(z) / ln 2 (softplus(z) = z above
 * 20, as torch's); saves s, c, ω(x). */
static void fwd_v7(const Row *r, float *h) {
    float e[MAXW], arg[MAXW];
    const float *zo = r->z[2];
    float *wx = r->save[2];
    v_exp(r->W, zo, e);
    v_log1p(r->W, e, wx);
    for (long j = 0; j < r->W; j++) {
        wx[j] = r->omega * ((zo[j] > 20.0f ? zo[j] : wx[j]) / 0.69314718055994531f);
        arg[j] = wx[j] * r->z[0][j];
    }
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    for (long j = 0; j < r->W; j++) h[j] = r->save[0][j] * r->z[1][j];
}
static void bwd_v7(const Row *r, const float *dh, Grad *g) {
    float sig[MAXW];
    v_sigmoid(r->W, r->z[2], sig);
    for (long j = 0; j < r->W; j++) {
        const float da = dh[j] * r->z[1][j] * r->save[1][j];  /* d loss / d arg */
        const float dsp = r->z[2][j] > 20.0f ? 1.0f : sig[j];
        g->dz[0][j] = da * r->save[2][j];
        g->dz[1][j] = dh[j] * r->save[0][j];
        g->dz[2][j] = da * r->z[0][j] * (r->omega * dsp / 0.69314718055994531f);
    }
}

/* v8_phase_gate, z = (a, g, φ, v): σ(a) sin(ω g + φ) v; saves s, c, σ(a). */
static void fwd_v8(const Row *r, float *h) {
    float arg[MAXW];
    for (long j = 0; j < r->W; j++) arg[j] = r->omega * r->z[1][j] + r->z[2][j];
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    v_sigmoid(r->W, r->z[0], r->save[2]);
    for (long j = 0; j < r->W; j++) h[j] = r->save[2][j] * r->save[0][j] * r->z[3][j];
}
static void bwd_v8(const Row *r, const float *dh, Grad *g) {
    for (long j = 0; j < r->W; j++) {
        const float gate = r->save[2][j], s = r->save[0][j], v = r->z[3][j];
        const float da = dh[j] * gate * v * r->save[1][j];
        g->dz[0][j] = dh[j] * s * v * gate * (1.0f - gate);
        g->dz[1][j] = da * r->omega;
        g->dz[2][j] = da;
        g->dz[3][j] = dh[j] * gate * s;
    }
}

/* v9_controlled, z = (g, v, φ, a, ω-pre): α sin(ω(x) g + π tanh φ) v + (1 − α) v, α = σ(a),
 * ω(x) = ω (1 + 0.5 tanh(ω-pre)); saves s, c, α, tanh(ω-pre), tanh φ. */
static void fwd_v9(const Row *r, float *h) {
    float arg[MAXW];
    float *to = r->save[3], *tp = r->save[4];
    v_tanh(r->W, r->z[4], to);
    v_tanh(r->W, r->z[2], tp);
    v_sigmoid(r->W, r->z[3], r->save[2]);
    for (long j = 0; j < r->W; j++)
        arg[j] = r->omega * (1.0f + 0.5f * to[j]) * r->z[0][j] + 3.14159265358979323846f * tp[j];
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    for (long j = 0; j < r->W; j++) {
        const float a = r->save[2][j], v = r->z[1][j];
        h[j] = a * r->save[0][j] * v + (1.0f - a) * v;
    }
}
static void bwd_v9(const Row *r, const float *dh, Grad *g) {
    for (long j = 0; j < r->W; j++) {
        const float a = r->save[2][j], v = r->z[1][j], s = r->save[0][j];
        const float to = r->save[3][j], tp = r->save[4][j];
        const float da = dh[j] * a * v * r->save[1][j];
        g->dz[0][j] = da * (r->omega * (1.0f + 0.5f * to));
        g->dz[1][j] = dh[j] * (a * s + (1.0f - a));
        g->dz[2][j] = da * 3.14159265358979323846f * (1.0f - tp * tp);
        g->dz[3][j] = dh[j] * v * (s - 1.0f) * a * (1.0f - a);
        g->dz[4][j] = da * r->z[0][j] * r->omega * 0.5f * (1.0f - to * to);
    }
}

/* The phase family v10-v13, z = (g, φ, v): sin(arg(g, tanh φ)) v; saves s, c, tanh φ.
 * kind 10: ω g + π t; 11: ω (g + 0.1 t); 12: ω g (1 + 0.2 t); 13: ω g + 0.1 g t. */
static void fwd_phase(const Row *r, float *h, int kind) {
    float arg[MAXW];
    float *t = r->save[2];
    const float *gp = r->z[0], w = r->omega;
    v_tanh(r->W, r->z[1], t);
    for (long j = 0; j < r->W; j++) {
        switch (kind) {
            case 10: arg[j] = w * gp[j] + 3.14159265358979323846f * t[j]; break;
            case 11: arg[j] = w * (gp[j] + 0.1f * t[j]); break;
            case 12: arg[j] = w * gp[j] * (1.0f + 0.2f * t[j]); break;
            default: arg[j] = w * gp[j] + 0.1f * gp[j] * t[j]; break;
        }
    }
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    for (long j = 0; j < r->W; j++) h[j] = r->save[0][j] * r->z[2][j];
}
static void bwd_phase(const Row *r, const float *dh, Grad *g, int kind) {
    const float *gp = r->z[0], w = r->omega;
    for (long j = 0; j < r->W; j++) {
        const float t = r->save[2][j], dt = 1.0f - t * t;
        const float da = dh[j] * r->z[2][j] * r->save[1][j];
        switch (kind) {
            case 10: g->dz[0][j] = da * w; g->dz[1][j] = da * 3.14159265358979323846f * dt; break;
            case 11: g->dz[0][j] = da * w; g->dz[1][j] = da * w * 0.1f * dt; break;
            case 12: g->dz[0][j] = da * w * (1.0f + 0.2f * t); g->dz[1][j] = da * w * gp[j] * 0.2f * dt; break;
            default: g->dz[0][j] = da * (w + 0.1f * t); g->dz[1][j] = da * 0.1f * gp[j] * dt; break;
        }
        g->dz[2][j] = dh[j] * r->save[0][j];
    }
}
static void fwd_v10(const Row *r, float *h) { fwd_phase(r, h, 10); }
static void bwd_v10(const Row *r, const float *dh, Grad *g) { bwd_phase(r, dh, g, 10); }
static void fwd_v11(const Row *r, float *h) { fwd_phase(r, h, 11); }
static void bwd_v11(const Row *r, const float *dh, Grad *g) { bwd_phase(r, dh, g, 11); }
static void fwd_v12(const Row *r, float *h) { fwd_phase(r, h, 12); }
static void bwd_v12(const Row *r, const float *dh, Grad *g) { bwd_phase(r, dh, g, 12); }
static void fwd_v13(const Row *r, float *h) { fwd_phase(r, h, 13); }
static void bwd_v13(const Row *r, const float *dh, Grad *g) { bwd_phase(r, dh, g, 13); }

/* v15_dual_phase, z = (g, φ, v), vec = (α, β, γ): sin(ω g + β φ) (1 + α sin(2ω g + γ φ)) v;
 * saves s1, c1, s2, c2. */
static void fwd_v15(const Row *r, float *h) {
    float arg[MAXW];
    const float *gp = r->z[0], *phi = r->z[1], *al = r->vec[0], *be = r->vec[1], *ga = r->vec[2];
    for (long j = 0; j < r->W; j++) arg[j] = r->omega * gp[j] + be[j] * phi[j];
    sincos_row(r->W, arg, r->save[0], r->save[1]);
    for (long j = 0; j < r->W; j++) arg[j] = 2.0f * r->omega * gp[j] + ga[j] * phi[j];
    sincos_row(r->W, arg, r->save[2], r->save[3]);
    for (long j = 0; j < r->W; j++) h[j] = r->save[0][j] * (1.0f + al[j] * r->save[2][j]) * r->z[2][j];
}
static void bwd_v15(const Row *r, const float *dh, Grad *g) {
    const float *phi = r->z[1], *al = r->vec[0], *be = r->vec[1], *ga = r->vec[2];
    for (long j = 0; j < r->W; j++) {
        const float s1 = r->save[0][j], c1 = r->save[1][j], s2 = r->save[2][j], c2 = r->save[3][j];
        const float v = r->z[2][j], harm = 1.0f + al[j] * s2;
        const float d1 = dh[j] * v * harm * c1, d2 = dh[j] * v * s1 * al[j] * c2;
        g->dz[0][j] = d1 * r->omega + d2 * (2.0f * r->omega);
        g->dz[1][j] = d1 * be[j] + d2 * ga[j];
        g->dz[2][j] = dh[j] * s1 * harm;
        g->gvec[0][j] += dh[j] * v * s1 * s2;
        g->gvec[1][j] += d1 * phi[j];
        g->gvec[2][j] += d2 * phi[j];
    }
}

typedef void (*ForwardRow)(const Row *, float *);
typedef void (*BackwardRow)(const Row *, const float *, Grad *);
typedef struct {
    const char *name; /* the registry name, as in rnlib.core.neurons.NEURONS */
    long saved;       /* rows of intermediates the forward keeps for the backward (at most MAXS) */
    ForwardRow forward;
    BackwardRow backward;
} Neuron;

/* Every neuron with a fused form. A neuron's id is its place here, which only this library sees: Python
 * looks neurons up by name. v4_lowrank (factorised matrices) has none and trains with autograd. */
static const Neuron NEURONS[] = {
    {"vanilla", 0, fwd_vanilla, bwd_vanilla},
    {"singlu", 2, fwd_singlu, bwd_singlu},
    {"v1_rich", 4, fwd_v1_rich, bwd_v1_rich},
    {"siren", 1, fwd_siren, bwd_siren},
    {"bilinear", 0, fwd_bilinear, bwd_bilinear},
    {"v1_no_residual", 4, fwd_v1_no_residual, bwd_v1_no_residual},
    {"v1_no_norm", 2, fwd_v1_no_norm, bwd_v1_no_norm},
    {"v4_shared", 2, fwd_v4_shared, bwd_v4_shared},
    {"v6_routing", 3, fwd_v6, bwd_v6},
    {"v7_learned_freq", 3, fwd_v7, bwd_v7},
    {"v8_phase_gate", 3, fwd_v8, bwd_v8},
    {"v9_controlled", 5, fwd_v9, bwd_v9},
    {"v10_free_phase", 3, fwd_v10, bwd_v10},
    {"v11_scaled_phase", 3, fwd_v11, bwd_v11},
    {"v12_fm", 3, fwd_v12, bwd_v12},
    {"v13_aligned_phase", 3, fwd_v13, bwd_v13},
    {"v15_dual_phase", 4, fwd_v15, bwd_v15},
};
#define N_NEURONS ((long)(sizeof(NEURONS) / sizeof(NEURONS[0])))

long rn_neuron_count(void) { return N_NEURONS; }
long rn_has_neuron(long id) { return id >= 0 && id < N_NEURONS; }
/* Neuron id's registry name; NULL for an id outside the table. */
const char *rn_neuron_name(long id) { return rn_has_neuron(id) ? NEURONS[id].name : NULL; }
/* How many saved rows neuron id's passes take; -1 for an id outside the table. */
long rn_saved_rows(long id) { return rn_has_neuron(id) ? NEURONS[id].saved : -1; }

/* Point a Row at row n of replica m (save rows of width W; one extra save for LayerNorm's 1/std). */
static inline void seat(Row *r, long m, long n, long N, long W, long nz, const float *const *z, long nv,
                        const float *const *vec, long ns, float *const *save) {
    const long row = (m * N + n) * W;
    for (long k = 0; k < nz; k++) r->z[k] = z[k] + row;
    for (long k = 0; k < nv; k++) r->vec[k] = vec[k] + m * W;
    for (long k = 0; k < ns; k++) r->save[k] = save[k] + row;
}

/* h = activation(z) for every row; fills the saved rows. Returns 0, or -1 for a bad neuron, width or
 * number of rows. */
long rn_forward(long threads, long id, long M, long N, long W, float omega, long nz, const float *const *z,
                long nv, const float *const *vec, long ns, float *const *save, float *h) {
    if (!rn_has_neuron(id) || W > MAXW || nz > MAXZ || nv > MAXV || ns != NEURONS[id].saved) return -1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < M * N; i++) {
        Row r = {.W = W, .omega = omega};
        seat(&r, i / N, i % N, N, W, nz, z, nv, vec, ns, save);
        NEURONS[id].forward(&r, h + i * W);
    }
    return 0;
}

/* The N points of each of M replicas as blocks of BLOCK: block t is replica t / blocks(N), points
 * [first, end). */
static inline long blocks(long N) { return (N + BLOCK - 1) / BLOCK; }
static inline long block_first(long t, long N) { return (t % blocks(N)) * BLOCK; }
static inline long block_end(long t, long N) {
    const long end = block_first(t, N) + BLOCK;
    return end < N ? end : N;
}

/* out[m * size + i] = the sum over replica m's blocks, in order, of part[(m * blocks + b) * size + i]. */
static void sum_blocks(long M, long N, long size, const double *part, double *out) {
    const long B = blocks(N);
    for (long m = 0; m < M; m++)
        for (long i = 0; i < size; i++) {
            double s = 0.0;
            for (long b = 0; b < B; b++) s += part[(m * B + b) * size + i];
            out[m * size + i] = s;
        }
}

/* From dh (M, N, W): dz[k] for every row, and per replica the bias gradients gbias[k] (NULL: no bias)
 * and the vector gradients gvec[k], summed over the N points. */
long rn_backward(long threads, long id, long M, long N, long W, float omega, long nz, const float *const *z,
                 long nv, const float *const *vec, long ns, float *const *save, const float *dh,
                 float *const *dz, float *const *gbias, float *const *gvec) {
    if (!rn_has_neuron(id) || W > MAXW || nz > MAXZ || nv > MAXV || ns != NEURONS[id].saved) return -1;
    const long size = (nz + nv) * W, B = blocks(N);
    double *part = calloc((size_t)(M * B + M) * size, sizeof(double));
    if (part == NULL) return -1;
    double *acc = part + M * B * size;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long t = 0; t < M * B; t++) {
        const long m = t / B;
        double *sums = part + t * size;
        Row r = {.W = W, .omega = omega};
        Grad g;
        for (long k = 0; k < nv; k++) g.gvec[k] = sums + (nz + k) * W;
        for (long n = block_first(t, N); n < block_end(t, N); n++) {
            const long row = (m * N + n) * W;
            seat(&r, m, n, N, W, nz, z, nv, vec, ns, save);
            for (long k = 0; k < nz; k++) g.dz[k] = dz[k] + row;
            NEURONS[id].backward(&r, dh + row, &g);
            for (long k = 0; k < nz; k++) {
                double *restrict b = sums + k * W;
                const float *restrict d = g.dz[k];
                for (long j = 0; j < W; j++) b[j] += d[j];
            }
        }
    }
    sum_blocks(M, N, size, part, acc);
    for (long m = 0; m < M; m++) {
        const double *a = acc + m * size;
        for (long k = 0; k < nz; k++)
            if (gbias[k] != NULL)
                for (long j = 0; j < W; j++) gbias[k][m * W + j] = (float)a[k * W + j];
        for (long k = 0; k < nv; k++)
            for (long j = 0; j < W; j++) gvec[k][m * W + j] = (float)a[(nz + k) * W + j];
    }
    free(part);
    return 0;
}

/* ---------------------------------------------------------------- the thin first layer and the head */

/* z = x @ w (+ b): a layer with few inputs (K), as multiply-adds over rows instead of a badly shaped GEMM. */
void rn_thin_forward(long threads, long M, long N, long K, long W, const float *x, const float *w,
                     const float *b, float *z) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < M * N; i++) {
        const long m = i / N;
        const float *wm = w + m * K * W, *bm = b ? b + m * W : NULL;
        float *restrict out = z + i * W;
        const float *xr = x + i * K;
        for (long j = 0; j < W; j++) out[j] = bm ? bm[j] : 0.0f;
        for (long k = 0; k < K; k++) {
            const float xk = xr[k];
            const float *restrict wk = wm + k * W;
            for (long j = 0; j < W; j++) out[j] += xk * wk[j];
        }
    }
}

/* gw = x^T dz per replica (K x W), summed over the N points in double. */
long rn_thin_weight_grad(long threads, long M, long N, long K, long W, const float *x, const float *dz,
                         float *gw) {
    const long size = K * W, B = blocks(N);
    double *part = calloc((size_t)(M * B + M) * size, sizeof(double));
    if (part == NULL) return -1;
    double *acc = part + M * B * size;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long t = 0; t < M * B; t++) {
        const long m = t / B;
        for (long n = block_first(t, N); n < block_end(t, N); n++) {
            const float *xr = x + (m * N + n) * K;
            const float *restrict d = dz + (m * N + n) * W;
            for (long k = 0; k < K; k++) {
                const double xk = xr[k];
                double *restrict a = part + t * size + k * W;
                for (long j = 0; j < W; j++) a[j] += xk * d[j];
            }
        }
    }
    sum_blocks(M, N, size, part, acc);
    for (long i = 0; i < M * size; i++) gw[i] = (float)acc[i];
    free(part);
    return 0;
}

/* The one-output head and the MSE loss with their backward, in one pass over the rows:
 * out = h @ wh + bh, d = out - y, loss = mean d^2, e = 2 d / N; gwh = h^T e, gbh = sum e, dh = e wh^T.
 * Each block's partial sums are W for gwh, then sum d^2, then sum e. */
long rn_head_mse(long threads, long M, long N, long W, const float *h, const float *wh, const float *bh,
                 const float *y, float *loss, float *dh, float *gwh, float *gbh) {
    const long size = W + 2, B = blocks(N);
    double *part = calloc((size_t)(M * B + M) * size, sizeof(double));
    if (part == NULL) return -1;
    double *acc = part + M * B * size;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long t = 0; t < M * B; t++) {
        const long m = t / B;
        const float *restrict w = wh + m * W;
        double *restrict sums = part + t * size;
        double sum_sq = 0.0, sum_e = 0.0;
        for (long n = block_first(t, N); n < block_end(t, N); n++) {
            const float *restrict a = h + (m * N + n) * W;
            float lane[8] = {0};
            long j = 0;
            for (; j + 8 <= W; j += 8)
                for (int l = 0; l < 8; l++) lane[l] += a[j + l] * w[j + l];
            for (int l = 0; j + l < W; l++) lane[l] += a[j + l] * w[j + l];
            const float out =
                (((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))) +
                bh[m];
            const float d = out - y[m * N + n];
            const float e = 2.0f * d / (float)N;
            sum_sq += (double)d * d;
            sum_e += e;
            float *restrict g = dh + (m * N + n) * W;
            for (long k = 0; k < W; k++) {
                sums[k] += (double)e * a[k];
                g[k] = e * w[k];
            }
        }
        sums[W] = sum_sq;
        sums[W + 1] = sum_e;
    }
    sum_blocks(M, N, size, part, acc);
    for (long m = 0; m < M; m++) {
        const double *a = acc + m * size;
        loss[m] = (float)(a[W] / (double)N);
        gbh[m] = (float)a[W + 1];
        for (long k = 0; k < W; k++) gwh[m * W + k] = (float)a[k];
    }
    free(part);
    return 0;
}
