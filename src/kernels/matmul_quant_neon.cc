// NEON (ARMv8.0) integer kernels for quantized weights: vmull_s8 + vpadalq_s16
// dot products, see matmul_quant_neon.h.
#define EDGELM_QUANT_DOTPROD 0
#include "kernels/matmul_quant_neon.h"

namespace edgelm::kernels_internal {

void register_quant_neon_kernels(IsaKernels* table) {
  register_quant_neon_common(table);
}

}  // namespace edgelm::kernels_internal
