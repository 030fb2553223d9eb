// Steady state allocates nothing: after a first image of a size has sized every workspace, a
// second, different image of the same size runs the glue without one heap allocation.
// Counted by the replacement allocation functions of alloc_counter.cpp (every thread;
// operator new and malloc & co.), not by timing. Three levels:
//  1. each glue stage on its own (preprocess, anchors, proposal selection, level
//     assignment, RoIAlign (Ref, Omp, Simd), box inference, batched NMS, postprocess), both conventions;
//  2. the whole Detector with a plain C++ executor that fills preallocated outputs;
//  3. the whole Detector with TorchScriptExec on the Detectron2 fixture bundles, LibTorch's
//     own allocations excluded by pausing the count while the executor runs the networks
//     (built only with LibTorch and OpenCV).

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <rcnn/anchors/grid_anchor_generator.hpp>
#include <rcnn/box/softmax_box_inference.hpp>
#include <rcnn/detector.hpp>
#include <rcnn/nms/batched_nms.hpp>
#include <rcnn/nms/bitmask_nms.hpp>
#include <rcnn/nms/greedy_nms.hpp>
#include <rcnn/postprocess/rescale_postprocess.hpp>
#include <rcnn/preprocess/preprocess.hpp>
#include <rcnn/proposals/topk_proposal_selector.hpp>
#include <rcnn/roi_align/level_mapper.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>
#include <rcnn/mask/omp_paste.hpp>
#include <rcnn/roi_align/roi_align_ref.hpp>
#include <rcnn/roi_align/simd_roi_align.hpp>
#include <rcnn/stages.hpp>

#if RCNN_ALLOC_WITH_TORCH
#include <opencv2/core.hpp>
#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/io/bundle.hpp>
#endif

#include "alloc_counter.hpp"

// LibTorch's glog defines CHECK too: this file spells doctest's macros out (DOCTEST_CHECK).

namespace {

using rcnn_alloc::CountScope;

/// Reports the counted allocations (with backtraces) when there are any.
void check_none(const CountScope& scope, const char* what) {
  const rcnn_alloc::Counts c = scope.counts();
  if (c.total() != 0) rcnn_alloc::print_traces();
  DOCTEST_INFO(std::string(what) << ": " << c.news << " operator new, " << c.mallocs << " malloc-family calls");
  DOCTEST_CHECK(c.total() == 0);
}

/// A photo-like BGR image; `seed` changes its content, not its size.
std::vector<std::uint8_t> photo(int height, int width, unsigned seed) {
  std::vector<std::uint8_t> img(std::size_t(height) * width * 3);
  std::mt19937 rng(seed);
  const float fx = 0.01f + 0.002f * float(seed % 7), fy = 0.017f + 0.003f * float(seed % 5);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) {
        const float v = 128.f + 100.f * std::sin(fx * float(x * (c + 1)) + fy * float(y)) +
                        float(rng() % 31) - 15.f;
        img[(std::size_t(y) * width + x) * 3 + std::size_t(c)] =
            std::uint8_t(std::min(255.f, std::max(0.f, v)));
      }
  return img;
}

// ---- 1. Each stage --------------------------------------------------------------------------

/// Synthetic network outputs of one 800 x 800 input (P2..P6 RPN, P2..P5 features of C
/// channels, a box head of 81 classes); `seed` changes the values only.
struct NetworkOutputs {
  static constexpr int kSide = 800, kChannels = 32, kClasses = 80;
  std::vector<std::vector<float>> objectness, deltas, features;
  std::vector<float> logits, box_deltas;

  explicit NetworkOutputs(unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int stride : {4, 8, 16, 32, 64}) {
      const std::size_t side = std::size_t((kSide + stride - 1) / stride);
      objectness.emplace_back(3 * side * side);
      deltas.emplace_back(12 * side * side);
      for (float& v : objectness.back()) v = 2.f * normal(rng);
      for (float& v : deltas.back()) v = 0.2f * normal(rng);
      if (stride < 64) {
        features.emplace_back(std::size_t(kChannels) * side * side);
        for (float& v : features.back()) v = normal(rng);
      }
    }
    logits.resize(1000 * std::size_t(kClasses + 1));
    box_deltas.resize(1000 * std::size_t(4 * (kClasses + 1)));
    for (std::size_t i = 0; i < logits.size(); ++i)
      logits[i] = 2.f * normal(rng) + ((i % (kClasses + 1)) == 0 ? 3.f : 0.f);
    for (float& v : box_deltas) v = 0.5f * normal(rng);
  }
};

