/* The non-matmul work of a batched training step (2 hidden layers, one output, MSE) as fused passes.
 *
 * Measurement prototype for benchmarks/fused_step.py; rnlib does not use it. Tensors are float32,
 * contiguous, with a leading replica axis m < M: x (M, N, K), hidden activations (M, N, W), weights as rnlib
 * holds them ([M, in, out]). Single-threaded; built with -ffp-contract=off so the arithmetic is the source's.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* a . w over W elements as eight partial sums added in a fixed order: vectorised, and deterministic. */
static inline float row_dot(const float *restrict a, const float *restrict w, long W) {
    float lane[8] = {0};
    long j = 0;
    for (; j + 8 <= W; j += 8)
        for (int t = 0; t < 8; t++) lane[t] += a[j + t] * w[j + t];
    for (int t = 0; j + t < W; t++) lane[t] += a[j + t] * w[j + t];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* out = b + sum_k xr[k] * w[k, :]: one row of the thin first layer's pre-activation (K inputs, W units). */
static inline void thin_row(const float *xr, const float *restrict w, const float *restrict b, long K, long W,
                            float *restrict out) {
    for (long j = 0; j < W; j++) out[j] = b[j];
    for (long k = 0; k < K; k++) {
        const float xk = xr[k];
        const float *restrict wk = w + k * W;
        for (long j = 0; j < W; j++) out[j] += xk * wk[j];
    }
}

/* gw += xr^T d and gb += d: one row's share of the thin first layer's weight (K x W) and bias gradients. */
static inline void thin_grad_row(const float *xr, const float *restrict d, long K, long W, float *restrict gw,
                                 float *restrict gb) {
    for (long j = 0; j < W; j++) gb[j] += d[j];
    for (long k = 0; k < K; k++) {
        const float xk = xr[k];
        float *restrict gk = gw + k * W;
        for (long j = 0; j < W; j++) gk[j] += xk * d[j];
    }
}

/* ---- vanilla, ReLU(W x + b) ---- */

/* a1 = relu(x @ W1 + b1): the thin first layer (K inputs) and its activation in one pass. */
void layer1_forward(long M, long N, long K, long W, const float *x, const float *W1, const float *b1,
                    float *restrict a1) {
    for (long m = 0; m < M; m++) {
        const float *w = W1 + m * K * W, *b = b1 + m * W;
        for (long n = 0; n < N; n++) {
            float *restrict out = a1 + (m * N + n) * W;
            thin_row(x + (m * N + n) * K, w, b, K, W, out);
            for (long j = 0; j < W; j++) out[j] = out[j] > 0.0f ? out[j] : 0.0f;
        }
    }
}

/* The one-output head, the MSE loss and their backward into the second layer's ReLU, in one pass:
 * out = a2 @ wh + bh, d = out - y, loss = mean d^2, g = 2d / N; gwh = a2^T g, gbh = sum g,
 * ga2 = (a2 > 0) * g wh^T (the gradient at the second layer's pre-activation) and gb2 = sum ga2. */
void head_mse(long M, long N, long W, const float *restrict a2, const float *restrict wh, const float *bh,
              const float *y, float *loss, float *restrict ga2, float *restrict gwh, float *gbh,
              float *restrict gb2) {
    for (long m = 0; m < M; m++) {
        const float *restrict w = wh + m * W;
        float *restrict gw = gwh + m * W, *restrict gb = gb2 + m * W;
        memset(gw, 0, sizeof(float) * W);
        memset(gb, 0, sizeof(float) * W);
        float sum_sq = 0.0f, sum_g = 0.0f;
        for (long n = 0; n < N; n++) {
            const float *restrict a = a2 + (m * N + n) * W;
            const float out = row_dot(a, w, W) + bh[m];
            const float d = out - y[m * N + n];
            const float g = 2.0f * d / (float)N;
            sum_sq += d * d;
            sum_g += g;
            float *restrict ga = ga2 + (m * N + n) * W;
            for (long k = 0; k < W; k++) {
                gw[k] += g * a[k];
                const float v = a[k] > 0.0f ? g * w[k] : 0.0f;
                ga[k] = v;
                gb[k] += v;
            }
        }
        loss[m] = sum_sq / (float)N;
        gbh[m] = sum_g;
    }
}

/* The first layer's backward: g1 = (a1 > 0) * ga1, gW1 = x^T g1, gb1 = sum g1, in one pass. */
void layer1_backward(long M, long N, long K, long W, const float *x, const float *a1, const float *ga1,
                     float *gW1, float *gb1) {
    float g1[4096];
    if (W > 4096) return;
    for (long m = 0; m < M; m++) {
        float *restrict gw = gW1 + m * K * W, *restrict gb = gb1 + m * W;
        memset(gw, 0, sizeof(float) * K * W);
        memset(gb, 0, sizeof(float) * W);
        for (long n = 0; n < N; n++) {
            const float *restrict a = a1 + (m * N + n) * W, *restrict g = ga1 + (m * N + n) * W;
            for (long j = 0; j < W; j++) g1[j] = a[j] > 0.0f ? g[j] : 0.0f;
            thin_grad_row(x + (m * N + n) * K, g1, K, W, gw, gb);
        }
    }
}

/* ---- SinGLU, sin(g) * v (omega = 1): sin and cos from glibc's AVX2 vector math (libmvec) ---- */

__m256 _ZGVdN8v_sinf(__m256 x);
__m256 _ZGVdN8v_cosf(__m256 x);

/* s = sin g, c = cos g, h = s * v over n elements. */
void singlu_activation(long n, const float *g, const float *v, float *s, float *c, float *h) {
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i), si = _ZGVdN8v_sinf(gi);
        _mm256_storeu_ps(s + i, si);
        _mm256_storeu_ps(c + i, _ZGVdN8v_cosf(gi));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(si, _mm256_loadu_ps(v + i)));
    }
    for (; i < n; i++) {
        s[i] = sinf(g[i]);
        c[i] = cosf(g[i]);
        h[i] = s[i] * v[i];
    }
}

