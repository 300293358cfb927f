// AVX-512 VNNI integer kernels for quantized weights: the AVX2 code with
// vpdpbusd / vpdpwssd (one instruction for maddubs + madd + add) and 32
// vector registers, see matmul_quant_x86.h.
#define EDGELM_QUANT_VNNI 1
#define EDGELM_QUANT_PREFILL_TOKENS 8
#include "kernels/cpu_features.h"
#include "kernels/matmul_quant_x86.h"
// After matmul_quant_x86.h, whose block unpacking it reuses.
#include "kernels/matmul_quant_gemm_x86.h"

namespace edgelm::kernels_internal {

void register_quant_avx512_kernels(IsaKernels* table) {
  // Without VNNI (Skylake-X) the AVX2 kernels are used instead.
  if (!cpu_features().avx512vnni) return;
  register_quant_x86(table);
  register_quant_gemm_x86(table);
}

}  // namespace edgelm::kernels_internal
