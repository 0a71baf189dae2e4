/* The element-wise work of teacher-forced input feeding (s2s/nn/feedloop.py), forward
   and backward, for a one-layer LSTM decoder with additive attention: per position,
   the LSTM cell, the attention's scores, softmax and context, and h~'s tanh, each in one
   pass; the matrix products between them stay PyTorch's.

   Tensors that a matrix product reads or writes ("mm" below: the gates, the query, the
   context, h, h~ and their gradients) are bf16 when `bf` is set, else float32; the
   cell state, the saved activations, the attention's keys and their gradients are
   float32. Rows are shared among `threads` OpenMP threads (torch's pool: the library is
   loaded after torch). Each function returns 0, or 1 for arguments out of range. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "native_math.h"

static inline float ld(const void *p, int64_t i, int bf) {
    return bf ? bf16_value(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline void st(void *p, int64_t i, float v, int bf) {
    if (bf)
        ((uint16_t *)p)[i] = to_bf16(v);
    else
        ((float *)p)[i] = v;
}

/* tanh and the logistic function from one exp of a non-positive argument; tanh's
   series near 0, where 1 - e loses digits */
static inline float tanh_f(float x) {
    float a = x < 0.0f ? -x : x;
    float e = exp_nonpositive(-2.0f * a);
    float t = (1.0f - e) / (1.0f + e);
    t = a < 4e-3f ? a * (1.0f - a * a * (1.0f / 3.0f)) : t;
    return x < 0.0f ? -t : t;
}

static inline float sigmoid_f(float x) {
    float e = exp_nonpositive(x < 0.0f ? x : -x);
    float r = 1.0f / (1.0f + e);
    return x < 0.0f ? e * r : r;
}

/* out[j] = a[row * sa + j] + b[row * sb + j] for j < n (mm; b may be NULL) */
static inline __attribute__((always_inline)) void row_sum(float *out, const void *a,
                                                          int64_t sa, const void *b,
                                                          int64_t sb, int64_t row, int64_t n,
                                                          const int bf) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) out[j] = ld(a, row * sa + j, bf);
    if (b != NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) out[j] += ld(b, row * sb + j, bf);
    }
}

#define ROWS(n)                                                   \
    int64_t _t = omp_get_thread_num(), _n = omp_get_num_threads(); \
    int64_t begin = (n) * _t / _n, end = (n) * (_t + 1) / _n;

static int clamp_threads(int threads, int64_t rows) {
    if (threads > rows) threads = rows > 0 ? (int)rows : 1;
    return threads < 1 ? 1 : threads;
}

/* The LSTM cell: gates (B x 4H, mm, rows gs apart; PyTorch's order i, f, g, o, biases
   and products summed) and c_prev (B x H) -> c (B x H), the activated gates (B x 4H, for
   the backward pass) and h = o tanh(c), written (mm) to h_a and h_b (rows as, bs apart). */
static inline __attribute__((always_inline)) void lstm_fwd_rows(
    int64_t begin, int64_t end, int64_t H, const int bf, const void *gates, int64_t gs,
    const float *c_prev, float *c, float *act, void *h_a, int64_t as, void *h_b, int64_t bs) {
    for (int64_t b = begin; b < end; b++) {
        const int64_t g0 = b * gs;
        float *a = act + b * 4 * H, *cb = c + b * H;
        const float *pb = c_prev + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            float i = sigmoid_f(ld(gates, g0 + j, bf));
            float f = sigmoid_f(ld(gates, g0 + H + j, bf));
            float g = tanh_f(ld(gates, g0 + 2 * H + j, bf));
            float o = sigmoid_f(ld(gates, g0 + 3 * H + j, bf));
            float cc = f * pb[j] + i * g;
            float h = o * tanh_f(cc);
            a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
            cb[j] = cc;
            st(h_a, b * as + j, h, bf);
            st(h_b, b * bs + j, h, bf);
        }
    }
}

int s2s_feed_lstm_fwd(int64_t B, int64_t H, int bf, const void *gates, int64_t gs,
                      const float *c_prev, float *c, float *act, void *h_a, int64_t as,
                      void *h_b, int64_t bs, int threads) {
    if (B < 0 || H < 1 || gs < 4 * H) return 1;
#pragma omp parallel num_threads(clamp_threads(threads, B))
    {
        ROWS(B)
        if (bf)
            lstm_fwd_rows(begin, end, H, 1, gates, gs, c_prev, c, act, h_a, as, h_b, bs);
        else
            lstm_fwd_rows(begin, end, H, 0, gates, gs, c_prev, c, act, h_a, as, h_b, bs);
    }
    return 0;
}

/* Its backward: dh = dh1 + dh2 (mm, rows s1 and s2 apart; dh2 may be NULL), dc (B x H,
   from the next position) -> the gates' gradient (mm, rows gs apart) and dc for the
   position before, written over dc. */
