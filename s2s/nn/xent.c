/* The token loss of a chunk of logits and its gradient, in one kernel: for each row,
   the cross-entropy with label smoothing and softmax(z) - (1 - eps) onehot - eps / V,
   read from bf16 or float32 logits and written in their dtype.

   The compiled PyTorch form (s2s.nn.fused._loss_and_grad) walks each row three times and
   takes two exponentials per logit; here a row is read once into a float32 buffer that
   stays in cache, its exponentials are taken once, kept, and scaled into the gradient.
   Built and loaded by s2s.runtime.native after torch (its OpenMP is torch's thread
   pool); s2s.nn.fused checks it against the PyTorch form once per process and keeps
   that form wherever this one is not built. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "native_math.h"

typedef struct {
    const void *z, *bias; /* bias: NULL, or one value per column in z's dtype */
    void *grad;
    const int64_t *target;
    int bf16;
    int64_t cols, stride;
    float eps;
    float *loss;
} job_t;

static float logit(const job_t *job, int64_t row, int64_t col) {
    if (!job->bf16) {
        float b = job->bias ? ((const float *)job->bias)[col] : 0.0f;
        return ((const float *)job->z)[row * job->stride + col] + b;
    }
    float b = job->bias ? bf16_value(((const uint16_t *)job->bias)[col]) : 0.0f;
    return bf16_value(((const uint16_t *)job->z)[row * job->stride + col]) + b;
}

/* Row `row` of z (plus the bias) into `buf` as float32; its maximum and sum into *max
   and *sum. */
static void load_row(const job_t *job, int64_t row, float *buf, float *max, float *sum) {
    int64_t cols = job->cols;
    float m = -INFINITY, total = 0.0f;
    if (job->bf16) {
        const uint16_t *in = (const uint16_t *)job->z + row * job->stride;
        const uint16_t *bias = (const uint16_t *)job->bias;
#pragma omp simd reduction(max : m) reduction(+ : total)
        for (int64_t j = 0; j < cols; j++) {
            float v = bf16_value(in[j]) + (bias ? bf16_value(bias[j]) : 0.0f);
            buf[j] = v;
            m = v > m ? v : m;
            total += v;
        }
    } else {
        const float *in = (const float *)job->z + row * job->stride;
        const float *bias = (const float *)job->bias;
#pragma omp simd reduction(max : m) reduction(+ : total)
        for (int64_t j = 0; j < cols; j++) {
            float v = in[j] + (bias ? bias[j] : 0.0f);
            buf[j] = v;
            m = v > m ? v : m;
            total += v;
        }
    }
    *max = m;
    *sum = total;
}

static void rows_loss(const job_t *job, int64_t begin, int64_t end, float *buf, float *cs) {
    int64_t cols = job->cols;
    float eps = job->eps, off = eps / (float)cols;
    for (int64_t row = begin; row < end; row++) {
        int64_t gold = job->target[row];
        uint16_t *g16 = (uint16_t *)job->grad + row * cols;
        float *g32 = (float *)job->grad + row * cols;
        if (gold < 0 || gold >= cols) { /* an ignored row: no loss, no gradient */
            job->loss[row] = 0.0f;
            if (job->bf16) {
                for (int64_t j = 0; j < cols; j++) g16[j] = 0;
            } else {
                for (int64_t j = 0; j < cols; j++) g32[j] = 0.0f;
            }
            continue;
        }
        float m, total;
        load_row(job, row, buf, &m, &total);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < cols; j++) {
            float e = exp_nonpositive(buf[j] - m);
            buf[j] = e;
            sum += e;
        }
        float lse = m + logf(sum), inv = 1.0f / sum;
        float z_gold = logit(job, row, gold);
        float nll = lse - z_gold, smooth = lse - total / (float)cols;
        job->loss[row] = (1.0f - eps) * nll + (eps > 0.0f ? eps * smooth : 0.0f);
        buf[gold] -= (1.0f - eps) * sum; /* scaled by inv below: -(1 - eps) */
        if (job->bf16) {
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) g16[j] = to_bf16(buf[j] * inv - off);
        } else {
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) g32[j] = buf[j] * inv - off;
        }
        if (cs != NULL) { /* the column sums: the bias's gradient */
#pragma omp simd
            for (int64_t j = 0; j < cols; j++) cs[j] += buf[j] * inv - off;
        }
    }
}

/* `rows` rows of logits `z` (`cols` columns, rows `stride` elements apart; bf16 if
   `bf16` else float32), plus `bias` (NULL, or `cols` values in z's dtype), and their
   targets (a row whose target is outside [0, cols) is
   ignored): each row's loss, (1 - eps) (lse - z[target]) + eps (lse - mean z), into
   `loss` (rows, float32), and the gradient of the summed loss into `grad` (rows x cols,
   contiguous, the logits' dtype); where `colsum` is not NULL, the gradient's column sums
   (before rounding to the logits' dtype) are added into it (cols, float32). Rows are
   shared among `threads` OpenMP threads. Returns 0, or 1 for arguments out of range. */
int s2s_xent_grad(const void *z, const void *bias, int bf16, int64_t rows, int64_t cols,
                  int64_t stride, const int64_t *target, float eps, float *loss, void *grad,
                  float *colsum, int threads) {
    if (rows < 0 || cols < 1 || stride < cols) return 1;
    job_t job = {z, bias, grad, target, bf16, cols, stride, eps, loss};
    if (threads > rows) threads = rows > 0 ? (int)rows : 1;
    if (threads < 1) threads = 1;
    int failed = 0; /* shared: colsum is added to only when no thread failed, so that
                       the caller's fallback, which sums again, never counts twice */
#pragma omp parallel num_threads(threads)
    {
        int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        float *buf = malloc(sizeof(float) * (size_t)cols);
        float *cs = colsum == NULL ? NULL : calloc((size_t)cols, sizeof(float));
        if (buf == NULL || (colsum != NULL && cs == NULL)) {
#pragma omp atomic write
            failed = 1;
        } else {
            rows_loss(&job, rows * t / n, rows * (t + 1) / n, buf, cs);
        }
#pragma omp barrier
        int seen;
#pragma omp atomic read
        seen = failed;
        if (!seen && cs != NULL) {
#pragma omp critical
            for (int64_t j = 0; j < cols; j++) colsum[j] += cs[j];
        }
        free(buf);
        free(cs);
    }
    return failed ? 1 : 0;
}

/* acc[i] += x[i] (acc[i] = x[i] if `assign`) for `n` bf16 values x, float32 acc (the
   half-precision parts of a weight's gradient summed in float32): one pass where PyTorch
   converts into a float32 copy and then adds. Shared among `threads` OpenMP threads. */
int s2s_add_bf16(float *acc, const uint16_t *x, int64_t n, int assign, int threads) {
    if (n < 0) return 1;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        int64_t t = omp_get_thread_num(), parts = omp_get_num_threads();
        int64_t begin = n * t / parts, end = n * (t + 1) / parts;
        if (assign) {
#pragma omp simd
            for (int64_t i = begin; i < end; i++) acc[i] = bf16_value(x[i]);
        } else {
#pragma omp simd
            for (int64_t i = begin; i < end; i++) acc[i] += bf16_value(x[i]);
        }
    }
    return 0;
}
