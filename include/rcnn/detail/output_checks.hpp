#pragma once
/// \file output_checks.hpp
/// Validation of what the executor returns and of static shapes, in one place: every check
/// the Detector makes on the networks' outputs against model.json. Messages name the module
/// file, the tensor, its shape and the model.json field that disagrees; they are built only
/// on failure (no allocation per image).

#include <cstdint>
#include <optional>
#include <string>

#include "../config.hpp"
#include "../error.hpp"
#include "../exec/outputs.hpp"
#include "../preprocess/resize_shape.hpp"
#include "../stage_io.hpp"
#include "../types.hpp"

namespace rcnn::detail {

/// "[a, b, c, d]", built by appending (GCC 12 warns -Wrestrict falsely on
/// `"[" + std::to_string(...)` chains once inlined).
inline std::string dims_string(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
  std::string out("[");
  for (const std::int64_t v : {a, b, c, d}) {
    if (out.size() > 1) out += ", ";
    out += std::to_string(v);
  }
  out += ']';
  return out;
}

inline std::string shape_str(const TensorView& t) {
  return dims_string(t.shape[0], t.shape[1], t.shape[2], t.shape[3]);
}

/// A module file as messages name it: its path in the bundle directory.
inline std::string module_path(const ModelConfig& cfg, const ModuleConfig& m) {
  return cfg.bundle_dir.empty() ? m.file : cfg.bundle_dir + "/" + m.file;
}

/// The static input size of the backbone (modules.backbone_rpn.static_shape), if any, after
/// checking that the batch has the size it was compiled for.
inline std::optional<Size> static_input_size(const ModelConfig& cfg, std::size_t batch) {
  const auto& shape = cfg.modules.backbone_rpn.static_shape;
  if (!shape) return std::nullopt;
  const auto& s = *shape;
  require(std::int64_t(batch) == s[0], [&] {
    return "detector: " + cfg.modules.backbone_rpn.file + " was compiled for batch " +
           std::to_string(s[0]) + " (static_shape), got " + std::to_string(batch) + " images";
  });
  return Size{int(s[2]), int(s[3])};
}

inline std::string static_shape_string(const ModelConfig& cfg) {
  const auto& s = *cfg.modules.backbone_rpn.static_shape;
  return dims_string(s[0], s[1], s[2], s[3]);
}

/// With a static input shape, an image whose resized size (as the bundle's resize rule
/// gives it) exceeds H x W cannot be run: say so before preprocessing it.
inline void check_fits_static_shape(const ModelConfig& cfg, const ImageView& image,
                                    const std::optional<Size>& pad_to) {
  if (!pad_to || image.height <= 0 || image.width <= 0) return;  // bad images: preprocess
  const Size r = resized_shape({image.height, image.width}, cfg.input.resize, cfg.conventions);
  if (r.height <= pad_to->height && r.width <= pad_to->width) return;
  fail("detector: image " + std::to_string(image.height) + "x" + std::to_string(image.width) +
       " resizes to " + std::to_string(r.height) + "x" + std::to_string(r.width) +
       ", larger than the static input shape " + static_shape_string(cfg) +
       " (modules.backbone_rpn.static_shape) that " + cfg.modules.backbone_rpn.file +
       " was compiled for; use input.resize \"fixed\" with at most " +
       std::to_string(pad_to->height) + "x" + std::to_string(pad_to->width) +
       ", or export the module for a larger shape");
}

/// A preprocessing policy must honour `pad_to`.
inline void check_padded(const ModelConfig& cfg, const PreprocessResult& r,
                         const std::optional<Size>& pad_to) {
  if (!pad_to || r.padded == *pad_to) return;
  fail("detector: the preprocess policy padded to " + std::to_string(r.padded.height) + "x" +
       std::to_string(r.padded.width) + ", but " + cfg.modules.backbone_rpn.file +
       " needs exactly the static input shape " + static_shape_string(cfg) +
       " (modules.backbone_rpn.static_shape)");
}

/// The backbone's outputs must agree with model.json: level counts, anchors per cell,
/// channels, and grids of about input / stride (floor or ceil: strided convolutions and
/// pooling round either way).
inline void check_backbone_outputs(const ModelConfig& cfg, const BackboneOutputs& out,
                                   std::size_t n, Size padded) {
  const auto& b = cfg.backbone;
  const auto module = [&] { return module_path(cfg, cfg.modules.backbone_rpn); };
  require(out.objectness.size() == b.rpn_levels.size() &&
              out.deltas.size() == b.rpn_levels.size() &&
              out.features.size() == b.roi_levels.size(),
          [&] {
            return module() + ": returned " + std::to_string(out.objectness.size()) + "/" +
                   std::to_string(out.deltas.size()) + "/" + std::to_string(out.features.size()) +
                   " objectness/deltas/feature tensors, model.json expects " +
                   std::to_string(b.rpn_levels.size()) + "/" + std::to_string(b.rpn_levels.size()) +
                   "/" + std::to_string(b.roi_levels.size()) +
                   " (backbone.rpn_levels / backbone.rpn_levels / backbone.roi_levels)";
          });
  const auto check_grid = [&](const TensorView& t, const char* what, const std::string& lvl,
                              int stride) {
    const auto fits = [&](std::int64_t got, int side) {
      return got >= side / stride && got <= (side + stride - 1) / stride;
    };
    require(fits(t.shape[2], padded.height) && fits(t.shape[3], padded.width), [&] {
      return module() + ": " + what + " " + lvl + " has shape " + shape_str(t) +
             " for an input of " + std::to_string(padded.height) + "x" +
             std::to_string(padded.width) + ", expected a grid of about " +
             std::to_string((padded.height + stride - 1) / stride) + "x" +
             std::to_string((padded.width + stride - 1) / stride) +
             " (input / backbone.strides." + lvl + " = " + std::to_string(stride) +
             " in model.json)";
    });
  };
  for (std::size_t l = 0; l < b.rpn_levels.size(); ++l) {
    const auto& o = out.objectness[l];
    const auto& d = out.deltas[l];
    const int A = cfg.anchors.anchors_per_cell(l);
    const std::string& lvl = b.rpn_levels[l];
    require(o.shape[0] == std::int64_t(n) && o.shape[1] == A, [&] {
      return module() + ": objectness of level " + lvl + " has shape " + shape_str(o) +
             ", expected [" + std::to_string(n) + ", " + std::to_string(A) +
             ", H, W] (anchors per cell = " + std::to_string(cfg.anchors.sizes_at(l).size()) +
             " anchors.sizes x " + std::to_string(cfg.anchors.aspect_ratios_at(l).size()) +
             " anchors.aspect_ratios in model.json)";
    });
    require(d.shape[0] == std::int64_t(n) && d.shape[1] == 4 * A && d.shape[2] == o.shape[2] &&
                d.shape[3] == o.shape[3],
            [&] {
              return module() + ": deltas of level " + lvl + " has shape " + shape_str(d) +
                     ", expected [" + std::to_string(n) + ", " + std::to_string(4 * A) + ", " +
                     std::to_string(o.shape[2]) + ", " + std::to_string(o.shape[3]) + "]";
            });
    check_grid(o, "objectness of level", lvl, b.rpn_strides[l]);
  }
  for (std::size_t l = 0; l < b.roi_levels.size(); ++l) {
    const auto& f = out.features[l];
    require(f.shape[0] == std::int64_t(n) && f.shape[1] == b.channels, [&] {
      return module() + ": feature map " + b.roi_levels[l] + " has shape " + shape_str(f) +
             ", expected [" + std::to_string(n) + ", " + std::to_string(b.channels) +
             ", H, W] (backbone.channels in model.json)";
    });
    check_grid(f, "feature map", b.roi_levels[l], b.roi_strides[l]);
  }
}

/// Columns of box_deltas model.json implies: 4 (agnostic), 4(K + 1) (background first), 4K.
inline int expected_deltas_width(const RoiHeadsConfig& r) {
  if (r.class_agnostic_box_regression) return 4;
  return r.background_first ? 4 * (r.num_classes + 1) : 4 * r.num_classes;
}

/// The box head's outputs for `rows` RoIs must be [rows, K + 1] and [rows, deltas width].
inline void check_box_head_outputs(const ModelConfig& cfg, const BoxHeadOutputs& out,
                                   std::size_t rows) {
  const auto module = [&] { return module_path(cfg, cfg.modules.box_head); };
  const auto& lg = out.class_logits;
  const auto& dl = out.box_deltas;
  require(lg.shape[0] == std::int64_t(rows) && dl.shape[0] == std::int64_t(rows), [&] {
    return module() + ": returned " + std::to_string(lg.shape[0]) + " logit rows and " +
           std::to_string(dl.shape[0]) + " delta rows for " + std::to_string(rows) + " RoIs";
  });
  require(lg.shape[1] == cfg.roi_heads.num_classes + 1, [&] {
    return module() + ": class_logits has " + std::to_string(lg.shape[1]) +
           " columns, model.json roi_heads.num_classes + 1 = " +
           std::to_string(cfg.roi_heads.num_classes + 1);
  });
  require(dl.shape[1] == expected_deltas_width(cfg.roi_heads), [&] {
    return module() + ": box_deltas has " + std::to_string(dl.shape[1]) + " columns, expected " +
           std::to_string(expected_deltas_width(cfg.roi_heads)) +
           " from model.json roi_heads (background, class_agnostic)";
  });
}

/// Expected mask-head channels: K (background last), K + 1 (background first), 1 (agnostic).
inline int expected_mask_channels(const ModelConfig& cfg) {
  if (cfg.mask_head->class_agnostic) return 1;
  return cfg.roi_heads.background_first ? cfg.roi_heads.num_classes + 1
                                        : cfg.roi_heads.num_classes;
}

/// The mask head's logits for `rows` RoIs must be [rows, Km, M, M], M = mask_head.mask_size.
inline void check_mask_head_outputs(const ModelConfig& cfg, const MaskHeadOutputs& out,
                                    std::size_t rows) {
  const TensorView& lg = out.logits;
  const int Km = expected_mask_channels(cfg);
  const int M = cfg.mask_head->mask_size;
  require(lg.shape[0] == std::int64_t(rows) && lg.shape[1] == Km && lg.shape[2] == M &&
              lg.shape[3] == M,
          [&] {
            return module_path(cfg, *cfg.modules.mask_head) + ": returned mask logits " +
                   shape_str(lg) + " for " + std::to_string(rows) + " RoIs, expected " +
                   dims_string(std::int64_t(rows), Km, M, M) +
                   " (M: mask_head.mask_size, default 2 x pooler_resolution; channels from roi_heads.num_classes, roi_heads.background and "
                   "mask_head.class_agnostic)";
          });
}

/// The keypoint head's heatmaps for `rows` RoIs must be [rows, K, S, S] (keypoint_head's
/// num_keypoints and heatmap_size).
inline void check_keypoint_head_outputs(const ModelConfig& cfg, const KeypointHeadOutputs& out,
                                        std::size_t rows) {
  const TensorView& hm = out.heatmaps;
  const int K = cfg.keypoint_head->num_keypoints;
  const int S = cfg.keypoint_head->heatmap_size;
  require(hm.shape[0] == std::int64_t(rows) && hm.shape[1] == K && hm.shape[2] == S &&
              hm.shape[3] == S,
          [&] {
            return module_path(cfg, *cfg.modules.keypoint_head) + ": returned keypoint heatmaps " +
                   shape_str(hm) + " for " + std::to_string(rows) + " RoIs, expected " +
                   dims_string(std::int64_t(rows), K, S, S) +
                   " (keypoint_head.num_keypoints, keypoint_head.heatmap_size)";
          });
}

}  // namespace rcnn::detail
