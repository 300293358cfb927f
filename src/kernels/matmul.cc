#include "kernels/matmul.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant_formats.h"
#include "kernels/thread_pool.h"
#include "util/error.h"
#include "util/half.h"

namespace edgelm {

using kernels_internal::IsaKernels;
using kernels_internal::kDTypeSlots;
using kernels_internal::PanelMatmulFn;
using kernels_internal::slot;
using kernels_internal::TypeKernels;

namespace {

constexpr int kIsaCount = 6;
constexpr Isa kAllIsas[kIsaCount] = {Isa::kScalar, Isa::kAvx2,        Isa::kAvx512,
                                     Isa::kNeon,   Isa::kNeonDotprod, Isa::kNeonI8mm};

// Name for messages, also for ids no table knows (a corrupt file).
std::string type_label(DType type) {
  const DTypeTraits* traits = dtype_traits(static_cast<uint32_t>(type));
  if (traits != nullptr) return traits->name;
  return str_cat("type id ", static_cast<uint32_t>(type));
}

// An ISA uses its own kernel for a type when it has one and otherwise the next
// lower ISA's, down to scalar: a new type needs only a scalar kernel to work.
Isa fallback(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return Isa::kAvx2;
    case Isa::kNeonDotprod:
      return Isa::kNeon;
    case Isa::kNeonI8mm:
      return Isa::kNeonDotprod;
    default:
      return Isa::kScalar;
  }
}

struct KernelTables {
  IsaKernels registered[kIsaCount];  // what each ISA file provides
  IsaKernels resolved[kIsaCount];    // with fallbacks filled in

  KernelTables() {
    kernels_internal::register_scalar_kernels(&registered[static_cast<int>(Isa::kScalar)]);
    kernels_internal::register_quant_scalar_kernels(&registered[static_cast<int>(Isa::kScalar)]);
    kernels_internal::register_ops_scalar(&registered[static_cast<int>(Isa::kScalar)]);
#if defined(__x86_64__) || defined(_M_X64)
    kernels_internal::register_avx2_kernels(&registered[static_cast<int>(Isa::kAvx2)]);
    kernels_internal::register_avx512_kernels(&registered[static_cast<int>(Isa::kAvx512)]);
    kernels_internal::register_quant_avx2_kernels(&registered[static_cast<int>(Isa::kAvx2)]);
    kernels_internal::register_quant_avx512_kernels(&registered[static_cast<int>(Isa::kAvx512)]);
    kernels_internal::register_fp8_avx2_kernels(&registered[static_cast<int>(Isa::kAvx2)]);
    kernels_internal::register_fp8_avx512_kernels(&registered[static_cast<int>(Isa::kAvx512)]);
    kernels_internal::register_quantize_acts_avx2(&registered[static_cast<int>(Isa::kAvx2)]);
    kernels_internal::register_quantize_acts_avx512(&registered[static_cast<int>(Isa::kAvx512)]);
    kernels_internal::register_ops_avx2(&registered[static_cast<int>(Isa::kAvx2)]);
    kernels_internal::register_ops_avx512(&registered[static_cast<int>(Isa::kAvx512)]);
#endif
#if defined(__aarch64__)
    kernels_internal::register_neon_kernels(&registered[static_cast<int>(Isa::kNeon)]);
    kernels_internal::register_quant_neon_kernels(&registered[static_cast<int>(Isa::kNeon)]);
    kernels_internal::register_fp8_neon_kernels(&registered[static_cast<int>(Isa::kNeon)]);
    kernels_internal::register_quantize_acts_neon(&registered[static_cast<int>(Isa::kNeon)]);
    kernels_internal::register_ops_neon(&registered[static_cast<int>(Isa::kNeon)]);
    kernels_internal::register_quant_dotprod_kernels(
        &registered[static_cast<int>(Isa::kNeonDotprod)]);
    kernels_internal::register_quant_i8mm_kernels(&registered[static_cast<int>(Isa::kNeonI8mm)]);
#endif
    for (Isa isa : kAllIsas) {
      IsaKernels& out = resolved[static_cast<int>(isa)];
      for (Isa from = isa;; from = fallback(from)) {
        const IsaKernels& in = registered[static_cast<int>(from)];
        if (!out.panel_matmul) out.panel_matmul = in.panel_matmul;
        if (!out.quantize_q8_0) out.quantize_q8_0 = in.quantize_q8_0;
        if (!out.quantize_q8_K) out.quantize_q8_K = in.quantize_q8_K;
        if (!out.f32_to_f16) out.f32_to_f16 = in.f32_to_f16;
        if (!out.rmsnorm) out.rmsnorm = in.rmsnorm;
        if (!out.softmax) out.softmax = in.softmax;
        if (!out.silu_mul) out.silu_mul = in.silu_mul;
        if (!out.argmax) out.argmax = in.argmax;
        if (!out.read_sum) out.read_sum = in.read_sum;
        for (uint32_t s = 0; s < kDTypeSlots; ++s) {
          if (!out.types[s].matvec) out.types[s].matvec = in.types[s].matvec;
          if (!out.types[s].to_f32) out.types[s].to_f32 = in.types[s].to_f32;
          if (!out.types[s].matmul_rows) out.types[s].matmul_rows = in.types[s].matmul_rows;
          if (!out.types[s].short_rows) out.types[s].short_rows = in.types[s].short_rows;
          if (!out.types[s].quant_matvec) out.types[s].quant_matvec = in.types[s].quant_matvec;
          if (!out.types[s].quant_matmul) out.types[s].quant_matmul = in.types[s].quant_matmul;
          if (!out.types[s].quant_gemm) out.types[s].quant_gemm = in.types[s].quant_gemm;
        }
        if (from == Isa::kScalar) break;
      }
    }
  }
};

const KernelTables& tables() {
  static const KernelTables t;
  return t;
}

const IsaKernels& isa_kernels(Isa isa) {
  return tables().resolved[static_cast<int>(isa)];
}

const TypeKernels* find_type_kernels(const IsaKernels& k, DType type) {
  const uint32_t s = slot(type);
  if (s >= kDTypeSlots) return nullptr;
  return &k.types[s];
}

std::atomic<int>& active_isa_slot() {
  static std::atomic<int> active{static_cast<int>(best_supported_isa())};
  return active;
}

// ---- scalar kernels (also the fallback for every ISA) ----

void f32_to_f32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void f16_to_f32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
}