/// Every glue stage of one convention, with its workspaces, run image after image.
template <class Nms>
struct Glue {
  rcnn::Conventions conv;
  rcnn::AnchorConfig anchor_cfg;
  rcnn::RpnConfig rpn;
  rcnn::RoiHeadsConfig heads;
  rcnn::InputConfig input;
  rcnn::Detectron2Preprocess d2_pre;
  rcnn::TorchvisionPreprocess tv_pre;
  std::vector<float> chw;
  rcnn::GridAnchorGenerator anchor_gen;
  std::vector<std::vector<rcnn::Box>> anchors{5};
  rcnn::TopKProposalSelector select;
  Nms nms;
  rcnn::ScoredBoxes proposals;
  std::vector<int> levels;
  rcnn::OmpRoIAlign omp1{1}, omp2{2};
  rcnn::SimdRoIAlign simd1{1}, simd2{2};
  rcnn::RoIAlignRef ref;
  std::vector<float> pooled;
  rcnn::SoftmaxBoxInference infer;
  std::vector<rcnn::Detection> dets;
  rcnn::RescalePostprocess post;
  std::vector<int> kept;
  rcnn::BatchedNmsWorkspace batched_ws;
  std::vector<int> keep;

  explicit Glue(rcnn::Conventions c) : conv(c) {
    anchor_cfg.sizes = {{32}, {64}, {128}, {256}, {512}};
    anchor_cfg.aspect_ratios = {{0.5f, 1.f, 2.f}};
    if (conv == rcnn::Conventions::torchvision) {
      anchor_cfg.round_cell_anchors = true;
      rpn.nms_scores = rcnn::RpnConfig::NmsScores::sigmoid;
      rpn.min_box_size = 1e-3f;
      rpn.min_box_size_inclusive = true;
      rpn.score_threshold = 0.f;
      heads.background_first = true;
      heads.min_box_size = 1e-2f;
      heads.pooler.sampling_ratio = 2;
      heads.pooler.aligned = false;
      heads.pooler.level_eps_inside_log = false;
      heads.pooler.level_eps = 1e-6f;
    }
    // Set-up, as the Detector does on the first image of a size: capacity for the most
    // proposals (1000) of an 800 x 800 input.
    rcnn::StageSizing sizing;
    sizing.proposals = 1000;
    sizing.num_classes = NetworkOutputs::kClasses;
    infer.reserve(sizing);
    nms.reserve(1000);
    kept.reserve(1000);
    batched_ws.reserve(1000, 1000);
    keep.reserve(1000);
    omp1.reserve(1000);
    omp2.reserve(1000);
    simd1.reserve(1000);
    simd2.reserve(1000);
  }

