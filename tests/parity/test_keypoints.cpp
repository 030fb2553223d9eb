// Keypoint R-CNN parity, both frameworks: Detectron2's keypoint_rcnn_R_50_FPN_3x (narrow,
// real Detectron2 v0.6 run during the test: tests/reference/gen_keypoints.py) and
// torchvision's keypointrcnn_resnet50_fpn (tests/reference/gen_tv_keypoints.py), exported by
// our tools, stage by stage and end to end from the photo. Without Detectron2,
// gen_keypoints.py writes skipped.txt and its cases skip with that line.
//
// Tolerances (docs/explanation/keypoints.md):
//  - keypoint pooling on the reference detections: levels exact, features <= 1e-5 relative;
//  - keypoint head on the reference features: heatmaps <= 1e-5 relative;
//  - decoding of the reference heatmaps: positions exact unless the framework's peak and
//    ours are within 5e-7 relative of each other (the bicubic upsample agrees with ATen's
//    to 1.2e-7, bicubic_upsample.hpp), scores |diff| <= 1e-5;
//  - end to end: every reference detection matched (class, IoU >= 0.99, |score diff| <=
//    1e-3), keypoints within 0.5 px and 1e-3 score (original image).
#include <fstream>

#include <rcnn/keypoints/heatmaps_to_keypoints.hpp>

#include "stage_parity.hpp"