void bf16_to_f32(const void* src, float* dst, int64_t n) {
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
}

struct ScalarF32 {
  static float at(const void* row, int64_t i) { return static_cast<const float*>(row)[i]; }
};
struct ScalarF16 {
  static float at(const void* row, int64_t i) {
    return fp16_to_fp32(static_cast<const uint16_t*>(row)[i]);
  }
};
struct ScalarBF16 {
  static float at(const void* row, int64_t i) {
    return bf16_to_fp32(static_cast<const uint16_t*>(row)[i]);
  }
};

template <typename Elem>
void scalar_matvec(const WeightMatrix& w, const float* x, float* y, int64_t row_begin,
                   int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const void* row = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r) * w.row_bytes;
    float acc[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= w.cols; i += 4) {
      for (int j = 0; j < 4; ++j) acc[j] += Elem::at(row, i + j) * x[i + j];
    }
    for (; i < w.cols; ++i) acc[0] += Elem::at(row, i) * x[i];
    y[r - row_begin] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
}

void scalar_panel_matmul(const float* panel, int64_t panel_stride, int64_t rows, int64_t cols,
                         const float* x, int64_t x_stride, int64_t n, float* y, int64_t y_stride) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * x_stride;
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = panel + r * panel_stride;
      float acc[4] = {0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 4 <= cols; i += 4) {
        for (int j = 0; j < 4; ++j) acc[j] += wr[i + j] * xt[i + j];
      }
      for (; i < cols; ++i) acc[0] += wr[i] * xt[i];
      y[t * y_stride + r] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
  }
}

// ---- matmul driver ----

// Checks the matrix description and returns its row stride in bytes.
size_t checked_row_bytes(const WeightMatrix& w, int64_t n) {
  if (w.rows < 0 || w.cols < 0 || n < 0) {
    fail("matmul: negative shape (rows ", w.rows, ", cols ", w.cols, ", tokens ", n, ")");
  }
  if (dtype_traits(static_cast<uint32_t>(w.type)) == nullptr) {
    fail("matmul: unknown weight ", type_label(w.type));
  }
  const size_t needed = dtype_row_bytes(w.type, w.cols);
  if (w.row_bytes != 0 && w.row_bytes < needed) {
    fail("matmul: row stride ", w.row_bytes, " bytes is less than ", needed, " bytes needed for ",
         w.cols, " ", type_label(w.type), " values");
  }
  if (w.data == nullptr && w.rows > 0 && w.cols > 0) fail("matmul: weight data is null");
  return w.row_bytes != 0 ? w.row_bytes : needed;
}

