// AVX2 integer kernels for quantized weights (maddubs + madd); the code is
// shared with the AVX-512 VNNI file, see matmul_quant_x86.h.
#define EDGELM_QUANT_VNNI 0
// 16 vector registers: tiles of 1 row x 4 tokens for prefill.
#define EDGELM_QUANT_PREFILL_TOKENS 4
#include "kernels/matmul_quant_x86.h"
// After matmul_quant_x86.h, whose block unpacking it reuses.
#include "kernels/matmul_quant_gemm_avx2.h"

namespace edgelm::kernels_internal {

void register_quant_avx2_kernels(IsaKernels* table) {
  register_quant_x86(table);
  register_quant_gemm_avx2(table);
}

}  // namespace edgelm::kernels_internal
