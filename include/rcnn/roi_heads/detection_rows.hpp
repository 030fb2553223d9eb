#pragma once
/// \file detection_rows.hpp
/// What every per-detection head (Mask R-CNN's mask head, Keypoint R-CNN's keypoint head)
/// shares: gather the detections of box inference (resized frame) of a batch into boxes and
/// classes, pool them with the head's pooler into RoiRows (static_rois chunks), and, after
/// postprocessing, follow its `kept` indices (concepts.hpp PostprocessPolicy) back to each
/// surviving detection's outputs. Framework-free; allocation-free once reserved.

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../exec/outputs.hpp"
#include "../types.hpp"
#include "roi_rows.hpp"

namespace rcnn {

/// The detections of a batch as the rows of one per-detection head.
class DetectionRows {
 public:
  /// Capacity for `images` images of up to `detections` detections each, pooled with
  /// `pooler` for `module` (its static_rois) from `channels` channels.
  void reserve(const PoolerConfig& pooler, const ModuleConfig& module, int channels,
               std::size_t images, std::size_t detections) {
    const std::size_t P = std::size_t(pooler.resolution);
    rows_.reserve(images, detections, std::size_t(channels) * P * P,
                  module.static_rois.value_or(0));
    boxes_.reserve(images * detections);
    classes_.reserve(images * detections);
    first_.reserve(images + 1);
  }

  /// Gathers image i's detections `dets(i)` (a span of Detection, resized frame) for images
  /// 0..n-1 and pools them with `pooler` into rows for `module` (padded to its static_rois;
  /// no rows for an image without detections).
  template <class RoIAlign, class DetsOf>
  void pool(RoIAlign& roi_align, const RoiLevels& lv, const BackboneOutputs& backbone,
            std::size_t n, DetsOf&& dets, const PoolerConfig& pooler, const ModuleConfig& module,
            int channels) {
    std::size_t total = 0;
    for (std::size_t i = 0; i < n; ++i) total += dets(i).size();
    boxes_.resize(total);
    classes_.resize(total);
    first_.resize(n + 1);
    std::size_t k = 0;
    for (std::size_t i = 0; i < n; ++i) {
      first_[i] = k;
      for (const Detection& d : dets(i)) {
        boxes_[k] = d.box;
        classes_[k++] = d.class_id;
      }
    }
    first_[n] = k;
    const RoiRows::Spec spec{&pooler, module.static_rois.value_or(0), /*pad_empty_images=*/false};
    rows_.pool(
        roi_align, lv, backbone.features, n,
        [&](std::size_t i) { return boxes(i); }, spec, channels);
  }

  /// Runs `head(input, first_row, rows)` per static chunk (RoiRows::run).
  template <class Head>
  std::size_t run(Head&& head, int channels, int resolution) const {
    return rows_.run(std::forward<Head>(head), channels, resolution);
  }

  /// The detection (numbered across the batch) of a row, or -1 for a padding row.
  std::ptrdiff_t detection_of_row(std::size_t row) const { return rows_.item_of_row(row); }
  std::size_t detections() const { return first_.empty() ? 0 : first_.back(); }
  /// Image i's first detection (numbered across the batch) and its count.
  std::size_t first(std::size_t image) const { return first_[image]; }
  std::size_t count(std::size_t image) const { return first_[image + 1] - first_[image]; }
  std::span<const Box> boxes(std::size_t image) const {
    return {boxes_.data() + first_[image], count(image)};
  }
  const Box& box(std::size_t det) const { return boxes_[det]; }
  const int& class_id(std::size_t det) const { return classes_[det]; }
  const RoiRows& rows() const { return rows_; }

 private:
  RoiRows rows_;
  std::vector<std::size_t> first_;  ///< per image, its first detection
  std::vector<Box> boxes_;
  std::vector<int> classes_;
};

/// Checks postprocess's `kept` for `n` final detections out of `before` and says whether it
/// is the identity (nothing dropped or moved). rcnn::Error naming the bad index otherwise.
inline bool check_kept(std::span<const int> kept, std::size_t n, std::size_t before) {
  detail::require(kept.size() == n, [&] {
    return "detector: the postprocess policy returned " + std::to_string(n) +
           " detections but " + std::to_string(kept.size()) + " kept indices";
  });
  bool identity = n == before;
  for (std::size_t k = 0; k < n; ++k) {
    const int j = kept[k];
    detail::require(j >= 0 && std::size_t(j) < before, [&] {
      return "detector: the postprocess policy kept index " + std::to_string(j) +
             ", outside the " + std::to_string(before) + " detections it was given";
    });
    identity = identity && j == int(k);
  }
  return identity;
}

}  // namespace rcnn
