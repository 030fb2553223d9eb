#pragma once
/// \file roi_rows.hpp
/// The mechanism every RoI head shares (box head, mask head, and next keypoint and cascade
/// heads): pool each image's boxes from its feature maps into one [rows, C, P, P] buffer,
/// each image's rows padded with zeros to a multiple of the module's `static_rois`, then
/// run the head through the executor once per static chunk (or once for all rows), handing
/// each call's outputs to the caller with the item (box) each row belongs to.
/// Framework-free; allocation-free once reserved.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../concepts.hpp"
#include "../detail/huge_pages.hpp"
#include "../exec/outputs.hpp"
#include "../roi_align/level_mapper.hpp"
#include "../types.hpp"

namespace rcnn {

/// Where the pooled maps of a RoI head come from: the backbone's RoI levels with their
/// spatial scales (1 / stride) and level range.
struct RoiLevels {
  std::vector<float> scales;
  int min_level = 2, max_level = 5;

  explicit RoiLevels(const BackboneConfig& b = {}) {
    if (b.roi_strides.empty()) return;
    min_level = int(std::lround(std::log2(double(b.roi_strides.front()))));
    max_level = int(std::lround(std::log2(double(b.roi_strides.back()))));
    for (int s : b.roi_strides) scales.push_back(float(1.0 / double(s)));
  }
};

/// Rows padded to a multiple of `static_rois` (at least one chunk); `rows` when dynamic.
inline std::size_t padded_rows(std::size_t rows, int static_rois) {
  if (static_rois <= 0) return rows;
  const std::size_t s = std::size_t(static_rois);
  return std::max<std::size_t>(1, (rows + s - 1) / s) * s;
}

/// The rows of one RoI head over a batch.
class RoiRows {
 public:
  /// Options of one use: the head's pooler, the module's static_rois (0: dynamic), and
  /// whether an image without boxes still gets a (zero) chunk (the box head: yes, so that a
  /// static module always sees its shape; per-detection heads: no).
  struct Spec {
    const PoolerConfig* pooler = nullptr;
    int static_rois = 0;
    bool pad_empty_images = true;
  };

  /// Capacity for `images` images of up to `boxes` boxes each, `roi_size` = C * P * P.
  void reserve(std::size_t images, std::size_t boxes, std::size_t roi_size, int static_rois) {
    const std::size_t rows = images * padded_rows(boxes, static_rois);
    features_.reserve(rows * roi_size);
    row_item_.reserve(rows);
    levels_.reserve(images * boxes);
    first_item_.reserve(images + 1);
    first_row_.reserve(images + 1);
  }

  /// Pools `boxes(i)` (a std::span<const Box> of image i's boxes) for images 0..n-1 from
  /// `features` (the backbone's RoI maps; image i's maps are `features[l].image(i)`).
  /// Items are numbered across the batch in image order.
  template <class RoIAlign, class BoxesOf>
  void pool(RoIAlign& roi_align, const RoiLevels& lv, const std::vector<TensorView>& features,
            std::size_t n, BoxesOf&& boxes, const Spec& spec, int channels) {
    const PoolerConfig& pooler = *spec.pooler;
    roi_size_ = std::size_t(channels) * pooler.resolution * pooler.resolution;
    static_rois_ = spec.static_rois;
    std::size_t items = 0, rows = 0;
    first_item_.resize(n + 1);
    first_row_.resize(n + 1);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t b = boxes(i).size();
      first_item_[i] = items;
      first_row_[i] = rows;
      items += b;
      if (b > 0 || spec.pad_empty_images) rows += padded_rows(b, spec.static_rois);
    }
    first_item_[n] = items;
    first_row_[n] = rows;
    features_.resize(rows * roi_size_);
    row_item_.resize(rows);
    levels_.resize(items);
    maps_.resize(features.size());
    for (std::size_t i = 0; i < n; ++i) {
      const std::span<const Box> bx = boxes(i);
      const std::size_t rows_i = first_row_[i + 1] - first_row_[i];
      if (rows_i == 0) continue;
      const std::span<int> levels(levels_.data() + first_item_[i], bx.size());
      assign_levels(bx, pooler, lv.min_level, lv.max_level, levels);
      for (std::size_t l = 0; l < features.size(); ++l) maps_[l] = features[l].image(std::int64_t(i));
      float* dst = features_.data() + first_row_[i] * roi_size_;
      roi_align(std::span<const FeatureMap>(maps_), std::span<const float>(lv.scales), bx,
                std::span<const int>(levels), pooler, std::span<float>(dst, bx.size() * roi_size_));
      std::fill(dst + bx.size() * roi_size_, dst + rows_i * roi_size_, 0.f);
      for (std::size_t r = 0; r < rows_i; ++r)
        row_item_[first_row_[i] + r] =
            r < bx.size() ? std::ptrdiff_t(first_item_[i] + r) : std::ptrdiff_t(-1);
    }
  }

  /// Runs `head(input, first_row, rows)` once per static chunk (or once for all rows; not
  /// at all when there are none). `input` views rows [first_row, first_row + rows) as
  /// [rows, C, P, P]. Returns the number of calls.
  template <class Head>
  std::size_t run(Head&& head, int channels, int resolution) const {
    const std::size_t total = rows();
    if (total == 0) return 0;
    const std::size_t chunk = static_rois_ > 0 ? std::size_t(static_rois_) : total;
    std::size_t calls = 0;
    for (std::size_t start = 0; start < total; start += chunk) {
      const std::size_t r = std::min(chunk, total - start);
      const TensorView in{features_.data() + start * roi_size_,
                          {std::int64_t(r), channels, resolution, resolution}};
      head(in, start, r);
      ++calls;
    }
    return calls;
  }

  std::size_t rows() const { return first_row_.empty() ? 0 : first_row_.back(); }
  std::size_t items() const { return first_item_.empty() ? 0 : first_item_.back(); }
  /// The item (box, numbered across the batch) of a row, or -1 for a padding row.
  std::ptrdiff_t item_of_row(std::size_t row) const { return row_item_[row]; }
  std::size_t first_item(std::size_t image) const { return first_item_[image]; }
  std::size_t first_row(std::size_t image) const { return first_row_[image]; }
  /// Image i's level indices (into the RoI levels), one per box.
  std::span<const int> levels(std::size_t image) const {
    return {levels_.data() + first_item_[image], first_item_[image + 1] - first_item_[image]};
  }
  /// Image i's pooled rows, its boxes first: [rows_i, C, P, P].
  std::span<const float> features(std::size_t image) const {
    return {features_.data() + first_row_[image] * roi_size_,
            (first_row_[image + 1] - first_row_[image]) * roi_size_};
  }
  std::size_t roi_size() const { return roi_size_; }

 private:
  detail::HostVector<float> features_;  ///< on huge pages (detail/huge_pages.hpp)
  std::vector<std::ptrdiff_t> row_item_;
  std::vector<int> levels_;
  std::vector<std::size_t> first_item_, first_row_;
  std::vector<FeatureMap> maps_;
  std::size_t roi_size_ = 0;
  int static_rois_ = 0;
};

}  // namespace rcnn
