#pragma once
/// \file simd_isa.hpp
/// The x86 instruction sets the vector kernels are built for (`SimdIsa`) and the run-time
/// choice among them (CPUID through `__builtin_cpu_supports`, which also checks that the OS
/// saves the AVX / AVX-512 registers). Each kernel is compiled for every set with GCC /
/// Clang `target` attributes, so the default build runs on any x86-64 (rcnn/roi_align/
/// simd_roi_align.hpp explains the scheme). No LibTorch.

#include <cstdint>
#include <string>

#include "../error.hpp"

namespace rcnn {

/// Instruction set of a vector kernel (SimdRoIAlign, BitmaskNms). `automatic`: the widest
/// one the CPU supports. `baseline`: 128-bit vectors of the compilation target (SSE2 on any
/// x86-64). `avx2`: 256-bit. `avx512`: 512-bit (AVX-512F).
enum class SimdIsa : std::uint8_t { automatic, baseline, avx2, avx512 };

inline const char* simd_isa_name(SimdIsa isa) {
  switch (isa) {
    case SimdIsa::baseline: return "baseline";
    case SimdIsa::avx2: return "avx2";
    case SimdIsa::avx512: return "avx512";
    default: return "automatic";
  }
}

/// Whether this CPU (and OS) can run `isa` (`automatic` and `baseline`: always).
inline bool simd_isa_supported(SimdIsa isa) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  static const bool avx512 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  if (isa == SimdIsa::avx2) return avx2;
  if (isa == SimdIsa::avx512) return avx512;
  return true;
#else
  return isa == SimdIsa::automatic || isa == SimdIsa::baseline;
#endif
}

/// `isa`, with `automatic` resolved to the widest supported one.
inline SimdIsa resolve_simd_isa(SimdIsa isa) {
  if (isa != SimdIsa::automatic) return isa;
  if (simd_isa_supported(SimdIsa::avx512)) return SimdIsa::avx512;
  if (simd_isa_supported(SimdIsa::avx2)) return SimdIsa::avx2;
  return SimdIsa::baseline;
}

/// `isa` resolved (`resolve_simd_isa`); an rcnn::Error naming `who` when the CPU lacks it
/// (a forced instruction set never becomes an illegal instruction).
inline SimdIsa checked_simd_isa(SimdIsa isa, const char* who) {
  if (!simd_isa_supported(isa))
    detail::fail(std::string(who) + ": instruction set " + simd_isa_name(isa) +
                 " is not supported by this CPU (widest supported: " +
                 simd_isa_name(resolve_simd_isa(SimdIsa::automatic)) + ")");
  return resolve_simd_isa(isa);
}

}  // namespace rcnn
