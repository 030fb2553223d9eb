#pragma once
/// \file bundle_schema.hpp
/// The model bundle schema (format version 1, docs/reference/bundle-format.md): every key of
/// model.json, what it means (the ModelConfig field it fills, config.hpp) and its bounds, as
/// `parse_model_json`. Pure: parses text, touches no file (the reader, bundle.hpp, does).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "rcnn/config.hpp"
#include "rcnn/error.hpp"
#include "rcnn/io/json_node.hpp"
#include "rcnn/preprocess/resize_shape.hpp"

namespace rcnn {


/// Bundle format versions this reader understands.
inline constexpr int bundle_supported_versions[] = {1};

namespace detail {

/// A non-empty array of distinct non-empty strings (level names).
inline std::vector<std::string> read_level_names(const JsonNode& n) {
  const std::string expectation = "a non-empty array of level names";
  if (n.array_size(expectation) == 0) n.expected_value(expectation);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < n.json().size(); ++i) {
    const JsonNode e = n.element(i);
    std::string name = read_string(e, "a level name (string)");
    if (name.empty()) e.expected_value("a non-empty level name");
    if (std::find(names.begin(), names.end(), name) != names.end())
      e.fail("duplicate level name \"" + name + "\"");
    names.push_back(std::move(name));
  }
  return names;
}

/// `anchors.sizes` / `anchors.aspect_ratios`: one list for every level or one per rpn level.
inline std::vector<std::vector<float>> read_per_level_lists(const JsonNode& n,
                                                            std::size_t num_levels) {
  const std::string expectation = "an array with 1 list or one list per rpn level (" +
                                  std::to_string(num_levels) + ")";
  const std::size_t size = n.array_size(expectation);
  if (size != 1 && size != num_levels)
    n.fail("expected " + expectation + ", got " + std::to_string(size) + " lists");
  std::vector<std::vector<float>> lists;
  for (std::size_t l = 0; l < size; ++l) {
    const JsonNode list = n.element(l);
    const std::string inner = "a non-empty array of numbers > 0";
    if (list.array_size(inner) == 0) list.expected_value(inner);
    std::vector<float> values;
    for (std::size_t i = 0; i < list.json().size(); ++i)
      values.push_back(read_float_in(list.element(i), 0.0, true, unbounded, false));
    lists.push_back(std::move(values));
  }
  return lists;
}

/// RoIAlign and level-mapper keys shared by `roi_heads` and `mask_head`.
inline PoolerConfig read_pooler(const JsonNode& obj) {
  PoolerConfig p;
  p.resolution = read_int(obj.child("pooler_resolution"), 1);
  p.sampling_ratio = read_int(obj.child("sampling_ratio"), 0);
  p.aligned = read_bool(obj.child("aligned"));
  p.canonical_box_size = read_float_in(obj.child("canonical_box_size"), 0.0, true, unbounded, false);
  p.canonical_level = read_int(obj.child("canonical_level"), 0);
  p.level_eps = read_float_in(obj.child("level_eps"), 0.0, false, unbounded, false);
  p.level_eps_inside_log = read_bool(obj.child("level_eps_inside_log"));
  return p;
}

inline bool is_hex_digest(std::string_view s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

/// One entry of `modules`: `backbone` true reads `static_shape` (backbone_rpn), false reads
/// `static_rois` (box_head, mask_head). Module files are checked by read_bundle, not here.
inline ModuleConfig read_module(const JsonNode& m, const InputConfig& input, bool backbone) {
  m.require_object();
  ModuleConfig out;
  const JsonNode file = m.child("file");
  out.file = read_string(file, "a file name (string)");
  if (out.file.empty()) file.expected_value("a non-empty file name");
  if (std::filesystem::path(out.file).is_absolute())
    file.expected_value("a path relative to the bundle directory");

  if (backbone) {
    const JsonNode shape = m.child("static_shape");
    if (!shape.is_null()) {
      const std::string expectation = "null or an array [N, 3, H, W] of 4 integers";
      if (shape.array_size(expectation) != 4) shape.expected_value(expectation);
      std::array<std::int64_t, 4> s{};
      for (std::size_t i = 0; i < 4; ++i) {
        const JsonNode e = shape.element(i);
        s[i] = read_integer(e, "an integer > 0");
        if (s[i] <= 0) e.expected_value("an integer > 0");
        // Sides beyond the preprocessing limit (and batch sizes beyond int) cannot run.
        const std::int64_t max = i >= 2 ? std::int64_t(kMaxImageSide) : std::int64_t(INT_MAX);
        if (s[i] > max)
          e.expected_value("an integer in [1, " + std::to_string(max) + "]" +
                           (i >= 2 ? " (rcnn::kMaxImageSide)" : ""));
      }
      if (s[1] != 3) shape.element(1).expected_value("3 (image channels)");
      const char* axis_names[] = {"", "", "height", "width"};
      for (std::size_t i = 2; i < 4; ++i) {
        const std::int64_t d = input.size_divisibility;
        if (d > 1 && s[i] % d != 0)
          shape.element(i).expected_value("a multiple of input.size_divisibility (" +
                                          std::to_string(d) + ")");
        if (input.resize.mode == ResizeConfig::Mode::fixed) {
          const int resized = i == 2 ? input.resize.height : input.resize.width;
          if (s[i] < resized)
            shape.element(i).expected_value(
                std::string("a value >= input.resize.") + axis_names[i] + " (" +
                std::to_string(resized) + ") so that the resized image fits");
        }
      }
      out.static_shape = s;
    }
  } else {
    const JsonNode rois = m.child("static_rois");
    if (!rois.is_null()) {
      const std::string expectation = "null or an integer > 0";
      const std::int64_t r = read_integer(rois, expectation);
      if (r <= 0 || r > INT_MAX) rois.expected_value(expectation);
      out.static_rois = int(r);
    }
  }

  if (const auto sha = m.find("sha256")) {
    const std::string expectation = "64 hexadecimal digits (SHA-256 of the file)";
    std::string hex = read_string(*sha, "a string of " + expectation);
    if (!is_hex_digest(hex)) sha->expected_value(expectation);
    for (char& c : hex) c = char(std::tolower(static_cast<unsigned char>(c)));
    out.sha256 = hex;
  }
  return out;
}

/// The `keypoint_head` object (architecture "keypoint_rcnn").
inline KeypointHeadConfig read_keypoint_head(const JsonNode& kp) {
  kp.require_object();
  KeypointHeadConfig k;
  k.pooler = read_pooler(kp);
  k.num_keypoints = read_int(kp.child("num_keypoints"), 1);
  const JsonNode size = kp.child("heatmap_size");
  k.heatmap_size = read_int(size, 1);
  // The heatmap is what the keypoint head makes of the pooled features; the decoding
  // upsamples it (bicubic) to the box, so any size works, but not an absurd one.
  if (k.heatmap_size > 1024) size.expected_value("an integer in [1, 1024]");
  k.decode = read_choice(kp.child("decode"), {"detectron2", "torchvision"}) == 0
                 ? KeypointHeadConfig::Decode::detectron2
                 : KeypointHeadConfig::Decode::torchvision;
  const JsonNode names = kp.child("keypoint_names");
  const std::size_t n = names.array_size("an array of keypoint names");
  if (n != std::size_t(k.num_keypoints))
    names.fail("expected " + std::to_string(k.num_keypoints) +
               " keypoint names (keypoint_head.num_keypoints), got " + std::to_string(n));
  for (std::size_t i = 0; i < n; ++i)
    k.keypoint_names.push_back(read_string(names.element(i), "a keypoint name (string)"));
  const JsonNode skeleton = kp.child("skeleton");
  const std::string pair = "a pair [i, j] of keypoint indices in [0, " +
                           std::to_string(k.num_keypoints - 1) + "]";
  for (std::size_t e = 0; e < skeleton.array_size("an array of [i, j] keypoint index pairs");
       ++e) {
    const JsonNode edge = skeleton.element(e);
    if (edge.array_size(pair) != 2) edge.expected_value(pair);
    std::array<int, 2> ij{};
    for (std::size_t c = 0; c < 2; ++c) {
      const std::int64_t v = read_integer(edge.element(c), pair);
      if (v < 0 || v >= k.num_keypoints) edge.element(c).expected_value(pair);
      ij[c] = int(v);
    }
    k.skeleton.push_back(ij);
  }
  return k;
}

/// `roi_heads.cascade` (Cascade R-CNN): an array of two or more stages {"module": key of
/// `modules`, "box_weights": [4 numbers > 0]}; stage 0's module is "box_head", the others
/// are read from `modules` (distinct keys); the deltas are class-agnostic and the final
/// decode's `roi_heads.box_weights` are the last stage's.
inline void read_cascade(const JsonNode& cascade, const JsonNode& heads, const JsonNode& modules,
                         ModelConfig& cfg) {
  const std::string expectation = "null or an array of 2 or more stages {\"module\", \"box_weights\"}";
  const std::size_t n = cascade.array_size(expectation);
  if (n < 2) cascade.expected_value(expectation);
  RoiHeadsConfig& h = cfg.roi_heads;
  if (!h.class_agnostic_box_regression)
    heads.child("class_agnostic_box_regression")
        .expected_value("true with roi_heads.cascade (each stage refines one box per RoI)");
  h.cascade.clear();
  cfg.modules.cascade_box_heads.clear();
  for (std::size_t k = 0; k < n; ++k) {
    const JsonNode stage = cascade.element(k);
    stage.require_object();
    CascadeStageConfig c;
    const JsonNode module = stage.child("module");
    c.module = read_string(module, "a key of modules (string)");
    if (k == 0 && c.module != "box_head")
      module.expected_value("\"box_head\" (stage 0 runs the bundle's box head)");
    if (k > 0) {
      if (c.module == "box_head" || c.module == "backbone_rpn" || c.module == "mask_head" ||
          c.module == "neuron_library")
        module.expected_value("the key of this stage's own box head module");
      for (std::size_t j = 1; j < k; ++j)
        if (h.cascade[j].module == c.module)
          module.fail("stage " + std::to_string(k) + " repeats stage " + std::to_string(j) +
                      "'s module \"" + c.module + "\"");
      cfg.modules.cascade_box_heads.push_back(read_module(
          modules.child(c.module, "roi_heads.cascade[" + std::to_string(k) + "] names it"),
          cfg.input, false));
    }
    c.box_weights = read_float_array<4>(stage.child("box_weights"), 0.0, true);
    h.cascade.push_back(std::move(c));
  }
  if (h.cascade.back().box_weights != h.box_weights)
    heads.child("box_weights")
        .expected_value("the last cascade stage's box_weights (the final decode uses them)");
}

}  // namespace detail

/// Parses and validates the text of a bundle's model.json. `source_name` is the file name used
/// in error messages. Does not touch the file system (`bundle_dir` stays empty and module
/// files are not checked: see `read_bundle`).
///
/// Optional keys: `source` (informational), `classes` (absent, null or [] gives the generated
/// names "class_0" .. "class_<num_classes-1>"), `category_ids` (absent, null or [] gives none;
/// otherwise one distinct integer per class), `modules.*.sha256` (checked by read_bundle).
/// `mask_head` and `modules.mask_head` are required for "mask_rcnn" and ignored otherwise;
/// `keypoint_head` and `modules.keypoint_head` likewise for "keypoint_rcnn".
/// `input.size_divisibility` 0 (like 1) means no padding.
inline ModelConfig parse_model_json(std::string_view json_text,
                                    const std::string& source_name = "model.json") {
  using detail::JsonNode;
  using detail::read_bool;
  using detail::read_choice;
  using detail::read_float_in;
  using detail::read_int;
  using detail::unbounded;

  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    const auto bracket = what.find("] ");
    if (what.rfind("[json.exception.", 0) == 0 && bracket != std::string::npos)
      what = what.substr(bracket + 2);
    // One printable ASCII line: the "last read" excerpt may hold raw control or non-UTF-8 bytes.
    for (char& c : what)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    detail::fail(source_name + ": invalid JSON: " + what);
  }

