#pragma once
/// \file anchor_cache.hpp
/// The anchors of every RPN level for the current padded input size and grids, recomputed
/// by the anchor generator policy only when the size or a grid changes (every image of a
/// fixed-size deployment reuses them).

#include <cstddef>
#include <span>
#include <vector>

#include "../config.hpp"
#include "../exec/outputs.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"

namespace rcnn {

class AnchorCache {
 public:
  /// Capacity for grids of up to `cells[l]` cells on level l.
  void reserve(const ModelConfig& cfg, std::span<const std::size_t> cells) {
    anchors_.resize(cells.size());
    grids_.resize(cells.size());
    for (std::size_t l = 0; l < cells.size(); ++l)
      anchors_[l].reserve(cells[l] * std::size_t(cfg.anchors.anchors_per_cell(l)));
  }

  /// Anchors for the grids of `objectness` (one [N, A, H, W] view per RPN level).
  template <class Generator>
  void update(Generator& gen, const ModelConfig& cfg, const std::vector<TensorView>& objectness,
              Size padded) {
    const std::size_t L = cfg.backbone.rpn_levels.size();
    anchors_.resize(L);
    grids_.resize(L);
    for (std::size_t l = 0; l < L; ++l) {
      const Size grid{int(objectness[l].shape[2]), int(objectness[l].shape[3])};
      if (padded_ == padded && grids_[l] == grid && !anchors_[l].empty()) continue;
      gen(cfg.anchors, cfg.conventions, l, cfg.backbone.rpn_strides[l], grid, padded, anchors_[l]);
      grids_[l] = grid;
    }
    padded_ = padded;
  }

  std::span<const Box> level(std::size_t l) const { return anchors_[l]; }
  const std::vector<std::vector<Box>>& all() const { return anchors_; }

 private:
  std::vector<std::vector<Box>> anchors_;
  std::vector<Size> grids_;
  Size padded_{};
};

}  // namespace rcnn
