// Detectron2 parity: every stage of the C++ runtime against the reference outputs that a
// real Detectron2 v0.6 produced for the fixture bundles (tests/data/detectron2, FIXTURES.md).
#include <opencv2/imgcodecs.hpp>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

#include "parity_util.hpp"

namespace {

using namespace parity;
const fs::path kD2 = fs::path(RCNN_TEST_DATA_DIR) / "detectron2";

struct Case {
  std::string bundle;
  std::string name;
  bool stage_files;  // RPN outputs, logits and deltas present
  bool pixel_files;  // resized_bgr.npy, features_*, box_features.npy, anchors_* present
};

const Case kCases[] = {
    {"narrow_r101_fpn_shortest_edge", "fruits", true, true},
    {"narrow_r101_fpn_shortest_edge", "messi5", true, true},
    {"narrow_r101_fpn_fixed800", "fruits", true, false},
    {"narrow_r101_fpn_fixed800", "messi5", false, false},
};

fs::path case_dir(const Case& c) { return kD2 / c.bundle / "cases" / c.name; }

/// Input tensor of the backbone rebuilt from resized_bgr.npy: pixel - mean, zero padded.
std::vector<float> input_from_resized(const xt::xarray<std::uint8_t>& bgr, const rcnn::ModelConfig& cfg,
                                      rcnn::Size padded) {
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

/// A real TorchScriptExec that also records the shapes the box head was fed.
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
  rcnn::TorchScriptExec inner;
  std::vector<std::array<std::int64_t, 4>> backbone_inputs;
  std::vector<std::int64_t> box_head_rows;
};

}  // namespace

TEST_CASE("detectron2 fixtures: model.json describes the modules") {
  for (const char* b : {"narrow_r101_fpn_shortest_edge", "narrow_r101_fpn_fixed800"}) {
    CAPTURE(b);
    const auto cfg = rcnn::read_bundle(kD2 / b);
    CHECK(cfg.conventions == rcnn::Conventions::detectron2);
    CHECK(cfg.backbone.rpn_levels.size() == 5);
    CHECK(cfg.backbone.roi_levels.size() == 4);
    CHECK(cfg.roi_heads.num_classes + 1 == 81);
    CHECK(cfg.classes.size() == 80);
  }
  const auto fixed = rcnn::read_bundle(kD2 / "narrow_r101_fpn_fixed800");
  REQUIRE(fixed.modules.box_head.static_rois);
  CHECK(*fixed.modules.box_head.static_rois == 1000);
}

TEST_CASE("detectron2: a torchvision stage bundle refuses a detectron2 bundle") {
  CHECK_THROWS_WITH_AS(
      (rcnn::load_as<rcnn::TorchScriptExec, rcnn::RoIAlignRef, rcnn::TorchvisionStages>(
          kD2 / "narrow_r101_fpn_shortest_edge")),
      doctest::Contains("conventions"), rcnn::Error);
}