  ModelConfig cfg;
  const JsonNode root(doc, "", source_name);
  if (!doc.is_object()) root.expected_type("a JSON object at the top level");

  // Header: format and version first, so that a newer bundle reports its version rather
  // than whatever key it renamed.
  {
    const JsonNode format = root.child("format");
    if (detail::read_string(format) != "rcnn-bundle") format.expected_value("\"rcnn-bundle\"");
    const JsonNode version = root.child("version");
    const std::int64_t v = detail::read_integer(version);
    bool supported = false;
    std::string listed;
    for (int s : bundle_supported_versions) {
      supported = supported || v == s;
      listed += (listed.empty() ? "" : ", ") + std::to_string(s);
    }
    if (!supported)
      version.fail("unsupported bundle version " + std::to_string(v) +
                   " (this rcnn reads versions: " + listed + ")");
    cfg.version = int(v);
    constexpr Architecture architectures[] = {Architecture::faster_rcnn, Architecture::mask_rcnn,
                                              Architecture::keypoint_rcnn};
    cfg.architecture = architectures[read_choice(root.child("architecture"),
                                                 {"faster_rcnn", "mask_rcnn", "keypoint_rcnn"})];
    cfg.conventions = read_choice(root.child("conventions"), {"torchvision", "detectron2"}) == 0
                          ? Conventions::torchvision
                          : Conventions::detectron2;
  }