namespace {

using namespace parity;
using Decode = rcnn::KeypointHeadConfig::Decode;

/// Cases of a generator, empty (after saying why) when it was skipped.
std::vector<std::pair<fs::path, fs::path>> keypoint_cases(const char* generator) {
  const fs::path ref = fs::path(RCNN_REFERENCE_DIR) / generator;
  if (fs::exists(ref / "skipped.txt")) {
    std::ifstream f(ref / "skipped.txt");
    std::string line;
    std::getline(f, line);
    MESSAGE(generator << " skipped: " << line);
    return {};
  }
  auto all = reference_cases(ref);
  REQUIRE(!all.empty());
  return all;
}

/// Reference keypoints of detections.json (original image): [D][K] (x, y, score).
std::vector<std::vector<rcnn::Keypoint>> json_keypoints(const fs::path& p) {
  std::vector<std::vector<rcnn::Keypoint>> out;
  for (const auto& d : read_json(p)) {
    std::vector<rcnn::Keypoint> k;
    for (const auto& t : d.at("keypoints"))
      k.push_back({t[0].get<float>(), t[1].get<float>(), t[2].get<float>()});
    out.push_back(std::move(k));
  }
  return out;
}

struct DecodeReport {
  std::size_t keypoints = 0, exact_positions = 0, near_ties = 0;
  double max_px = 0, max_score = 0;
};

/// Stage by stage: pooling, head and decoding, each fed the reference inputs.
void check_keypoint_stages(const fs::path& bundle, const fs::path& dir) {
  const std::string label = bundle.filename().string() + "/" + dir.filename().string();
  CAPTURE(label);
  const rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  REQUIRE(cfg.architecture == rcnn::Architecture::keypoint_rcnn);
  REQUIRE(cfg.keypoint_head);
  const rcnn::KeypointHeadConfig& kh = *cfg.keypoint_head;
  const auto dets = npy(dir / "detections_resized.npy");
  const std::size_t D = dets.shape()[0];
  REQUIRE(D > 0);
  std::vector<rcnn::Box> boxes(D);
  for (std::size_t i = 0; i < D; ++i) boxes[i] = {dets(i, 0), dets(i, 1), dets(i, 2), dets(i, 3)};

  // Level mapper and keypoint RoIAlign on the reference feature maps.
  const rcnn::RoiLevels lv(cfg.backbone);
  std::vector<int> levels(D);
  rcnn::assign_levels(std::span<const rcnn::Box>(boxes), kh.pooler, lv.min_level, lv.max_level,
                      std::span<int>(levels));
  const auto ref_levels = npy<std::int64_t>(dir / "keypoint_level.npy");
  REQUIRE(ref_levels.size() == D);
  std::size_t level_differ = 0;
  for (std::size_t i = 0; i < D; ++i) level_differ += levels[i] != ref_levels(i);
  CHECK(level_differ == 0);
  const RoiFeatures f = roi_features(dir, cfg);
  const auto ref_feat = npy(dir / "keypoint_features.npy");
  const int C = cfg.backbone.channels, P = kh.pooler.resolution;
  REQUIRE(ref_feat.size() == D * std::size_t(C) * P * P);
  std::vector<float> pooled(ref_feat.size());
  rcnn::RoIAlignRef{}(f.maps, f.scales, boxes, levels, kh.pooler, pooled);
  const double pooled_diff =
      max_abs_diff(pooled.data(), ref_feat.data(), ref_feat.size()) / scale_of(ref_feat);
  CHECK(pooled_diff <= 1e-5);

  // Keypoint head through TorchScriptExec on the reference pooled features.
  rcnn::TorchScriptExec exec(cfg, rcnn::TorchScriptOptions{1});
  rcnn::KeypointHeadOutputs head;
  exec.run_keypoint_head({ref_feat.data(), {std::int64_t(D), C, P, P}}, head);
  rcnn::detail::check_keypoint_head_outputs(cfg, head, D);
  const auto ref_hm = npy(dir / "keypoint_heatmaps.npy");
  const int K = kh.num_keypoints, S = kh.heatmap_size;
  REQUIRE(ref_hm.size() == D * std::size_t(K) * S * S);
  const double hm_diff = max_abs_diff(head.heatmaps.data, ref_hm.data(), ref_hm.size()) /
                         scale_of(ref_hm);
  CHECK(hm_diff <= 1e-5);

  // Decoding of the reference heatmaps on the reference boxes (resized frame).
  const auto ref_kp = npy(dir / "keypoints_resized.npy");
  REQUIRE(ref_kp.size() == D * std::size_t(K) * 3);
  rcnn::KeypointDecodeWorkspace ws;
  std::vector<rcnn::Keypoint> kp(static_cast<std::size_t>(K));
  DecodeReport rep;
  const std::size_t block = std::size_t(K) * S * S;
  for (std::size_t i = 0; i < D; ++i) {
    rcnn::heatmaps_to_keypoints(ref_hm.data() + i * block, K, S, boxes[i], kh.decode, ws, kp);
    for (int k = 0; k < K; ++k) {
      const rcnn::Keypoint& g = kp[std::size_t(k)];
      const float rx = ref_kp(i, k, 0), ry = ref_kp(i, k, 1), rs = ref_kp(i, k, 2);
      ++rep.keypoints;
      if (g.x == rx && g.y == ry) {
        ++rep.exact_positions;
        rep.max_score = std::max(rep.max_score, double(std::abs(g.score - rs)));
      } else {
        // Another cell: only acceptable as a near tie of the upsampled peak, i.e. the
        // reference's cell holds (in our upsampled map) a value within 5e-7 relative of
        // our maximum.
        ++rep.near_ties;
        const float w = std::max(boxes[i].x2 - boxes[i].x1, 1.f);
        const int W = int(std::ceil(w));
        const float h = std::max(boxes[i].y2 - boxes[i].y1, 1.f);
        const int H = int(std::ceil(h));
        std::vector<float> plane(std::size_t(W) * std::size_t(H));
        rcnn::upsample_bicubic_ref(ref_hm.data() + i * block + std::size_t(k) * S * S, S, S, H, W,
                                   plane.data());
        const auto cell = [&](float v, float origin, float size, int n) {
          return int(std::lround((v - origin) / (size / float(n)) - 0.5f));
        };
        const int rxi = cell(rx, boxes[i].x1, w, W), ryi = cell(ry, boxes[i].y1, h, H);
        // A genuinely different cell (the same cell at another position is a decoding bug).
        CHECK((cell(g.x, boxes[i].x1, w, W) != rxi || cell(g.y, boxes[i].y1, h, H) != ryi));
        REQUIRE(rxi >= 0);
        REQUIRE(ryi >= 0);
        REQUIRE(rxi < W);
        REQUIRE(ryi < H);
        const float at_ref = plane[std::size_t(ryi) * std::size_t(W) + std::size_t(rxi)];
        const float peak = *std::max_element(plane.begin(), plane.end());
        CHECK(double(peak - at_ref) <= 5e-7 * std::max(1.0, double(std::abs(peak))));
      }
      rep.max_px = std::max({rep.max_px, double(std::abs(g.x - rx)), double(std::abs(g.y - ry))});
    }
  }
  CHECK(rep.max_score <= 1e-5);
  MESSAGE(label << ": " << D << " detections x " << K << " keypoints; keypoint levels differ "
                << level_differ << "; keypoint RoIAlign max relative |diff| " << pooled_diff
                << "; keypoint head max relative |diff| " << hm_diff
                << "; decoding the reference heatmaps: " << rep.exact_positions << "/"
                << rep.keypoints << " positions exact (" << rep.near_ties
                << " near ties), max |px diff| " << rep.max_px << ", max |score diff| "
                << rep.max_score << " (" << std::string(kh.decode == Decode::detectron2 ? "detectron2" : "torchvision")
                << " convention)");
}

/// End to end from the photo; returns (max px diff, max score diff) of the keypoints.
template <class Stages>
void check_keypoint_end_to_end(const fs::path& bundle, const fs::path& dir) {
  const std::string label = bundle.filename().string() + "/" + dir.filename().string();
  CAPTURE(label);
  cv::Mat img = rcnn::cv_io::read_image(dir / "image.jpg");
  cv::Mat storage;
  const rcnn::ImageView view = rcnn::cv_io::view(img, storage);
  auto det = rcnn::load<rcnn::TorchScriptExec>(bundle, {1});
  CHECK(det.has_keypoints());
  CHECK_FALSE(det.has_masks());
  rcnn::Trace trace;
  const rcnn::DetectionResult r = det(view, &trace);
  const auto ref = detections_json(dir / "detections.json");
  const auto ref_kp = json_keypoints(dir / "detections.json");
  const auto match = match_detections(ref, r.detections);
  CHECK(match.matched == ref.size());
  REQUIRE(r.detections.size() == ref.size());
  const int K = det.config().keypoint_head->num_keypoints;
  REQUIRE(r.num_keypoints == K);
  REQUIRE(r.keypoints.size() == r.detections.size() * std::size_t(K));
  // Keypoints of each reference detection's match (same order when all match: compare by
  // the best IoU, as match_detections does).
  double max_px = 0, max_score = 0;
  std::size_t beyond = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    std::size_t best = 0;
    double best_iou = -1;
    for (std::size_t j = 0; j < r.detections.size(); ++j) {
      const double v = iou(ref[i].box, r.detections[j].box);
      if (v > best_iou) best_iou = v, best = j;
    }
    const auto got = r.keypoints_of(best);
    REQUIRE(ref_kp[i].size() == std::size_t(K));
    for (int k = 0; k < K; ++k) {
      const rcnn::Keypoint& g = got[std::size_t(k)];
      const rcnn::Keypoint& e = ref_kp[i][std::size_t(k)];
      const double px = std::max(std::abs(g.x - e.x), std::abs(g.y - e.y));
      const double sc = std::abs(g.score - e.score);
      beyond += px > 0.5 || sc > 1e-3;
      max_px = std::max(max_px, px);
      max_score = std::max(max_score, sc);
    }
  }
  // The trace's stages from the photo.
  const auto ref_levels = npy<std::int64_t>(dir / "keypoint_level.npy");
  REQUIRE(trace.keypoint_levels.size() == ref_levels.size());
  std::size_t level_differ = 0;
  for (std::size_t i = 0; i < ref_levels.size(); ++i)
    level_differ += trace.keypoint_levels[i] != ref_levels(i);
  const auto ref_hm = npy(dir / "keypoint_heatmaps.npy");
  REQUIRE(trace.keypoint_heatmaps.size() == ref_hm.size());
  const double hm_diff = max_abs_diff(trace.keypoint_heatmaps.data(), ref_hm.data(), ref_hm.size()) /
                         scale_of(ref_hm);
  MESSAGE(label << ": end to end " << match.matched << "/" << ref.size()
                << " detections matched (min IoU " << match.min_iou << ", max |score diff| "
                << match.max_score_diff << "); keypoints: max |px diff| " << max_px
                << ", max |score diff| " << max_score << ", " << beyond << " of "
                << ref.size() * std::size_t(K) << " beyond 0.5 px / 1e-3; keypoint levels differ "
                << level_differ << "; heatmaps max relative |diff| " << hm_diff);
  CHECK(level_differ == 0);
  CHECK(beyond == 0);
  CHECK(max_px <= 0.5);
  CHECK(max_score <= 1e-3);

