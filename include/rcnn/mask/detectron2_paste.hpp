#pragma once
/// \file detectron2_paste.hpp
/// Detectron2 v0.6's `paste_masks_in_image` (layers/mask_ops.py, CPU path): each M x M
/// probability mask is stretched over its float box with `F.grid_sample` (bilinear, zero
/// padding, align_corners=False) and thresholded. Bit-exact against Detectron2 v0.6 on
/// torch 1.13.1 (docs/explanation/masks.md; tests/unit/test_masks.cpp).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../types.hpp"
#include "../stage_io.hpp"
#include "mask_types.hpp"

namespace rcnn {

namespace detail {

/// Half-open pixel window `[x0, x1) x [y0, y1)` inside the image (empty when x1 <= x0 or
/// y1 <= y0).
struct PasteWindow {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  int width() const { return std::max(x1 - x0, 0); }
  int height() const { return std::max(y1 - y0, 0); }
  bool empty() const { return x1 <= x0 || y1 <= y0; }
};

/// `v` clamped to [0, hi]; NaN gives 0.
inline float clamp_to_image(float v, float hi) { return v >= 0.f ? (v <= hi ? v : hi) : 0.f; }

/// Detectron2's window of one box (`_do_paste_mask` with skip_empty, one box per chunk):
/// `[max(floor(x0) - 1, 0), min(ceil(x1) + 1, W))`, same for y, in float32 then int32.
/// Non-finite coordinates give an empty window.
inline PasteWindow detectron2_window(const Box& b, Size image) {
  const float W = float(std::max(image.width, 0)), H = float(std::max(image.height, 0));
  PasteWindow w;
  w.x0 = int(clamp_to_image(std::floor(b.x1) - 1.f, W));
  w.y0 = int(clamp_to_image(std::floor(b.y1) - 1.f, H));
  w.x1 = int(clamp_to_image(std::ceil(b.x2) + 1.f, W));
  w.y1 = int(clamp_to_image(std::ceil(b.y2) + 1.f, H));
  if (w.empty()) w.x1 = w.x0, w.y1 = w.y0;
  return w;
}

/// Grid coordinate of pixel `p` along one axis of the box `[lo, hi]`:
/// `((p + 0.5) - lo) / (hi - lo) * 2 - 1`, float32, one rounding per operation.
inline float detectron2_grid(int p, float lo, float hi) {
  return ((float(p) + 0.5f) - lo) / (hi - lo) * 2.f - 1.f;
}

/// grid_sample's unnormalisation (align_corners=False): `(g + 1) * (M / 2) - 0.5`, with one
/// FMA as torch's AVX2 kernel is compiled (`Fma`) or rounded twice.
template <bool Fma>
inline float detectron2_unnormalize(float g, float half) {
  if constexpr (Fma)
    return std::fma(g + 1.f, half, -0.5f);
  else
    return (g + 1.f) * half - 0.5f;
}

/// Bilinear blend of the four neighbours with weights nw, ne, sw, se:
/// `fma(p11, se, fma(p10, sw, fma(p01, ne, p00 * nw)))` (`Fma`) or
/// `((p00 * nw + p01 * ne) + p10 * sw) + p11 * se`.
template <bool Fma>
inline float detectron2_blend(float p00, float p01, float p10, float p11, float nw, float ne,
                              float sw, float se) {
  if constexpr (Fma)
    return std::fma(p11, se, std::fma(p10, sw, std::fma(p01, ne, p00 * nw)));
  else
    return ((p00 * nw + p01 * ne) + p10 * sw) + p11 * se;
}

/// The soft pasted value at image pixel (x, y) of the M x M mask `P` stretched over box `b`,
/// computed per pixel exactly as torch's grid_sample kernel does (the plain reference form):
/// u, v from the grid; `j = floor(u)`, `i = floor(v)`; weights `(1 - b)(1 - a)`, ...; cells
/// outside `0..M-1` read 0. A non-finite u or v gives NaN (as in torch: NaN weights).
template <bool Fma>
inline float detectron2_paste_value(const float* P, int M, const Box& b, int x, int y) {
  const float half = float(M) / 2.f;
  const float u = detectron2_unnormalize<Fma>(detectron2_grid(x, b.x1, b.x2), half);
  const float v = detectron2_unnormalize<Fma>(detectron2_grid(y, b.y1, b.y2), half);
  const float fx = std::floor(u), fy = std::floor(v);
  const float lx = u - fx, hx = 1.f - lx;  // torch: w = x - floor(x), e = 1 - w
  const float ly = v - fy, hy = 1.f - ly;  //        n = y - floor(y), s = 1 - n
  const float nw = hy * hx, ne = hy * lx, sw = ly * hx, se = ly * lx;
  const float m = float(M);
  const auto at = [&](float r, float c) -> float {
    if (!(r >= 0.f && r < m && c >= 0.f && c < m)) return 0.f;  // zero padding (NaN: outside)
    return P[std::size_t(r) * std::size_t(M) + std::size_t(c)];
  };
  return detectron2_blend<Fma>(at(fy, fx), at(fy, fx + 1.f), at(fy + 1.f, fx),
                               at(fy + 1.f, fx + 1.f), nw, ne, sw, se);
}

/// Pastes one mask, per pixel (the reference form). `Fma`: see `detectron2_unnormalize`.
template <bool Fma>
inline void detectron2_paste_one(const float* P, int M, const Box& b, Size image,
                                 float threshold, InstanceMask& out) {
  const PasteWindow w = detectron2_window(b, image);
  out.reset(w.x0, w.y0, w.width(), w.height());
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      out.bits[std::size_t(y) * std::size_t(out.width) + std::size_t(x)] =
          detectron2_paste_value<Fma>(P, M, b, w.x0 + x, w.y0 + y) >= threshold ? 1 : 0;
}

// ---- Separable form (OmpDetectron2Paste): the same values from per-axis tables. ----

/// One axis of a pixel's sample, against the mask zero-padded to (M + 2) x (M + 2): `p` is
/// the padded index of the low cell (`floor(u) + 1`), `l = u - floor(u)`, `h = 1 - l`.
/// A pixel whose `floor(u)` is outside [-1, M - 1] (or u non-finite) reads no mask cell: it
/// gets p = 0 and l = h = 0, i.e. value 0 from the padding, below any threshold > 0, like
/// the reference's 0 (or NaN).
struct D2AxisTap {
  int p = 0;
  float l = 0.f, h = 0.f;
  bool reads_mask = false;
};

template <bool Fma>
inline D2AxisTap detectron2_axis_tap(int pixel, float lo, float hi, int M) {
  const float u = detectron2_unnormalize<Fma>(detectron2_grid(pixel, lo, hi), float(M) / 2.f);
  const float f = std::floor(u);
  D2AxisTap t;
  if (!(f >= -1.f && f <= float(M - 1))) return t;
  t.p = int(f) + 1;
  t.l = u - f;
  t.h = 1.f - t.l;
  t.reads_mask = true;
  return t;
}

/// `src` (M x M) into `dst` ((M + 2) x (M + 2)) with a zero border, as `F.pad(mask, 1)`.
inline void pad_mask(const float* src, int M, float* dst) {
  const std::size_t S = std::size_t(M) + 2;
  std::fill(dst, dst + S * S, 0.f);
  for (int r = 0; r < M; ++r)
    std::copy_n(src + std::size_t(r) * std::size_t(M), std::size_t(M),
                dst + (std::size_t(r) + 1) * S + 1);
}

/// One output row of the separable form: `out[x] = value >= threshold` for the row tap `ry`
/// and the column taps `cols[0..n)` on the padded mask `padded` (row stride M + 2).
template <bool Fma>
[[gnu::always_inline]] inline void detectron2_row_impl(const float* padded, std::size_t stride,
                                                       const D2AxisTap& ry,
                                                       const D2AxisTap* cols, int n,
                                                       float threshold, std::uint8_t* out) {
  if (!ry.reads_mask) {
    std::fill(out, out + n, std::uint8_t{0});
    return;
  }
  const float* r0 = padded + std::size_t(ry.p) * stride;
  const float* r1 = r0 + stride;
  for (int x = 0; x < n; ++x) {
    const D2AxisTap& c = cols[x];
    const float nw = ry.h * c.h, ne = ry.h * c.l, sw = ry.l * c.h, se = ry.l * c.l;
    const float v = detectron2_blend<Fma>(r0[c.p], r0[c.p + 1], r1[c.p], r1[c.p + 1], nw, ne,
                                          sw, se);
    out[x] = v >= threshold ? 1 : 0;
  }
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__FMA__)
#define RCNN_D2_PASTE_FMA_DISPATCH 1
/// The FMA row compiled for CPUs with the FMA instruction (same results: an fma is exact;
/// without it `std::fma` is a library call on baseline x86-64 builds).
__attribute__((target("fma"))) inline void detectron2_row_fma_native(
    const float* padded, std::size_t stride, const D2AxisTap& ry, const D2AxisTap* cols, int n,
    float threshold, std::uint8_t* out) {
  detectron2_row_impl<true>(padded, stride, ry, cols, n, threshold, out);
}
inline bool detectron2_cpu_has_fma() {
  static const bool has = __builtin_cpu_supports("fma");
  return has;
}
#endif

template <bool Fma>
inline void detectron2_row(const float* padded, std::size_t stride, const D2AxisTap& ry,
                           const D2AxisTap* cols, int n, float threshold, std::uint8_t* out) {
#ifdef RCNN_D2_PASTE_FMA_DISPATCH
  if constexpr (Fma) {
    if (detectron2_cpu_has_fma()) {
      detectron2_row_fma_native(padded, stride, ry, cols, n, threshold, out);
      return;
    }
  }
#endif
  detectron2_row_impl<Fma>(padded, stride, ry, cols, n, threshold, out);
}

}  // namespace detail

/// Reference Detectron2 v0.6 mask pasting (`paste_masks_in_image`, threshold form, CPU).
///
/// For detection i with final box `boxes[i] = (x0, y0, x1, y1)` (original image frame,
/// float32, as Detectron2's `detector_postprocess` leaves it) and probabilities
/// `probs.mask(i)` (M x M), every pixel of the window
/// `[max(floor(x0) - 1, 0), min(ceil(x1) + 1, W)) x [max(floor(y0) - 1, 0), min(ceil(y1) + 1, H))`
/// gets `value >= threshold`, where value is the bilinear sample (cells outside the mask
/// read 0) at `u = (gx + 1) * M / 2 - 0.5`, `gx = ((x + 0.5) - x0) / (x1 - x0) * 2 - 1`
/// (float32, one rounding per operation, the unnormalisation and the blend with the FMAs of
/// torch's AVX2 grid_sample kernel: `detail::detectron2_paste_value<true>`). Pixels outside
/// the window are 0 (`out[i]`'s window is that window).
///
/// Degenerate boxes (Detectron2 drops empty boxes before pasting): zero width or height or
/// non-finite coordinates give NaN or 0 values, hence an empty mask, as in torch.
/// Pre: threshold finite and > 0 (Detectron2's `mask_threshold` 0.5). `out` is resized to
/// `probs.count`; its masks' buffers are reused.
/// Errors: rcnn::Error on a box / mask count mismatch or a bad threshold.
/// Cost: O(sum of window areas), evaluating every pixel independently (this is the plain
/// reference; OmpDetectron2Paste shares the per-axis work). Allocates only `out`'s buffers.
/// Thread-safe (stateless).
struct Detectron2PasteRef {
  static constexpr MaskHeadConfig::Paste convention = MaskHeadConfig::Paste::detectron2;

  void reserve(const StageSizing&) {}  ///< stateless: the masks' buffers are the caller's

  void operator()(const MaskProbs& probs, std::span<const Box> boxes, Size image,
                  float threshold, std::vector<InstanceMask>& out) const {
    detail::check_paste_inputs(probs, boxes, image, threshold, "Detectron2PasteRef");
    out.resize(std::size_t(probs.count));
    for (int i = 0; i < probs.count; ++i)
      detail::detectron2_paste_one<true>(probs.mask(i), probs.size, boxes[std::size_t(i)],
                                         image, threshold, out[std::size_t(i)]);
  }
};

}  // namespace rcnn