// Runs fn(begin, end) over [0, units) on the pool, or inline without one.
template <typename Fn>
void split(ThreadPool* pool, int64_t units, int64_t grain, const Fn& fn) {
  if (pool == nullptr || pool->size() == 1) {
    fn(int64_t{0}, units);
  } else {
    pool->parallel_for(units, grain, fn);
  }
}

// Rows of a weight panel converted to F32 at once: about 64 KiB, so the panel
// stays in L2 while every token of the batch streams past it.
int64_t panel_rows_for(int64_t cols) {
  const int64_t rows = (64 * 1024) / std::max<int64_t>(1, cols * 4);
  return std::clamp<int64_t>(rows / 4 * 4, 4, 64);
}

// Prefill for rows [row_begin, row_end) and tokens [t_begin, t_end): convert a
// panel of weight rows to F32 once, then multiply it with every token.
void prefill_rows(const WeightMatrix& w, const TypeKernels& tk, PanelMatmulFn panel_matmul,
                  const float* x, float* y, int64_t row_begin, int64_t row_end, int64_t t_begin,
                  int64_t t_end) {
  // Per-thread scratch that lives as long as the (persistent) pool thread.
  thread_local std::vector<float> panel_buffer;
  const int64_t cols = w.cols;
  const int64_t panel_rows = panel_rows_for(cols);
  const bool direct_f32 = w.type == DType::F32 && w.row_bytes % sizeof(float) == 0;
  if (!direct_f32) {
    const size_t need = static_cast<size_t>(panel_rows * cols);
    if (panel_buffer.size() < need) panel_buffer.resize(need);
  }
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t p = row_begin; p < row_end; p += panel_rows) {
    const int64_t pr = std::min(panel_rows, row_end - p);
    const float* panel;
    int64_t stride;
    if (direct_f32) {
      panel = reinterpret_cast<const float*>(base + static_cast<size_t>(p) * w.row_bytes);
      stride = static_cast<int64_t>(w.row_bytes / sizeof(float));
    } else {
      for (int64_t r = 0; r < pr; ++r) {
        tk.to_f32(base + static_cast<size_t>(p + r) * w.row_bytes, panel_buffer.data() + r * cols,
                  cols);
      }
      panel = panel_buffer.data();
      stride = cols;
    }
    panel_matmul(panel, stride, pr, cols, x + t_begin * cols, cols, t_end - t_begin,
                 y + t_begin * w.rows + p, w.rows);
  }
}

}  // namespace

namespace kernels_internal {

const IsaKernels& active_isa_kernels() {
  return isa_kernels(active_isa());
}

// Permute-heavy only on Zen 5 (family 0x1a), whose full-width 512-bit units
// and two permute ports it was tuned and measured on. Zen 4 (family 0x19, the
// first AMD core with AVX-512) splits every zmm operation in two halves: there
// the row-major kernels of either variant computed below DRAM speed, and
// shuffle-light with interleaved weights decoded SmolLM2 2.0-2.5x faster.
Avx512Decode default_avx512_decode_variant() {
  const CpuFeatures& f = cpu_features();
  return f.amd && f.family >= 0x1a ? Avx512Decode::kPermuteHeavy : Avx512Decode::kShuffleLight;
}

namespace {
std::atomic<Avx512Decode> g_decode_variant{default_avx512_decode_variant()};
}  // namespace

Avx512Decode avx512_decode_variant() {
  return g_decode_variant.load(std::memory_order_relaxed);
}

void set_avx512_decode_variant(Avx512Decode variant) {
  g_decode_variant.store(variant, std::memory_order_relaxed);
}

void register_scalar_kernels(IsaKernels* table) {
  table->panel_matmul = scalar_panel_matmul;
  table->f32_to_f16 = [](const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
  };
  table->types[slot(DType::F32)] = {scalar_matvec<ScalarF32>, f32_to_f32, nullptr};
  table->types[slot(DType::F16)] = {scalar_matvec<ScalarF16>, f16_to_f32, nullptr};
  table->types[slot(DType::BF16)] = {scalar_matvec<ScalarBF16>, bf16_to_f32, nullptr};
}

}  // namespace kernels_internal

