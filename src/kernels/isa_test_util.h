// Test helper for running a kernel test under every instruction set this CPU
// supports (supported_isas()) and restoring the start-up one (kernels_tests only).
#pragma once

#include "kernels/matmul.h"

namespace edgelm {

// Restores a process-wide kernel setting (read with Get, written with Set)
// when a test ends.
template <typename T, T (*Get)(), void (*Set)(T)>
class SettingGuard {
 public:
  SettingGuard() : saved_(Get()) {}
  ~SettingGuard() { Set(saved_); }
  SettingGuard(const SettingGuard&) = delete;
  SettingGuard& operator=(const SettingGuard&) = delete;

 private:
  T saved_;
};

// The start-up ISA, and the interleaved kernels' prefetch mode.
using IsaGuard = SettingGuard<Isa, active_isa, set_active_isa>;
using StreamPrefetchGuard = SettingGuard<StreamPrefetch, stream_prefetch, set_stream_prefetch>;

}  // namespace edgelm