  // The same with the keypoint head in static chunks of 8 rows and OpenMP RoIAlign.
  rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  cfg.modules.keypoint_head->static_rois = 8;
  rcnn::OmpRoIAlign roi;
  roi.num_threads = 2;
  rcnn::Detector<rcnn::TorchScriptExec, rcnn::OmpRoIAlign, Stages> d2(
      cfg, rcnn::TorchScriptExec(cfg, {1}), roi);
  const auto r2 = d2(view);
  REQUIRE(r2.keypoints.size() == r.keypoints.size());
  std::size_t same = 0;
  for (std::size_t i = 0; i < r.keypoints.size(); ++i)
    same += r2.keypoints[i].x == r.keypoints[i].x && r2.keypoints[i].y == r.keypoints[i].y &&
            r2.keypoints[i].score == r.keypoints[i].score;
  CHECK(same == r.keypoints.size());
}

}  // namespace

TEST_CASE("keypoints: Detectron2 Keypoint R-CNN stage parity") {
  for (const auto& [bundle, dir] : keypoint_cases("gen_keypoints")) {
    check_stages<rcnn::Detectron2Stages>(bundle, dir);  // the Faster R-CNN stages
    check_keypoint_stages(bundle, dir);
  }
}

TEST_CASE("keypoints: Detectron2 Keypoint R-CNN end to end from the photo") {
  for (const auto& [bundle, dir] : keypoint_cases("gen_keypoints"))
    check_keypoint_end_to_end<rcnn::Detectron2Stages>(bundle, dir);
}