namespace {
std::atomic<StreamPrefetch> g_stream_prefetch{StreamPrefetch::kFar};
}  // namespace

StreamPrefetch stream_prefetch() {
  return g_stream_prefetch.load(std::memory_order_relaxed);
}

void set_stream_prefetch(StreamPrefetch mode) {
  g_stream_prefetch.store(mode, std::memory_order_relaxed);
}

const char* stream_prefetch_name(StreamPrefetch mode) {
  switch (mode) {
    case StreamPrefetch::kNear:
      return "near";
    case StreamPrefetch::kFar:
      return "far";
    case StreamPrefetch::kHardware:
      return "hardware";
  }
  return "?";
}

bool stream_prefetch_from_name(const char* name, StreamPrefetch* mode) {
  for (StreamPrefetch m :
       {StreamPrefetch::kNear, StreamPrefetch::kFar, StreamPrefetch::kHardware}) {
    if (std::strcmp(name, stream_prefetch_name(m)) == 0) {
      *mode = m;
      return true;
    }
  }
  return false;
}

StreamPrefetch stream_prefetch_for(size_t bytes_per_token) {
  if (cpu_features().amd) return StreamPrefetch::kHardware;
  long llc = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
  llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
#ifdef _SC_LEVEL2_CACHE_SIZE
  if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
  return llc > 0 && bytes_per_token <= static_cast<size_t>(llc) ? StreamPrefetch::kNear
                                                                : StreamPrefetch::kFar;
}

bool burst_prefetch_helps() {
  return !cpu_features().intel;
}

bool interleaved_weights_preferred() {
  return active_isa() == Isa::kAvx512 && cpu_features().avx512vnni &&
         kernels_internal::avx512_decode_variant() == kernels_internal::Avx512Decode::kShuffleLight;
}

void matmul(const WeightMatrix& weights, const float* x, int64_t n, float* y, ThreadPool* pool) {
  WeightMatrix w = weights;
  w.row_bytes = checked_row_bytes(weights, n);
  if (n == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    std::fill(y, y + n * w.rows, 0.0f);
    return;
  }
  const IsaKernels& k = isa_kernels(active_isa());
  const TypeKernels* tk = find_type_kernels(k, w.type);
  if (tk != nullptr && tk->quant_matvec != nullptr && tk->quant_matmul != nullptr) {
    kernels_internal::quant_matmul(w, k, *tk, x, n, y, pool);
    return;
  }
  if (tk == nullptr || tk->matvec == nullptr || (tk->to_f32 == nullptr && !tk->matmul_rows)) {
    fail("matmul: no kernel for weight type ", type_label(w.type));
  }
  // Work is split by groups of 4 rows, the row block of the SIMD kernels.
  const int64_t row_units = (w.rows + 3) / 4;
  auto unit_rows = [&](int64_t begin, int64_t end, int64_t* r0, int64_t* r1) {
    *r0 = begin * 4;
    *r1 = std::min(end * 4, w.rows);
  };

  if (n == 1) {
    // Memory bound: give each thread a contiguous slab of at least ~32 KiB.
    const int64_t grain = std::max<int64_t>(1, (32 * 1024) / static_cast<int64_t>(w.row_bytes) / 4);
    split(pool, row_units, grain, [&](int64_t begin, int64_t end) {
      int64_t r0, r1;
      unit_rows(begin, end, &r0, &r1);
      tk->matvec(w, x, y + r0, r0, r1);
    });
    return;
  }

  // A few tokens (attention over the KV cache: the query heads that share a KV
  // head) read each row once for all of them, at any row length.
  if (tk->short_rows && n <= kernels_internal::kShortRowTokens) {
    split(pool, row_units, 1, [&](int64_t begin, int64_t end) {
      int64_t r0, r1;
      unit_rows(begin, end, &r0, &r1);
      tk->short_rows(w, x, n, y, w.rows, r0, r1);
    });
    return;
  }

  if (tk->matmul_rows) {
    split(pool, row_units, 1, [&](int64_t begin, int64_t end) {
      int64_t r0, r1;
      unit_rows(begin, end, &r0, &r1);
      tk->matmul_rows(w, x, n, y, w.rows, r0, r1);
    });
    return;
  }

  const int threads = pool ? pool->size() : 1;
  if (row_units >= 2 * threads || n < threads) {
    split(pool, row_units, 1, [&](int64_t begin, int64_t end) {
      int64_t r0, r1;
      unit_rows(begin, end, &r0, &r1);
      prefill_rows(w, *tk, k.panel_matmul, x, y, r0, r1, 0, n);
    });
  } else {
    // Few rows (tiny models): split the tokens instead.
    split(pool, n, 1, [&](int64_t begin, int64_t end) {
      prefill_rows(w, *tk, k.panel_matmul, x, y, 0, w.rows, begin, end);
    });
  }
}