  // source (optional, informational).
  if (const auto source = root.find("source"); source && !source->is_null()) {
    source->require_object();
    const auto text = [&](const char* key, std::string& out) {
      if (const auto v = source->find(key); v && !v->is_null()) out = detail::read_string(*v);
    };
    text("framework", cfg.source.framework);
    text("framework_version", cfg.source.framework_version);
    text("config", cfg.source.config);
    text("note", cfg.source.note);
    cfg.framework = cfg.source.framework;
  }

  // input
  {
    const JsonNode input = root.child("input");
    input.require_object();
    InputConfig& in = cfg.input;
    in.bgr = read_choice(input.child("channel_order"), {"BGR", "RGB"}) == 0;
    in.pixel_scale = read_float_in(input.child("pixel_scale"), 0.0, true, unbounded, false);
    in.pixel_mean = detail::read_float_array<3>(input.child("pixel_mean"), -unbounded, false);
    in.pixel_std = detail::read_float_array<3>(input.child("pixel_std"), 0.0, true);
    const JsonNode resize = input.child("resize");
    resize.require_object();
    if (read_choice(resize.child("mode"), {"shortest_edge", "fixed"}) == 0) {
      in.resize.mode = ResizeConfig::Mode::shortest_edge;
      in.resize.min_size = read_int(resize.child("min_size"), 1);
      const JsonNode max_size = resize.child("max_size");
      const std::string expectation = "an integer >= input.resize.min_size (" +
                                      std::to_string(in.resize.min_size) + ")";
      const std::int64_t m = detail::read_integer(max_size, expectation);
      if (m < in.resize.min_size || m > INT_MAX) max_size.expected_value(expectation);
      in.resize.max_size = int(m);
    } else {
      in.resize.mode = ResizeConfig::Mode::fixed;
      in.resize.height = read_int(resize.child("height"), 1);
      in.resize.width = read_int(resize.child("width"), 1);
    }
    in.size_divisibility = read_int(input.child("size_divisibility"), 0);
  }

