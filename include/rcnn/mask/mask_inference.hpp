#pragma once
/// \file mask_inference.hpp
/// Mask-head inference: each detection's class channel of the raw mask logits, through the
/// sigmoid (Detectron2's `mask_rcnn_inference`, torchvision's `maskrcnn_inference`).

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "../error.hpp"
#include "mask_types.hpp"

namespace rcnn {

/// Non-owning view of the mask head's raw logits `[R, Km, M, M]`, contiguous float32.
struct MaskLogitsView {
  const float* data = nullptr;
  int count = 0;     ///< R (detections)
  int channels = 0;  ///< Km
  int size = 0;      ///< M
  std::size_t numel() const {
    return std::size_t(count) * std::size_t(channels) * std::size_t(size) * std::size_t(size);
  }
};

/// The logits channel of a detection of class `class_id` (0-based, background excluded):
/// 0 when class-agnostic (Km = 1), `class_id + 1` when the background is the first class
/// (torchvision, Km = K + 1), `class_id` otherwise (Detectron2, Km = K).
inline int mask_channel(int class_id, bool background_first, bool class_agnostic) {
  return class_agnostic ? 0 : (background_first ? class_id + 1 : class_id);
}

/// `torch.sigmoid` of one float32: `1 / (1 + exp(-x))` in float32.
///
/// Parity: torch's AVX2 kernel computes exp with SLEEF's `expf` (1-ulp) on full vectors,
/// libm's `expf` is used here; they can differ by an ulp, which reaches the sigmoid as at
/// most an ulp or so (tests/unit/test_masks.cpp measures it on the Detectron2 fixture).
namespace detail {
inline float torch_sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
}  // namespace detail

/// Writes `out[i] = sigmoid(logits[i, channel(class_ids[i])])`, `[R, M, M]`.
///
/// Pre: `class_ids.size() == logits.count`, `out.size() == R * M * M`, every channel within
/// [0, Km) and Km == 1 when class-agnostic. Errors: rcnn::Error otherwise.
/// Cost: O(R * M^2) exp calls; no allocation; thread-safe.
inline void mask_probabilities(const MaskLogitsView& logits, std::span<const int> class_ids,
                               bool background_first, bool class_agnostic,
                               std::span<float> out) {
  const std::string_view who = "mask_probabilities";  // no allocation unless it fails
  if (logits.count < 0 || logits.channels <= 0 || logits.size <= 0)
    detail::fail(std::string(who) + ": bad logits shape [" + std::to_string(logits.count) + ", " +
                 std::to_string(logits.channels) + ", " + std::to_string(logits.size) + ", " +
                 std::to_string(logits.size) + "]");
  if (logits.count > 0 && logits.data == nullptr) detail::fail(std::string(who) + ": null logits");
  if (class_ids.size() != std::size_t(logits.count))
    detail::fail(std::string(who) + ": " + std::to_string(class_ids.size()) + " class ids for " +
                 std::to_string(logits.count) + " mask logits");
  if (class_agnostic && logits.channels != 1)
    detail::fail(std::string(who) + ": class-agnostic mask head with " + std::to_string(logits.channels) +
                 " channels, expected 1");
  const std::size_t plane = std::size_t(logits.size) * std::size_t(logits.size);
  if (out.size() != std::size_t(logits.count) * plane)
    detail::fail(std::string(who) + ": output holds " + std::to_string(out.size()) + " floats, expected " +
                 std::to_string(std::size_t(logits.count) * plane) + " (R * M * M)");
  for (std::size_t i = 0; i < class_ids.size(); ++i) {
    const int c = mask_channel(class_ids[i], background_first, class_agnostic);
    if (c < 0 || c >= logits.channels)
      detail::fail(std::string(who) + ": detection " + std::to_string(i) + " has class " +
                   std::to_string(class_ids[i]) + ", mask channel " + std::to_string(c) +
                   " outside 0.." + std::to_string(logits.channels - 1));
    const float* src = logits.data + (i * std::size_t(logits.channels) + std::size_t(c)) * plane;
    float* dst = out.data() + i * plane;
    for (std::size_t k = 0; k < plane; ++k) dst[k] = detail::torch_sigmoid(src[k]);
  }
}

/// `MaskProbs` view of `[R, M, M]` probabilities (e.g. `mask_probabilities`'s output).
inline MaskProbs mask_probs_view(std::span<const float> probs, int count, int size) {
  detail::require(count >= 0 && size >= 0 &&
                      probs.size() == std::size_t(count) * std::size_t(size) * std::size_t(size),
                  "mask_probs_view: " + std::to_string(probs.size()) + " floats for [" +
                      std::to_string(count) + ", " + std::to_string(size) + ", " +
                      std::to_string(size) + "]");
  return {probs.data(), count, size};
}

}  // namespace rcnn