  /// One image through every stage.
  void run(const std::vector<std::uint8_t>& image, const NetworkOutputs& net) {
    const rcnn::ImageView view{image.data(), 480, 640, 3, 0, true};
    d2_pre(view, input, chw);
    tv_pre(view, input, chw);
    const int strides[] = {4, 8, 16, 32, 64};
    std::vector<rcnn::RpnLevelInput>& in = rpn_inputs;
    for (std::size_t l = 0; l < 5; ++l) {
      const int side = (NetworkOutputs::kSide + strides[l] - 1) / strides[l];
      anchor_gen(anchor_cfg, conv, l, strides[l], {side, side}, {800, 800}, anchors[l]);
      in[l] = {{net.objectness[l].data(), 3, side, side},
               {net.deltas[l].data(), 12, side, side},
               anchors[l]};
    }
    select(std::span<const rcnn::RpnLevelInput>(in), {800, 800}, rpn, nms, proposals);
    const std::size_t R = proposals.size();
    levels.resize(R);
    rcnn::assign_levels(proposals.boxes, heads.pooler, 2, 5, levels);
    for (std::size_t l = 0; l < 4; ++l) {
      const int side = NetworkOutputs::kSide / strides[l];
      maps[l] = {net.features[l].data(), NetworkOutputs::kChannels, side, side};
    }
    const std::size_t out_size = R * NetworkOutputs::kChannels * 49;
    pooled.resize(out_size);
    const std::span<float> out(pooled.data(), out_size);
    omp1(maps, scales, proposals.boxes, levels, heads.pooler, out);
    omp2(maps, scales, proposals.boxes, levels, heads.pooler, out);
    simd1(maps, scales, proposals.boxes, levels, heads.pooler, out);  // NCHW: transposed copies
    for (std::size_t l = 0; l < 4; ++l) {  // the same memory read as channels-last maps
      maps_nhwc[l] = maps[l];
      maps_nhwc[l].layout = rcnn::Layout::nhwc;
    }
    simd2(maps_nhwc, scales, proposals.boxes, levels, heads.pooler, out);
    ref(maps, scales, proposals.boxes, levels, heads.pooler, out);
    const int K = NetworkOutputs::kClasses;
    const int dw = heads.background_first ? 4 * (K + 1) : 4 * K;
    infer(proposals.boxes, {net.logits.data(), net.box_deltas.data(), int(R), K + 1, dw},
          {800, 800}, heads, nms, dets);
    post({800, 800}, {480, 640}, conv, {}, dets, kept);
    rcnn::batched_nms(nms, std::span<const rcnn::Box>(proposals.boxes),
                      std::span<float>(proposals.scores),
                      std::span<const int>(levels), 0.5, keep, batched_ws);
  }

  std::vector<rcnn::RpnLevelInput> rpn_inputs = std::vector<rcnn::RpnLevelInput>(5);
  std::vector<rcnn::FeatureMap> maps = std::vector<rcnn::FeatureMap>(4);
  std::vector<rcnn::FeatureMap> maps_nhwc = std::vector<rcnn::FeatureMap>(4);
  std::vector<float> scales{0.25f, 0.125f, 0.0625f, 0.03125f};
};

template <class Nms>
void stages_steady_state(rcnn::Conventions conv) {
  Glue<Nms> glue(conv);
  const NetworkOutputs net_a(1), net_b(2);
  const std::vector<std::uint8_t> img_a = photo(480, 640, 1), img_b = photo(480, 640, 2);
  glue.run(img_a, net_a);  // sizes every workspace
  {
    CountScope scope;
    glue.run(img_b, net_b);
    check_none(scope, "second image through every stage");
  }
  DOCTEST_CHECK(glue.proposals.size() > 0);
  DOCTEST_CHECK(glue.dets.size() > 0);
}

}  // namespace

TEST_CASE_TEMPLATE("glue stages: a second image of the same size allocates nothing", Nms,
                   rcnn::BitmaskNms, rcnn::GreedyNms) {
  DOCTEST_SUBCASE("Detectron2 conventions") { stages_steady_state<Nms>(rcnn::Conventions::detectron2); }
  DOCTEST_SUBCASE("torchvision conventions") { stages_steady_state<Nms>(rcnn::Conventions::torchvision); }
}

TEST_CASE("the counter sees allocations (operator new, malloc, OpenMP threads)") {
  CountScope scope;
  std::vector<int>* v = new std::vector<int>(100);
  void* (*volatile allocate)(std::size_t) = std::malloc;  // not elided by the optimiser
  void* p = allocate(64);
  std::free(p);
  delete v;
  DOCTEST_CHECK(scope.counts().news >= 2);
  DOCTEST_CHECK(scope.counts().mallocs >= 1);
  rcnn_alloc::reset();
#pragma omp parallel num_threads(2)
  {
    std::vector<float> w(1000);
    w[0] = 1.f;
  }
  DOCTEST_CHECK(scope.counts().news >= 1);
}

// ---- 2. Detector with a C++ executor --------------------------------------------------------

namespace {

/// Executor whose "networks" write deterministic functions of the input into buffers it
/// owns, sized on the first call of a shape: no allocation afterwards, so the Detector's
/// own allocations are all that is counted.
class BufferExec {
 public:
  explicit BufferExec(const rcnn::ModelConfig& cfg) : cfg_(cfg) {}

