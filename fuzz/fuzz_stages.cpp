// libFuzzer target: the host stages between the two networks on arbitrary numbers.
// The input chooses valid settings (as model.json would allow them), sizes, and the raw bit
// patterns of every anchor, logit and delta (so NaN, +/-Inf, denormals and huge values all
// occur). Contracts (tests/support/invariants.hpp): proposals and detections are finite,
// clipped to the image, sorted by descending score, within the caps; levels are in range;
// postprocessed boxes are finite and inside the original image; BitmaskNms gives exactly
// GreedyNms's result. Nothing may throw: every input here is a valid one.
#include <fuzzer/FuzzedDataProvider.h>

#include <rcnn/box/softmax_box_inference.hpp>
#include <rcnn/nms/bitmask_nms.hpp>
#include <rcnn/nms/greedy_nms.hpp>
#include <rcnn/postprocess/rescale_postprocess.hpp>
#include <rcnn/proposals/topk_proposal_selector.hpp>
#include <rcnn/roi_align/level_mapper.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../tests/support/invariants.hpp"

namespace {

void expect(const std::string& problem, const char* stage) {
  if (problem.empty()) return;
  std::fprintf(stderr, "%s: %s\n", stage, problem.c_str());
  std::abort();
}

/// `n` floats with arbitrary bit patterns (zeros once the input is exhausted).
std::vector<float> raw_floats(FuzzedDataProvider& in, std::size_t n) {
  std::vector<float> v(n, 0.f);
  const std::vector<std::uint8_t> bytes = in.ConsumeBytes<std::uint8_t>(n * sizeof(float));
  if (!bytes.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const rcnn::Size image{in.ConsumeIntegralInRange(1, 2048), in.ConsumeIntegralInRange(1, 2048)};

  rcnn::RpnConfig rpn;
  rpn.pre_nms_topk = in.ConsumeIntegralInRange(1, 64);
  rpn.post_nms_topk = in.ConsumeIntegralInRange(1, 64);
  rpn.nms_threshold = in.ConsumeFloatingPointInRange(0.01, 1.0);
  rpn.min_box_size = in.ConsumeFloatingPointInRange(0.f, 16.f);
  rpn.min_box_size_inclusive = in.ConsumeBool();
  if (in.ConsumeBool()) rpn.score_threshold = in.ConsumeProbability<float>();
  rpn.nms_scores = in.ConsumeBool() ? rcnn::RpnConfig::NmsScores::sigmoid
                                    : rcnn::RpnConfig::NmsScores::logits;
  for (float& w : rpn.box_weights) w = in.ConsumeFloatingPointInRange(0.1f, 20.f);
  rpn.scale_clamp = in.ConsumeFloatingPointInRange(0.1f, 10.f);

  // RPN levels: arbitrary anchors, logits and deltas.
  const int L = in.ConsumeIntegralInRange(1, 3);
  std::vector<std::vector<rcnn::Box>> anchors(static_cast<std::size_t>(L));
  std::vector<std::vector<float>> logits(static_cast<std::size_t>(L)),
      deltas(static_cast<std::size_t>(L));
  std::vector<rcnn::RpnLevelInput> levels;
  for (int l = 0; l < L; ++l) {
    const int A = in.ConsumeIntegralInRange(1, 4), H = in.ConsumeIntegralInRange(1, 8),
              W = in.ConsumeIntegralInRange(1, 8);
    const std::size_t n = std::size_t(A * H * W);
    const std::vector<float> a = raw_floats(in, 4 * n);
    anchors[std::size_t(l)].resize(n);
    std::memcpy(static_cast<void*>(anchors[std::size_t(l)].data()), a.data(),
                a.size() * sizeof(float));
    logits[std::size_t(l)] = raw_floats(in, n);
    deltas[std::size_t(l)] = raw_floats(in, 4 * n);
    levels.push_back({{logits[std::size_t(l)].data(), A, H, W},
                      {deltas[std::size_t(l)].data(), 4 * A, H, W},
                      anchors[std::size_t(l)]});
  }

  rcnn::BitmaskNms bitmask;
  rcnn::GreedyNms greedy;
  rcnn::TopKProposalSelector select;
  rcnn::ScoredBoxes props, props_greedy;
  select(std::span<const rcnn::RpnLevelInput>(levels), image, rpn, bitmask, props);
  expect(rcnn_test::proposals_problem(props, image, rpn, std::size_t(L)), "proposals");
  select(std::span<const rcnn::RpnLevelInput>(levels), image, rpn, greedy, props_greedy);
  expect(same_bytes(props.boxes, props_greedy.boxes) && same_bytes(props.scores, props_greedy.scores)
             ? ""
             : "BitmaskNms and GreedyNms differ",
         "proposals");

  // Level mapping of the proposals.
  rcnn::PoolerConfig pooler;
  pooler.canonical_box_size = in.ConsumeFloatingPointInRange(1.f, 512.f);
  pooler.canonical_level = in.ConsumeIntegralInRange(0, 8);
  pooler.level_eps = in.ConsumeFloatingPointInRange(0.f, 1e-3f);
  pooler.level_eps_inside_log = in.ConsumeBool();
  std::vector<int> box_levels(props.size());
  rcnn::assign_levels(std::span<const rcnn::Box>(props.boxes), pooler, 2, 5,
                      std::span<int>(box_levels));
  for (int lv : box_levels) expect(lv >= 0 && lv <= 3 ? "" : "level out of range", "levels");

  // Box inference on arbitrary logits and deltas for those proposals.
  rcnn::RoiHeadsConfig heads;
  heads.num_classes = in.ConsumeIntegralInRange(1, 6);
  heads.background_first = in.ConsumeBool();
  heads.class_agnostic_box_regression = in.ConsumeBool();
  for (float& w : heads.box_weights) w = in.ConsumeFloatingPointInRange(0.1f, 20.f);
  heads.scale_clamp = in.ConsumeFloatingPointInRange(0.1f, 10.f);
  heads.score_threshold = in.ConsumeFloatingPointInRange(0.f, 0.99f);
  heads.nms_threshold = in.ConsumeFloatingPointInRange(0.01, 1.0);
  heads.detections_per_image = in.ConsumeIntegralInRange(1, 50);
  if (in.ConsumeBool()) heads.min_box_size = in.ConsumeFloatingPointInRange(0.f, 4.f);
  const int K = heads.num_classes;
  const int dw = heads.class_agnostic_box_regression ? 4
                 : heads.background_first            ? 4 * (K + 1)
                                                     : 4 * K;
  const int R = int(props.size());
  const std::vector<float> cl = raw_floats(in, std::size_t(R) * std::size_t(K + 1));
  const std::vector<float> bd = raw_floats(in, std::size_t(R) * std::size_t(dw));
  const rcnn::BoxHeadView head{cl.data(), bd.data(), R, K + 1, dw};
  rcnn::SoftmaxBoxInference infer;
  std::vector<rcnn::Detection> dets, dets_greedy;
  infer(std::span<const rcnn::Box>(props.boxes), head, image, heads, bitmask, dets);
  expect(rcnn_test::detections_problem(dets, image, heads), "box inference");
  infer(std::span<const rcnn::Box>(props.boxes), head, image, heads, greedy, dets_greedy);
  expect(same_bytes(dets, dets_greedy) ? "" : "BitmaskNms and GreedyNms differ", "box inference");

  // Postprocess to an arbitrary original size.
  const rcnn::Size original{in.ConsumeIntegralInRange(1, 16384), in.ConsumeIntegralInRange(1, 16384)};
  rcnn::PostprocessConfig post;
  post.clip = in.ConsumeBool();
  post.drop_empty = in.ConsumeBool();
  const rcnn::Conventions conv =
      in.ConsumeBool() ? rcnn::Conventions::detectron2 : rcnn::Conventions::torchvision;
  std::vector<int> kept;
  rcnn::RescalePostprocess{}(image, original, conv, post, dets, kept);
  for (const auto& d : dets) {
    const std::string p = post.clip ? rcnn_test::box_problem(d.box, original)
                          : rcnn::is_finite(d.box) ? ""
                                                   : "box is not finite";
    expect(p, "postprocess");
  }
  return 0;
}
