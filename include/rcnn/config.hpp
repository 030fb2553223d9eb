#pragma once
/// \file config.hpp
/// In-memory form of a model bundle's model.json (format: docs/reference/bundle-format.md).
/// Plain data; the reader in `rcnn/io/bundle.hpp` fills and validates it.

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "types.hpp"

namespace rcnn {

/// Which framework's numerical conventions a bundle follows.
enum class Conventions { torchvision, detectron2 };
/// Detector family.
enum class Architecture { faster_rcnn, mask_rcnn, keypoint_rcnn };

inline const char* to_string(Conventions c) {
  return c == Conventions::torchvision ? "torchvision" : "detectron2";
}

struct ResizeConfig {
  enum class Mode { shortest_edge, fixed };
  Mode mode = Mode::shortest_edge;
  int min_size = 800;   ///< shortest_edge
  int max_size = 1333;  ///< shortest_edge
  int height = 0;       ///< fixed
  int width = 0;        ///< fixed
};

struct InputConfig {
  bool bgr = true;  ///< channel_order "BGR" (true) or "RGB"
  float pixel_scale = 1.f;
  std::array<float, 3> pixel_mean{0.f, 0.f, 0.f};
  std::array<float, 3> pixel_std{1.f, 1.f, 1.f};
  ResizeConfig resize;
  int size_divisibility = 32;  ///< pad H, W up to multiples of this; 0 (or 1): no padding
};

struct ModuleConfig {
  std::string file;
  std::optional<std::array<std::int64_t, 4>> static_shape;  ///< backbone_rpn only
  std::optional<int> static_rois;                            ///< box_head / mask_head / keypoint_head
  std::optional<std::string> sha256;                         ///< optional integrity check
};

struct ModulesConfig {
  ModuleConfig backbone_rpn;
  ModuleConfig box_head;
  std::optional<ModuleConfig> mask_head;
  std::optional<ModuleConfig> keypoint_head;  ///< keypoint_rcnn only
  /// Cascade R-CNN: the box head modules of cascade stages 1, 2, ... (stage 0 is `box_head`),
  /// in stage order (`roi_heads.cascade[k].module`); empty otherwise.
  std::vector<ModuleConfig> cascade_box_heads;
  /// Optional rcnn extension `modules.neuron_library`: the Neuron runtime's TorchScript
  /// operator library (libtorchneuron.so) NeuronExec loads; a path with a '/' is relative to
  /// the bundle directory unless absolute, a bare name goes to the dynamic loader's search.
  std::optional<std::string> neuron_library;
};

struct BackboneConfig {
  std::vector<std::string> rpn_levels;
  std::vector<std::string> roi_levels;
  std::vector<int> rpn_strides;  ///< stride of each rpn level (from "strides")
  std::vector<int> roi_strides;  ///< stride of each roi level (from "strides")
  int channels = 256;
  /// Memory layout of the roi-level feature maps the backbone module returns (optional
  /// "features_layout": "nchw", the default, or "nhwc" = channels-last, baked into the
  /// module by the exporter's `--features-layout nhwc`). Executors hand the maps over in it.
  Layout features_layout = Layout::nchw;
};

struct AnchorConfig {
  std::vector<std::vector<float>> sizes;          ///< one list per rpn level (or one for all)
  std::vector<std::vector<float>> aspect_ratios;  ///< one list per rpn level (or one for all)
  float offset = 0.f;
  bool round_cell_anchors = false;
  enum class StrideFrom { backbone, image };
  StrideFrom stride_from = StrideFrom::backbone;
  /// Sizes of rpn level `l` (broadcasting a single list).
  const std::vector<float>& sizes_at(std::size_t l) const {
    return sizes.size() == 1 ? sizes[0] : sizes[l];
  }
  const std::vector<float>& aspect_ratios_at(std::size_t l) const {
    return aspect_ratios.size() == 1 ? aspect_ratios[0] : aspect_ratios[l];
  }
  /// Anchors per spatial cell at level `l`.
  int anchors_per_cell(std::size_t l) const {
    return int(sizes_at(l).size() * aspect_ratios_at(l).size());
  }
};

struct RpnConfig {
  int pre_nms_topk = 1000;
  int post_nms_topk = 1000;
  double nms_threshold = 0.7;  ///< IoU compared in double, as torchvision's nms kernel does
  float min_box_size = 0.f;
  bool min_box_size_inclusive = false;
  std::optional<float> score_threshold;
  enum class NmsScores { logits, sigmoid };
  NmsScores nms_scores = NmsScores::logits;
  std::array<float, 4> box_weights{1.f, 1.f, 1.f, 1.f};
  float scale_clamp = float(std::log(1000.0 / 16.0));
};

/// RoIAlign + level-mapper parameters (shared by the box and the mask pooler).
struct PoolerConfig {
  int resolution = 7;
  int sampling_ratio = 0;  ///< <= 0: adaptive, ceil(roi_size / resolution)
  bool aligned = true;
  float canonical_box_size = 224.f;
  int canonical_level = 4;
  float level_eps = 1e-8f;
  bool level_eps_inside_log = true;
};

/// One stage of a Cascade R-CNN box head (`roi_heads.cascade[k]`): its box head module and
/// the box-regression weights that decode its deltas.
struct CascadeStageConfig {
  std::string module;  ///< key in `modules`: "box_head" for stage 0
  std::array<float, 4> box_weights{10.f, 10.f, 5.f, 5.f};
};

struct RoiHeadsConfig {
  int num_classes = 80;
  bool background_first = false;  ///< "background": "first" (torchvision) or "last"
  bool class_agnostic_box_regression = false;
  PoolerConfig pooler;
  std::array<float, 4> box_weights{10.f, 10.f, 5.f, 5.f};
  float scale_clamp = float(std::log(1000.0 / 16.0));
  float score_threshold = 0.05f;
  double nms_threshold = 0.5;
  int detections_per_image = 100;
  std::optional<float> min_box_size;
  /// Cascade R-CNN (Detectron2 CascadeROIHeads): two or more stages; each refines the
  /// previous stage's boxes (class-agnostic deltas, its own weights, clipped), the final
  /// detections use the last stage's boxes and the stages' class probabilities averaged.
  /// `box_weights` is then the last stage's. Empty: one box head.
  std::vector<CascadeStageConfig> cascade;
};

struct MaskHeadConfig {
  PoolerConfig pooler{14, 0, true, 224.f, 4, 1e-8f, true};
  bool class_agnostic = false;
  float mask_threshold = 0.5f;
  enum class Paste { detectron2, torchvision };
  Paste paste = Paste::detectron2;
  /// Side M of the mask head's logits [R, Km, M, M]: model.json's optional
  /// `mask_head.mask_size`, else 2 x pooler.resolution (the FPN heads' deconvolution).
  /// Detectron2's C4 head (res5, stride 2, then the deconvolution) gives M = P = 14.
  int mask_size = 28;
};

/// Keypoint R-CNN's keypoint head (model.json `keypoint_head`): the pooler of the detection
/// boxes, K keypoints, S x S heatmap logits per keypoint, and whose `heatmaps_to_keypoints`
/// turns them into (x, y, score) (docs/explanation/keypoints.md).
struct KeypointHeadConfig {
  PoolerConfig pooler{14, 0, true, 224.f, 4, 1e-8f, true};
  int num_keypoints = 17;
  int heatmap_size = 56;
  enum class Decode { detectron2, torchvision };
  Decode decode = Decode::detectron2;
  std::vector<std::string> keypoint_names;      ///< K names
  std::vector<std::array<int, 2>> skeleton;     ///< keypoint index pairs to draw
};

struct PostprocessConfig {
  bool clip = true;
  bool drop_empty = true;
};

/// model.json's optional `source` object: where the bundle came from (informational only;
/// empty strings when absent).
struct SourceInfo {
  std::string framework;
  std::string framework_version;
  std::string config;
  std::string note;
};

/// Everything model.json says, validated.
struct ModelConfig {
  int version = 1;
  Architecture architecture = Architecture::faster_rcnn;
  Conventions conventions = Conventions::detectron2;
  std::string framework;  ///< source.framework (informational)
  SourceInfo source;      ///< the whole `source` object (informational)
  InputConfig input;
  ModulesConfig modules;
  BackboneConfig backbone;
  AnchorConfig anchors;
  RpnConfig rpn;
  RoiHeadsConfig roi_heads;
  std::optional<MaskHeadConfig> mask_head;
  std::optional<KeypointHeadConfig> keypoint_head;  ///< keypoint_rcnn only
  PostprocessConfig postprocess;
  std::vector<std::string> classes;
  /// Optional `category_ids`: the dataset's category id of each contiguous class (same length
  /// as `classes`; e.g. COCO's 78 for Detectron2's class 68 "microwave"). Empty when the
  /// bundle does not record them. rcnn-detect --format coco writes them as category_id.
  std::vector<std::int64_t> category_ids;
  std::string bundle_dir;  ///< directory the bundle was read from ("" when built in memory)
};

}  // namespace rcnn
