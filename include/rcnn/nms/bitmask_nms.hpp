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

#include "../types.hpp"
#include "greedy_nms.hpp"

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

}  // namespace detail

/// Scratch of `BitmaskNms`, grown to the largest input seen and then reused.
struct BitmaskNmsWorkspace {
  std::vector<int> order;               ///< visiting order (sorted indices)
  std::vector<float> x1, y1, x2, y2;    ///< sorted boxes, SoA, padded to a multiple of 64
  std::vector<float> area;              ///< their areas (x2 - x1) * (y2 - y1)
  std::vector<std::uint64_t> removed;   ///< one bit per sorted box: suppressed
};

/// Bitmask NMS: the faster policy, output identical to `GreedyNms` (same keep list, same
/// order, NaN scores and degenerate boxes included; see GreedyNms for the semantics).
///
/// Algorithm: sort once (`detail::NmsScoreOrder`), copy the sorted boxes into padded SoA
/// arrays, then sweep the sorted boxes once. The suppression state is a bitmask (64 boxes
/// per word). When box i is kept, its IoU row against the sorted boxes from i's block on is
/// computed in blocks of 64 columns by a branch-free SoA loop (the compiler vectorises it;
/// each lane does the kernel's float operations in the kernel's order, and the double
/// threshold test is replaced by the equivalent float test against
/// `detail::float_threshold_below`), turned into a 64-bit mask and OR-ed into the suppressed
/// bits. Blocks already fully suppressed are skipped. This is the classic bitmask scheme
/// with the row masks computed lazily, only for kept rows, and consumed at once, so no
/// N x N/64 mask matrix is stored and rows of suppressed boxes are never computed. Bits
/// for columns at or before i, or beyond N, may be set; they are never read again.
///
/// Cost: O(N log N) sort + O(K * N / 2) vectorised IoUs (K = boxes kept), O(N) scratch.
/// No heap allocation once the workspace has grown to the largest N seen.
/// Thread-safety: stateful (mutable workspace): use one instance per thread.
struct BitmaskNms {
  mutable BitmaskNmsWorkspace ws{};

  void operator()(std::span<const Box> boxes, std::span<const float> scores,
                  double iou_threshold, std::vector<int>& keep) const {
    detail::check_nms_inputs(boxes, scores, "BitmaskNms");
    keep.clear();
    const std::size_t n = boxes.size();
    if (n == 0) return;
    keep.reserve(n);
    constexpr std::size_t kBlock = 64;
    const std::size_t nblocks = (n + kBlock - 1) / kBlock;
    const std::size_t padded = nblocks * kBlock;

    std::vector<int>& order = ws.order;
    order.resize(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), detail::NmsScoreOrder{scores.data()});

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

    alignas(64) std::uint8_t flags[kBlock];
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t bi = i / kBlock;
      if ((removed[bi] >> (i % kBlock)) & 1u) continue;
      keep.push_back(order[i]);
      const float ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
      for (std::size_t b = bi; b < nblocks; ++b) {
        if (removed[b] == ~std::uint64_t(0)) continue;
        const std::size_t base = b * kBlock;
        for (std::size_t l = 0; l < kBlock; ++l) {
          const std::size_t j = base + l;
          const float xx1 = (ix1 < x1[j]) ? x1[j] : ix1;  // std::max(ix1, x1[j])
          const float yy1 = (iy1 < y1[j]) ? y1[j] : iy1;
          const float xx2 = (x2[j] < ix2) ? x2[j] : ix2;  // std::min(ix2, x2[j])
          const float yy2 = (y2[j] < iy2) ? y2[j] : iy2;
          const float dw = xx2 - xx1, dh = yy2 - yy1;
          const float w = (0.f < dw) ? dw : 0.f;  // std::max(0.f, dw)
          const float h = (0.f < dh) ? dh : 0.f;
          const float inter = w * h;
          const float ovr = inter / (iarea + area[j] - inter);
          flags[l] = std::uint8_t(ovr > thr);
        }
        std::uint64_t mask = 0;
        for (std::size_t g = 0; g < kBlock / 8; ++g)
          mask |= detail::pack_flag_bytes(flags + 8 * g) << (8 * g);
        removed[b] |= mask;
      }
    }
  }
};

}  // namespace rcnn