  void run_backbone_rpn(const rcnn::TensorView& in, rcnn::BackboneOutputs& out) {
    const auto& b = cfg_.backbone;
    const std::int64_t N = in.shape[0], H = in.shape[2], W = in.shape[3];
    const float mean = in.data[(std::size_t(H) / 2) * std::size_t(W) + std::size_t(W) / 2];
    objectness_.resize(b.rpn_levels.size());
    deltas_.resize(b.rpn_levels.size());
    features_.resize(b.roi_levels.size());
    out.objectness.resize(b.rpn_levels.size());
    out.deltas.resize(b.rpn_levels.size());
    out.features.resize(b.roi_levels.size());
    for (std::size_t l = 0; l < b.rpn_levels.size(); ++l) {
      const int s = b.rpn_strides[l];
      const std::int64_t h = (H + s - 1) / s, w = (W + s - 1) / s;
      const std::int64_t A = cfg_.anchors.anchors_per_cell(l);
      objectness_[l].resize(std::size_t(N * A * h * w));
      deltas_[l].resize(std::size_t(N * 4 * A * h * w));
      for (std::size_t i = 0; i < objectness_[l].size(); ++i)
        objectness_[l][i] = 3.f * std::sin(0.37f * float(i) + 0.05f * mean + float(l));
      for (std::size_t i = 0; i < deltas_[l].size(); ++i)
        deltas_[l][i] = 0.1f * std::sin(0.91f * float(i) - 0.03f * mean);
      out.objectness[l] = {objectness_[l].data(), {N, A, h, w}};
      out.deltas[l] = {deltas_[l].data(), {N, 4 * A, h, w}};
    }
    for (std::size_t l = 0; l < b.roi_levels.size(); ++l) {
      const int s = b.roi_strides[l];
      const std::int64_t h = (H + s - 1) / s, w = (W + s - 1) / s;
      features_[l].resize(std::size_t(N * b.channels * h * w));
      for (std::size_t i = 0; i < features_[l].size(); ++i)
        features_[l][i] = std::cos(0.013f * float(i) + 0.1f * mean);
      out.features[l] = {features_[l].data(), {N, b.channels, h, w}};
    }
  }

  void run_box_head(const rcnn::TensorView& rois, rcnn::BoxHeadOutputs& out) {
    const auto& h = cfg_.roi_heads;
    const std::int64_t R = rois.shape[0], K1 = h.num_classes + 1;
    const std::int64_t D = h.class_agnostic_box_regression
                               ? 4
                               : (h.background_first ? 4 * K1 : 4 * h.num_classes);
    const std::size_t per = std::size_t(rois.shape[1] * rois.shape[2] * rois.shape[3]);
    logits_.resize(std::size_t(R * K1));
    deltas_out_.resize(std::size_t(R * D));
    for (std::int64_t r = 0; r < R; ++r) {
      const float f = rois.data[std::size_t(r) * per + per / 2];
      for (std::int64_t k = 0; k < K1; ++k)
        logits_[std::size_t(r * K1 + k)] = 4.f * std::sin(3.f * f + 0.7f * float(k));
      for (std::int64_t j = 0; j < D; ++j)
        deltas_out_[std::size_t(r * D + j)] = 0.2f * std::sin(f + float(j));
    }
    out.class_logits = {logits_.data(), {R, K1, 1, 1}};
    out.box_deltas = {deltas_out_.data(), {R, D, 1, 1}};
  }

