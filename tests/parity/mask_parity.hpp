#pragma once
// Mask R-CNN parity of the C++ runtime against a framework's reference case directory (the
// mask case files of shared/fixtures/detectron2/README.md: mask_level, mask_features,
// mask_logits_class, mask_probs, masks.npz, detections.json's mask_pixels), for either
// convention: the Stages bundle brings the paste, the bundle its channel layout. Used by the
// torchvision (gen_tv_masks.py) and live Detectron2 (gen_detectron2.py) mask tests.
#include "stage_parity.hpp"  // first: LibTorch before doctest (parity_util.hpp)

#include <rcnn/mask/mask_inference.hpp>
#include <rcnn/mask/omp_paste.hpp>

#include "../support/fixture_masks.hpp"

namespace parity {

/// End to end from the photo, the backbone's float differences on this CPU (~3e-6 relative)
/// move the mask probabilities by up to ~3.4e-5, and a pasted value that close to 0.5 can
/// flip its pixel (meta.json's checks count such values). Bar: per detection IoU >= 0.99 and
/// pixel count within 1% of the framework's.
constexpr double kMaxRelCountDiff = 0.01;

using rcnn_test::compare_masks;
using rcnn_test::MaskReport;

inline std::vector<std::size_t> mask_pixels_json(const fs::path& p) {
  std::vector<std::size_t> out;
  for (const auto& d : read_json(p)) out.push_back(d.at("mask_pixels").get<std::size_t>());
  return out;
}

/// Mask stages of one case fed the reference inputs of each stage.
template <class Stages>
void check_mask_stages(const fs::path& bundle, const fs::path& dir) {
  const std::string label = bundle.filename().string() + "/" + dir.filename().string();
  CAPTURE(label);
  const rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  REQUIRE(cfg.mask_head);
  const auto meta = read_json(dir / "meta.json");
  const rcnn::Size original{meta["original_height"].get<int>(), meta["original_width"].get<int>()};
  const auto& pooler = cfg.mask_head->pooler;

  // Detection boxes (resized frame) and classes.
  const auto dets = npy(dir / "detections_resized.npy");
  const std::size_t D = dets.shape()[0];
  REQUIRE(D > 0);
  std::vector<rcnn::Box> boxes(D);
  std::vector<int> classes(D);
  for (std::size_t i = 0; i < D; ++i) {
    boxes[i] = {dets(i, 0), dets(i, 1), dets(i, 2), dets(i, 3)};
    classes[i] = int(dets(i, 5));
  }

  // Level mapper: exact.
  const int min_level = int(std::lround(std::log2(cfg.backbone.roi_strides.front())));
  const int max_level = int(std::lround(std::log2(cfg.backbone.roi_strides.back())));
  std::vector<int> levels(D);
  rcnn::assign_levels(std::span<const rcnn::Box>(boxes), pooler, min_level, max_level,
                      std::span<int>(levels));
  const auto ref_levels = npy<std::int64_t>(dir / "mask_level.npy");
  REQUIRE(ref_levels.size() == D);
  std::size_t level_differ = 0;
  for (std::size_t i = 0; i < D; ++i) level_differ += levels[i] != ref_levels(i);
  CHECK(level_differ == 0);

  // Mask RoIAlign (the bundle's mask pooler) on the reference feature maps.
  const RoiFeatures f = roi_features(dir, cfg);
  const auto ref_feat = npy(dir / "mask_features.npy");
  const int C = cfg.backbone.channels, P = pooler.resolution;
  REQUIRE(ref_feat.size() == D * std::size_t(C) * P * P);
  std::vector<float> pooled(ref_feat.size());
  rcnn::RoIAlignRef{}(f.maps, f.scales, boxes, levels, pooler, pooled);
  const double pooled_diff = max_abs_diff(pooled.data(), ref_feat.data(), ref_feat.size());
  std::vector<float> pooled_omp(ref_feat.size());
  rcnn::OmpRoIAlign omp;
  omp.num_threads = 2;
  omp(f.maps, f.scales, boxes, levels, pooler, pooled_omp);
  CHECK((pooled_omp == pooled));
  CHECK(pooled_diff <= 1e-5 * scale_of(ref_feat));

  // Mask head (mask_head.pt through TorchScriptExec) on the reference pooled features.
  rcnn::TorchScriptExec exec(cfg, rcnn::TorchScriptOptions{1});
  rcnn::MaskHeadOutputs head;
  exec.run_mask_head({ref_feat.data(), {std::int64_t(D), C, P, P}}, head);
  // Channels: one per class, plus torchvision's background channel (first); 1 if class-agnostic.
  const bool bg_first = cfg.roi_heads.background_first;
  const int M = cfg.mask_head->mask_size;
  const int Km = cfg.mask_head->class_agnostic ? 1 : cfg.roi_heads.num_classes + (bg_first ? 1 : 0);
  REQUIRE(head.logits.shape == (std::array<std::int64_t, 4>{std::int64_t(D), Km, M, M}));
  const auto ref_logits = npy(dir / "mask_logits_class.npy");
  const std::size_t plane = std::size_t(M) * M;
  REQUIRE(ref_logits.size() == D * plane);
  double logit_diff = 0;
  const std::size_t first = bg_first ? 1 : 0;  // torchvision: channel class_id + 1
  for (std::size_t i = 0; i < D; ++i) {
    const std::size_t channel = cfg.mask_head->class_agnostic ? 0 : std::size_t(classes[i]) + first;
    logit_diff = std::max(
        logit_diff, max_abs_diff(head.logits.data + (i * std::size_t(Km) + channel) * plane,
                                 ref_logits.data() + i * plane, plane));
  }
  logit_diff /= scale_of(ref_logits);
  CHECK(logit_diff <= 1e-5);

  // Class channel + sigmoid, on the module's logits and (isolating the sigmoid) on the
  // reference class channel seen as a class-agnostic head.
  const auto ref_probs = npy(dir / "mask_probs.npy");
  REQUIRE(ref_probs.size() == D * plane);
  std::vector<float> probs(D * plane), probs_ref_logits(D * plane);
  rcnn::mask_probabilities({head.logits.data, int(D), Km, M}, classes, bg_first,
                           cfg.mask_head->class_agnostic, probs);
  rcnn::mask_probabilities({ref_logits.data(), int(D), 1, M}, classes, bg_first,
                           /*class_agnostic=*/true, probs_ref_logits);
  const double prob_diff = max_abs_diff(probs.data(), ref_probs.data(), ref_probs.size());
  const double sigmoid_diff =
      max_abs_diff(probs_ref_logits.data(), ref_probs.data(), ref_probs.size());
  std::size_t sigmoid_differ = 0;
  for (std::size_t k = 0; k < ref_probs.size(); ++k)
    sigmoid_differ += probs_ref_logits[k] != ref_probs.data()[k];
  CHECK(prob_diff <= 1e-5);
  CHECK(sigmoid_diff <= 3e-7);  // libm expf vs SLEEF's: a few ulp at most

  // Paste on the reference probabilities and the reference final boxes (original image,
  // detections.json, float32 exactly): the same pixels as the framework's masks. Boxes empty
  // after rescaling and clipping are dropped by the postprocess (detector_postprocess's
  // nonempty(): the C4 bundle has some); its `kept` picks the survivors' probabilities.
  const auto ref_dets = detections_json(dir / "detections.json");
  std::vector<rcnn::Detection> post(D);
  for (std::size_t i = 0; i < D; ++i) post[i] = {boxes[i], dets(i, 4), classes[i]};
  const rcnn::Size resized{meta["resized_height"].get<int>(), meta["resized_width"].get<int>()};
  std::vector<int> kept;
  typename Stages::postprocess{}(resized, original, cfg.conventions, cfg.postprocess, post, kept);
  REQUIRE(kept.size() == ref_dets.size());
  const std::size_t F = kept.size();
  std::vector<rcnn::Box> final_boxes(F);
  std::vector<float> kept_probs(F * plane);
  for (std::size_t i = 0; i < F; ++i) {
    final_boxes[i] = ref_dets[i].box;
    std::copy_n(ref_probs.data() + std::size_t(kept[i]) * plane, plane, kept_probs.data() + i * plane);
  }
  const auto ref_masks = rcnn_test::read_fixture_masks((dir / "masks.npz").string());
  const auto ref_pixels = mask_pixels_json(dir / "detections.json");
  const float threshold = cfg.mask_head->mask_threshold;
  const rcnn::MaskProbs mp{kept_probs.data(), int(F), M};
  std::vector<rcnn::InstanceMask> pasted, pasted_omp;
  typename Stages::mask_paste{}(mp, final_boxes, original, threshold, pasted);
  typename rcnn::WithOmpPaste<Stages>::mask_paste omp_paste;
  omp_paste.num_threads = 2;
  omp_paste(mp, final_boxes, original, threshold, pasted_omp);
  const MaskReport rep = compare_masks(pasted, original, ref_masks);
  CHECK(rep.differing_pixels == 0);
  for (std::size_t i = 0; i < F; ++i) {
    CAPTURE(i);
    CHECK(pasted[i].area() == ref_pixels[i]);
    CHECK(pasted_omp[i].bits == pasted[i].bits);
    CHECK(pasted_omp[i].x0 == pasted[i].x0);
    CHECK(pasted_omp[i].y0 == pasted[i].y0);
  }
  MESSAGE(label << ": " << D << " masks; mask levels differ " << level_differ
                << "; mask RoIAlign max |diff| " << pooled_diff
                << "; mask head max relative |diff| " << logit_diff << "; probs max |diff| "
                << prob_diff << " (sigmoid alone " << sigmoid_diff << ", " << sigmoid_differ
                << " of " << ref_probs.size() << " values differ); paste on the reference probs: "
                << rep.differing_pixels << " of " << rep.ref_pixels << " mask pixels differ");
}


/// The whole pipeline from the photo with masks: rcnn::load (reference paste), then an
/// explicit Detector with the OpenMP paste and the mask head in static chunks of 16 rows
/// (the same masks). Returns the masks' report against masks.npz.
template <class Stages>
MaskReport check_mask_end_to_end(const fs::path& bundle, const fs::path& dir) {
  const std::string label = bundle.filename().string() + "/" + dir.filename().string();
  CAPTURE(label);
  const auto ref_dets = detections_json(dir / "detections.json");
  const auto ref_masks = rcnn_test::read_fixture_masks((dir / "masks.npz").string());
  cv::Mat img = rcnn::cv_io::read_image(dir / "image.jpg");
  cv::Mat storage;
  const rcnn::ImageView view = rcnn::cv_io::view(img, storage);

  auto any = rcnn::load<rcnn::TorchScriptExec>(bundle, {1});
  CHECK(any.has_masks());
  rcnn::Trace trace;
  const auto r = any(view, &trace);
  const auto match = match_detections(ref_dets, r.detections);
  CHECK(match.matched == ref_dets.size());
  REQUIRE(r.detections.size() == ref_dets.size());
  REQUIRE(r.masks.size() == r.detections.size());
  const MaskReport rep = compare_masks(r.masks, r.image_size, ref_masks);

  // Mask pooling and probabilities from the photo (the backbone's float differences on
  // this CPU reach them).
  const auto ref_levels = npy<std::int64_t>(dir / "mask_level.npy");
  REQUIRE(trace.mask_levels.size() == ref_levels.size());
  std::size_t level_differ = 0;
  for (std::size_t i = 0; i < ref_levels.size(); ++i)
    level_differ += trace.mask_levels[i] != ref_levels(i);
  const auto ref_feat = npy(dir / "mask_features.npy");
  REQUIRE(trace.mask_features.size() == ref_feat.size());
  const double feat_diff =
      max_abs_diff(trace.mask_features.data(), ref_feat.data(), ref_feat.size()) /
      scale_of(ref_feat);
  const auto ref_probs = npy(dir / "mask_probs.npy");
  REQUIRE(trace.mask_size == rcnn::read_bundle(bundle).mask_head->mask_size);
  REQUIRE(trace.mask_probs.size() == ref_probs.size());
  const double prob_diff =
      max_abs_diff(trace.mask_probs.data(), ref_probs.data(), ref_probs.size());
  MESSAGE(label << ": end to end " << match.matched << "/" << ref_dets.size()
                << " detections (min IoU " << match.min_iou << "); masks min IoU " << rep.min_iou
                << ", " << rep.differing_pixels << " of " << rep.ref_pixels
                << " mask pixels differ, max pixel-count diff " << rep.max_count_diff << " ("
                << rep.max_rel_count_diff * 100 << "%); mask levels differ " << level_differ
                << "; mask features max relative |diff| " << feat_diff
                << "; mask probs max |diff| " << prob_diff);
  CHECK(level_differ == 0);
  CHECK(feat_diff <= 1e-4);
  CHECK(prob_diff <= 1e-3);
  CHECK(rep.min_iou >= 0.99);
  CHECK(rep.max_rel_count_diff <= kMaxRelCountDiff);

  rcnn::ModelConfig cfg = rcnn::read_bundle(bundle);
  cfg.modules.mask_head->static_rois = 16;
  rcnn::OmpRoIAlign roi;
  roi.num_threads = 2;
  rcnn::Detector<rcnn::TorchScriptExec, rcnn::OmpRoIAlign,
                 rcnn::WithOmpPaste<Stages>>
      det(cfg, rcnn::TorchScriptExec(cfg, {1}), roi);
  det.mask_paste().num_threads = 2;
  const auto r2 = det(view);
  REQUIRE(r2.masks.size() == r.masks.size());
  for (std::size_t i = 0; i < r.masks.size(); ++i) {
    CAPTURE(i);
    CHECK(r2.masks[i].bits == r.masks[i].bits);
  }
  return rep;
}

}  // namespace parity