static inline __attribute__((always_inline)) void lstm_bwd_rows(
    int64_t begin, int64_t end, int64_t H, const int bf, const void *dh1, int64_t s1,
    const void *dh2, int64_t s2, const float *act, const float *c, const float *c_prev,
    float *dc, void *dgates, int64_t gs, float *dh) {
    for (int64_t b = begin; b < end; b++) {
        const float *a = act + b * 4 * H, *cb = c + b * H, *pb = c_prev + b * H;
        float *dcb = dc + b * H;
        const int64_t g0 = b * gs;
        row_sum(dh, dh1, s1, dh2, s2, b, H, bf);
#pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            float i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
            float tc = tanh_f(cb[j]);
            float dcc = dcb[j] + dh[j] * o * (1.0f - tc * tc);
            st(dgates, g0 + j, dcc * g * i * (1.0f - i), bf);
            st(dgates, g0 + H + j, dcc * pb[j] * f * (1.0f - f), bf);
            st(dgates, g0 + 2 * H + j, dcc * i * (1.0f - g * g), bf);
            st(dgates, g0 + 3 * H + j, dh[j] * tc * o * (1.0f - o), bf);
            dcb[j] = dcc * f;
        }
    }
}

int s2s_feed_lstm_bwd(int64_t B, int64_t H, int bf, const void *dh1, int64_t s1,
                      const void *dh2, int64_t s2, const float *act, const float *c,
                      const float *c_prev, float *dc, void *dgates, int64_t gs, int threads) {
    if (B < 0 || H < 1 || gs < 4 * H) return 1;
    int failed = 0;
#pragma omp parallel num_threads(clamp_threads(threads, B)) reduction(| : failed)
    {
        ROWS(B)
        float *dh = malloc(sizeof(float) * (size_t)H);
        if (dh == NULL)
            failed = 1;
        else if (bf)
            lstm_bwd_rows(begin, end, H, 1, dh1, s1, dh2, s2, act, c, c_prev, dc, dgates, gs, dh);
        else
            lstm_bwd_rows(begin, end, H, 0, dh1, s1, dh2, s2, act, c, c_prev, dc, dgates, gs, dh);
        free(dh);
    }
    return failed;
}

/* Additive attention for one position: scores[s] = v . tanh(q + P[s]) + neg[s] (neg: 0,
   or -inf at padding), w = softmax(scores) (saved, B x S) and the context sum_s w[s] K[s]
   (mm, rows cs apart). q: B x A (mm, rows qs apart); P: B x S x A; K: B x S x D. */
int s2s_feed_attn_fwd(int64_t B, int64_t S, int64_t A, int64_t D, int bf, const void *q,
                      int64_t qs, const float *P, const float *v, const float *neg,
                      const float *K, float *w, void *ctx, int64_t cs, int threads) {
    if (B < 0 || S < 1 || A < 1 || D < 1) return 1;
    int failed = 0;
#pragma omp parallel num_threads(clamp_threads(threads, B)) reduction(| : failed)
    {
        ROWS(B)
        float *buf = malloc(sizeof(float) * (size_t)(A + D));
        if (buf == NULL) {
            failed = 1;
            begin = end;
        }
        for (int64_t b = begin; b < end; b++) {
            float *qb = buf, *cb = buf + A, *wb = w + b * S;
            for (int64_t k = 0; k < A; k++) qb[k] = ld(q, b * qs + k, bf);
            float m = -INFINITY;
            for (int64_t s = 0; s < S; s++) {
                const float *p = P + (b * S + s) * A;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t k = 0; k < A; k++) acc += v[k] * tanh_f(qb[k] + p[k]);
                acc += neg[b * S + s];
                wb[s] = acc;
                m = acc > m ? acc : m;
            }
            float sum = 0.0f;
            for (int64_t s = 0; s < S; s++) {
                float x = wb[s] - m;
                float e = x < -87.0f ? 0.0f : exp_nonpositive(x);
                wb[s] = e;
                sum += e;
            }
            float inv = 1.0f / sum;
            for (int64_t d = 0; d < D; d++) cb[d] = 0.0f;
            for (int64_t s = 0; s < S; s++) {
                float ws = wb[s] * inv;
                wb[s] = ws;
                const float *k = K + (b * S + s) * D;
#pragma omp simd
                for (int64_t d = 0; d < D; d++) cb[d] += ws * k[d];
            }
            for (int64_t d = 0; d < D; d++) st(ctx, b * cs + d, cb[d], bf);
        }
        free(buf);
    }
    return failed;
}

/* Its backward, given dctx (mm, rows dcs apart): adds into dP (B x S x A), dK (B x S x D)
   and dv (A), and writes dq (mm, rows dqs apart). */
