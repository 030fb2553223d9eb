#pragma once
// Deterministic synthetic inputs of the stage benchmarks, at the sizes a Faster R-CNN sees
// for an 800 x 800 input: P2..P5 feature maps of 256 channels, 1000 proposals, 1000-6000
// NMS candidates, P2..P6 RPN outputs, 1000 x 81 box-head outputs, an 800 x 1066 photo;
// and a Mask R-CNN's final stage: 100 detections' 28 x 28 mask probabilities to paste into
// a 480 x 640 and an 800 x 1200 image.
// The same inputs are written to disk (`rcnn-bench-stages --dump-inputs DIR`) so that
// bench/torchvision_ops.py times torchvision's ops on exactly these values.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <rcnn/anchors/grid_anchor_generator.hpp>
#include <rcnn/config.hpp>
#include <rcnn/mask/mask_types.hpp>
#include <rcnn/proposals/topk_proposal_selector.hpp>
#include <rcnn/roi_align/level_mapper.hpp>
#include <rcnn/roi_align/roi_align_plan.hpp>
#include <rcnn/roi_align/simd_roi_align.hpp>
#include <rcnn/types.hpp>

namespace rcnn_bench {

inline constexpr int kImage = 800;  // input side (pixels)

/// Proposal-like boxes inside a `side` x `side` image: side length log-uniform in
/// [12, 600] px, aspect ratio log-uniform in [0.4, 2.5], centres uniform, clipped.
inline std::vector<rcnn::Box> random_proposals(std::size_t n, int side, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<rcnn::Box> boxes(n);
  const float s = float(side);
  for (auto& b : boxes) {
    const float size = std::exp(std::log(12.f) + u(rng) * (std::log(600.f) - std::log(12.f)));
    const float ratio = std::exp(std::log(0.4f) + u(rng) * (std::log(2.5f) - std::log(0.4f)));
    const float w = size * std::sqrt(ratio), h = size / std::sqrt(ratio);
    const float cx = u(rng) * s, cy = u(rng) * s;
    b = {std::clamp(cx - w / 2, 0.f, s), std::clamp(cy - h / 2, 0.f, s),
         std::clamp(cx + w / 2, 0.f, s), std::clamp(cy + h / 2, 0.f, s)};
  }
  return boxes;
}

/// Multi-level RoIAlign input: P2..P5 maps of an 800 x 800 image (NCHW, and the same values
/// channels-last), `rois` proposals and their levels (Detectron2's level mapper), and two
/// poolers: `cfg` Detectron2's ROIAlignV2 (7 x 7, adaptive sampling, aligned) and `tv_cfg`
/// torchvision's MultiScaleRoIAlign (7 x 7, sampling ratio 2, not aligned).
struct RoIAlignWorkload {
  int channels = 256;
  std::vector<std::vector<float>> maps, maps_nhwc;
  std::vector<rcnn::FeatureMap> views, views_nhwc;
  std::vector<float> scales;
  std::vector<rcnn::Box> rois;
  std::vector<int> levels;
  rcnn::PoolerConfig cfg;
  rcnn::PoolerConfig tv_cfg = [] {
    rcnn::PoolerConfig c;
    c.sampling_ratio = 2;
    c.aligned = false;
    return c;
  }();

  explicit RoIAlignWorkload(int channels_ = 256, std::size_t num_rois = 1000)
      : channels(channels_) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int stride : {4, 8, 16, 32}) {
      const int side = kImage / stride;
      std::vector<float> m(std::size_t(channels) * side * side);
      for (float& v : m) v = normal(rng);
      maps.push_back(std::move(m));
      views.push_back({maps.back().data(), channels, side, side});
      scales.push_back(1.f / float(stride));
    }
    for (std::size_t l = 0; l < maps.size(); ++l) views[l].data = maps[l].data();
    for (const rcnn::FeatureMap& v : views) {
      std::vector<float> m(v.size());
      rcnn::detail::nchw_to_nhwc_rows(v, m.data(), 0, v.height);
      maps_nhwc.push_back(std::move(m));
    }
    for (std::size_t l = 0; l < maps.size(); ++l)
      views_nhwc.push_back({maps_nhwc[l].data(), channels, views[l].height, views[l].width,
                            rcnn::Layout::nhwc});
    rois = random_proposals(num_rois, kImage, 11);
    levels.resize(rois.size());
    rcnn::assign_levels(rois, cfg, 2, 5, levels);
  }
  std::size_t out_size() const { return rois.size() * std::size_t(channels) * 49; }
};

/// The arithmetic and memory floor of one RoIAlign call: `macs` multiply-adds (4 per bilinear
/// sample and channel: w1*v1 + w2*v2 + w3*v3 + w4*v4 added to the accumulator; 2 flops each),
/// `bytes` = the output written once + each RoI's sample window of its map (the rows and
/// columns its in-map samples touch, all channels) read once. Cross-RoI reuse of the maps
/// is not counted, so `bytes` can exceed the maps' total size.
struct RoIAlignCost {
  double macs = 0, bytes = 0;
};

