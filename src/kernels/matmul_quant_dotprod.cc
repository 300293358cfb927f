// NEON + dot product (ARMv8.2 vdotq_s32) integer kernels for quantized
// weights, see matmul_quant_neon.h. Only reached when the CPU has dotprod
// (isa_supported(Isa::kNeonDotprod)).
#define EDGELM_QUANT_DOTPROD 1
#include "kernels/matmul_quant_neon.h"
// After matmul_quant_neon.h, whose block unpacking it reuses.
#include "kernels/matmul_quant_gemm_neon.h"

namespace edgelm::kernels_internal {

void register_quant_dotprod_kernels(IsaKernels* table) {
  register_quant_neon_common(table);
  register_quant_gemm_neon(table);
}

}  // namespace edgelm::kernels_internal