void matmul_many(const WeightMatrix* ws, float* const* ys, int count, const float* x, int64_t n,
                 ThreadPool* pool) {
  constexpr int kMaxMany = 8;
  if (count <= 0) return;
  if (n != 1 || count == 1 || count > kMaxMany || pool == nullptr || pool->size() == 1) {
    // Prefill kernels are compute bound and parallel inside each matrix.
    for (int i = 0; i < count; ++i) matmul(ws[i], x, n, ys[i], pool);
    return;
  }
  // x quantized once per activation form (MatvecInput: a per-thread one, grown
  // once), then the matrices' rows in one pass as a joint range of 4-row units.
  // (A thread_local is not captured: the workers get this thread's by reference.)
  thread_local MatvecInput this_threads_input;
  const MatvecInput& input = this_threads_input;
  this_threads_input.prepare(ws, count, x);
  int64_t first_unit[kMaxMany];
  int64_t units = 0;
  size_t max_row_bytes = 1;
  for (int i = 0; i < count; ++i) {
    max_row_bytes = std::max(max_row_bytes, checked_row_bytes(ws[i], n));
    if (ws[i].cols == 0) std::fill(ys[i], ys[i] + ws[i].rows, 0.0f);
    first_unit[i] = units;
    if (ws[i].cols > 0) units += (ws[i].rows + 3) / 4;
  }
  // As in matmul(): contiguous slabs of at least ~32 KiB per chunk.
  const int64_t grain = std::max<int64_t>(1, (32 * 1024) / static_cast<int64_t>(max_row_bytes) / 4);
  split(pool, units, grain, [&](int64_t begin, int64_t end) {
    for (int i = 0; i < count; ++i) {
      const WeightMatrix& w = ws[i];
      if (w.cols == 0) continue;
      const int64_t u0 = std::max(begin, first_unit[i]) - first_unit[i];
      const int64_t u1 = std::min(end, first_unit[i] + (w.rows + 3) / 4) - first_unit[i];
      if (u0 >= u1) continue;
      // A unit of more than 4 rows (Q4_0_X16) goes to the chunk holding its first 4 rows.
      const int64_t unit = kernels_internal::row_unit(w.type);
      const int64_t r0 = std::min((u0 * 4 + unit - 1) / unit * unit, w.rows);
      const int64_t r1 = std::min((u1 * 4 + unit - 1) / unit * unit, w.rows);
      if (r0 < r1) matvec_rows(w, input, ys[i] + r0, r0, r1);
    }
  });
}

bool column_slice_supported(const WeightMatrix& w, int64_t col_begin, int64_t col_end) {
  const TypeKernels* tk = find_type_kernels(isa_kernels(active_isa()), w.type);
  if (tk == nullptr || tk->quant_matvec == nullptr) return false;
  if (col_begin < 0 || col_end <= col_begin || col_end > w.cols) return false;
  // The weights' blocks and the activations' (32 values, or 256 for K-quants).
  const DTypeTraits* traits = dtype_traits(static_cast<uint32_t>(w.type));
  const int64_t block = std::max<int64_t>(
      traits->block_size, kernels_internal::uses_q8_K_activations(w.type) ? kQK_K : kQK);
  return col_begin % block == 0 && col_end % block == 0;
}

int64_t matvec_row_unit(const WeightMatrix& w) {
  return kernels_internal::row_unit(w.type);
}