  // modules
  {
    const JsonNode modules = root.child("modules");
    modules.require_object();
    cfg.modules.backbone_rpn = detail::read_module(modules.child("backbone_rpn"), cfg.input, true);
    cfg.modules.box_head = detail::read_module(modules.child("box_head"), cfg.input, false);
    if (cfg.architecture == Architecture::mask_rcnn)
      cfg.modules.mask_head = detail::read_module(
          modules.child("mask_head", "architecture \"mask_rcnn\" needs the mask_head module"),
          cfg.input, false);
    if (cfg.architecture == Architecture::keypoint_rcnn)
      cfg.modules.keypoint_head = detail::read_module(
          modules.child("keypoint_head",
                        "architecture \"keypoint_rcnn\" needs the keypoint_head module"),
          cfg.input, false);
    if (const auto lib = modules.find("neuron_library"); lib && !lib->is_null()) {
      const std::string expectation = "null or a non-empty library path or name";
      std::string path = detail::read_string(*lib, expectation);
      if (path.empty()) lib->expected_value(expectation);
      cfg.modules.neuron_library = std::move(path);
    }
  }

  // backbone
  {
    const JsonNode backbone = root.child("backbone");
    backbone.require_object();
    BackboneConfig& b = cfg.backbone;
    b.rpn_levels = detail::read_level_names(backbone.child("rpn_levels"));
    const JsonNode roi_levels = backbone.child("roi_levels");
    b.roi_levels = detail::read_level_names(roi_levels);
    std::string rpn_listed;
    for (const auto& name : b.rpn_levels)
      rpn_listed += (rpn_listed.empty() ? "\"" : ", \"") + name + "\"";
    for (std::size_t i = 0; i < b.roi_levels.size(); ++i)
      if (std::find(b.rpn_levels.begin(), b.rpn_levels.end(), b.roi_levels[i]) ==
          b.rpn_levels.end())
        roi_levels.element(i).expected_value("one of backbone.rpn_levels (" + rpn_listed + ")");

    const JsonNode strides = backbone.child("strides");
    strides.require_object();
    const auto stride_of = [&](const std::string& level) {
      const auto s = strides.find(level);
      if (!s)
        detail::fail(source_name + ": " + strides.child_path(level) +
                     ": missing stride for level \"" + level + "\" of backbone.rpn_levels");
      return read_int(*s, 1);
    };
    for (const auto& level : b.rpn_levels) b.rpn_strides.push_back(stride_of(level));
    for (std::size_t i = 0; i < b.roi_levels.size(); ++i) {
      const int s = stride_of(b.roi_levels[i]);
      const JsonNode at = *strides.find(b.roi_levels[i]);
      if (i == 0 && (s & (s - 1)) != 0)
        at.expected_value("a power of two (the RoI level mapper uses log2 of the roi level "
                          "strides)");
      // torchvision's mobilenet FPN pools from two maps of the same stride (32, 32): all
      // RoIs then map to the first one, as torchvision's LevelMapper does.
      if (i > 0 && s != 2 * b.roi_strides.back() && s != b.roi_strides.back())
        at.expected_value(std::to_string(2 * b.roi_strides.back()) +
                          ", twice the stride of the previous roi level \"" +
                          b.roi_levels[i - 1] + "\" (or " + std::to_string(b.roi_strides.back()) +
                          ", equal to it: the RoI level mapper needs consecutive pyramid levels)");
      b.roi_strides.push_back(s);
    }
    b.channels = read_int(backbone.child("channels"), 1);
    if (const auto layout = backbone.find("features_layout"); layout && !layout->is_null())
      b.features_layout = read_choice(*layout, {"nchw", "nhwc"}) == 0 ? Layout::nchw : Layout::nhwc;
  }

