#pragma once
/// \file bitmask_nms.hpp
/// Blocked, bitmask non-maximum suppression with output identical to `GreedyNms`.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <span>
#include <vector>

#include "../detail/simd_isa.hpp"
#include "../types.hpp"
#include "greedy_nms.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define RCNN_NMS_X86_KERNELS 1
#include <immintrin.h>
#endif

namespace rcnn {

namespace detail {

/// The largest float `t` with `double(t) <= threshold` (NaN for a NaN threshold). For every
/// float x (NaN included): `x > t` exactly when `double(x) > threshold`, so the kernel's
/// double comparison can run as a float comparison in vector lanes.
inline float float_threshold_below(double threshold) {
  if (std::isnan(threshold)) return float(threshold);
  float t = float(threshold);
  if (double(t) > threshold) t = std::nextafter(t, -INFINITY);
  return t;
}

/// Packs 8 bytes that are each 0 or 1 (little-endian lane order) into the low 8 bits.
inline std::uint64_t pack_flag_bytes(const std::uint8_t* flags) {
  std::uint64_t v;
  std::memcpy(&v, flags, 8);
  return (v * 0x0102040810204080ull) >> 56;
}

/// One kept box's suppression row: its coordinates and area against the sorted SoA boxes.
struct NmsRow {
  float x1, y1, x2, y2, area;
};
struct NmsColumns {
  const float *x1, *y1, *x2, *y2, *area;  ///< sorted boxes, padded to a multiple of 64
};

/// Sets in `removed[b]`, for blocks b0 <= b < nblocks not already fully suppressed, the bits
/// of the boxes that `row` suppresses: IoU in float32 in the kernel's order, compared with
/// `thr` (see float_threshold_below). One function per instruction set below; each lane does
/// the same operations, so every kernel gives the same bits.
using NmsRowKernel = void (*)(const NmsRow& row, const NmsColumns& c, std::uint64_t* removed,
                              std::size_t b0, std::size_t nblocks, float thr);

/// Bit l set when box (ix1, iy1, ix2, iy2) suppresses box l of a block of 64: the kernel's
/// IoU in float32, in its order, compared with `thr` (see float_threshold_below). SSE2
/// where available, else scalar.
inline std::uint64_t nms_block_mask_baseline(float ix1, float iy1, float ix2, float iy2,
                                             float iarea, const float* x1, const float* y1,
                                             const float* x2, const float* y2,
                                             const float* area, float thr) {
#if defined(__SSE2__)
  // maxps(a, b) is `(a > b) ? a : b` and minps(a, b) `(a < b) ? a : b` (the second operand
  // when either is NaN): exactly the kernel's std::max(i, j) = (i < j) ? j : i and
  // std::min(i, j) = (j < i) ? j : i with the arguments in this order.
  const __m128 vx1 = _mm_set1_ps(ix1), vy1 = _mm_set1_ps(iy1), vx2 = _mm_set1_ps(ix2),
               vy2 = _mm_set1_ps(iy2), va = _mm_set1_ps(iarea), vt = _mm_set1_ps(thr),
               zero = _mm_setzero_ps();
  std::uint64_t mask = 0;
  for (std::size_t l = 0; l < 64; l += 4) {
    const __m128 xx1 = _mm_max_ps(_mm_loadu_ps(x1 + l), vx1);
    const __m128 yy1 = _mm_max_ps(_mm_loadu_ps(y1 + l), vy1);
    const __m128 xx2 = _mm_min_ps(_mm_loadu_ps(x2 + l), vx2);
    const __m128 yy2 = _mm_min_ps(_mm_loadu_ps(y2 + l), vy2);
    const __m128 w = _mm_max_ps(_mm_sub_ps(xx2, xx1), zero);
    const __m128 h = _mm_max_ps(_mm_sub_ps(yy2, yy1), zero);
    const __m128 inter = _mm_mul_ps(w, h);
    const __m128 ovr =
        _mm_div_ps(inter, _mm_sub_ps(_mm_add_ps(va, _mm_loadu_ps(area + l)), inter));
    mask |= std::uint64_t(_mm_movemask_ps(_mm_cmpgt_ps(ovr, vt))) << l;
  }
  return mask;
#else
  alignas(64) std::uint8_t flags[64];
  for (std::size_t l = 0; l < 64; ++l) {
    const float xx1 = (ix1 < x1[l]) ? x1[l] : ix1;  // std::max(ix1, x1[l])
    const float yy1 = (iy1 < y1[l]) ? y1[l] : iy1;
    const float xx2 = (x2[l] < ix2) ? x2[l] : ix2;  // std::min(ix2, x2[l])
    const float yy2 = (y2[l] < iy2) ? y2[l] : iy2;
    const float dw = xx2 - xx1, dh = yy2 - yy1;
    const float w = (0.f < dw) ? dw : 0.f;  // std::max(0.f, dw)
    const float h = (0.f < dh) ? dh : 0.f;
    const float inter = w * h;
    const float ovr = inter / (iarea + area[l] - inter);
    flags[l] = std::uint8_t(ovr > thr);
  }
  std::uint64_t mask = 0;
  for (std::size_t g = 0; g < 8; ++g)
    mask |= detail::pack_flag_bytes(flags + 8 * g) << (8 * g);
  return mask;
#endif
}

/// The baseline `NmsRowKernel`: `nms_block_mask_baseline` per block.
inline void nms_row_baseline(const NmsRow& r, const NmsColumns& c, std::uint64_t* removed,
                             std::size_t b0, std::size_t nblocks, float thr) {
  for (std::size_t b = b0; b < nblocks; ++b) {
    if (removed[b] == ~std::uint64_t(0)) continue;
    const std::size_t k = b * 64;
    removed[b] |= nms_block_mask_baseline(r.x1, r.y1, r.x2, r.y2, r.area, c.x1 + k, c.y1 + k,
                                          c.x2 + k, c.y2 + k, c.area + k, thr);
  }
}

#if defined(RCNN_NMS_X86_KERNELS)
// The 256- and 512-bit kernels: vmaxps / vminps have the SSE semantics the baseline kernel
// relies on (the second operand when either is NaN or both are zeros), so each lane
// computes exactly what the baseline's does. A pair with no overlap (intersection 0 or
// NaN) has IoU 0, -0 or NaN, never above a threshold >= 0: when no lane of a vector
// overlaps, its division is skipped (exact, for thr >= 0 only).
__attribute__((target("avx512f"))) inline void nms_row_avx512(const NmsRow& r, const NmsColumns& c,
                                                             std::uint64_t* removed,
                                                             std::size_t b0, std::size_t nblocks,
                                                             float thr) {
  const __m512 vx1 = _mm512_set1_ps(r.x1), vy1 = _mm512_set1_ps(r.y1),
               vx2 = _mm512_set1_ps(r.x2), vy2 = _mm512_set1_ps(r.y2),
               va = _mm512_set1_ps(r.area), vt = _mm512_set1_ps(thr), zero = _mm512_setzero_ps();
  const bool skip_disjoint = thr >= 0.f;
  const __mmask16 all = 0xFFFF;  // maskz max / min: the unmasked intrinsics trip GCC 12's
                                 // -Wmaybe-uninitialized (_mm512_undefined_ps)
  for (std::size_t b = b0; b < nblocks; ++b) {
    if (removed[b] == ~std::uint64_t(0)) continue;
    std::uint64_t mask = 0;
    for (std::size_t l = 0; l < 64; l += 16) {
      const std::size_t k = b * 64 + l;
      const __m512 xx1 = _mm512_maskz_max_ps(all, _mm512_loadu_ps(c.x1 + k), vx1);
      const __m512 yy1 = _mm512_maskz_max_ps(all, _mm512_loadu_ps(c.y1 + k), vy1);
      const __m512 xx2 = _mm512_maskz_min_ps(all, _mm512_loadu_ps(c.x2 + k), vx2);
      const __m512 yy2 = _mm512_maskz_min_ps(all, _mm512_loadu_ps(c.y2 + k), vy2);
      const __m512 w = _mm512_maskz_max_ps(all, _mm512_sub_ps(xx2, xx1), zero);
      const __m512 h = _mm512_maskz_max_ps(all, _mm512_sub_ps(yy2, yy1), zero);
      const __m512 inter = _mm512_mul_ps(w, h);
      if (skip_disjoint && _mm512_cmp_ps_mask(inter, zero, _CMP_GT_OQ) == 0) continue;
      const __m512 uni = _mm512_sub_ps(_mm512_add_ps(va, _mm512_loadu_ps(c.area + k)), inter);
      const __m512 ovr = _mm512_div_ps(inter, uni);
      mask |= std::uint64_t(_mm512_cmp_ps_mask(ovr, vt, _CMP_GT_OQ)) << l;
    }
    removed[b] |= mask;
  }
}
__attribute__((target("avx2"))) inline void nms_row_avx2(const NmsRow& r, const NmsColumns& c,
                                                        std::uint64_t* removed, std::size_t b0,
                                                        std::size_t nblocks, float thr) {
  const __m256 vx1 = _mm256_set1_ps(r.x1), vy1 = _mm256_set1_ps(r.y1),
               vx2 = _mm256_set1_ps(r.x2), vy2 = _mm256_set1_ps(r.y2),
               va = _mm256_set1_ps(r.area), vt = _mm256_set1_ps(thr), zero = _mm256_setzero_ps();
  const bool skip_disjoint = thr >= 0.f;
  for (std::size_t b = b0; b < nblocks; ++b) {
    if (removed[b] == ~std::uint64_t(0)) continue;
    std::uint64_t mask = 0;
    for (std::size_t l = 0; l < 64; l += 8) {
      const std::size_t k = b * 64 + l;
      const __m256 xx1 = _mm256_max_ps(_mm256_loadu_ps(c.x1 + k), vx1);
      const __m256 yy1 = _mm256_max_ps(_mm256_loadu_ps(c.y1 + k), vy1);
      const __m256 xx2 = _mm256_min_ps(_mm256_loadu_ps(c.x2 + k), vx2);
      const __m256 yy2 = _mm256_min_ps(_mm256_loadu_ps(c.y2 + k), vy2);
      const __m256 w = _mm256_max_ps(_mm256_sub_ps(xx2, xx1), zero);
      const __m256 h = _mm256_max_ps(_mm256_sub_ps(yy2, yy1), zero);
      const __m256 inter = _mm256_mul_ps(w, h);
      if (skip_disjoint && _mm256_movemask_ps(_mm256_cmp_ps(inter, zero, _CMP_GT_OQ)) == 0)
        continue;
      const __m256 uni = _mm256_sub_ps(_mm256_add_ps(va, _mm256_loadu_ps(c.area + k)), inter);
      const __m256 ovr = _mm256_div_ps(inter, uni);
      mask |= std::uint64_t(unsigned(_mm256_movemask_ps(_mm256_cmp_ps(ovr, vt, _CMP_GT_OQ)))) << l;
    }
    removed[b] |= mask;
  }
}
#endif

/// The row kernel of a resolved instruction set.
inline NmsRowKernel nms_row_kernel(SimdIsa isa) {
#if defined(RCNN_NMS_X86_KERNELS)
  if (isa == SimdIsa::avx512) return &nms_row_avx512;
  if (isa == SimdIsa::avx2) return &nms_row_avx2;
#endif
  (void)isa;
  return &nms_row_baseline;
}

}  // namespace detail

/// Scratch of `BitmaskNms`, grown to the largest input seen and then reused.
struct BitmaskNmsWorkspace {
  std::vector<std::uint64_t> keys;      ///< sort keys (detail::nms_sort_key)
  std::vector<int> order;               ///< visiting order (sorted indices)
  std::vector<float> x1, y1, x2, y2;    ///< sorted boxes, SoA, padded to a multiple of 64
  std::vector<float> area;              ///< their areas (x2 - x1) * (y2 - y1)
  std::vector<std::uint64_t> removed;   ///< one bit per sorted box: suppressed
};

/// Bitmask NMS: the faster policy, output identical to `GreedyNms` (same keep list, same
/// order, NaN scores and degenerate boxes included; see GreedyNms for the semantics).
///
/// Algorithm: sort once (`detail::NmsScoreOrder`, as 64-bit integer keys:
/// `detail::nms_sort_key`), copy the sorted boxes into padded SoA arrays, then sweep the
/// sorted boxes once. The suppression state is a bitmask (64 boxes per word). When box i is
/// kept, its IoU row against the sorted boxes from i's block on is computed in blocks of 64
/// columns by a branch-free SoA loop (AVX-512: 16 lanes, AVX2: 8, chosen from CPUID at run
/// time; else SSE2, 4; else a loop the compiler vectorises; each lane does the kernel's
/// float operations in the kernel's order, and the double threshold test is replaced by
/// the equivalent float test against `detail::float_threshold_below`), giving a 64-bit
/// mask that is OR-ed into the suppressed bits. Blocks already fully suppressed are
/// skipped, and so is the division of a vector of boxes none of which overlaps box i (the
/// AVX kernels; exact for thresholds >= 0). This is the classic bitmask scheme with the row
/// masks computed lazily, only for kept rows, and consumed at once, so no N x N/64 mask
/// matrix is stored and rows of suppressed boxes are never computed. Bits for columns at
/// or before i, or beyond N, may be set; they are never read again.
///
/// Cost: O(N log N) sort + O(K * N / 2) vectorised IoUs (K = boxes kept), O(N) scratch.
/// No heap allocation once the workspace has grown to the largest N seen.
/// Thread-safety: stateful (owns its workspace): use one instance per thread.
struct BitmaskNms {
  BitmaskNmsWorkspace ws{};
  /// Instruction set of the IoU rows (default: the widest the CPU has); every one gives the
  /// same result. A forced one the CPU lacks is an rcnn::Error.
  SimdIsa isa = SimdIsa::automatic;