 private:
  rcnn::ModelConfig cfg_;
  std::vector<std::vector<float>> objectness_, deltas_, features_;
  std::vector<float> logits_, deltas_out_;
};

rcnn::ModelConfig small_config(rcnn::Conventions conv, bool static_shapes) {
  rcnn::ModelConfig cfg;
  cfg.conventions = conv;
  cfg.backbone.rpn_levels = {"p2", "p3", "p4", "p5", "p6"};
  cfg.backbone.roi_levels = {"p2", "p3", "p4", "p5"};
  cfg.backbone.rpn_strides = {4, 8, 16, 32, 64};
  cfg.backbone.roi_strides = {4, 8, 16, 32};
  cfg.backbone.channels = 16;
  cfg.anchors.sizes = {{32}, {64}, {128}, {256}, {512}};
  cfg.anchors.aspect_ratios = {{0.5f, 1.f, 2.f}};
  cfg.modules.backbone_rpn.file = "backbone_rpn.pt";
  cfg.modules.box_head.file = "box_head.pt";
  cfg.bundle_dir = "/a/bundle/directory/with/a/long/path";
  cfg.input.resize.min_size = 608;
  cfg.input.resize.max_size = 1000;
  cfg.input.pixel_mean = {103.53f, 116.28f, 123.675f};
  if (conv == rcnn::Conventions::torchvision) {
    cfg.input.bgr = false;
    cfg.input.pixel_scale = 1.f / 255.f;
    cfg.input.pixel_mean = {0.485f, 0.456f, 0.406f};
    cfg.input.pixel_std = {0.229f, 0.224f, 0.225f};
    cfg.anchors.round_cell_anchors = true;
    cfg.anchors.stride_from = rcnn::AnchorConfig::StrideFrom::image;
    cfg.rpn.nms_scores = rcnn::RpnConfig::NmsScores::sigmoid;
    cfg.rpn.min_box_size = 1e-3f;
    cfg.rpn.min_box_size_inclusive = true;
    cfg.rpn.score_threshold = 0.f;
    cfg.roi_heads.background_first = true;
    cfg.roi_heads.min_box_size = 1e-2f;
    cfg.roi_heads.pooler.sampling_ratio = 2;
    cfg.roi_heads.pooler.aligned = false;
    cfg.roi_heads.pooler.level_eps_inside_log = false;
    cfg.roi_heads.pooler.level_eps = 1e-6f;
    cfg.postprocess.drop_empty = false;
  }
  if (static_shapes) {
    cfg.input.resize.mode = rcnn::ResizeConfig::Mode::fixed;
    cfg.input.resize.height = 608;
    cfg.input.resize.width = 608;
    cfg.modules.backbone_rpn.static_shape = std::array<std::int64_t, 4>{1, 3, 608, 608};
    cfg.modules.box_head.static_rois = 1000;
  }
  return cfg;
}

template <class Stages>
void detector_steady_state(bool static_shapes, int threads) {
  const rcnn::ModelConfig cfg = small_config(Stages::conventions, static_shapes);
  rcnn::Detector<BufferExec, rcnn::OmpRoIAlign, Stages> det(cfg, BufferExec(cfg),
                                                            rcnn::OmpRoIAlign{threads});
  const std::vector<std::uint8_t> a = photo(480, 640, 3), b = photo(480, 640, 4);
  const rcnn::ImageView va{a.data(), 480, 640, 3, 0, true}, vb{b.data(), 480, 640, 3, 0, true};
  std::vector<rcnn::DetectionResult> results;
  det.run(std::span<const rcnn::ImageView>(&va, 1), results);
  const std::size_t first = results[0].detections.size();
  {
    CountScope scope;
    det.run(std::span<const rcnn::ImageView>(&vb, 1), results);
    check_none(scope, "Detector::run, second image");
  }
  DOCTEST_CHECK(first > 0);
  if (static_shapes) return;  // compiled for batch 1
  // A batch of two, then the same batch in the other order.
  const rcnn::ImageView batch[2] = {va, vb}, swapped[2] = {vb, va};
  det.run(batch, results);
  {
    CountScope scope;
    det.run(swapped, results);
    check_none(scope, "Detector::run, second batch of two");
  }
  DOCTEST_CHECK(results.size() == 2);
}

}  // namespace

TEST_CASE("Detector with a C++ executor: the second image allocates nothing") {
  for (const int threads : {1, 2}) {
    DOCTEST_CAPTURE(threads);
    DOCTEST_SUBCASE("Detectron2 stages") { detector_steady_state<rcnn::Detectron2Stages>(false, threads); }
    DOCTEST_SUBCASE("Detectron2 stages, static shapes") {
      detector_steady_state<rcnn::Detectron2Stages>(true, threads);
    }
    DOCTEST_SUBCASE("torchvision stages") { detector_steady_state<rcnn::TorchvisionStages>(false, threads); }
    DOCTEST_SUBCASE("reference stages (greedy NMS)") {
      detector_steady_state<rcnn::Detectron2ReferenceStages>(false, threads);
    }
  }
}

