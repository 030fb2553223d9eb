#pragma once
/// \file torchvision_paste.hpp
/// torchvision 0.14's `roi_heads.paste_masks_in_image` (padding 1), thresholded: each M x M
/// probability mask is padded by one zero cell, its box expanded by (M + 2) / M and rounded
/// to integers, the padded mask resized to the integer box with
/// `F.interpolate(bilinear, align_corners=False)` and written into the image. Bit-exact
/// against torchvision 0.14.1 / torch 1.13.1 (docs/explanation/masks.md;
/// tests/unit/test_masks.cpp).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../preprocess/torch_resize.hpp"
#include "../types.hpp"
#include "detectron2_paste.hpp"  // detail::PasteWindow, detail::pad_mask
#include "../stage_io.hpp"
#include "mask_types.hpp"

namespace rcnn {

namespace detail {

/// A box expanded and converted as torchvision does, plus the part of it inside the image.
struct TorchvisionPasteBox {
  std::int64_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;  ///< inclusive integer box (int64)
  std::int64_t w = 1, h = 1;                    ///< resize target: max(x1 - x0 + 1, 1), ...
  PasteWindow window;                           ///< [x0, x1] x [y0, y1] clipped to the image
};

/// float32 -> int64 truncation toward zero (`.to(torch.int64)`); values beyond +-2^60 are
/// clamped there first (torch's conversion is undefined beyond the int64 range).
inline std::int64_t truncate_to_int64(float v) {
  constexpr float kLimit = 1152921504606846976.f;  // 2^60: x1 - x0 + 1 cannot overflow
  return std::int64_t(std::clamp(v, -kLimit, kLimit));
}

/// `expand_boxes(box, (M + 2) / M)` (float32: half sizes and centres times 0.5, half sizes
/// times float((M + 2) / M)), `.to(int64)`, then `paste_mask_in_image`'s sizes and window.
/// Non-finite coordinates give an empty window (torch's int64 conversion of NaN / inf is
/// undefined).
inline TorchvisionPasteBox torchvision_paste_box(const Box& b, int M, Size image) {
  TorchvisionPasteBox r;
  const float scale = float(double(M + 2) / double(M));
  float w_half = (b.x2 - b.x1) * 0.5f;
  float h_half = (b.y2 - b.y1) * 0.5f;
  const float x_c = (b.x2 + b.x1) * 0.5f;
  const float y_c = (b.y2 + b.y1) * 0.5f;
  w_half *= scale;
  h_half *= scale;
  const float e[4] = {x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half};
  for (const float v : e)
    if (!std::isfinite(v)) return r;  // window stays empty
  r.x0 = truncate_to_int64(e[0]);
  r.y0 = truncate_to_int64(e[1]);
  r.x1 = truncate_to_int64(e[2]);
  r.y1 = truncate_to_int64(e[3]);
  r.w = std::max<std::int64_t>(r.x1 - r.x0 + 1, 1);
  r.h = std::max<std::int64_t>(r.y1 - r.y0 + 1, 1);
  // im_mask[max(y0, 0) : min(y1 + 1, H), max(x0, 0) : min(x1 + 1, W)]. torchvision raises
  // (negative slice end) for a box entirely left of / above the image, which its own
  // clipped boxes never are; here that window is simply empty.
  const std::int64_t xa = std::max<std::int64_t>(r.x0, 0);
  const std::int64_t ya = std::max<std::int64_t>(r.y0, 0);
  const std::int64_t xb = std::min<std::int64_t>(r.x1 + 1, std::max(image.width, 0));
  const std::int64_t yb = std::min<std::int64_t>(r.y1 + 1, std::max(image.height, 0));
  if (xb > xa && yb > ya) r.window = {int(xa), int(ya), int(xb), int(yb)};
  return r;
}

/// Pastes one mask, per pixel (the reference form): pixel (x, y) of the window gets
/// `interpolate(pad(P), (h, w))[y - y0][x - x0] >= threshold`, each value from ATen's
/// channels-last bilinear kernel (the one torch runs for this [1, 1, M+2, M+2] tensor;
/// rcnn/preprocess/torch_resize.hpp).
inline void torchvision_paste_one(const float* P, int M, const Box& b, Size image,
                                  float threshold, std::vector<float>& padded,
                                  InstanceMask& out) {
  const TorchvisionPasteBox t = torchvision_paste_box(b, M, image);
  const PasteWindow& w = t.window;
  out.reset(w.x0, w.y0, w.width(), w.height());
  if (out.width == 0) return;
  const int S = M + 2;
  padded.resize(std::size_t(S) * std::size_t(S));
  pad_mask(P, M, padded.data());
  for (int y = 0; y < out.height; ++y) {
    const LinearTap h = torch_linear_tap(S, t.h, std::int64_t(w.y0 + y) - t.y0);
    const float* r0 = padded.data() + std::size_t(h.i0) * std::size_t(S);
    const float* r1 = padded.data() + std::size_t(h.i1) * std::size_t(S);
    for (int x = 0; x < out.width; ++x) {
      const LinearTap c = torch_linear_tap(S, t.w, std::int64_t(w.x0 + x) - t.x0);
      out.bits[std::size_t(y) * std::size_t(out.width) + std::size_t(x)] =
          torch_bilinear_channels_last(r0, r1, h, c) >= threshold ? 1 : 0;
    }
  }
}

}  // namespace detail

/// Reference torchvision 0.14 mask pasting (`roi_heads.paste_masks_in_image`, padding 1,
/// as `GeneralizedRCNNTransform.postprocess` calls it), thresholded with `>= threshold`.
///
/// For detection i with box `boxes[i]` (original image frame, float32: the detection box
/// rescaled by `resize_boxes`, not clipped again) and probabilities `probs.mask(i)` (M x M):
/// pad the mask to (M + 2) x (M + 2) with zeros; expand the box about its centre by
/// `float((M + 2) / M)` in float32 and truncate its corners to int64 (x0, y0, x1, y1);
/// resize the padded mask to `h = max(y1 - y0 + 1, 1)` rows and `w = max(x1 - x0 + 1, 1)`
/// columns with torch 1.13's bilinear interpolation (align_corners=False; the channels-last
/// kernel: float32 weights, double sum); pixel (x, y) of rows y0..y1 and columns x0..x1
/// (inclusive) clipped to the image gets `value >= threshold`, every other pixel 0.
/// Only the pixels inside the image are computed (torch resizes the whole box).
///
/// torchvision returns the soft masks; `mask_threshold` (0.5) is what its documentation tells
/// callers to apply. Boxes with non-finite coordinates give an empty mask; boxes entirely
/// left of or above the image give an empty mask (torchvision raises there).
/// Pre: threshold finite and > 0. `out` is resized to `probs.count`; buffers are reused.
/// Errors: rcnn::Error on a box / mask count mismatch or a bad threshold.
/// Cost: O(sum of visible window areas) (taps recomputed per pixel: the plain reference;
/// OmpTorchvisionPaste tabulates them). Allocates `out`'s buffers and one (M+2)^2 buffer.
/// Thread-safe (stateless).
struct TorchvisionPasteRef {
  static constexpr MaskHeadConfig::Paste convention = MaskHeadConfig::Paste::torchvision;

  void reserve(const StageSizing&) {}  ///< stateless: the masks' buffers are the caller's

  void operator()(const MaskProbs& probs, std::span<const Box> boxes, Size image,
                  float threshold, std::vector<InstanceMask>& out) const {
    detail::check_paste_inputs(probs, boxes, image, threshold, "TorchvisionPasteRef");
    out.resize(std::size_t(probs.count));
    std::vector<float> padded;
    for (int i = 0; i < probs.count; ++i)
      detail::torchvision_paste_one(probs.mask(i), probs.size, boxes[std::size_t(i)], image,
                                    threshold, padded, out[std::size_t(i)]);
  }
};

}  // namespace rcnn
