// What the CPU we run on can do, read once (cpuid + xgetbv on x86, AT_HWCAP and
// AT_HWCAP2 on ARM64). Only features the kernels use are listed.
#pragma once

namespace edgelm {

struct CpuFeatures {
  // x86-64. The AVX bits are only set when the OS also saves the registers.
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  // Vendor and display family (family + extended family; AMD: 0x19 = Zen 3/4,
  // 0x1a = Zen 5): pick between kernels tuned per core where what is cheap differs.
  bool intel = false;  // GenuineIntel
  bool amd = false;    // AuthenticAMD
  int family = 0;
  // ARM64.
  bool neon = false;
  bool dotprod = false;
  bool fp16 = false;
  bool i8mm = false;  // int8 matrix multiply (smmla), AT_HWCAP2
};

const CpuFeatures& cpu_features();

}  // namespace edgelm