inline RoIAlignCost roi_align_cost(const RoIAlignWorkload& w, const rcnn::PoolerConfig& cfg) {
  RoIAlignCost cost;
  const int P = cfg.resolution;
  std::vector<rcnn::detail::AxisSample> axis(std::size_t(P) * 4096);
  for (std::size_t r = 0; r < w.rois.size(); ++r) {
    const rcnn::FeatureMap& m = w.views[std::size_t(w.levels[r])];
    const auto g = rcnn::detail::roi_align_geometry(w.rois[r], w.scales[std::size_t(w.levels[r])], P,
                                                    cfg.sampling_ratio, cfg.aligned);
    if (g.grid_h <= 0 || g.grid_w <= 0) continue;
    cost.macs += 4.0 * double(P) * P * g.grid_h * g.grid_w * w.channels;
    int y0, y1, x0, x1;
    if (std::size_t(P) * std::size_t(std::max(g.grid_h, g.grid_w)) > axis.size()) continue;
    if (rcnn::detail::axis_samples(g.start_h, g.bin_h, g.grid_h, P, m.height, axis.data(), y0, y1) &&
        rcnn::detail::axis_samples(g.start_w, g.bin_w, g.grid_w, P, m.width, axis.data(), x0, x1))
      cost.bytes += double(y1 - y0 + 1) * double(x1 - x0 + 1) * w.channels * sizeof(float);
  }
  cost.bytes += double(w.out_size()) * sizeof(float);
  return cost;
}

/// NMS input: `n` boxes in clusters of about 20 jittered copies of an object box (so that
/// suppression happens), scores uniform in [0, 1), group ids (level 0..4 or class 0..79).
struct NmsWorkload {
  std::vector<rcnn::Box> boxes;
  std::vector<float> scores;
  std::vector<int> levels;   ///< 5 groups (RPN levels)
  std::vector<int> classes;  ///< 80 groups (classes)

  explicit NmsWorkload(std::size_t n) {
    std::mt19937 rng(std::uint32_t(1000 + n));
    std::uniform_real_distribution<float> u(0.f, 1.f);
    const std::size_t objects = std::max<std::size_t>(1, n / 20);
    const std::vector<rcnn::Box> centres = random_proposals(objects, kImage, 23);
    boxes.resize(n);
    scores.resize(n);
    levels.resize(n);
    classes.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const rcnn::Box& c = centres[std::size_t(rng() % objects)];
      const float w = c.x2 - c.x1, h = c.y2 - c.y1;
      const float jx = 0.15f * w, jy = 0.15f * h;
      boxes[i] = {c.x1 + (u(rng) - 0.5f) * jx, c.y1 + (u(rng) - 0.5f) * jy,
                  c.x2 + (u(rng) - 0.5f) * jx, c.y2 + (u(rng) - 0.5f) * jy};
      scores[i] = u(rng);
      levels[i] = int(rng() % 5);
      classes[i] = int(rng() % 80);
    }
  }
};

/// RPN outputs of an 800 x 800 input over P2..P6 (3 anchors per cell), anchors, and
/// Detectron2's RPN settings (pre/post-NMS top-k 1000, NMS 0.7 per level).
struct ProposalWorkload {
  rcnn::AnchorConfig anchor_cfg;
  rcnn::RpnConfig rpn;
  std::vector<std::vector<float>> objectness, deltas;
  std::vector<std::vector<rcnn::Box>> anchors;
  std::vector<rcnn::RpnLevelInput> inputs;
  rcnn::Size image{kImage, kImage};

  ProposalWorkload() {
    anchor_cfg.sizes = {{32}, {64}, {128}, {256}, {512}};
    anchor_cfg.aspect_ratios = {{0.5f, 1.f, 2.f}};
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.f, 1.f);
    const rcnn::GridAnchorGenerator gen;
    const int strides[] = {4, 8, 16, 32, 64};
    for (std::size_t l = 0; l < 5; ++l) {
      const int side = (kImage + strides[l] - 1) / strides[l];
      const std::size_t hw = std::size_t(side) * side;
      std::vector<float> o(3 * hw), d(12 * hw);
      for (float& v : o) v = 2.f * normal(rng);
      for (float& v : d) v = 0.2f * normal(rng);
      objectness.push_back(std::move(o));
      deltas.push_back(std::move(d));
      std::vector<rcnn::Box> a;
      gen(anchor_cfg, rcnn::Conventions::detectron2, l, strides[l], {side, side}, image, a);
      anchors.push_back(std::move(a));
    }
    for (std::size_t l = 0; l < 5; ++l) {
      const int side = (kImage + strides[l] - 1) / strides[l];
      inputs.push_back({{objectness[l].data(), 3, side, side},
                        {deltas[l].data(), 12, side, side},
                        anchors[l]});
    }
  }
};

/// Box-head outputs for 1000 proposals and 80 classes (+ background last, Detectron2):
/// logits N(0, 2^2) with a background bias (a few hundred candidates pass 0.05), deltas
/// N(0, 0.5^2).
struct BoxInferenceWorkload {
  rcnn::RoiHeadsConfig cfg;
  std::vector<rcnn::Box> proposals;
  std::vector<float> logits, deltas;

