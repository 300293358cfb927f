// Element-wise and row-wise operations of a transformer layer. rmsnorm,
// softmax, silu_mul and argmax dispatch to SIMD kernels of the active ISA (ops_avx2.cc,
// ops_avx512.cc, ops_neon.cc; scalar reference in ops.cc) like matmul() does;
// the rest are plain loops.
#pragma once

#include <cstdint>

namespace edgelm {

// out = x / rms(x) * weight
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps);
// In-place softmax over n values.
void softmax(float* x, int64_t n);
// out[i] = silu(gate[i]) * up[i]
void silu_mul(float* out, const float* gate, const float* up, int64_t n);
// x += y
void add_inplace(float* x, const float* y, int64_t n);
// Index of the first largest value, NaNs ignored (0 if every value is NaN, or
// n <= 0): greedy decoding and top-1 agreement over rows as long as the
// vocabulary.
int64_t argmax(const float* x, int64_t n);

// Rotary position embedding of one head vector (head_dim values), given the
// cos/sin of this position's head_dim/2 angles (shared by all heads of a token,
// so callers compute them once per token with rope_angles).
// interleaved: rotate pairs (2i, 2i+1) (GGUF llama / llama2.c / Meta layout);
// otherwise pairs (i, i + head_dim/2) (HF rotate_half / GGUF "neox" layout).
void rope(float* head, int64_t head_dim, const float* cos, const float* sin, bool interleaved);
// cos/sin of position * inv_freq[i] for i < half (computed in double).
void rope_angles(int64_t position, const float* inv_freq, int64_t half, float* cos, float* sin);

}  // namespace edgelm