/* The thin first layer: g = x @ Wg + bg, v = x @ Wv + bv (K inputs), then the activation, row by row. */
void singlu_layer1_forward(long M, long N, long K, long W, const float *x, const float *Wg, const float *bg,
                           const float *Wv, const float *bv, float *g, float *v, float *s, float *c, float *h) {
    for (long m = 0; m < M; m++) {
        for (long n = 0; n < N; n++) {
            const long row = (m * N + n) * W;
            const float *xr = x + (m * N + n) * K;
            thin_row(xr, Wg + m * K * W, bg + m * W, K, W, g + row);
            thin_row(xr, Wv + m * K * W, bv + m * W, K, W, v + row);
        }
    }
    singlu_activation(M * N * W, g, v, s, c, h);
}

/* Head, MSE and their backward through the second SinGLU layer, in one pass:
 * out = h2 @ wh + bh, g = 2 (out - y) / N; gwh = h2^T g, gbh = sum g; with gh = g wh^T:
 * dg = gh * v * cos, dv = gh * sin (gradients at the pre-activations), gbg = sum dg, gbv = sum dv. */
void singlu_head_mse(long M, long N, long W, const float *restrict h2, const float *restrict wh,
                     const float *bh, const float *y, const float *restrict s2, const float *restrict c2,
                     const float *restrict v2, float *loss, float *restrict dg, float *restrict dv,
                     float *restrict gwh, float *gbh, float *restrict gbg, float *restrict gbv) {
    for (long m = 0; m < M; m++) {
        const float *restrict w = wh + m * W;
        float *restrict gw = gwh + m * W, *restrict sg = gbg + m * W, *restrict sv = gbv + m * W;
        memset(gw, 0, sizeof(float) * W);
        memset(sg, 0, sizeof(float) * W);
        memset(sv, 0, sizeof(float) * W);
        float sum_sq = 0.0f, sum_g = 0.0f;
        for (long n = 0; n < N; n++) {
            const long row = (m * N + n) * W;
            const float *restrict a = h2 + row;
            const float out = row_dot(a, w, W) + bh[m];
            const float d = out - y[m * N + n];
            const float g = 2.0f * d / (float)N;
            sum_sq += d * d;
            sum_g += g;
            for (long k = 0; k < W; k++) {
                gw[k] += g * a[k];
                const float gh = g * w[k];
                const float dgk = gh * v2[row + k] * c2[row + k], dvk = gh * s2[row + k];
                dg[row + k] = dgk;
                dv[row + k] = dvk;
                sg[k] += dgk;
                sv[k] += dvk;
            }
        }
        loss[m] = sum_sq / (float)N;
        gbh[m] = sum_g;
    }
}

/* The first layer's backward from gh1 (gradient at its output): dg = gh1 * v * cos, dv = gh1 * sin;
 * gWg = x^T dg, gWv = x^T dv, gbg = sum dg, gbv = sum dv, in one pass. */
void singlu_layer1_backward(long M, long N, long K, long W, const float *x, const float *s1, const float *c1,
                            const float *v1, const float *gh1, float *gWg, float *gbg, float *gWv,
                            float *gbv) {
    float dg[4096], dv[4096];
    if (W > 4096) return;
    for (long m = 0; m < M; m++) {
        float *restrict wg = gWg + m * K * W, *restrict wv = gWv + m * K * W;
        float *restrict bg = gbg + m * W, *restrict bv = gbv + m * W;
        memset(wg, 0, sizeof(float) * K * W);
        memset(wv, 0, sizeof(float) * K * W);
        memset(bg, 0, sizeof(float) * W);
        memset(bv, 0, sizeof(float) * W);
        for (long n = 0; n < N; n++) {
            const long row = (m * N + n) * W;
            const float *xr = x + (m * N + n) * K;
            for (long j = 0; j < W; j++) {
                dg[j] = gh1[row + j] * v1[row + j] * c1[row + j];
                dv[j] = gh1[row + j] * s1[row + j];
            }
            thin_grad_row(xr, dg, K, W, wg, bg);
            thin_grad_row(xr, dv, K, W, wv, bv);
        }
    }
}
