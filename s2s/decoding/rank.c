/* A search step's work over the vocabulary in one pass per row: each row's k best
   columns and, with `normalise`, their log-probabilities (the logit less the row's
   log-sum-exp), read straight from bf16 or float32 logits.

   PyTorch does this in several passes (a float32 copy, the log-softmax written out, a
   top-k over segments), each an operator with its own dispatch: over a beam batch that
   was 29% of beam search's time on a 2-core CPU (docs/speed.md, thirty-sixth
   session). Built and loaded by s2s.runtime.native (after torch, so that OpenMP here is
   torch's own thread pool); s2s.decoding.ranking falls back to PyTorch where it cannot be
   built and checks it against PyTorch once per process. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_math.h"

#define SEGMENT 64 /* a segment is scanned for the top-k only if its maximum can enter */

typedef struct {
    const void *x;
    int bf16, normalise;
    int64_t cols, segments, stride, k, blocked;
    float *values;
    int64_t *ids;
} job_t;

/* Row `row` into `buf` as float32, each segment's maximum into `segmax`; returns the
   row's maximum. */
static float load_row(const job_t *job, int64_t row, float *buf, float *segmax) {
    const uint16_t *in16 = (const uint16_t *)job->x + row * job->stride;
    const float *in32 = (const float *)job->x + row * job->stride;
    int64_t cols = job->cols, segments = job->segments;
    float m = -INFINITY;
    for (int64_t s = 0; s < segments; s++) {
        int64_t a = s * SEGMENT, b = a + SEGMENT < cols ? a + SEGMENT : cols;
        float sm = -INFINITY;
        if (job->bf16) {
#pragma omp simd reduction(max : sm)
            for (int64_t j = a; j < b; j++) {
                float v = bf16_value(in16[j]);
                buf[j] = v;
                sm = v > sm ? v : sm;
            }
        } else {
#pragma omp simd reduction(max : sm)
            for (int64_t j = a; j < b; j++) {
                buf[j] = in32[j];
                sm = in32[j] > sm ? in32[j] : sm;
            }
        }
        segmax[s] = sm;
        m = sm > m ? sm : m;
    }
    return m;
}

/* The k best columns of `buf` but the blocked one, best first (among equal values the
   lower column first); returns how many were found (fewer than k only when the blocked
   column is one of at most k). */
static int64_t best_columns(const job_t *job, const float *buf, const float *segmax,
                            float *top, int64_t *idx) {
    int64_t cols = job->cols, k = job->k, segments = job->segments, n = 0;
    for (int64_t s = 0; s < segments; s++) {
        if (n == k && !(segmax[s] > top[k - 1])) continue;
        int64_t a = s * SEGMENT, b = a + SEGMENT < cols ? a + SEGMENT : cols;
        for (int64_t j = a; j < b; j++) {
            float v = buf[j];
            if (j == job->blocked || (n == k && !(v > top[k - 1]))) continue;
            int64_t at = n < k ? n++ : k - 1;
            for (; at > 0 && v > top[at - 1]; at--) {
                top[at] = top[at - 1];
                idx[at] = idx[at - 1];
            }
            top[at] = v;
            idx[at] = j;
        }
    }
    return n;
}

static void rank_rows(const job_t *job, int64_t begin, int64_t end) {
    int64_t cols = job->cols, k = job->k, segments = job->segments;
    float *buf = malloc(sizeof(float) * (size_t)(cols + segments + k));
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)k);
    if (buf == NULL || idx == NULL) abort();
    float *segmax = buf + cols, *top = segmax + segments;
    for (int64_t row = begin; row < end; row++) {
        float m = load_row(job, row, buf, segmax);
        float lse = 0.0f;
        if (job->normalise) {
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < cols; j++) sum += exp_nonpositive(buf[j] - m);
            lse = m + logf(sum);
        }
        int64_t n = best_columns(job, buf, segmax, top, idx);
        float *values = job->values + row * k;
        int64_t *ids = job->ids + row * k;
        for (int64_t i = 0; i < n; i++) {
            values[i] = top[i] - lse;
            ids[i] = idx[i];
        }
        for (int64_t i = n; i < k; i++) { /* only the blocked column is left */
            values[i] = -INFINITY;
            ids[i] = job->blocked;
        }
    }
    free(idx);
    free(buf);
}

/* Each of `rows` rows (`cols` columns, rows `stride` elements apart, bf16 if `bf16` else
   float32): its k best columns into `ids` and their values into `values` (rows x k,
   float32), log-probabilities if `normalise`, else the logits; `blocked` (or -1): a
   column never chosen but counted in the normaliser. Rows are shared among `threads`
   OpenMP threads. Returns 0, or 1 for arguments out of range. */
int s2s_top_columns(const void *x, int bf16, int normalise, int64_t rows, int64_t cols,
                    int64_t stride, int64_t k, int64_t blocked, float *values, int64_t *ids,
                    int threads) {
    if (k < 1 || k > cols || rows < 0 || stride < cols) return 1;
    job_t job = {x, bf16, normalise, cols, (cols + SEGMENT - 1) / SEGMENT, stride, k, blocked,
                 values, ids};
    if (threads > rows) threads = rows > 0 ? (int)rows : 1;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        rank_rows(&job, rows * t / n, rows * (t + 1) / n);
    }
    return 0;
}

/* Float32 logits of chosen columns from a bf16 output layer: for each of `rows` rows and
   its `n` columns `ids` (rows x n), out = the dot product of the weight's row `id`
   (`wrows` rows, `wstride` apart) with the row's bf16 features (`fstride` apart), `h`
   terms multiplied and summed in float32, as a product with a float32 result gives them
   (the sum's order aside). The bias is the caller's. Returns 0, 1 for arguments out of
   range, or 2 where an id is not a row of the weight (its value then NaN). */
int s2s_rescore(const uint16_t *w, int64_t wrows, int64_t wstride, const uint16_t *f,
                int64_t fstride, const int64_t *ids, int64_t rows, int64_t n, int64_t h,
                float *out, int threads) {
    if (rows < 0 || n < 1 || h < 1 || wstride < h || fstride < h) return 1;
    int bad = 0;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : bad)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *x = f + r * fstride;
        for (int64_t j = 0; j < n; j++) {
            int64_t id = ids[r * n + j];
            if (id < 0 || id >= wrows) {
                out[r * n + j] = NAN;
                bad = 1;
                continue;
            }
            const uint16_t *v = w + id * wstride;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t e = 0; e < h; e++) s += bf16_value(v[e]) * bf16_value(x[e]);
            out[r * n + j] = s;
        }
    }
    return bad ? 2 : 0;
}
