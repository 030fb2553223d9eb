// libFuzzer target: rcnn::parse_model_json on arbitrary bytes. Contract: it returns a config
// that satisfies every documented constraint, or throws rcnn::Error with a one-line message;
// nothing else (no other exception, no crash, no undefined behaviour). Accepted configs are
// also run through the set-up code that consumes them (resize shapes, padding, anchors).
#include <rcnn/anchors/grid_anchor_generator.hpp>
#include <rcnn/io/bundle.hpp>
#include <rcnn/preprocess/preprocess.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "contract violated: %s\n", what);
  std::abort();
}
void expect(bool ok, const char* what) {
  if (!ok) violated(what);
}

void check_config(const rcnn::ModelConfig& c) {
  const auto& b = c.backbone;
  expect(!b.rpn_levels.empty() && !b.roi_levels.empty(), "levels non-empty");
  expect(b.rpn_strides.size() == b.rpn_levels.size(), "a stride per rpn level");
  expect(b.roi_strides.size() == b.roi_levels.size(), "a stride per roi level");
  for (int s : b.rpn_strides) expect(s > 0, "rpn stride > 0");
  for (std::size_t i = 1; i < b.roi_strides.size(); ++i)
    expect(b.roi_strides[i] == 2 * b.roi_strides[i - 1] || b.roi_strides[i] == b.roi_strides[i - 1],
           "consecutive (or equal) roi strides");
  expect(b.channels > 0, "channels > 0");
  const std::size_t L = b.rpn_levels.size();
  for (const auto* lists : {&c.anchors.sizes, &c.anchors.aspect_ratios}) {
    expect(lists->size() == 1 || lists->size() == L, "anchor lists: 1 or one per level");
    for (const auto& l : *lists) {
      expect(!l.empty(), "anchor list non-empty");
      for (float v : l) expect(std::isfinite(v) && v > 0.f, "anchor values finite and > 0");
    }
  }
  expect(c.rpn.pre_nms_topk > 0 && c.rpn.post_nms_topk > 0, "rpn top-k > 0");
  expect(c.rpn.nms_threshold > 0 && c.rpn.nms_threshold <= 1, "rpn nms threshold");
  expect(c.roi_heads.num_classes > 0, "num_classes > 0");
  expect(c.classes.size() == std::size_t(c.roi_heads.num_classes), "a name per class");
  expect(c.roi_heads.score_threshold >= 0 && c.roi_heads.score_threshold < 1, "score threshold");
  expect(c.roi_heads.detections_per_image > 0, "detections_per_image > 0");
  expect(c.roi_heads.pooler.resolution > 0, "pooler resolution > 0");
  for (float s : c.input.pixel_std) expect(std::isfinite(s) && s > 0.f, "pixel_std > 0");
  expect(std::isfinite(c.input.pixel_scale) && c.input.pixel_scale > 0.f, "pixel_scale > 0");
  expect(c.input.size_divisibility >= 0, "size_divisibility >= 0");
  if (c.architecture == rcnn::Architecture::mask_rcnn)
    expect(c.mask_head.has_value() && c.modules.mask_head.has_value(), "mask_rcnn has a mask head");
}

/// The set-up code that consumes a parsed config must not misbehave on any accepted value.
void exercise(const rcnn::ModelConfig& c) {
  const rcnn::Size images[] = {{1, 1}, {1, 16384}, {16384, 1}, {480, 640}, {16384, 16384}};
  for (const rcnn::Size in : images) {
    try {
      const rcnn::Size r = rcnn::detail::checked_resized_shape(in, c.input, c.conventions);
      expect(r.height > 0 && r.width > 0 && r.height <= rcnn::kMaxImageSide &&
                 r.width <= rcnn::kMaxImageSide,
             "checked resized size within (0, kMaxImageSide]");
      const rcnn::Size p = rcnn::detail::padded_shape(r, c.input.size_divisibility, std::nullopt);
      expect(p.height >= r.height && p.width >= r.width, "padding does not shrink");
    } catch (const rcnn::Error& e) {
      expect(std::strchr(e.what(), '\n') == nullptr, "one-line error");
    }
  }
  std::vector<rcnn::Box> anchors;
  for (std::size_t l = 0; l < c.backbone.rpn_levels.size(); ++l) {
    rcnn::GridAnchorGenerator{}(c.anchors, c.conventions, l, c.backbone.rpn_strides[l], {2, 3},
                                {64, 96}, anchors);
    expect(anchors.size() == std::size_t(6 * c.anchors.anchors_per_cell(l)), "anchor count");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const rcnn::ModelConfig cfg = rcnn::parse_model_json(text, "model.json");
    check_config(cfg);
    exercise(cfg);
  } catch (const rcnn::Error& e) {
    const char* what = e.what();
    expect(std::strchr(what, '\n') == nullptr, "one-line error message");
    expect(std::strncmp(what, "model.json: ", 12) == 0, "message names the file");
  }
  return 0;  // any other exception escapes: libFuzzer reports it as a crash
}