// ---- 3. Detector with TorchScriptExec -----------------------------------------------------

#if RCNN_ALLOC_WITH_TORCH
namespace {

/// Runs an executor with allocation counting paused: LibTorch's allocations inside the
/// networks are not the glue's.
template <class Exec>
class Uncounted {
 public:
  explicit Uncounted(Exec exec) : exec_(std::move(exec)) {}
  void run_backbone_rpn(const rcnn::TensorView& in, rcnn::BackboneOutputs& out) {
    rcnn_alloc::PauseCounting pause;
    exec_.run_backbone_rpn(in, out);
  }
  void run_box_head(const rcnn::TensorView& in, rcnn::BoxHeadOutputs& out) {
    rcnn_alloc::PauseCounting pause;
    exec_.run_box_head(in, out);
  }
  void run_mask_head(const rcnn::TensorView& in, rcnn::MaskHeadOutputs& out) {
    rcnn_alloc::PauseCounting pause;
    exec_.run_mask_head(in, out);
  }

 private:
  Exec exec_;
};

template <class Stages = rcnn::Detectron2Stages>
void torchscript_steady_state(const std::string& bundle, int threads) {
  const rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  using Exec = Uncounted<rcnn::TorchScriptExec>;
  rcnn::Detector<Exec, rcnn::OmpRoIAlign, Stages> det(
      cfg, Exec(rcnn::TorchScriptExec(cfg, rcnn::TorchScriptOptions{threads})),
      rcnn::OmpRoIAlign{threads});
  if constexpr (requires { det.mask_paste().num_threads; }) det.mask_paste().num_threads = threads;
  const std::string photo_path =
      std::string(RCNN_TEST_DATA_DIR) + "/detectron2/narrow_r101_fpn_fixed800/cases/messi5/image.jpg";
  cv::Mat a = rcnn::cv_io::read_image(photo_path), b;
  cv::flip(a, b, 1);  // same size, different content
  cv::Mat sa, sb;
  const rcnn::ImageView va = rcnn::cv_io::view(a, sa), vb = rcnn::cv_io::view(b, sb);
  std::vector<rcnn::DetectionResult> results;
  det.run(std::span<const rcnn::ImageView>(&va, 1), results);
  det.run(std::span<const rcnn::ImageView>(&vb, 1), results);  // LibTorch warm-up too
  det.run(std::span<const rcnn::ImageView>(&va, 1), results);
  {
    CountScope scope;
    det.run(std::span<const rcnn::ImageView>(&vb, 1), results);
    check_none(scope, "Detector<TorchScriptExec>::run, glue of a second image");
  }
  DOCTEST_CHECK(results[0].detections.size() > 0);
  if (det.has_masks()) DOCTEST_CHECK(results[0].masks.size() == results[0].detections.size());
}

}  // namespace

TEST_CASE("Detector with TorchScriptExec, Mask R-CNN: the glue and the OpenMP paste of a second "
          "image allocate nothing") {
  for (const int threads : {1, 2}) {
    DOCTEST_CAPTURE(threads);
    torchscript_steady_state<rcnn::WithOmpPaste<rcnn::Detectron2Stages>>(
        std::string(RCNN_TEST_DATA_DIR) + "/detectron2/narrow_mask_rcnn_r101_fpn_shortest_edge",
        threads);
  }
}

TEST_CASE("Detector with TorchScriptExec: the glue of a second image allocates nothing") {
  for (const char* name : {"narrow_r101_fpn_shortest_edge", "narrow_r101_fpn_fixed800"}) {
    for (const int threads : {1, 2}) {
      DOCTEST_CAPTURE(name);
      DOCTEST_CAPTURE(threads);
      torchscript_steady_state(std::string(RCNN_TEST_DATA_DIR) + "/detectron2/" + name, threads);
    }
  }
}
#endif
