#pragma once
/// \file batch_input.hpp
/// The backbone's input for a batch: each image through the preprocess policy, then (for
/// more than one image) copied into one [N, 3, H, W] tensor padded to the largest image, or
/// to the static input shape of the module.

#include <algorithm>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../detail/huge_pages.hpp"
#include "../detail/output_checks.hpp"
#include "preprocess.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"

namespace rcnn {

class BatchInput {
 public:
  /// Capacity for `n` images padded to `padded`.
  void reserve(std::size_t n, Size padded) {
    const std::size_t per = 3 * std::size_t(padded.height) * std::size_t(padded.width);
    detail::reserve_on_huge_pages(input_, n * per);
    results_.reserve(n);
    if (n > 1) {
      per_image_.resize(std::max(per_image_.size(), n));
      for (auto& v : per_image_) v.reserve(per);
    }
  }

  /// Preprocesses `images` with `pre`; `pad_to` is the static input size, if any.
  template <class Preprocess>
  void build(Preprocess& pre, const ModelConfig& cfg, std::span<const ImageView> images,
             const std::optional<Size>& pad_to) {
    const std::size_t n = images.size();
    results_.resize(n);
    if (n == 1) {
      detail::check_fits_static_shape(cfg, images[0], pad_to);
      // The output's storage is set up here, on huge pages, before the policy touches it.
      const Size padded = detail::padded_shape(
          detail::checked_resized_shape(detail::check_image(images[0]), cfg.input, cfg.conventions),
          cfg.input.size_divisibility, pad_to);
      detail::reserve_on_huge_pages(input_, 3 * std::size_t(padded.height) * std::size_t(padded.width));
      results_[0] = pre(images[0], cfg.input, input_, pad_to);
      detail::check_padded(cfg, results_[0], pad_to);
      padded_ = results_[0].padded;
      return;
    }
    per_image_.resize(std::max(per_image_.size(), n));
    padded_ = Size{};
    for (std::size_t i = 0; i < n; ++i) {
      detail::check_fits_static_shape(cfg, images[i], pad_to);
      results_[i] = pre(images[i], cfg.input, per_image_[i], pad_to);
      detail::check_padded(cfg, results_[i], pad_to);
      padded_.height = std::max(padded_.height, results_[i].padded.height);
      padded_.width = std::max(padded_.width, results_[i].padded.width);
    }
    const std::size_t plane = std::size_t(padded_.height) * padded_.width;
    detail::reserve_on_huge_pages(input_, n * 3 * plane);
    input_.assign(n * 3 * plane, 0.f);
    for (std::size_t i = 0; i < n; ++i) {
      const Size p = results_[i].padded;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < p.height; ++y) {
          const float* src = per_image_[i].data() + (std::size_t(c) * p.height + y) * p.width;
          float* dst = input_.data() + (i * 3 + c) * plane + std::size_t(y) * padded_.width;
          std::copy(src, src + p.width, dst);
        }
    }
  }

  /// The batch as the backbone's input [N, 3, H, W].
  TensorView view() const {
    return {input_.data(),
            {std::int64_t(results_.size()), 3, padded_.height, padded_.width}};
  }
  Size padded() const { return padded_; }
  const PreprocessResult& image(std::size_t i) const { return results_[i]; }
  /// Image 0's normalised padded CHW input.
  std::span<const float> first() const {
    return {input_.data(), 3 * std::size_t(padded_.height) * std::size_t(padded_.width)};
  }

 private:
  std::vector<float> input_;
  std::vector<std::vector<float>> per_image_;
  std::vector<PreprocessResult> results_;
  Size padded_{};
};

}  // namespace rcnn