void matvec_column_slice(const WeightMatrix& weights, int64_t col_begin, int64_t col_end,
                         const float* x, float* y, int64_t row_begin, int64_t row_end) {
  WeightMatrix w = weights;
  w.row_bytes = checked_row_bytes(weights, 1);
  if (!column_slice_supported(w, col_begin, col_end)) {
    fail("matvec_column_slice: columns [", col_begin, ", ", col_end, ") of ", w.cols, " ",
         type_label(w.type), " values are not a slice of whole blocks with an integer kernel");
  }
  const int64_t unit = kernels_internal::row_unit(w.type);
  if (row_begin < 0 || row_end > w.rows || row_begin > row_end || row_begin % unit != 0 ||
      (row_end % unit != 0 && row_end != w.rows)) {
    fail("matvec_column_slice: rows [", row_begin, ", ", row_end, ") of ", w.rows,
         " are not whole units of ", unit);
  }
  if (row_begin == row_end) return;
  const IsaKernels& k = isa_kernels(active_isa());
  const TypeKernels* tk = find_type_kernels(k, w.type);
  // Rows keep their stride; the slice starts col_begin's blocks in, which in an
  // interleaved layout are those of all 16 rows of a group.
  const size_t offset =
      dtype_row_bytes(w.type, col_begin) * static_cast<size_t>(unit == 16 ? 16 : 1);
  w.data = static_cast<const uint8_t*>(w.data) + offset;
  w.cols = col_end - col_begin;
  const kernels_internal::QuantActs acts =
      kernels_internal::quantize_activations(w.type, k, x, w.cols, 1, nullptr);
  tk->quant_matvec(w, acts, y, row_begin, row_end);
}

struct MatvecInput::Impl {
  const float* x = nullptr;
  int64_t cols = 0;
  bool have[2] = {false, false};  // Q8_0 and Q8_K forms
  kernels_internal::QuantActs acts[2];
  kernels_internal::ActBuffer buffers[2];
};

MatvecInput::MatvecInput() : impl_(std::make_unique<Impl>()) {}
MatvecInput::~MatvecInput() = default;

void MatvecInput::prepare(const WeightMatrix* ws, int count, const float* x) {
  Impl& in = *impl_;
  in.x = x;
  in.cols = count > 0 ? ws[0].cols : 0;
  in.have[0] = in.have[1] = false;
  const IsaKernels& k = isa_kernels(active_isa());
  for (int i = 0; i < count; ++i) {
    const WeightMatrix& w = ws[i];
    if (w.cols != in.cols) {
      fail("MatvecInput: matrices of ", in.cols, " and ", w.cols, " columns share an input");
    }
    const TypeKernels* tk = find_type_kernels(k, w.type);
    if (tk == nullptr || (tk->quant_matvec == nullptr && tk->matvec == nullptr)) {
      fail("matmul: no kernel for weight type ", type_label(w.type));
    }
    if (tk->quant_matvec == nullptr || w.cols == 0) continue;
    const int form = kernels_internal::uses_q8_K_activations(w.type) ? 1 : 0;
    if (in.have[form]) continue;
    in.acts[form] =
        kernels_internal::quantize_activations(w.type, k, x, w.cols, 1, nullptr, &in.buffers[form]);
    in.have[form] = true;
  }
}

void matvec_rows(const WeightMatrix& weights, const MatvecInput& input, float* y, int64_t row_begin,
                 int64_t row_end) {
  const MatvecInput::Impl& in = *input.impl_;
  WeightMatrix w = weights;
  w.row_bytes = checked_row_bytes(weights, 1);
  const int64_t unit = kernels_internal::row_unit(w.type);
  if (w.cols != in.cols || row_begin < 0 || row_end > w.rows || row_begin > row_end ||
      row_begin % unit != 0 || (row_end % unit != 0 && row_end != w.rows)) {
    fail("matvec_rows: rows [", row_begin, ", ", row_end, ") of a ", w.rows, " x ", w.cols,
         " matrix for an input of ", in.cols, " values (rows in whole units of ", unit, ")");
  }
  if (row_begin == row_end) return;
  if (w.cols == 0) {
    std::fill(y, y + (row_end - row_begin), 0.0f);
    return;
  }
  const TypeKernels* tk = find_type_kernels(isa_kernels(active_isa()), w.type);
  if (tk != nullptr && tk->quant_matvec != nullptr) {
    const int form = kernels_internal::uses_q8_K_activations(w.type) ? 1 : 0;
    if (!in.have[form]) fail("matvec_rows: the input was not prepared for ", type_label(w.type));
    tk->quant_matvec(w, in.acts[form], y, row_begin, row_end);
    return;
  }
  if (tk == nullptr || tk->matvec == nullptr) {
    fail("matmul: no kernel for weight type ", type_label(w.type));
  }
  tk->matvec(w, in.x, y, row_begin, row_end);
}

