// Test helper for running a kernel test under every instruction set this CPU
// supports (supported_isas()) and restoring the start-up one (kernels_tests only).
#pragma once

#include "kernels/matmul.h"

namespace edgelm {

// Restores the start-up ISA when a test ends.
class IsaGuard {
 public:
  IsaGuard() : saved_(active_isa()) {}
  ~IsaGuard() { set_active_isa(saved_); }
  IsaGuard(const IsaGuard&) = delete;
  IsaGuard& operator=(const IsaGuard&) = delete;

 private:
  Isa saved_;
};

}  // namespace edgelm