  /// The instruction set calls run with (`isa` resolved).
  SimdIsa kernel_isa() const { return checked_simd_isa(isa, "BitmaskNms"); }

  /// Capacity for inputs of up to `n` boxes (later calls with at most n boxes allocate
  /// nothing; `keep` is the caller's).
  void reserve(std::size_t n) {
    const std::size_t padded = (n + kBlock - 1) / kBlock * kBlock;
    ws.keys.reserve(n);
    ws.order.reserve(n);
    for (auto* v : {&ws.x1, &ws.y1, &ws.x2, &ws.y2, &ws.area}) v->reserve(padded);
    ws.removed.reserve(padded / kBlock);
  }

  void operator()(std::span<const Box> boxes, std::span<const float> scores,
                  double iou_threshold, std::vector<int>& keep) {
    detail::check_nms_inputs(boxes, scores, "BitmaskNms");
    const detail::NmsRowKernel row_kernel = detail::nms_row_kernel(kernel_isa());
    keep.clear();
    const std::size_t n = boxes.size();
    if (n == 0) return;
    keep.reserve(n);
    const std::size_t nblocks = (n + kBlock - 1) / kBlock;
    const std::size_t padded = nblocks * kBlock;

    std::vector<int>& order = ws.order;
    order.resize(n);
    detail::nms_sort(scores.data(), n, ws.keys, order.data());

    ws.x1.resize(padded);
    ws.y1.resize(padded);
    ws.x2.resize(padded);
    ws.y2.resize(padded);
    ws.area.resize(padded);
    float* __restrict x1 = ws.x1.data();
    float* __restrict y1 = ws.y1.data();
    float* __restrict x2 = ws.x2.data();
    float* __restrict y2 = ws.y2.data();
    float* __restrict area = ws.area.data();
    for (std::size_t k = 0; k < n; ++k) {
      const Box& b = boxes[std::size_t(order[k])];
      x1[k] = b.x1;
      y1[k] = b.y1;
      x2[k] = b.x2;
      y2[k] = b.y2;
      area[k] = b.area();
    }
    // Padding lanes: zero boxes (IoU 0/0 = NaN, never suppress; their bits are never read).
    for (std::size_t k = n; k < padded; ++k) x1[k] = y1[k] = x2[k] = y2[k] = area[k] = 0.f;

    ws.removed.assign(nblocks, 0);
    std::uint64_t* removed = ws.removed.data();
    const float thr = detail::float_threshold_below(iou_threshold);

    const detail::NmsColumns columns{x1, y1, x2, y2, area};
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t bi = i / kBlock;
      if ((removed[bi] >> (i % kBlock)) & 1u) continue;
      keep.push_back(order[i]);
      row_kernel({x1[i], y1[i], x2[i], y2[i], area[i]}, columns, removed, bi, nblocks, thr);
    }
  }

 private:
  static constexpr std::size_t kBlock = 64;
};

}  // namespace rcnn