int s2s_feed_attn_bwd(int64_t B, int64_t S, int64_t A, int64_t D, int bf, const void *dctx,
                      int64_t dcs, const float *w, const void *q, int64_t qs, const float *P,
                      const float *v, const float *K, float *dP, float *dK, float *dv,
                      void *dq, int64_t dqs, int threads) {
    if (B < 0 || S < 1 || A < 1 || D < 1) return 1;
    int failed = 0;
#pragma omp parallel num_threads(clamp_threads(threads, B)) reduction(| : failed)
    {
        ROWS(B)
        float *buf = malloc(sizeof(float) * (size_t)(3 * A + D + S));
        if (buf == NULL) {
            failed = 1;
            begin = end;
        }
        float *qb = buf, *dqb = buf + A, *dvb = buf + 2 * A, *db = buf + 3 * A;
        float *ds = buf + 3 * A + D;
        if (buf != NULL)
            for (int64_t k = 0; k < A; k++) dvb[k] = 0.0f;
        for (int64_t b = begin; b < end; b++) {
            const float *wb = w + b * S;
            for (int64_t d = 0; d < D; d++) db[d] = ld(dctx, b * dcs + d, bf);
            for (int64_t k = 0; k < A; k++) qb[k] = ld(q, b * qs + k, bf), dqb[k] = 0.0f;
            float dot = 0.0f;
            for (int64_t s = 0; s < S; s++) { /* dw[s] = dctx . K[s]; dK[s] += w[s] dctx */
                const float *k = K + (b * S + s) * D;
                float *dk = dK + (b * S + s) * D, ws = wb[s], acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t d = 0; d < D; d++) {
                    acc += db[d] * k[d];
                    dk[d] += ws * db[d];
                }
                ds[s] = acc;
                dot += ws * acc;
            }
            for (int64_t s = 0; s < S; s++) { /* through softmax, then tanh */
                float g = wb[s] * (ds[s] - dot);
                if (g == 0.0f) continue; /* padding (w = 0) */
                const float *p = P + (b * S + s) * A;
                float *dp = dP + (b * S + s) * A;
#pragma omp simd
                for (int64_t k = 0; k < A; k++) {
                    float t = tanh_f(qb[k] + p[k]);
                    float dt = g * v[k] * (1.0f - t * t);
                    dqb[k] += dt;
                    dp[k] += dt;
                    dvb[k] += g * t;
                }
            }
            for (int64_t k = 0; k < A; k++) st(dq, b * dqs + k, dqb[k], bf);
        }
        if (buf != NULL) {
#pragma omp critical
            for (int64_t k = 0; k < A; k++) dv[k] += dvb[k];
        }
        free(buf);
    }
    return failed;
}

/* h~ for one position: x (mm, B x N, contiguous) becomes tanh(x) in place where `tanh`
   is set, and is copied (mm) to feed (rows fs apart). */
static inline __attribute__((always_inline)) void out_fwd_rows(
    int64_t begin, int64_t end, int64_t N, const int bf, void *x, void *feed, int64_t fs,
    int tanh) {
    for (int64_t b = begin; b < end; b++) {
#pragma omp simd
        for (int64_t j = 0; j < N; j++) {
            float y = ld(x, b * N + j, bf);
            y = tanh ? tanh_f(y) : y;
            st(x, b * N + j, y, bf);
            st(feed, b * fs + j, y, bf);
        }
    }
}

int s2s_feed_out_fwd(int64_t B, int64_t N, int bf, void *x, void *feed, int64_t fs, int tanh,
                     int threads) {
    if (B < 0 || N < 1) return 1;
#pragma omp parallel num_threads(clamp_threads(threads, B))
    {
        ROWS(B)
        if (bf)
            out_fwd_rows(begin, end, N, 1, x, feed, fs, tanh);
        else
            out_fwd_rows(begin, end, N, 0, x, feed, fs, tanh);
    }
    return 0;
}

/* Its backward: d = (dy + dfeed) (1 - y^2) (without the factor where `tanh` is unset),
   dy: rows ys apart, dfeed: rows fs apart or NULL, y and d contiguous (all mm). */
static inline __attribute__((always_inline)) void out_bwd_rows(
    int64_t begin, int64_t end, int64_t N, const int bf, const void *dy, int64_t ys,
    const void *dfeed, int64_t fs, const void *y, void *d, int tanh, float *g) {
    for (int64_t b = begin; b < end; b++) {
        row_sum(g, dy, ys, dfeed, fs, b, N, bf);
#pragma omp simd
        for (int64_t j = 0; j < N; j++) {
            float t = ld(y, b * N + j, bf);
            st(d, b * N + j, tanh ? g[j] * (1.0f - t * t) : g[j], bf);
        }
    }
}

int s2s_feed_out_bwd(int64_t B, int64_t N, int bf, const void *dy, int64_t ys,
                     const void *dfeed, int64_t fs, const void *y, void *d, int tanh,
                     int threads) {
    if (B < 0 || N < 1) return 1;
    int failed = 0;
#pragma omp parallel num_threads(clamp_threads(threads, B)) reduction(| : failed)
    {
        ROWS(B)
        float *g = malloc(sizeof(float) * (size_t)N);
        if (g == NULL)
            failed = 1;
        else if (bf)
            out_bwd_rows(begin, end, N, 1, dy, ys, dfeed, fs, y, d, tanh, g);
        else
            out_bwd_rows(begin, end, N, 0, dy, ys, dfeed, fs, y, d, tanh, g);
        free(g);
    }
    return failed;
}
