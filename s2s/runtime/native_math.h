/* Shared by s2s's C kernels (s2s/runtime/native.py puts this folder on the include path
   and keys every build by this file too). */
#ifndef S2S_NATIVE_MATH_H
#define S2S_NATIVE_MATH_H
#include <stdint.h>

/* exp(x) for x <= 0, vectorisable: the argument reduced by multiples of ln 2 (its
   constant split in two for precision), then a degree-6 polynomial on [-ln2/2, ln2/2]
   (relative error about 2e-7) scaled by the power of two built in the exponent bits. */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {((int32_t)n + 127) << 23};
    return p * scale.f;
}

/* a bf16 value (its bits) as float32: exact */
static inline float bf16_value(uint16_t v) {
    union {
        uint32_t u;
        float f;
    } c = {(uint32_t)v << 16};
    return c.f;
}

/* float32 -> bf16, rounding to nearest even (as PyTorch's conversion); NaN stays NaN */
static inline uint16_t to_bf16(float f) {
    union {
        float f;
        uint32_t u;
    } c = {f};
    if ((c.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((c.u >> 16) | 0x40u);
    c.u += 0x7fffu + ((c.u >> 16) & 1u);
    return (uint16_t)(c.u >> 16);
}

#endif