void matmul_reference(const WeightMatrix& weights, const float* x, int64_t n, float* y) {
  WeightMatrix w = weights;
  w.row_bytes = checked_row_bytes(weights, n);
  const TypeKernels* tk = find_type_kernels(tables().registered[0], w.type);
  if (tk == nullptr || tk->to_f32 == nullptr) {
    fail("matmul_reference: no kernel for weight type ", type_label(w.type));
  }
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    tk->to_f32(static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r) * w.row_bytes,
               row.data(), w.cols);
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * w.cols;
      double acc = 0;
      for (int64_t i = 0; i < w.cols; ++i) acc += static_cast<double>(row[i]) * xt[i];
      y[t * w.rows + r] = static_cast<float>(acc);
    }
  }
}

void convert_to_f16(const float* src, uint16_t* dst, int64_t n) {
  isa_kernels(active_isa()).f32_to_f16(src, dst, n);
}

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  if (dtype_traits(static_cast<uint32_t>(type)) == nullptr) {
    fail("dequantize_row: unknown ", type_label(type));
  }
  dtype_row_bytes(type, n);  // throws unless n is a whole number of blocks
  const TypeKernels* tk = find_type_kernels(isa_kernels(active_isa()), type);
  if (tk == nullptr || tk->to_f32 == nullptr) {
    fail("dequantize_row: no conversion for weight type ", type_label(type));
  }
  if (n > 0) tk->to_f32(src, dst, n);
}

void dequantize_matrix_row(const WeightMatrix& w, int64_t row, float* dst) {
  if (row < 0 || row >= w.rows) fail("dequantize_matrix_row: row ", row, " of ", w.rows);
  const auto* base = static_cast<const uint8_t*>(w.data);
  if (!is_x16_layout(w.type)) {
    dequantize_row(w.type, base + static_cast<size_t>(row) * w.row_bytes, dst, w.cols);
    return;
  }
  // One block position of the 16 rows at a time, back in row-major form.
  const DType type = x16_row_major(w.type);
  const DTypeTraits& traits = dtype_traits(type);
  constexpr size_t kMaxBlockBytes = sizeof(BlockQ4_K);
  static_assert(sizeof(BlockQ8_0) <= kMaxBlockBytes && sizeof(BlockQ5_0) <= kMaxBlockBytes);
  alignas(16) uint8_t blocks[kX16Rows * kMaxBlockBytes];
  const int64_t lane = row % kX16Rows;
  const uint8_t* group = base + static_cast<size_t>(row - lane) * w.row_bytes;
  const size_t group_block_bytes = kX16Rows * traits.block_bytes;
  for (int64_t b = 0; b < w.cols / traits.block_size; ++b) {
    deinterleave_x16(w.type, group + b * group_block_bytes, traits.block_size, blocks);
    dequantize_row(type, blocks + lane * traits.block_bytes, dst + b * traits.block_size,
                   traits.block_size);
  }
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kNeon:
      return "neon";
    case Isa::kNeonDotprod:
      return "neon-dotprod";
    case Isa::kNeonI8mm:
      return "neon-i8mm";
  }
  return "unknown";
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::kScalar:
      return true;
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx2:
      return f.avx2 && f.fma && f.f16c;
    case Isa::kAvx512:
      // Falls back to the AVX2 kernels for types it lacks, so it needs those too.
      return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl;
#endif
#if defined(__aarch64__)
    case Isa::kNeon:
      return f.neon;
    case Isa::kNeonDotprod:
      return f.neon && f.dotprod;
    case Isa::kNeonI8mm:
      // Falls back to the dotprod kernels for everything but the prefill GEMM.
      return f.neon && f.dotprod && f.i8mm;
#endif
    default:
      return false;
  }
}

bool isa_from_name(const std::string& name, Isa* isa) {
  for (Isa candidate : kAllIsas) {
    if (name == isa_name(candidate)) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas) {
    if (isa_supported(isa)) out.push_back(isa);
  }
  return out;
}

Isa best_supported_isa() {
  for (int i = kIsaCount - 1; i >= 0; --i) {
    if (isa_supported(kAllIsas[i])) return kAllIsas[i];
  }
  return Isa::kScalar;
}

Isa active_isa() {
  return static_cast<Isa>(active_isa_slot().load(std::memory_order_relaxed));
}

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) fail("instruction set ", isa_name(isa), " is not supported by this CPU");
  active_isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace edgelm