  // anchors
  {
    const JsonNode anchors = root.child("anchors");
    anchors.require_object();
    AnchorConfig& a = cfg.anchors;
    const std::size_t levels = cfg.backbone.rpn_levels.size();
    a.sizes = detail::read_per_level_lists(anchors.child("sizes"), levels);
    a.aspect_ratios = detail::read_per_level_lists(anchors.child("aspect_ratios"), levels);
    a.offset = read_float_in(anchors.child("offset"), 0.0, false, 1.0, true);
    a.round_cell_anchors = read_bool(anchors.child("round_cell_anchors"));
    a.stride_from = read_choice(anchors.child("stride_from"), {"backbone", "image"}) == 0
                        ? AnchorConfig::StrideFrom::backbone
                        : AnchorConfig::StrideFrom::image;
  }

  // rpn
  {
    const JsonNode rpn = root.child("rpn");
    rpn.require_object();
    RpnConfig& r = cfg.rpn;
    r.pre_nms_topk = read_int(rpn.child("pre_nms_topk"), 1);
    r.post_nms_topk = read_int(rpn.child("post_nms_topk"), 1);
    r.nms_threshold = detail::read_number_in(rpn.child("nms_threshold"), 0.0, true, 1.0, false);
    r.min_box_size = read_float_in(rpn.child("min_box_size"), 0.0, false, unbounded, false);
    r.min_box_size_inclusive = read_bool(rpn.child("min_box_size_inclusive"));
    const JsonNode score = rpn.child("score_threshold");
    if (!score.is_null()) {
      if (!score.json().is_number()) score.expected_type("null or a number in [0, 1]");
      r.score_threshold = read_float_in(score, 0.0, false, 1.0, false);
    }
    r.nms_scores = read_choice(rpn.child("nms_scores"), {"logits", "sigmoid"}) == 0
                       ? RpnConfig::NmsScores::logits
                       : RpnConfig::NmsScores::sigmoid;
    r.box_weights = detail::read_float_array<4>(rpn.child("box_weights"), 0.0, true);
    r.scale_clamp = read_float_in(rpn.child("scale_clamp"), 0.0, true, unbounded, false);
  }

