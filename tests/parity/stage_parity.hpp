#pragma once
// Stage-by-stage and end-to-end parity of the C++ runtime against a framework's reference
// case directory (layout of tests/data/detectron2/FIXTURES.md; torchvision references from
// tests/reference/gen_torchvision.py use the same names). Each stage is fed the reference
// inputs of that stage; files a case does not carry are skipped.
#include <fstream>

#include <opencv2/core.hpp>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

#include "parity_util.hpp"

namespace parity {

/// A real TorchScriptExec that also records what the modules were fed.
struct RecordingExec {
  using Options = rcnn::TorchScriptOptions;
  RecordingExec(const rcnn::ModelConfig& cfg, Options o) : inner(cfg, o) {}
  void run_backbone_rpn(const rcnn::TensorView& in, rcnn::BackboneOutputs& out) {
    backbone_inputs.push_back(in.shape);
    inner.run_backbone_rpn(in, out);
  }
  void run_box_head(const rcnn::TensorView& in, rcnn::BoxHeadOutputs& out) {
    box_head_rows.push_back(in.shape[0]);
    inner.run_box_head(in, out);
  }
  void run_cascade_box_head(std::size_t stage, const rcnn::TensorView& in, rcnn::BoxHeadOutputs& out) {
    cascade_rows.emplace_back(stage, in.shape[0]);
    inner.run_cascade_box_head(stage, in, out);
  }
  rcnn::TorchScriptExec inner;
  std::vector<std::array<std::int64_t, 4>> backbone_inputs;
  std::vector<std::int64_t> box_head_rows;
  std::vector<std::pair<std::size_t, std::int64_t>> cascade_rows;  ///< (stage, rows) per call
};

/// True (after printing why) when a generator found no Detectron2 (its skipped.txt).
inline bool generator_skipped(const fs::path& ref) {
  const fs::path marker = ref / "skipped.txt";
  if (!fs::exists(marker)) return false;
  std::ifstream f(marker);
  std::string line;
  std::getline(f, line);
  MESSAGE("skipped: " << line);
  return true;
}

/// (bundle, case directory) of every case of a generator's output (``<ref>/index.json``'s
/// bundles, ``<ref>/<bundle>/cases/*``), sorted.
inline std::vector<std::pair<fs::path, fs::path>> reference_cases(const fs::path& ref) {
  std::vector<std::pair<fs::path, fs::path>> out;
  const auto index = read_json(ref / "index.json");
  for (const auto& [name, _] : index["bundles"].items()) {
    const fs::path bundle = ref / name;
    for (const auto& c : fs::directory_iterator(bundle / "cases")) out.emplace_back(bundle, c.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// Largest |value| of an array (at least 1): scale for relative tolerances.
inline double scale_of(const xt::xarray<float>& a) {
  double m = 1.0;
  for (float v : a) m = std::max(m, double(std::abs(v)));
  return m;
}

/// Input tensor rebuilt from Detectron2's resized_bgr.npy: (pixel - mean) / std, zero padded.
inline std::vector<float> input_from_resized_bgr(const xt::xarray<std::uint8_t>& bgr,
                                                 const rcnn::ModelConfig& cfg, rcnn::Size padded) {
  const int h = int(bgr.shape()[0]), w = int(bgr.shape()[1]);
  std::vector<float> out(3 * std::size_t(padded.height) * padded.width, 0.f);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        out[(std::size_t(c) * padded.height + y) * padded.width + x] =
            (float(bgr(y, x, c)) - cfg.input.pixel_mean[std::size_t(c)]) /
            cfg.input.pixel_std[std::size_t(c)];
  return out;
}

/// A case's reference RoI feature maps (features_<level>.npy, cfg.backbone.roi_levels) as
/// RoIAlign inputs: the arrays, FeatureMap views into them and the 1 / stride scales. The views
/// point into ``arrays``: keep the object, do not copy it.
struct RoiFeatures {
  std::vector<xt::xarray<float>> arrays;
  std::vector<rcnn::FeatureMap> maps;
  std::vector<float> scales;
};

inline RoiFeatures roi_features(const fs::path& dir, const rcnn::ModelConfig& cfg) {
  RoiFeatures r;
  const std::size_t RL = cfg.backbone.roi_levels.size();
  for (std::size_t l = 0; l < RL; ++l)
    r.arrays.push_back(npy(dir / ("features_" + cfg.backbone.roi_levels[l] + ".npy")));
  for (std::size_t l = 0; l < RL; ++l) {
    const auto& f = r.arrays[l];
    r.maps.push_back({f.data(), int(f.shape()[1]), int(f.shape()[2]), int(f.shape()[3])});
    r.scales.push_back(float(1.0 / cfg.backbone.roi_strides[l]));
  }
  return r;
}

template <class Stages>
void check_stages(const fs::path& bundle, const fs::path& dir) {
  const std::string label = bundle.filename().string() + "/" + dir.filename().string();
  CAPTURE(label);
  const auto meta = read_json(dir / "meta.json");
  const rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  const rcnn::Size resized{meta["resized_height"].get<int>(), meta["resized_width"].get<int>()};
  const rcnn::Size padded{meta["padded_height"].get<int>(), meta["padded_width"].get<int>()};
  const rcnn::Size original{meta["original_height"].get<int>(), meta["original_width"].get<int>()};
  auto has = [&](const std::string& f) { return fs::exists(dir / f); };

  // Decode: OpenCV gives the bytes the reference run was fed.
  cv::Mat img = rcnn::cv_io::read_image(dir / "image.jpg");
  if (meta.contains("decoded_pixel_sum")) {
    const cv::Scalar s = cv::sum(img);
    CHECK(std::int64_t(s[0] + s[1] + s[2]) == meta["decoded_pixel_sum"].get<std::int64_t>());
  }
  if (has("decoded_rgb.npy")) {
    const auto rgb = npy<std::uint8_t>(dir / "decoded_rgb.npy");
    REQUIRE(rgb.shape()[0] == std::size_t(img.rows));
    REQUIRE(rgb.shape()[1] == std::size_t(img.cols));
    std::size_t differ = 0;
    for (int y = 0; y < img.rows; ++y)
      for (int x = 0; x < img.cols; ++x)
        for (int c = 0; c < 3; ++c)
          differ += img.at<cv::Vec3b>(y, x)[2 - c] != rgb(y, x, c);
    CHECK(differ == 0);
  }

  // Preprocess: resize and normalise exactly.
  cv::Mat storage;
  std::vector<float> input;
  typename Stages::preprocess pre;
  const auto pr = pre(rcnn::cv_io::view(img, storage), cfg.input, input, std::nullopt);
  CHECK(pr.original == original);
  CHECK(pr.resized == resized);
  CHECK(pr.padded == padded);
  std::vector<float> ref_input;
  if (has("input.npy")) {
    const auto a = npy(dir / "input.npy");
    ref_input.assign(a.begin(), a.end());
  } else if (has("resized_bgr.npy")) {
    ref_input = input_from_resized_bgr(npy<std::uint8_t>(dir / "resized_bgr.npy"), cfg, padded);
  }
  if (!ref_input.empty()) {
    REQUIRE(input.size() == ref_input.size());
    const double d = max_abs_diff(input, ref_input, input.size());
    MESSAGE(label << ": preprocess max |diff| " << d);
    CHECK(d == 0.0);
  } else {
    ref_input = input;  // fixed cases: rebuilt as the reference does (FIXTURES.md)
  }

  rcnn::TorchScriptExec exec(cfg, rcnn::TorchScriptOptions{1});
  const std::size_t L = cfg.backbone.rpn_levels.size();
  const std::size_t RL = cfg.backbone.roi_levels.size();

  // Backbone + RPN head on the reference input.
  if (has("rpn_objectness_" + cfg.backbone.rpn_levels[0] + ".npy")) {
    rcnn::BackboneOutputs out;
    exec.run_backbone_rpn({ref_input.data(), {1, 3, padded.height, padded.width}}, out);
    double worst = 0;
    for (std::size_t l = 0; l < L; ++l) {
      const std::string lvl = cfg.backbone.rpn_levels[l];
      const auto obj = npy(dir / ("rpn_objectness_" + lvl + ".npy"));
      const auto del = npy(dir / ("rpn_deltas_" + lvl + ".npy"));
      REQUIRE(out.objectness[l].numel() == obj.size());
      REQUIRE(out.deltas[l].numel() == del.size());
      worst = std::max(worst, max_abs_diff(out.objectness[l].data, obj.data(), obj.size()) / scale_of(obj));
      worst = std::max(worst, max_abs_diff(out.deltas[l].data, del.data(), del.size()) / scale_of(del));
    }
    for (std::size_t l = 0; l < RL; ++l) {
      const fs::path fp = dir / ("features_" + cfg.backbone.roi_levels[l] + ".npy");
      if (!fs::exists(fp)) continue;
      const auto f = npy(fp);
      REQUIRE(out.features[l].numel() == f.size());
      worst = std::max(worst, max_abs_diff(out.features[l].data, f.data(), f.size()) / scale_of(f));
    }
    MESSAGE(label << ": backbone_rpn max relative |diff| " << worst);
    CHECK(worst <= 1e-5);
  }

  // Anchors: exact.
  std::vector<std::vector<rcnn::Box>> anchors(L);
  for (std::size_t l = 0; l < L; ++l) {
    const std::string lvl = cfg.backbone.rpn_levels[l];
    int gh = 0, gw = 0;
    if (has("rpn_objectness_" + lvl + ".npy")) {
      const auto obj = npy(dir / ("rpn_objectness_" + lvl + ".npy"));
      gh = int(obj.shape()[2]), gw = int(obj.shape()[3]);
    } else {
      const int s = cfg.backbone.rpn_strides[l];
      gh = (padded.height + s - 1) / s, gw = (padded.width + s - 1) / s;
    }
    typename Stages::anchor_generator{}(cfg.anchors, cfg.conventions, l, cfg.backbone.rpn_strides[l],
                                        {gh, gw}, padded, anchors[l]);
    if (has("anchors_" + lvl + ".npy")) {
      const auto ref = npy(dir / ("anchors_" + lvl + ".npy"));
      REQUIRE(anchors[l].size() * 4 == ref.size());
      CHECK(max_abs_diff(reinterpret_cast<const float*>(anchors[l].data()), ref.data(), ref.size()) == 0.0);
    }
  }

  // Proposals from the reference RPN outputs, with the reference and the optimised NMS.
  const auto ref_props = npy(dir / "proposals.npy");
  const auto ref_scores = npy(dir / (has("proposal_logits.npy") ? "proposal_logits.npy" : "proposal_scores.npy"));
  const auto ref_boxes = boxes_of(ref_props);
  if (has("rpn_objectness_" + cfg.backbone.rpn_levels[0] + ".npy")) {
    std::vector<xt::xarray<float>> obj(L), del(L);
    std::vector<rcnn::RpnLevelInput> levels(L);
    for (std::size_t l = 0; l < L; ++l) {
      obj[l] = npy(dir / ("rpn_objectness_" + cfg.backbone.rpn_levels[l] + ".npy"));
      del[l] = npy(dir / ("rpn_deltas_" + cfg.backbone.rpn_levels[l] + ".npy"));
      const int H = int(obj[l].shape()[2]), W = int(obj[l].shape()[3]);
      levels[l] = {{obj[l].data(), int(obj[l].shape()[1]), H, W},
                   {del[l].data(), int(del[l].shape()[1]), H, W},
                   anchors[l]};
    }
    rcnn::ScoredBoxes props;
    typename Stages::proposal_selector select;
    rcnn::GreedyNms greedy;
    select(levels, resized, cfg.rpn, greedy, props);
    REQUIRE(props.size() == ref_boxes.size());
    const double box_diff = max_abs_diff(reinterpret_cast<const float*>(props.boxes.data()),
                                         ref_props.data(), ref_props.size());
    const double score_diff = max_abs_diff(props.scores.data(), ref_scores.data(), ref_scores.size());
    MESSAGE(label << ": " << props.size() << " proposals, max |box diff| " << box_diff
                  << " px, max |score diff| " << score_diff);
    CHECK(box_diff <= 1e-3);
    CHECK(score_diff <= 1e-5);
    rcnn::ScoredBoxes props2;
    typename Stages::rpn_nms nms;
    select(levels, resized, cfg.rpn, nms, props2);
    CHECK((props2.boxes == props.boxes));
  }

  // Level assignment and RoIAlign on the reference proposals.
  const int min_level = int(std::lround(std::log2(cfg.backbone.roi_strides.front())));
  const int max_level = int(std::lround(std::log2(cfg.backbone.roi_strides.back())));
  std::vector<int> levels(ref_boxes.size());
  rcnn::assign_levels(std::span<const rcnn::Box>(ref_boxes), cfg.roi_heads.pooler, min_level, max_level,
                      std::span<int>(levels));
  if (has("box_level.npy")) {
    const auto ref_levels = npy<std::int64_t>(dir / "box_level.npy");
    std::size_t differ = 0;
    for (std::size_t i = 0; i < levels.size(); ++i) differ += levels[i] != ref_levels(i);
    CHECK(differ == 0);
  }
  if (has("box_features.npy") && has("features_" + cfg.backbone.roi_levels[0] + ".npy")) {
    const RoiFeatures f = roi_features(dir, cfg);
    const auto ref_feat = npy(dir / "box_features.npy");
    std::vector<float> pooled(ref_feat.size());
    rcnn::RoIAlignRef{}(f.maps, f.scales, ref_boxes, levels, cfg.roi_heads.pooler, pooled);
    const double pooled_diff = max_abs_diff(pooled.data(), ref_feat.data(), ref_feat.size());
    MESSAGE(label << ": RoIAlign max |diff| " << pooled_diff << " (values up to " << scale_of(ref_feat) << ")");
    CHECK(pooled_diff <= 1e-5 * scale_of(ref_feat));
    std::vector<float> pooled_omp(ref_feat.size());
    rcnn::OmpRoIAlign omp;
    omp.num_threads = 2;
    omp(f.maps, f.scales, ref_boxes, levels, cfg.roi_heads.pooler, pooled_omp);
    CHECK((pooled_omp == pooled));

    // Box head on the reference pooled features.
    rcnn::BoxHeadOutputs head;
    exec.run_box_head({ref_feat.data(),
                       {std::int64_t(ref_boxes.size()), std::int64_t(ref_feat.shape()[1]),
                        std::int64_t(ref_feat.shape()[2]), std::int64_t(ref_feat.shape()[3])}},
                      head);
    const auto cl = npy(dir / "class_logits.npy");
    const auto bd = npy(dir / "box_deltas.npy");
    const double dl = max_abs_diff(head.class_logits.data, cl.data(), cl.size()) / scale_of(cl);
    const double dd = max_abs_diff(head.box_deltas.data, bd.data(), bd.size()) / scale_of(bd);
    MESSAGE(label << ": box_head max relative |diff| logits " << dl << ", deltas " << dd);
    CHECK(dl <= 1e-5);
    CHECK(dd <= 1e-5);
  }

  // Box inference and postprocess on the reference logits / deltas (a cascade's on its
  // last stage: test_cascade.cpp).
  if (has("class_logits.npy") && cfg.roi_heads.cascade.empty()) {
    const auto cl = npy(dir / "class_logits.npy");
    const auto bd = npy(dir / "box_deltas.npy");
    const rcnn::BoxHeadView head{cl.data(), bd.data(), int(cl.shape()[0]), int(cl.shape()[1]),
                                 int(bd.shape()[1])};
    std::vector<rcnn::Detection> dets;
    typename Stages::box_nms nms;
    typename Stages::box_inference{}(ref_boxes, head, resized, cfg.roi_heads, nms, dets);
    const auto ref = npy(dir / "detections_resized.npy");
    REQUIRE(dets.size() == ref.shape()[0]);
    double box_diff = 0, score_diff = 0;
    for (std::size_t i = 0; i < dets.size(); ++i) {
      CAPTURE(i);
      CHECK(dets[i].class_id == int(ref(i, 5)));
      score_diff = std::max(score_diff, std::abs(double(dets[i].score) - ref(i, 4)));
      const float got[4] = {dets[i].box.x1, dets[i].box.y1, dets[i].box.x2, dets[i].box.y2};
      for (std::size_t k = 0; k < 4; ++k) box_diff = std::max(box_diff, std::abs(double(got[k]) - ref(i, k)));
    }
    MESSAGE(label << ": box inference " << dets.size() << " detections, max |box diff| " << box_diff
                  << " px, max |score diff| " << score_diff);
    CHECK(box_diff <= 1e-3);
    CHECK(score_diff <= 1e-5);
    std::vector<int> kept;
    typename Stages::postprocess{}(resized, original, cfg.conventions, cfg.postprocess, dets, kept);
    const auto final_ref = detections_json(dir / "detections.json");
    REQUIRE(dets.size() == final_ref.size());
    for (std::size_t i = 0; i < dets.size(); ++i) {
      CAPTURE(i);
      CHECK(dets[i].class_id == final_ref[i].class_id);
      CHECK(std::abs(dets[i].score - final_ref[i].score) <= 1e-5);
      CHECK(iou(dets[i].box, final_ref[i].box) >= 0.9999);
    }
  }
}

/// The whole pipeline from the photo's pixels; returns the number of reference detections.
template <class Stages>
std::size_t check_end_to_end(const fs::path& bundle, const fs::path& dir, int threads = 1) {
  const std::string label = bundle.filename().string() + "/" + dir.filename().string();
  CAPTURE(label);
  rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  RecordingExec exec(cfg, {threads});
  rcnn::OmpRoIAlign roi;
  roi.num_threads = 2;
  rcnn::Detector<RecordingExec, rcnn::OmpRoIAlign, Stages> det(cfg, std::move(exec), roi);
  cv::Mat img = rcnn::cv_io::read_image(dir / "image.jpg");
  cv::Mat storage;
  rcnn::Trace trace;
  const auto result = det(rcnn::cv_io::view(img, storage), &trace);

  const auto ref_props = boxes_of(npy(dir / "proposals.npy"));
  REQUIRE(trace.proposals.size() == ref_props.size());
  const double prop_diff = max_abs_diff(reinterpret_cast<const float*>(trace.proposals.boxes.data()),
                                        reinterpret_cast<const float*>(ref_props.data()), ref_props.size() * 4);
  // From the photo, the backbone's float differences on this CPU (measured up to 2.5e-6
  // relative against the Detectron2 fixtures' machine: other oneDNN / BLAS kernels) reach
  // the proposals through exp(); fed the reference RPN outputs they agree to 1e-4 px.
  CHECK(prop_diff <= 5e-3);

  const auto ref = detections_json(dir / "detections.json");
  const auto rep = match_detections(ref, result.detections);
  MESSAGE(label << ": end to end " << rep.matched << "/" << ref.size() << " detections matched, min IoU "
                << rep.min_iou << ", max |score diff| " << rep.max_score_diff << "; proposals max |diff| "
                << prop_diff << " px");
  CHECK(rep.matched == ref.size());
  CHECK(result.detections.size() == ref.size());

  const auto& e = det.executor();
  REQUIRE(e.backbone_inputs.size() == 1);
  if (cfg.modules.backbone_rpn.static_shape)
    CHECK(e.backbone_inputs[0] == *cfg.modules.backbone_rpn.static_shape);
  if (cfg.modules.box_head.static_rois) {
    REQUIRE(e.box_head_rows.size() == 1);
    CHECK(e.box_head_rows[0] == *cfg.modules.box_head.static_rois);
  } else {
    CHECK(e.box_head_rows == std::vector<std::int64_t>{std::int64_t(ref_props.size())});
  }
  return ref.size();
}

}  // namespace parity