TEST_CASE("detectron2 stage parity") {
  for (const Case& c : kCases) {
    const fs::path dir = case_dir(c);
    const auto meta = read_json(dir / "meta.json");
    const rcnn::ModelConfig cfg = rcnn::read_bundle(kD2 / c.bundle);
    const rcnn::Size resized{meta["resized_height"].get<int>(), meta["resized_width"].get<int>()};
    const rcnn::Size padded{meta["padded_height"].get<int>(), meta["padded_width"].get<int>()};
    const rcnn::Size original{meta["original_height"].get<int>(), meta["original_width"].get<int>()};
    CAPTURE(c.bundle);
    CAPTURE(c.name);

    // 2. Decode: OpenCV gives the bytes Detectron2's reference run decoded.
    cv::Mat img = rcnn::cv_io::read_image(dir / "image.jpg");
    const cv::Scalar sums = cv::sum(img);
    CHECK(std::int64_t(sums[0] + sums[1] + sums[2]) == meta["decoded_pixel_sum"].get<std::int64_t>());

    // 3-4. Resize (Pillow-exact) and normalise.
    cv::Mat storage;
    std::vector<float> input;
    rcnn::Detectron2Preprocess pre;
    const auto pr = pre(rcnn::cv_io::view(img, storage), cfg.input, input, std::nullopt);
    CHECK(pr.original == original);
    CHECK(pr.resized == resized);
    CHECK(pr.padded == padded);
    if (c.pixel_files) {
      const auto bgr = npy<std::uint8_t>(dir / "resized_bgr.npy");
      const auto ref_input = input_from_resized(bgr, cfg, padded);
      REQUIRE(input.size() == ref_input.size());
      CHECK(max_abs_diff(input, ref_input, input.size()) == 0.0);
    }

    rcnn::TorchScriptExec exec(cfg, rcnn::TorchScriptOptions{1});
    const std::size_t L = cfg.backbone.rpn_levels.size();

    // 5. Backbone + RPN head on the reference input: exact on one thread (FIXTURES.md).
    if (c.stage_files) {
      rcnn::BackboneOutputs out;
      exec.run_backbone_rpn({input.data(), {1, 3, padded.height, padded.width}}, out);
      for (std::size_t l = 0; l < L; ++l) {
        const std::string lvl = cfg.backbone.rpn_levels[l];
        const auto obj = npy(dir / ("rpn_objectness_" + lvl + ".npy"));
        const auto del = npy(dir / ("rpn_deltas_" + lvl + ".npy"));
        REQUIRE(out.objectness[l].numel() == obj.size());
        REQUIRE(out.deltas[l].numel() == del.size());
        CHECK(max_abs_diff(out.objectness[l].data, obj.data(), obj.size()) <= 1e-4);
        CHECK(max_abs_diff(out.deltas[l].data, del.data(), del.size()) <= 1e-4);
      }
      if (c.pixel_files) {
        for (std::size_t l = 0; l < cfg.backbone.roi_levels.size(); ++l) {
          const auto f = npy(dir / ("features_" + cfg.backbone.roi_levels[l] + ".npy"));
          REQUIRE(out.features[l].numel() == f.size());
          CHECK(max_abs_diff(out.features[l].data, f.data(), f.size()) <= 1e-4);
        }
      }
    }

    // 6. Anchors: exact.
    std::vector<std::vector<rcnn::Box>> anchors(L);
    for (std::size_t l = 0; l < L; ++l) {
      const int stride = cfg.backbone.rpn_strides[l];
      const rcnn::Size grid{(padded.height + stride - 1) / stride, (padded.width + stride - 1) / stride};
      rcnn::GridAnchorGenerator{}(cfg.anchors, cfg.conventions, l, stride, grid, padded, anchors[l]);
      const fs::path ap = dir / ("anchors_" + cfg.backbone.rpn_levels[l] + ".npy");
      if (fs::exists(ap)) {
        const auto ref = npy(ap);
        REQUIRE(anchors[l].size() * 4 == ref.size());
        CHECK(max_abs_diff(reinterpret_cast<const float*>(anchors[l].data()), ref.data(), ref.size()) == 0.0);
      }
    }

    // 7. Proposals from the reference RPN outputs.
    const auto ref_props = npy(dir / "proposals.npy");
    const auto ref_logits = npy(dir / "proposal_logits.npy");
    const auto ref_boxes = boxes_of(ref_props);
    if (c.stage_files) {
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
      rcnn::ProposalWorkspace ws;
      rcnn::GreedyNms greedy;
      rcnn::TopKProposalSelector{}(levels, resized, cfg.rpn, greedy, ws, props);
      REQUIRE(props.size() == ref_boxes.size());
      const double box_diff = max_abs_diff(reinterpret_cast<const float*>(props.boxes.data()),
                                           ref_props.data(), ref_props.size());
      const double logit_diff = max_abs_diff(props.scores.data(), ref_logits.data(), ref_logits.size());
      MESSAGE(c.bundle << "/" << c.name << ": " << props.size() << " proposals, max |box diff| "
                       << box_diff << " px, max |logit diff| " << logit_diff);
      CHECK(box_diff <= 1e-3);
      CHECK(logit_diff <= 1e-5);
      rcnn::ScoredBoxes props2;
      rcnn::BitmaskNms bitmask;
      rcnn::TopKProposalSelector{}(levels, resized, cfg.rpn, bitmask, ws, props2);
      CHECK((props2.boxes == props.boxes));
    }

    // 8. Level assignment and RoIAlign on the reference proposals.
    const auto ref_levels = npy<std::int64_t>(dir / "box_level.npy");
    std::vector<int> levels(ref_boxes.size());
    rcnn::assign_levels(std::span<const rcnn::Box>(ref_boxes), cfg.roi_heads.pooler, 2, 5,
                        std::span<int>(levels));
    for (std::size_t i = 0; i < levels.size(); ++i) REQUIRE(levels[i] == ref_levels(i));
    if (c.pixel_files) {
      std::vector<xt::xarray<float>> feats;
      std::vector<rcnn::FeatureMap> maps;
      std::vector<float> scales;
      for (std::size_t l = 0; l < cfg.backbone.roi_levels.size(); ++l) {
        feats.push_back(npy(dir / ("features_" + cfg.backbone.roi_levels[l] + ".npy")));
      }
      for (std::size_t l = 0; l < feats.size(); ++l) {
        maps.push_back({feats[l].data(), int(feats[l].shape()[1]), int(feats[l].shape()[2]),
                        int(feats[l].shape()[3])});
        scales.push_back(float(1.0 / cfg.backbone.roi_strides[l]));
      }
      const auto ref_feat = npy(dir / "box_features.npy");
      std::vector<float> pooled(ref_feat.size());
      rcnn::RoIAlignRef{}(maps, scales, ref_boxes, levels, cfg.roi_heads.pooler, pooled);
      const double scale = std::max(1.0, double(xt::amax(xt::abs(ref_feat))()));
      const double pooled_diff = max_abs_diff(pooled.data(), ref_feat.data(), ref_feat.size());
      MESSAGE(c.bundle << "/" << c.name << ": RoIAlign max |diff| " << pooled_diff
                       << " (features up to " << scale << ")");
      CHECK(pooled_diff <= 1e-5 * scale);
      std::vector<float> pooled_omp(ref_feat.size());
      rcnn::OmpRoIAlign omp;
      omp.num_threads = 2;
      omp(maps, scales, ref_boxes, levels, cfg.roi_heads.pooler, pooled_omp);
      CHECK(pooled_omp == pooled);

      // 9. Box head on the reference pooled features.
      rcnn::BoxHeadOutputs head;
      exec.run_box_head({ref_feat.data(),
                         {std::int64_t(ref_boxes.size()), std::int64_t(ref_feat.shape()[1]),
                          std::int64_t(ref_feat.shape()[2]), std::int64_t(ref_feat.shape()[3])}},
                        head);
      const auto cl = npy(dir / "class_logits.npy");
      const auto bd = npy(dir / "box_deltas.npy");
      CHECK(max_abs_diff(head.class_logits.data, cl.data(), cl.size()) <= 1e-4);
      CHECK(max_abs_diff(head.box_deltas.data, bd.data(), bd.size()) <= 1e-4);
    }

    // 10. Box inference and postprocess on the reference logits / deltas.
    if (c.stage_files) {
      const auto cl = npy(dir / "class_logits.npy");
      const auto bd = npy(dir / "box_deltas.npy");
      const rcnn::BoxHeadView head{cl.data(), bd.data(), int(cl.shape()[0]), int(cl.shape()[1]),
                                   int(bd.shape()[1])};
      std::vector<rcnn::Detection> dets;
      rcnn::BoxInferenceWorkspace ws;
      rcnn::GreedyNms greedy;
      rcnn::SoftmaxBoxInference{}(ref_boxes, head, resized, cfg.roi_heads, greedy, ws, dets);
      const auto ref = npy(dir / "detections_resized.npy");
      REQUIRE(dets.size() == ref.shape()[0]);
      for (std::size_t i = 0; i < dets.size(); ++i) {
        CAPTURE(i);
        CHECK(dets[i].class_id == int(ref(i, 5)));
        CHECK(std::abs(dets[i].score - ref(i, 4)) <= 1e-5);
        CHECK(std::abs(dets[i].box.x1 - ref(i, 0)) <= 1e-3);
        CHECK(std::abs(dets[i].box.y1 - ref(i, 1)) <= 1e-3);
        CHECK(std::abs(dets[i].box.x2 - ref(i, 2)) <= 1e-3);
        CHECK(std::abs(dets[i].box.y2 - ref(i, 3)) <= 1e-3);
      }
      rcnn::RescalePostprocess{}(resized, original, cfg.conventions, cfg.postprocess, dets);
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
}

TEST_CASE("detectron2 end to end from the photo") {
  for (const Case& c : kCases) {
    CAPTURE(c.bundle);
    CAPTURE(c.name);
    const fs::path dir = case_dir(c);
    const auto meta = read_json(dir / "meta.json");
    rcnn::ModelConfig cfg = rcnn::read_bundle(kD2 / c.bundle);
    RecordingExec exec(cfg, {1});
    rcnn::OmpRoIAlign roi;
    roi.num_threads = 2;
    rcnn::Detector<RecordingExec, rcnn::OmpRoIAlign, rcnn::Detectron2Stages> det(cfg, std::move(exec), roi);
    cv::Mat img = rcnn::cv_io::read_image(dir / "image.jpg");
    cv::Mat storage;
    rcnn::Trace trace;
    const auto result = det(rcnn::cv_io::view(img, storage), &trace);

    // Proposals of the whole pipeline equal the reference proposals.
    const auto ref_props = boxes_of(npy(dir / "proposals.npy"));
    REQUIRE(trace.proposals.size() == ref_props.size());
    CHECK(max_abs_diff(reinterpret_cast<const float*>(trace.proposals.boxes.data()),
                       reinterpret_cast<const float*>(ref_props.data()), ref_props.size() * 4) <= 1e-3);

    const auto ref = detections_json(dir / "detections.json");
    const auto rep = match_detections(ref, result.detections);
    MESSAGE(c.bundle << "/" << c.name << ": " << rep.matched << "/" << ref.size()
                     << " matched, min IoU " << rep.min_iou << ", max |score diff| "
                     << rep.max_score_diff);
    CHECK(ref.size() >= 20);
    CHECK(rep.matched == ref.size());
    CHECK(result.detections.size() == ref.size());

    // Static shapes: the fixed bundle's box head sees exactly static_rois rows.
    const auto& e = det.executor();
    REQUIRE(e.backbone_inputs.size() == 1);
    if (cfg.modules.box_head.static_rois) {
      CHECK(e.backbone_inputs[0] == cfg.modules.backbone_rpn.static_shape.value());
      REQUIRE(e.box_head_rows.size() == 1);
      CHECK(e.box_head_rows[0] == *cfg.modules.box_head.static_rois);
    } else {
      CHECK(e.box_head_rows == std::vector<std::int64_t>{std::int64_t(ref_props.size())});
    }
  }
}