  // roi_heads
  {
    const JsonNode heads = root.child("roi_heads");
    heads.require_object();
    RoiHeadsConfig& h = cfg.roi_heads;
    h.num_classes = read_int(heads.child("num_classes"), 1);
    h.background_first = read_choice(heads.child("background"), {"first", "last"}) == 0;
    h.class_agnostic_box_regression = read_bool(heads.child("class_agnostic_box_regression"));
    h.pooler = detail::read_pooler(heads);
    h.box_weights = detail::read_float_array<4>(heads.child("box_weights"), 0.0, true);
    h.scale_clamp = read_float_in(heads.child("scale_clamp"), 0.0, true, unbounded, false);
    h.score_threshold = read_float_in(heads.child("score_threshold"), 0.0, false, 1.0, true);
    h.nms_threshold = detail::read_number_in(heads.child("nms_threshold"), 0.0, true, 1.0, false);
    h.detections_per_image = read_int(heads.child("detections_per_image"), 1);
    const JsonNode min_box = heads.child("min_box_size");
    if (!min_box.is_null()) {
      if (!min_box.json().is_number()) min_box.expected_type("null or a number >= 0");
      h.min_box_size = read_float_in(min_box, 0.0, false, unbounded, false);
    }
    if (const auto cascade = heads.find("cascade"); cascade && !cascade->is_null())
      detail::read_cascade(*cascade, heads, root.child("modules"), cfg);
  }

  // mask_head (mask_rcnn only)
  if (cfg.architecture == Architecture::mask_rcnn) {
    const JsonNode mask = root.child("mask_head", "architecture \"mask_rcnn\" needs it");
    mask.require_object();
    MaskHeadConfig m;
    m.pooler = detail::read_pooler(mask);
    m.mask_size = 2 * m.pooler.resolution;
    if (const auto size = mask.find("mask_size"); size && !size->is_null())
      m.mask_size = read_int(*size, 1);
    m.class_agnostic = read_bool(mask.child("class_agnostic"));
    m.mask_threshold = read_float_in(mask.child("mask_threshold"), 0.0, false, 1.0, false);
    m.paste = read_choice(mask.child("paste"), {"detectron2", "torchvision"}) == 0
                  ? MaskHeadConfig::Paste::detectron2
                  : MaskHeadConfig::Paste::torchvision;
    cfg.mask_head = m;
  }

  // keypoint_head (keypoint_rcnn only)
  if (cfg.architecture == Architecture::keypoint_rcnn)
    cfg.keypoint_head = detail::read_keypoint_head(
        root.child("keypoint_head", "architecture \"keypoint_rcnn\" needs it"));

  // postprocess
  {
    const JsonNode post = root.child("postprocess");
    post.require_object();
    cfg.postprocess.clip = read_bool(post.child("clip"));
    cfg.postprocess.drop_empty = read_bool(post.child("drop_empty"));
  }

  // classes (optional)
  {
    const auto classes = root.find("classes");
    const int k = cfg.roi_heads.num_classes;
    if (classes && !classes->is_null() && classes->array_size("an array of class names") > 0) {
      const std::size_t n = classes->json().size();
      if (n != std::size_t(k))
        classes->fail("expected " + std::to_string(k) +
                      " class names (roi_heads.num_classes), got " + std::to_string(n));
      for (std::size_t i = 0; i < n; ++i)
        cfg.classes.push_back(detail::read_string(classes->element(i), "a class name (string)"));
    } else {
      for (int i = 0; i < k; ++i) cfg.classes.push_back("class_" + std::to_string(i));
    }
  }

  // category_ids (optional): the dataset id of each contiguous class, distinct integers
  {
    const auto ids = root.find("category_ids");
    if (ids && !ids->is_null() && ids->array_size("an array of integer category ids") > 0) {
      const std::size_t n = ids->json().size();
      if (n != cfg.classes.size())
        ids->fail("expected " + std::to_string(cfg.classes.size()) +
                  " category ids (one per class, roi_heads.num_classes), got " + std::to_string(n));
      for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t id = detail::read_integer(ids->element(i), "an integer category id >= 0");
        if (id < 0) ids->element(i).expected_value("an integer category id >= 0");
        for (std::size_t j = 0; j < i; ++j)
          if (cfg.category_ids[j] == id)
            ids->element(i).fail("category id " + std::to_string(id) + " repeats element " +
                                 std::to_string(j) + " (each class needs its own id)");
        cfg.category_ids.push_back(id);
      }
    }
  }
  return cfg;
}

}  // namespace rcnn
