/* The non-matmul work of a batched vanilla step (2 hidden ReLU layers, one output, MSE) as three fused passes.
 *
 * Measurement prototype for benchmarks/fused_vanilla_step.py; rnlib does not use it. Tensors are float32,
 * contiguous, with a leading replica axis m < M: x (M, N, K), hidden activations (M, N, W), weights as rnlib
 * holds them ([M, in, out]). Single-threaded; built with -ffp-contract=off so the arithmetic is the source's.
 */
#include <string.h>

/* a1 = relu(x @ W1 + b1): the thin first layer (K inputs) and its activation in one pass. */
void layer1_forward(long M, long N, long K, long W, const float *x, const float *W1, const float *b1,
                    float *restrict a1) {
    for (long m = 0; m < M; m++) {
        const float *w = W1 + m * K * W, *b = b1 + m * W;
        for (long n = 0; n < N; n++) {
            const float *xr = x + (m * N + n) * K;
            float *restrict out = a1 + (m * N + n) * W;
            for (long j = 0; j < W; j++) out[j] = b[j];
            for (long k = 0; k < K; k++) {
                const float xk = xr[k];
                const float *restrict wk = w + k * W;
                for (long j = 0; j < W; j++) out[j] += xk * wk[j];
            }
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
            float lane[8] = {0};  /* eight partial sums in a fixed order: vectorised, deterministic */
            long j = 0;
            for (; j + 8 <= W; j += 8)
                for (int t = 0; t < 8; t++) lane[t] += a[j + t] * w[j + t];
            for (int t = 0; j + t < W; t++) lane[t] += a[j + t] * w[j + t];
            const float out = ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                              ((lane[4] + lane[5]) + (lane[6] + lane[7])) + bh[m];
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
            const float *xr = x + (m * N + n) * K;
            for (long j = 0; j < W; j++) {
                g1[j] = a[j] > 0.0f ? g[j] : 0.0f;
                gb[j] += g1[j];
            }
            for (long k = 0; k < K; k++) {
                const float xk = xr[k];
                float *restrict gk = gw + k * W;
                for (long j = 0; j < W; j++) gk[j] += xk * g1[j];
            }
        }
    }
}
