// Scalar reference versions of the element-wise ops (the kernels of
// Isa::kScalar and what the SIMD ones in ops_*.cc are tested against), the
// dispatch through the active ISA's table, and the ops without SIMD versions.
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/matmul_internal.h"

namespace edgelm {
namespace {

// exp(x) without a library call: Cephes' expf polynomial on x - n ln2, then
// 2^n from the exponent bits; relative error below 2e-7. x < -87 gives 0 (also
// -inf), overflow gives +inf, NaN stays NaN. ops_avx2.cc / ops_avx512.cc /
// ops_neon.cc port the same steps to vectors.
inline float exp_approx(float x) {
  const float clamped = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (clamped * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = clamped - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  const float result = x > 88.72284f ? std::numeric_limits<float>::infinity() : p * two_n;
  return x < -87.0f ? 0.0f : result;
}

void scalar_rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
  // Sum of squares in double: n is a few thousand and the result scales every value.
  double sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  const double mean = n > 0 ? sum_sq / static_cast<double>(n) : 0.0;
  const float scale = static_cast<float>(1.0 / std::sqrt(mean + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void scalar_softmax(float* x, int64_t n) {
  if (n <= 0) return;
  // Subtracting the max keeps exp() from overflowing; -inf entries become 0.
  // Eight running maxima and sums so that the loops vectorize.
  float lane_max[8];
  for (float& m : lane_max) m = x[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) lane_max[j] = x[i + j] > lane_max[j] ? x[i + j] : lane_max[j];
  }
  float max_value = x[0];
  for (float m : lane_max) max_value = m > max_value ? m : max_value;
  for (; i < n; ++i) max_value = x[i] > max_value ? x[i] : max_value;
  if (std::isinf(max_value) && max_value < 0) {
    // Everything masked: spread evenly rather than produce NaN.
    for (int64_t k = 0; k < n; ++k) x[k] = 1.0f / static_cast<float>(n);
    return;
  }
  for (int64_t k = 0; k < n; ++k) x[k] = exp_approx(x[k] - max_value);
  double lane_sum[8] = {};
  for (i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) lane_sum[j] += x[i + j];
  }
  double sum = 0;
  for (double s : lane_sum) sum += s;
  for (; i < n; ++i) sum += x[i];
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void scalar_silu_mul(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + exp_approx(-g)) * up[i];
  }
}

uint64_t scalar_read_sum(const uint64_t* words, int64_t count, int64_t prefetch_bytes) {
  const auto* bytes = reinterpret_cast<const char*>(words);
  uint64_t lane[8] = {};
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    if (prefetch_bytes > 0) __builtin_prefetch(bytes + i * 8 + prefetch_bytes);
    for (int j = 0; j < 8; ++j) lane[j] += words[i + j];
  }
  for (; i < count; ++i) lane[0] += words[i];
  uint64_t sum = 0;
  for (uint64_t v : lane) sum += v;
  return sum;
}

int64_t scalar_argmax(const float* x, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
  }
  return best < 0 ? 0 : best;
}

}  // namespace

namespace kernels_internal {

void register_ops_scalar(IsaKernels* table) {
  table->argmax = scalar_argmax;
  table->rmsnorm = scalar_rmsnorm;
  table->softmax = scalar_softmax;
  table->silu_mul = scalar_silu_mul;
  table->read_sum = scalar_read_sum;
}

}  // namespace kernels_internal

void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
  kernels_internal::active_isa_kernels().rmsnorm(out, x, weight, n, eps);
}

void softmax(float* x, int64_t n) {
  kernels_internal::active_isa_kernels().softmax(x, n);
}

void silu_mul(float* out, const float* gate, const float* up, int64_t n) {
  kernels_internal::active_isa_kernels().silu_mul(out, gate, up, n);
}

int64_t argmax(const float* x, int64_t n) {
  return kernels_internal::active_isa_kernels().argmax(x, n);
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void rope(float* head, int64_t head_dim, const float* cos, const float* sin, bool interleaved) {
  const int64_t half = head_dim / 2;
  if (interleaved) {
    for (int64_t i = 0; i < half; ++i) {
      const float a = head[2 * i];
      const float b = head[2 * i + 1];
      head[2 * i] = a * cos[i] - b * sin[i];
      head[2 * i + 1] = a * sin[i] + b * cos[i];
    }
  } else {
    for (int64_t i = 0; i < half; ++i) {
      const float a = head[i];
      const float b = head[i + half];
      head[i] = a * cos[i] - b * sin[i];
      head[i + half] = a * sin[i] + b * cos[i];
    }
  }
}

void rope_angles(int64_t position, const float* inv_freq, int64_t half, float* cos, float* sin) {
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(position) * static_cast<double>(inv_freq[i]);
    cos[i] = static_cast<float>(std::cos(angle));
    sin[i] = static_cast<float>(std::sin(angle));
  }
}

}  // namespace edgelm