  BoxInferenceWorkload() {
    cfg.box_weights = {10.f, 10.f, 5.f, 5.f};
    const int R = 1000, K = cfg.num_classes;
    proposals = random_proposals(R, kImage, 31);
    std::mt19937 rng(9);
    std::normal_distribution<float> normal(0.f, 1.f);
    logits.resize(std::size_t(R) * (K + 1));
    deltas.resize(std::size_t(R) * 4 * K);
    for (int r = 0; r < R; ++r)
      for (int k = 0; k <= K; ++k)
        logits[std::size_t(r) * (K + 1) + k] = 2.f * normal(rng) + (k == K ? 4.f : 0.f);
    for (float& v : deltas) v = 0.5f * normal(rng);
  }
};

/// Mask pasting input: `count` final detections in an `image` (original frame), each with an
/// M x M probability mask, as a Mask R-CNN's mask head gives them after the sigmoid.
///
/// Masks are blobs, not noise: `sigmoid(6 * (1 - ex^2 - ey^2) + three Gaussian bumps)` with
/// an ellipse of radii 8-13 cells centred near the middle (ex, ey: offsets over the radii)
/// and bumps of amplitude -2..2, width 2-5 cells, so most cells are near 0 or 1 and a band
/// around the outline crosses 0.5, as in real masks. Boxes: side log-uniform in [20, 400]
/// px, aspect ratio log-uniform in [0.5, 2], fractional corners, inside the image (the
/// frameworks clip final boxes to it), in no particular order.
struct MaskPasteWorkload {
  rcnn::Size image;
  int mask_size = 28;
  std::vector<float> probs;  ///< [count, M, M]
  std::vector<rcnn::Box> boxes;

  explicit MaskPasteWorkload(rcnn::Size image_, std::size_t count = 100, int M = 28)
      : image(image_), mask_size(M) {
    std::mt19937 rng(std::uint32_t(41 + image.height * 7 + image.width));
    std::uniform_real_distribution<float> u(0.f, 1.f);
    const auto uniform = [&](float lo, float hi) { return lo + (hi - lo) * u(rng); };
    const auto log_uniform = [&](float lo, float hi) {
      return std::exp(std::log(lo) + u(rng) * (std::log(hi) - std::log(lo)));
    };
    const float H = float(image.height), W = float(image.width), m = float(M);
    probs.resize(count * std::size_t(M) * std::size_t(M));
    boxes.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
      const float cx = uniform(0.4f, 0.6f) * m, cy = uniform(0.4f, 0.6f) * m;
      const float rx = uniform(8.f, 13.f) * m / 28.f, ry = uniform(8.f, 13.f) * m / 28.f;
      float bx[3], by[3], bs[3], ba[3];
      for (int k = 0; k < 3; ++k) {
        bx[k] = uniform(0.f, m - 1.f);
        by[k] = uniform(0.f, m - 1.f);
        bs[k] = uniform(2.f, 5.f) * m / 28.f;
        ba[k] = uniform(-2.f, 2.f);
      }
      float* P = probs.data() + i * std::size_t(M) * std::size_t(M);
      for (int y = 0; y < M; ++y)
        for (int x = 0; x < M; ++x) {
          const float ex = (float(x) + 0.5f - cx) / rx, ey = (float(y) + 0.5f - cy) / ry;
          float logit = 6.f * (1.f - ex * ex - ey * ey);
          for (int k = 0; k < 3; ++k) {
            const float dx = float(x) - bx[k], dy = float(y) - by[k];
            logit += ba[k] * std::exp(-(dx * dx + dy * dy) / (2.f * bs[k] * bs[k]));
          }
          P[std::size_t(y) * std::size_t(M) + std::size_t(x)] = 1.f / (1.f + std::exp(-logit));
        }
      const float side = log_uniform(20.f, 400.f), ratio = log_uniform(0.5f, 2.f);
      const float w = std::min(side * std::sqrt(ratio), W - 1.f);
      const float h = std::min(side / std::sqrt(ratio), H - 1.f);
      const float x1 = uniform(0.f, W - w), y1 = uniform(0.f, H - h);
      boxes[i] = {x1, y1, std::min(x1 + w, W), std::min(y1 + h, H)};
    }
  }
  rcnn::MaskProbs view() const { return {probs.data(), int(boxes.size()), mask_size}; }
  /// "HxW", the benchmarks' size label.
  std::string label() const {
    return std::to_string(image.height) + "x" + std::to_string(image.width);
  }
};

/// A photo-like 480 x 640 BGR image (smooth gradients plus noise).
inline std::vector<std::uint8_t> photo(int height = 480, int width = 640) {
  std::vector<std::uint8_t> img(std::size_t(height) * width * 3);
  std::mt19937 rng(3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) {
        const float v = 128.f + 90.f * std::sin(0.013f * float(x * (c + 1)) + 0.021f * float(y)) +
                        float(rng() % 21) - 10.f;
        img[(std::size_t(y) * width + x) * 3 + c] = std::uint8_t(std::clamp(v, 0.f, 255.f));
      }
  return img;
}

}  // namespace rcnn_bench
