#pragma once
/// \file grid_anchor_generator.hpp
/// Anchor generation for one feature level: cell anchors placed on every grid cell.

#include <cmath>
#include <cstddef>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"

namespace rcnn {

/// Reference anchor generator covering both frameworks, switched by the bundle:
/// - cell anchors: Detectron2 (`DefaultAnchorGenerator.generate_cell_anchors`) computes in
///   double, size-major (for size: for ratio: w = sqrt(size^2 / ratio), h = ratio * w) and
///   does not round; torchvision (`AnchorGenerator.generate_anchors`) computes in float32,
///   ratio-major (h_ratio = sqrt(r), w_ratio = 1 / h_ratio, w = w_ratio * size) and rounds
///   half to even when `round_cell_anchors`.
/// - grid: stride from the backbone (Detectron2) or padded image size // grid size per axis
///   (torchvision); shift = (k + offset) * stride.
/// Output row order is (y * W + x) * A + a, the order of both frameworks' RPN heads.
/// Cost: O(H * W * A) writes, no allocation beyond `out`; callers cache the result per
/// grid size (the Detector does).
struct GridAnchorGenerator {
  /// Cell anchors (centred at 0) of rpn level `level`.
  static void cell_anchors(const AnchorConfig& cfg, Conventions conv, std::size_t level,
                           std::vector<Box>& out) {
    out.resize(std::size_t(cfg.anchors_per_cell(level)));
    cell_anchors(cfg, conv, level, out.data());
  }

  /// The same into `out[0 .. anchors_per_cell(level))`.
  static void cell_anchors(const AnchorConfig& cfg, Conventions conv, std::size_t level,
                           Box* out) {
    const auto& sizes = cfg.sizes_at(level);
    const auto& ratios = cfg.aspect_ratios_at(level);
    if (conv == Conventions::detectron2) {
      for (float size_f : sizes) {
        const double area = double(size_f) * double(size_f);
        for (float ratio_f : ratios) {
          const double w = std::sqrt(area / double(ratio_f));
          const double h = double(ratio_f) * w;
          Box b{float(-w / 2.0), float(-h / 2.0), float(w / 2.0), float(h / 2.0)};
          if (cfg.round_cell_anchors) b = round_box(b);
          *out++ = b;
        }
      }
    } else {
      for (float ratio : ratios) {
        const float h_ratio = std::sqrt(ratio);
        const float w_ratio = 1.0f / h_ratio;
        for (float size : sizes) {
          const float ws = w_ratio * size;
          const float hs = h_ratio * size;
          Box b{-ws / 2.0f, -hs / 2.0f, ws / 2.0f, hs / 2.0f};
          if (cfg.round_cell_anchors) b = round_box(b);
          *out++ = b;
        }
      }
    }
  }

  /// Anchors of rpn level `level` for a `grid` of cells. `backbone_stride` is that level's
  /// stride from the bundle; `padded` is the padded input size (used when stride_from image).
  void reserve(const StageSizing&) {}  ///< stateless: the anchors are the caller's

  void operator()(const AnchorConfig& cfg, Conventions conv, std::size_t level,
                  int backbone_stride, Size grid, Size padded, std::vector<Box>& out) const {
    detail::require(grid.height > 0 && grid.width > 0, [&] {
      return "anchors: feature map of level " + std::to_string(level) + " is empty";
    });
    int stride_y = backbone_stride, stride_x = backbone_stride;
    if (cfg.stride_from == AnchorConfig::StrideFrom::image) {
      stride_y = padded.height / grid.height;
      stride_x = padded.width / grid.width;
    }
    const std::size_t a_count = std::size_t(cfg.anchors_per_cell(level));
    out.resize(std::size_t(grid.height) * grid.width * a_count);
    if (a_count == 0) return;
    // The cell anchors are computed into the first cell's slots, which are written last:
    // cells are filled from the last to the first, with no temporary.
    Box* cells = out.data();
    cell_anchors(cfg, conv, level, cells);
    for (int y = grid.height - 1; y >= 0; --y) {
      // Detectron2: torch.arange(offset * stride, ..., step=stride) in float32, whose values
      // are computed in double (start + step * i) and rounded once.
      const float sy = float((double(cfg.offset) + 0.0) * stride_y + double(stride_y) * y);
      for (int x = grid.width - 1; x >= 0; --x) {
        const float sx = float(double(cfg.offset) * stride_x + double(stride_x) * x);
        Box* dst = out.data() + (std::size_t(y) * std::size_t(grid.width) + std::size_t(x)) * a_count;
        for (std::size_t a = 0; a < a_count; ++a) {
          const Box c = cells[a];  // read before the first cell overwrites it
          dst[a] = Box{sx + c.x1, sy + c.y1, sx + c.x2, sy + c.y2};
        }
      }
    }
  }

 private:
  static Box round_box(const Box& b) {
    // torch.round rounds half to even, as nearbyint does in the default rounding mode.
    return Box{std::nearbyint(b.x1), std::nearbyint(b.y1), std::nearbyint(b.x2),
               std::nearbyint(b.y2)};
  }
};

}  // namespace rcnn