TEST_CASE("keypoints: torchvision Keypoint R-CNN stage parity") {
  for (const auto& [bundle, dir] : keypoint_cases("gen_tv_keypoints")) {
    check_stages<rcnn::TorchvisionStages>(bundle, dir);
    check_keypoint_stages(bundle, dir);
  }
}

TEST_CASE("keypoints: torchvision Keypoint R-CNN end to end from the photo") {
  for (const auto& [bundle, dir] : keypoint_cases("gen_tv_keypoints"))
    check_keypoint_end_to_end<rcnn::TorchvisionStages>(bundle, dir);
}

TEST_CASE("keypoints: an executor without run_keypoint_head is refused at construction") {
  const auto all = keypoint_cases("gen_tv_keypoints");
  if (all.empty()) return;
  const rcnn::ModelConfig cfg = rcnn::read_bundle(all[0].first);
  std::string why;
  CHECK_FALSE((rcnn::Detector<RecordingExec, rcnn::RoIAlignRef, rcnn::TorchvisionStages>::can_implement(cfg, &why)));
  CHECK(why.find("run_keypoint_head") != std::string::npos);
  CHECK((rcnn::Detector<rcnn::TorchScriptExec, rcnn::RoIAlignRef, rcnn::TorchvisionStages>::can_implement(cfg)));
}
