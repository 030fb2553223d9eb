// Mask R-CNN's framework-free mask stages: mask RoIAlign, class-channel sigmoid, pasting
// (Detectron2PasteRef / TorchvisionPasteRef and their OpenMP versions) and COCO RLE, against
// the committed Detectron2 v0.6 Mask R-CNN fixture (tests/data/detectron2/) and against
// torchvision 0.14's paste_masks_in_image (tests/reference/gen_masks.py).

#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "rcnn/concepts.hpp"
#include "rcnn/detail/sha256.hpp"
#include "rcnn/io/bundle.hpp"
#include "rcnn/mask/detectron2_paste.hpp"
#include "rcnn/mask/mask_inference.hpp"
#include "rcnn/mask/mask_types.hpp"
#include "rcnn/mask/omp_paste.hpp"
#include "rcnn/mask/rle.hpp"
#include "rcnn/mask/torchvision_paste.hpp"
#include "rcnn/roi_align/level_mapper.hpp"
#include "rcnn/roi_align/omp_roi_align.hpp"
#include "rcnn/roi_align/roi_align_ref.hpp"

#include "../support/fixture_masks.hpp"

static_assert(rcnn::MaskPastePolicy<rcnn::Detectron2PasteRef>);
static_assert(rcnn::MaskPastePolicy<rcnn::TorchvisionPasteRef>);
static_assert(rcnn::MaskPastePolicy<rcnn::OmpDetectron2Paste>);
static_assert(rcnn::MaskPastePolicy<rcnn::OmpTorchvisionPaste>);

namespace {

using rcnn_test::FixtureMasks;
using rcnn_test::read_file;
using rcnn_test::read_fixture_masks;

const std::string kMaskBundle = RCNN_TEST_DATA_DIR "/detectron2/narrow_mask_rcnn_r101_fpn_shortest_edge";
const std::string kBoxBundle = RCNN_TEST_DATA_DIR "/detectron2/narrow_r101_fpn_shortest_edge";
const std::string kGenDir = RCNN_REFERENCE_DIR "/gen_masks";

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "missing " << path);
  return nlohmann::json::parse(f);
}

nlohmann::json gen_manifest() {
  std::ifstream f(kGenDir + "/manifest.json");
  REQUIRE_MESSAGE(f.good(), "missing " << kGenDir
                                       << "/manifest.json: run tests/reference/gen_masks.py");
  return nlohmann::json::parse(f);
}

template <class A>
auto to_vec(const A& a) {
  using T = std::decay_t<decltype(*a.begin())>;
  return std::vector<T>(a.begin(), a.end());
}

struct Diff {
  double max_abs = 0;
  std::size_t not_identical = 0;
  std::int64_t max_ulp = 0;
};

Diff compare(std::span<const float> got, std::span<const float> ref) {
  REQUIRE(got.size() == ref.size());
  Diff d;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const auto a = std::bit_cast<std::int32_t>(got[i]), b = std::bit_cast<std::int32_t>(ref[i]);
    if (a == b) continue;
    ++d.not_identical;
    d.max_abs = std::max(d.max_abs, std::abs(double(got[i]) - double(ref[i])));
    d.max_ulp = std::max(d.max_ulp, std::abs(std::int64_t(a) - std::int64_t(b)));
  }
  return d;
}

std::vector<rcnn::Box> boxes_of(const std::vector<float>& f, std::size_t stride) {
  std::vector<rcnn::Box> b(f.size() / stride);
  for (std::size_t i = 0; i < b.size(); ++i)
    b[i] = {f[stride * i], f[stride * i + 1], f[stride * i + 2], f[stride * i + 3]};
  return b;
}

/// A fixture case of the Mask R-CNN bundle.
struct MaskCase {
  std::string dir;
  nlohmann::json meta, dets;
  std::vector<float> probs;  // [D, 28, 28]
  std::vector<rcnn::Box> boxes;  // detections.json boxes (original image)
  int count = 0, mask_size = 0;
  rcnn::Size image;
  explicit MaskCase(const std::string& name) : dir(kMaskBundle + "/cases/" + name) {
    meta = read_json(dir + "/meta.json");
    dets = read_json(dir + "/detections.json");
    const auto p = xt::load_npy<float>(dir + "/mask_probs.npy");
    REQUIRE(p.dimension() == 3);
    count = int(p.shape()[0]);
    mask_size = int(p.shape()[1]);
    probs = to_vec(p);
    for (const auto& d : dets)
      boxes.push_back({float(d["box"][0].get<double>()), float(d["box"][1].get<double>()),
                       float(d["box"][2].get<double>()), float(d["box"][3].get<double>())});
    image = {meta["original_height"].get<int>(), meta["original_width"].get<int>()};
    REQUIRE(std::size_t(count) == boxes.size());
  }
  rcnn::MaskProbs view() const { return {probs.data(), count, mask_size}; }
};

template <int N>
struct OmpD2N : rcnn::OmpDetectron2Paste {
  OmpD2N() { num_threads = N; }
};
template <int N>
struct OmpTvN : rcnn::OmpTorchvisionPaste {
  OmpTvN() { num_threads = N; }
};

/// Pixels where an instance mask differs from a full H x W reference mask.
std::size_t differing_pixels(const rcnn::InstanceMask& m, rcnn::Size image,
                             std::span<const std::uint8_t> ref) {
  const auto full = m.expand(image);
  std::size_t n = 0;
  for (std::size_t i = 0; i < full.size(); ++i) n += full[i] != (ref[i] ? 1 : 0);
  return n;
}

double iou(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  std::size_t inter = 0, uni = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    inter += a[i] && b[i];
    uni += a[i] || b[i];
  }
  return uni ? double(inter) / double(uni) : 1.0;
}

bool same_masks(const std::vector<rcnn::InstanceMask>& a, const std::vector<rcnn::InstanceMask>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].x0 != b[i].x0 || a[i].y0 != b[i].y0 || a[i].width != b[i].width ||
        a[i].height != b[i].height || a[i].bits != b[i].bits)
      return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Detectron2 fixture
// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Detectron2 paste reproduces Detectron2 v0.6's masks (fixture)", Paste,
                   rcnn::Detectron2PasteRef, OmpD2N<1>, OmpD2N<2>) {
  const rcnn::ModelConfig cfg =
      rcnn::parse_model_json(read_file(kMaskBundle + "/model.json"));
  REQUIRE(cfg.mask_head.has_value());
  REQUIRE(cfg.mask_head->paste == rcnn::MaskHeadConfig::Paste::detectron2);
  for (const std::string name : {"fruits", "messi5"}) {
    CAPTURE(name);
    const MaskCase c(name);
    const FixtureMasks ref = read_fixture_masks(c.dir + "/masks.npz");
    REQUIRE(ref.count == c.count);
    REQUIRE(ref.height == c.image.height);
    REQUIRE(ref.width == c.image.width);
    std::vector<rcnn::InstanceMask> masks;
    Paste paste;
    paste(c.view(), c.boxes, c.image, cfg.mask_head->mask_threshold, masks);
    REQUIRE(masks.size() == std::size_t(c.count));
    std::size_t differ = 0, counts_differ = 0, total = 0;
    double min_iou = 1.0;
    for (int i = 0; i < c.count; ++i) {
      const auto full = masks[std::size_t(i)].expand(c.image);
      differ += differing_pixels(masks[std::size_t(i)], c.image, ref.mask(i));
      min_iou = std::min(min_iou, iou(full, ref.mask(i)));
      const std::size_t area = masks[std::size_t(i)].area();
      total += area;
      counts_differ += area != c.dets[std::size_t(i)]["mask_pixels"].get<std::size_t>();
    }
    MESSAGE(name << ": " << differ << " pixels differ from masks.npz (" << total
                 << " mask pixels), min IoU " << min_iou << ", " << counts_differ
                 << " pixel counts differ from mask_pixels");
    CHECK(differ == 0);
    CHECK(min_iou == 1.0);
    CHECK(counts_differ == 0);
    CHECK(total == c.meta["mask_pixels_total"].get<std::size_t>());
  }
}

TEST_CASE("Detectron2 paste: FMA and non-FMA float32 forms on the fixture (measured)") {
  for (const std::string name : {"fruits", "messi5"}) {
    CAPTURE(name);
    const MaskCase c(name);
    const FixtureMasks ref = read_fixture_masks(c.dir + "/masks.npz");
    std::size_t differ_fma = 0, differ_plain = 0, values_differ = 0, evaluated = 0;
    std::size_t near6 = 0, near5 = 0, near4 = 0;
    for (int i = 0; i < c.count; ++i) {
      rcnn::InstanceMask a, b;
      const float* P = c.probs.data() + std::size_t(i) * 784;
      rcnn::detail::detectron2_paste_one<true>(P, 28, c.boxes[std::size_t(i)], c.image, 0.5f, a);
      rcnn::detail::detectron2_paste_one<false>(P, 28, c.boxes[std::size_t(i)], c.image, 0.5f, b);
      differ_fma += differing_pixels(a, c.image, ref.mask(i));
      differ_plain += differing_pixels(b, c.image, ref.mask(i));
      for (int y = a.y0; y < a.y0 + a.height; ++y)
        for (int x = a.x0; x < a.x0 + a.width; ++x) {
          const float v = rcnn::detail::detectron2_paste_value<true>(P, 28, c.boxes[std::size_t(i)], x, y);
          const float w = rcnn::detail::detectron2_paste_value<false>(P, 28, c.boxes[std::size_t(i)], x, y);
          values_differ += std::bit_cast<std::uint32_t>(v) != std::bit_cast<std::uint32_t>(w);
          ++evaluated;
          const double d = std::abs(double(v) - 0.5);
          near6 += d <= 1e-6;
          near5 += d <= 1e-5;
          near4 += d <= 1e-4;
        }
    }
    MESSAGE(name << ": FMA form " << differ_fma << " pixels differ, non-FMA form "
                 << differ_plain << " pixels differ; the two forms' values differ at "
                 << values_differ << " of " << evaluated << " window pixels; values within "
                 << "1e-6 / 1e-5 / 1e-4 of 0.5: " << near6 << " / " << near5 << " / " << near4);
    CHECK(differ_fma == 0);
    CHECK(differ_plain == 0);  // measured: the knife edges survive the rounding change
    // The fixture generator's counts of the same knife edges (its values equal ours).
    const auto& k = c.meta["checks"]["mask_paste"];
    CHECK(near6 == k["pasted_values_within_1e-6_of_threshold"].get<std::size_t>());
    CHECK(near5 == k["pasted_values_within_1e-5_of_threshold"].get<std::size_t>());
    CHECK(near4 == k["pasted_values_within_1e-4_of_threshold"].get<std::size_t>());
  }
}

TEST_CASE("Mask RoIAlign (14x14, aligned, adaptive) on the fixture features") {
  const rcnn::ModelConfig cfg =
      rcnn::parse_model_json(read_file(kMaskBundle + "/model.json"));
  REQUIRE(cfg.mask_head.has_value());
  const rcnn::PoolerConfig& pooler = cfg.mask_head->pooler;
  CHECK(pooler.resolution == 14);
  CHECK(pooler.sampling_ratio == 0);
  CHECK(pooler.aligned);
  const nlohmann::json hashes = read_json(kMaskBundle + "/mask_features.sha256.json");
  for (const std::string name : {"fruits", "messi5"}) {
    CAPTURE(name);
    const std::string mask_dir = kMaskBundle + "/cases/" + name;
    const std::string box_dir = kBoxBundle + "/cases/" + name;
    // detections_resized.npy is byte-identical in the two bundles (FIXTURES.md).
    CHECK(read_file(mask_dir + "/detections_resized.npy") ==
          read_file(box_dir + "/detections_resized.npy"));
    const auto boxes = boxes_of(to_vec(xt::load_npy<float>(mask_dir + "/detections_resized.npy")), 6);
    const auto expected_levels = to_vec(xt::load_npy<std::int64_t>(mask_dir + "/mask_level.npy"));
    std::vector<int> levels(boxes.size());
    const int min_level = 2, max_level = 5;  // p2..p5 (strides 4..32)
    rcnn::assign_levels(boxes, pooler, min_level, max_level, levels);
    CHECK(std::vector<std::int64_t>(levels.begin(), levels.end()) == expected_levels);

    std::vector<xt::xarray<float>> arrays;
    std::vector<rcnn::FeatureMap> maps;
    std::vector<float> scales;
    for (int l = 2; l <= 5; ++l) {
      arrays.push_back(xt::load_npy<float>(box_dir + "/features_p" + std::to_string(l) + ".npy"));
      scales.push_back(1.f / float(1 << l));
    }
    for (const auto& a : arrays)
      maps.push_back({a.data(), int(a.shape()[1]), int(a.shape()[2]), int(a.shape()[3])});
    const std::size_t per = std::size_t(maps[0].channels) * 14 * 14;
    std::vector<float> ref(boxes.size() * per), omp(boxes.size() * per, 1.f);
    rcnn::RoIAlignRef{}(maps, scales, boxes, levels, pooler, ref);
    rcnn::OmpRoIAlign{2}(maps, scales, boxes, levels, pooler, omp);
    CHECK(std::memcmp(ref.data(), omp.data(), ref.size() * sizeof(float)) == 0);
    // mask_features.npy (1 MB per case) is not committed: its per-detection SHA-256 (of the
    // little-endian float32 bytes) is, with its shape.
    const auto& h = hashes[name];
    REQUIRE(h["shape"][0].get<std::size_t>() == boxes.size());
    REQUIRE(h["shape"][1].get<int>() == maps[0].channels);
    std::size_t mismatched = 0;
    for (std::size_t i = 0; i < boxes.size(); ++i) {
      const std::string_view bytes(reinterpret_cast<const char*>(ref.data() + i * per),
                                   per * sizeof(float));
      mismatched += rcnn::detail::sha256_hex(bytes) != h["per_detection"][i].get<std::string>();
    }
    MESSAGE(name << ": " << mismatched << " of " << boxes.size()
                 << " detections' pooled features differ from mask_features.npy");
    CHECK(mismatched == 0);  // measured: bit-identical (Detectron2's ROIAlignV2 is torchvision's op)
  }
}

TEST_CASE("mask_probabilities: sigmoid of the class channel reproduces mask_probs.npy") {
  for (const std::string name : {"fruits", "messi5"}) {
    CAPTURE(name);
    const std::string dir = kMaskBundle + "/cases/" + name;
    const auto logits_class = to_vec(xt::load_npy<float>(dir + "/mask_logits_class.npy"));
    const auto probs = to_vec(xt::load_npy<float>(dir + "/mask_probs.npy"));
    const auto det = to_vec(xt::load_npy<float>(dir + "/detections_resized.npy"));
    const int D = int(det.size() / 6), M = 28, K = 80;
    std::vector<int> classes(static_cast<std::size_t>(D));
    for (int i = 0; i < D; ++i) classes[std::size_t(i)] = int(det[std::size_t(i) * 6 + 5]);
    const std::size_t plane = std::size_t(M) * M;
    // The three logits layouts, every other channel NaN: only the class channel may be read.
    struct Layout {
      bool background_first, agnostic;
      int channels;
    };
    for (const Layout lay : {Layout{false, false, K}, Layout{true, false, K + 1}, Layout{false, true, 1}}) {
      CAPTURE(lay.background_first);
      CAPTURE(lay.agnostic);
      std::vector<float> logits(std::size_t(D) * std::size_t(lay.channels) * plane,
                                std::numeric_limits<float>::quiet_NaN());
      for (int i = 0; i < D; ++i) {
        const int ch = rcnn::mask_channel(classes[std::size_t(i)], lay.background_first, lay.agnostic);
        std::copy_n(logits_class.data() + std::size_t(i) * plane, plane,
                    logits.data() + (std::size_t(i) * std::size_t(lay.channels) + std::size_t(ch)) * plane);
      }
      std::vector<float> out(std::size_t(D) * plane, -1.f);
      rcnn::mask_probabilities({logits.data(), D, lay.channels, M}, classes, lay.background_first,
                               lay.agnostic, out);
      const Diff d = compare(out, probs);
      MESSAGE(name << ": " << d.not_identical << " of " << probs.size()
                   << " probabilities not bit-identical to torch.sigmoid, max " << d.max_ulp
                   << " ulp, max |diff| " << d.max_abs);
      CHECK(d.max_abs <= 1e-6);  // FIXTURES.md: "within 1e-6"
      CHECK(d.max_ulp <= 2);     // measured: 2 (values near 1, from a 1-ulp exp difference)
      if (lay.agnostic) {
        // What the difference does to the masks: paste our probabilities.
        const MaskCase c(name);
        const FixtureMasks ref = read_fixture_masks(dir + "/masks.npz");
        std::vector<rcnn::InstanceMask> masks;
        rcnn::Detectron2PasteRef{}({out.data(), D, M}, c.boxes, c.image, 0.5f, masks);
        std::size_t differ = 0, worst = 0;
        double min_iou = 1.0;
        for (int i = 0; i < D; ++i) {
          const std::size_t n = differing_pixels(masks[std::size_t(i)], c.image, ref.mask(i));
          differ += n;
          worst = std::max(worst, n);
          min_iou = std::min(min_iou, iou(masks[std::size_t(i)].expand(c.image), ref.mask(i)));
        }
        MESSAGE(name << ": masks pasted from our sigmoid: " << differ
                     << " pixels differ from masks.npz (at most " << worst
                     << " per detection), min IoU " << min_iou);
        CHECK(worst <= 1);  // FIXTURES.md's allowance for the knife edges
        CHECK(min_iou >= 0.999);
      }
    }
  }
  // Validation.
  std::vector<float> logits(2 * 3 * 4, 0.f), out(2 * 4);
  const std::vector<int> cls{0, 2};
  CHECK_THROWS_AS(rcnn::mask_probabilities({logits.data(), 2, 3, 2}, cls, true, false, out),
                  rcnn::Error);  // class 2 -> channel 3 of 3
  CHECK_NOTHROW(rcnn::mask_probabilities({logits.data(), 2, 3, 2}, cls, false, false, out));
  CHECK_THROWS_AS(rcnn::mask_probabilities({logits.data(), 2, 3, 2}, cls, false, true, out),
                  rcnn::Error);  // agnostic needs 1 channel
  std::vector<float> small(3);
  CHECK_THROWS_AS(rcnn::mask_probabilities({logits.data(), 2, 3, 2}, cls, false, false, small),
                  rcnn::Error);
}

// ---------------------------------------------------------------------------------------------
// Random cases against the frameworks (gen_masks.py)
// ---------------------------------------------------------------------------------------------

namespace {

struct GenCase {
  std::string dir, convention;
  int count = 0, mask_size = 0;
  rcnn::Size image;
  std::vector<float> probs, soft;
  std::vector<rcnn::Box> boxes;
  std::vector<std::uint8_t> masks;
  explicit GenCase(const nlohmann::json& c)
      : dir(c["dir"].get<std::string>()), convention(c["convention"].get<std::string>()),
        count(c["count"].get<int>()), mask_size(c["mask_size"].get<int>()),
        image{c["height"].get<int>(), c["width"].get<int>()} {
    const std::string d = kGenDir + "/" + dir + "/";
    probs = to_vec(xt::load_npy<float>(d + "probs.npy"));
    soft = to_vec(xt::load_npy<float>(d + "soft.npy"));
    boxes = boxes_of(to_vec(xt::load_npy<float>(d + "boxes.npy")), 4);
    masks = to_vec(xt::load_npy<std::uint8_t>(d + "masks.npy"));
    REQUIRE(boxes.size() == std::size_t(count));
  }
  std::size_t plane() const { return std::size_t(image.height) * std::size_t(image.width); }
  rcnn::MaskProbs view() const { return {probs.data(), count, mask_size}; }
};

/// Soft value of our torchvision paste at image pixel (x, y) (0 outside the window).
float torchvision_soft(const GenCase& c, int i, int x, int y, std::vector<float>& padded) {
  const int M = c.mask_size, S = M + 2;
  const auto t = rcnn::detail::torchvision_paste_box(c.boxes[std::size_t(i)], M, c.image);
  if (x < t.window.x0 || x >= t.window.x1 || y < t.window.y0 || y >= t.window.y1) return 0.f;
  padded.resize(std::size_t(S) * S);
  rcnn::detail::pad_mask(c.probs.data() + std::size_t(i) * std::size_t(M) * M, M, padded.data());
  const auto h = rcnn::detail::torch_linear_tap(S, t.h, std::int64_t(y) - t.y0);
  const auto w = rcnn::detail::torch_linear_tap(S, t.w, std::int64_t(x) - t.x0);
  return rcnn::detail::torch_bilinear_channels_last(padded.data() + std::size_t(h.i0) * S,
                                                    padded.data() + std::size_t(h.i1) * S, h, w);
}

float detectron2_soft(const GenCase& c, int i, int x, int y) {
  const int M = c.mask_size;
  const auto w = rcnn::detail::detectron2_window(c.boxes[std::size_t(i)], c.image);
  if (x < w.x0 || x >= w.x1 || y < w.y0 || y >= w.y1) return 0.f;
  return rcnn::detail::detectron2_paste_value<true>(
      c.probs.data() + std::size_t(i) * std::size_t(M) * M, M, c.boxes[std::size_t(i)], x, y);
}

}  // namespace

TEST_CASE("Soft pasted values are bit-identical to torchvision / torch grid_sample (gen_masks)") {
  const nlohmann::json m = gen_manifest();
  REQUIRE(m["paste"].size() >= 8);
  std::vector<float> padded;
  for (const auto& jc : m["paste"]) {
    const GenCase c(jc);
    CAPTURE(c.dir);
    std::vector<float> got(c.soft.size());
    for (int i = 0; i < c.count; ++i)
      for (int y = 0; y < c.image.height; ++y)
        for (int x = 0; x < c.image.width; ++x)
          got[std::size_t(i) * c.plane() + std::size_t(y) * std::size_t(c.image.width) + std::size_t(x)] =
              c.convention == "torchvision" ? torchvision_soft(c, i, x, y, padded)
                                            : detectron2_soft(c, i, x, y);
    const Diff d = compare(got, c.soft);
    MESSAGE(c.dir << ": " << d.not_identical << " of " << c.soft.size()
                  << " soft values not bit-identical, max |diff| " << d.max_abs);
    CHECK(d.not_identical == 0);
  }
}

/// Every gen_masks case of `convention` pasted with `Paste` against the framework's masks:
/// 0 differing pixels and the framework's pixel count.
template <class Paste>
void check_gen_paste(const char* convention) {
  const nlohmann::json m = gen_manifest();
  std::size_t cases = 0;
  for (const auto& jc : m["paste"]) {
    if (jc["convention"] != convention) continue;
    ++cases;
    const GenCase c(jc);
    CAPTURE(c.dir);
    std::vector<rcnn::InstanceMask> out;
    Paste paste;
    paste(c.view(), c.boxes, c.image, 0.5f, out);
    std::size_t differ = 0, pixels = 0;
    for (int i = 0; i < c.count; ++i) {
      differ += differing_pixels(out[std::size_t(i)], c.image,
                                 std::span(c.masks).subspan(std::size_t(i) * c.plane(), c.plane()));
      pixels += out[std::size_t(i)].area();
    }
    MESSAGE(c.dir << ": " << differ << " of " << pixels << " mask pixels differ");
    CHECK(differ == 0);
    CHECK(pixels == jc["pixels"].get<std::size_t>());
  }
  CHECK(cases >= 4);
}

TEST_CASE_TEMPLATE("Torchvision paste matches torchvision's paste_masks_in_image (gen_masks)", Paste,
                   rcnn::TorchvisionPasteRef, OmpTvN<1>, OmpTvN<3>) {
  check_gen_paste<Paste>("torchvision");
}

TEST_CASE_TEMPLATE("Detectron2 paste matches the grid_sample reference on random boxes (gen_masks)",
                   Paste, rcnn::Detectron2PasteRef, OmpD2N<1>, OmpD2N<3>) {
  check_gen_paste<Paste>("detectron2");
}

TEST_CASE("TorchvisionPasteRef equals a full torch_resize_bilinear of the padded mask") {
  // The literal torchvision recipe: resize the whole padded mask to the box with the
  // preprocess stage's ATen resize (one channel: channels-last kernel), then crop.
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> u01(0.f, 1.f), pos(-30.f, 90.f), side(0.f, 70.f);
  const int M = 28, S = 30;
  const rcnn::Size image{64, 80};
  std::vector<float> probs(std::size_t(M) * M), padded(std::size_t(S) * S);
  rcnn::TorchResizeWorkspace ws;
  for (int trial = 0; trial < 200; ++trial) {
    for (auto& p : probs) p = u01(rng);
    const float x = pos(rng), y = pos(rng);
    const rcnn::Box box{x, y, x + side(rng), y + side(rng)};
    std::vector<rcnn::InstanceMask> out;
    rcnn::TorchvisionPasteRef{}({probs.data(), 1, M}, std::span(&box, 1), image, 0.5f, out);
    const auto t = rcnn::detail::torchvision_paste_box(box, M, image);
    rcnn::detail::pad_mask(probs.data(), M, padded.data());
    std::vector<float> big(std::size_t(t.h) * std::size_t(t.w));
    rcnn::torch_resize_bilinear(padded.data(), 1, {S, S}, big.data(), {int(t.h), int(t.w)}, ws);
    std::size_t differ = 0;
    for (int yy = 0; yy < image.height; ++yy)
      for (int xx = 0; xx < image.width; ++xx) {
        const bool inside = xx >= t.window.x0 && xx < t.window.x1 && yy >= t.window.y0 && yy < t.window.y1;
        const std::uint8_t want =
            inside && big[std::size_t(yy - t.y0) * std::size_t(t.w) + std::size_t(xx - t.x0)] >= 0.5f;
        differ += out[0].at(xx, yy) != want;
      }
    CAPTURE(trial);
    CHECK(differ == 0);
  }
}

// ---------------------------------------------------------------------------------------------
// OpenMP policies against the references
// ---------------------------------------------------------------------------------------------

namespace {

template <class Omp>
struct RefOf;
template <>
struct RefOf<rcnn::OmpDetectron2Paste> {
  using type = rcnn::Detectron2PasteRef;
};
template <>
struct RefOf<rcnn::OmpTorchvisionPaste> {
  using type = rcnn::TorchvisionPasteRef;
};

}  // namespace

TEST_CASE_TEMPLATE("OpenMP paste is bit-identical to its reference (random and degenerate boxes)",
                   Omp, rcnn::OmpDetectron2Paste, rcnn::OmpTorchvisionPaste) {
  using Ref = typename RefOf<Omp>::type;
  static_assert(Omp::convention == Ref::convention);
  std::mt19937 rng(777);
  std::uniform_real_distribution<float> u01(0.f, 1.f);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const int M : {1, 2, 5, 28}) {
    for (const rcnn::Size image : {rcnn::Size{1, 1}, rcnn::Size{37, 53}, rcnn::Size{300, 211}}) {
      const float W = float(image.width), H = float(image.height);
      std::uniform_real_distribution<float> px(-0.5f * W, 1.5f * W), py(-0.5f * H, 1.5f * H);
      std::uniform_real_distribution<float> sw(0.f, 1.2f * W), sh(0.f, 1.2f * H);
      std::vector<rcnn::Box> boxes;
      for (int i = 0; i < 60; ++i) {
        const float x = px(rng), y = py(rng);
        boxes.push_back({x, y, x + sw(rng), y + sh(rng)});
      }
      // Degenerate and extreme boxes.
      boxes.push_back({3.f, 3.f, 3.f, 9.f});             // zero width
      boxes.push_back({5.f, 5.f, 2.f, 1.f});             // inverted
      boxes.push_back({-1e30f, -1e30f, 1e30f, 1e30f});   // astronomically large
      boxes.push_back({nan, 0.f, 5.f, 5.f});
      boxes.push_back({0.f, 0.f, inf, 5.f});
      boxes.push_back({-inf, -inf, inf, inf});
      boxes.push_back({W + 5.f, H + 5.f, W + 50.f, H + 50.f});  // beyond the image
      boxes.push_back({0.f, 0.f, W, H});                        // the whole image
      boxes.push_back({0.25f, 0.25f, 0.75f, 0.75f});            // sub-pixel
      std::vector<float> probs(boxes.size() * std::size_t(M) * M);
      for (std::size_t k = 0; k < probs.size(); ++k) probs[k] = k % 7 == 0 ? 1.f : u01(rng);
      const rcnn::MaskProbs view{probs.data(), int(boxes.size()), M};
      for (const float threshold : {0.5f, 0.05f, 0.999f}) {
        std::vector<rcnn::InstanceMask> ref, got;
        Ref{}(view, boxes, image, threshold, ref);
        for (const int threads : {1, 2, 4}) {
          Omp omp;
          omp.num_threads = threads;
          got.assign(3, rcnn::InstanceMask{1, 2, 3, 4, std::vector<std::uint8_t>(12, 7)});
          omp(view, boxes, image, threshold, got);
          CAPTURE(M);
          CAPTURE(image.height);
          CAPTURE(threshold);
          CAPTURE(threads);
          CHECK(same_masks(got, ref));
        }
      }
    }
  }
}

TEST_CASE_TEMPLATE("Paste policies: windows, empty inputs, validation", Paste,
                   rcnn::Detectron2PasteRef, rcnn::TorchvisionPasteRef, OmpD2N<2>, OmpTvN<2>) {
  const int M = 4;
  std::vector<float> probs(2 * M * M, 1.f);
  const std::vector<rcnn::Box> boxes{{10.f, 10.f, 20.f, 30.f}, {-50.f, -50.f, -40.f, -40.f}};
  const rcnn::Size image{40, 50};
  std::vector<rcnn::InstanceMask> out;
  Paste paste;
  paste({probs.data(), 2, M}, boxes, image, 0.5f, out);
  REQUIRE(out.size() == 2);
  // All-ones mask: at least the box interior is set, and the window lies in the image.
  const auto& m = out[0];
  CHECK(m.x0 >= 0);
  CHECK(m.y0 >= 0);
  CHECK(m.x0 + m.width <= image.width);
  CHECK(m.y0 + m.height <= image.height);
  for (int y = 11; y < 29; ++y)
    for (int x = 11; x < 19; ++x) CHECK(m.at(x, y) == 1);
  CHECK(m.at(0, 0) == 0);
  CHECK(m.at(49, 39) == 0);
  CHECK(out[1].width == 0);  // entirely outside the image
  CHECK(out[1].area() == 0);
  // No detections.
  paste({nullptr, 0, M}, {}, image, 0.5f, out);
  CHECK(out.empty());
  // Validation.
  CHECK_THROWS_AS(paste({probs.data(), 2, M}, std::span(boxes.data(), 1), image, 0.5f, out), rcnn::Error);
  CHECK_THROWS_AS(paste({probs.data(), 2, M}, boxes, image, 0.f, out), rcnn::Error);
  CHECK_THROWS_AS(paste({probs.data(), 2, M}, boxes, image, std::numeric_limits<float>::quiet_NaN(), out),
                  rcnn::Error);
  CHECK_THROWS_AS(paste({nullptr, 2, M}, boxes, image, 0.5f, out), rcnn::Error);
}

TEST_CASE("OpenMP paste reuses its buffers at steady state") {
  const int M = 28;
  std::vector<float> probs(20 * M * M);
  for (std::size_t k = 0; k < probs.size(); ++k) probs[k] = float(k % 13) / 12.f;
  std::vector<rcnn::Box> boxes;
  for (int i = 0; i < 20; ++i) boxes.push_back({float(3 * i), float(2 * i), float(3 * i + 40), float(2 * i + 70)});
  const rcnn::Size image{200, 180};
  std::vector<rcnn::InstanceMask> out;
  rcnn::OmpTorchvisionPaste tv{2};
  rcnn::OmpDetectron2Paste d2{2};
  tv({probs.data(), 20, M}, boxes, image, 0.5f, out);
  d2({probs.data(), 20, M}, boxes, image, 0.5f, out);
  const auto buffers = [&] {
    std::vector<const void*> b{tv.ws.plans.data(), tv.ws.padded.data(), tv.ws.tv_taps.data(),
                               tv.ws.items.data(), d2.ws.plans.data(), d2.ws.padded.data(),
                               d2.ws.d2_taps.data(), d2.ws.items.data()};
    for (const auto& m : out) b.push_back(m.bits.data());
    return b;
  };
  const auto before = buffers();
  for (int k = 0; k < 3; ++k) {
    tv({probs.data(), 20, M}, boxes, image, 0.5f, out);
    d2({probs.data(), 20, M}, boxes, image, 0.5f, out);
  }
  CHECK(buffers() == before);
}

// ---------------------------------------------------------------------------------------------
// InstanceMask and COCO RLE
// ---------------------------------------------------------------------------------------------

TEST_CASE("InstanceMask: expand, at, area, errors") {
  rcnn::InstanceMask m;
  m.reset(2, 1, 3, 2);
  m.bits = {1, 0, 1, 0, 1, 1};
  const rcnn::Size image{4, 6};
  const auto full = m.expand(image);
  const std::vector<std::uint8_t> want{0, 0, 0, 0, 0, 0,  //
                                       0, 0, 1, 0, 1, 0,  //
                                       0, 0, 0, 1, 1, 0,  //
                                       0, 0, 0, 0, 0, 0};
  CHECK(full == want);
  CHECK(m.area() == 4);
  CHECK(m.at(4, 2) == 1);
  CHECK(m.at(5, 2) == 0);
  CHECK(m.at(-1, -1) == 0);
  CHECK_THROWS_AS(m.expand(rcnn::Size{2, 6}), rcnn::Error);  // window outside
  std::vector<std::uint8_t> small(5);
  CHECK_THROWS_AS(m.expand(image, small), rcnn::Error);
  m.reset(0, 0, 0, 7);
  CHECK(m.width == 0);
  CHECK(m.height == 0);
  CHECK(m.expand(image) == std::vector<std::uint8_t>(24, 0));
}

TEST_CASE("COCO RLE agrees with the Python reference (gen_masks) and round-trips") {
  const nlohmann::json m = gen_manifest();
  REQUIRE(m["rle"].size() > 10);
  for (const auto& c : m["rle"]) {
    const std::string dir = kGenDir + "/" + c["dir"].get<std::string>() + "/";
    CAPTURE(dir);
    const auto mask = to_vec(xt::load_npy<std::uint8_t>(dir + "mask.npy"));
    const auto counts = to_vec(xt::load_npy<std::int64_t>(dir + "counts.npy"));
    const rcnn::Size size{c["height"].get<int>(), c["width"].get<int>()};
    const rcnn::CocoRle rle = rcnn::rle_encode(mask, size);
    CHECK(std::vector<std::int64_t>(rle.counts.begin(), rle.counts.end()) == counts);
    const std::string s = rcnn::rle_to_string(rle);
    CHECK(s == c["string"].get<std::string>());
    CHECK(rcnn::rle_from_string(s, size) == rle);
    CHECK(rcnn::rle_decode(rle) == mask);
    CHECK(rcnn::rle_area(rle) == c["area"].get<std::uint64_t>());
    // From an instance mask: every window placement containing the set pixels.
    int x0 = size.width, y0 = size.height, x1 = -1, y1 = -1;
    for (int y = 0; y < size.height; ++y)
      for (int x = 0; x < size.width; ++x)
        if (mask[std::size_t(y) * std::size_t(size.width) + std::size_t(x)]) {
          x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x), y1 = std::max(y1, y);
        }
    for (const bool whole : {true, false}) {
      rcnn::InstanceMask im;
      if (whole || x1 < 0)
        im.reset(0, 0, size.width, size.height);
      else
        im.reset(x0, y0, x1 - x0 + 1, y1 - y0 + 1);
      for (int y = 0; y < im.height; ++y)
        for (int x = 0; x < im.width; ++x)
          im.bits[std::size_t(y) * std::size_t(im.width) + std::size_t(x)] =
              mask[std::size_t(im.y0 + y) * std::size_t(size.width) + std::size_t(im.x0 + x)];
      CHECK(rcnn::rle_encode(im, size) == rle);
    }
  }
}

TEST_CASE("COCO RLE: edge cases and errors") {
  // Empty window, empty image.
  rcnn::InstanceMask empty;
  const rcnn::CocoRle r = rcnn::rle_encode(empty, rcnn::Size{3, 4});
  CHECK(r.counts == std::vector<std::uint32_t>{12});
  CHECK(rcnn::rle_to_string(r) == "<");  // 12 + 48
  CHECK(rcnn::rle_encode(std::span<const std::uint8_t>{}, rcnn::Size{0, 0}).counts ==
        std::vector<std::uint32_t>{0});
  // Non-0/1 bytes count as set.
  const std::vector<std::uint8_t> m{0, 255, 3, 0};
  CHECK(rcnn::rle_encode(m, rcnn::Size{2, 2}).counts == std::vector<std::uint32_t>{1, 2, 1});  // column-major
  // Errors.
  CHECK_THROWS_AS(rcnn::rle_encode(m, rcnn::Size{3, 2}), rcnn::Error);
  CHECK_THROWS_AS(rcnn::rle_from_string("<", rcnn::Size{3, 5}), rcnn::Error);  // sums to 12
  CHECK_THROWS_AS(rcnn::rle_from_string("\x7f", rcnn::Size{3, 4}), rcnn::Error);
  CHECK_THROWS_AS(rcnn::rle_from_string("l", rcnn::Size{3, 4}), rcnn::Error);  // truncated
  CHECK_THROWS_AS(rcnn::rle_decode(rcnn::CocoRle{2, 2, {1, 2}}), rcnn::Error);
  rcnn::InstanceMask outside;
  outside.reset(2, 2, 3, 3);
  CHECK_THROWS_AS(rcnn::rle_encode(outside, rcnn::Size{4, 4}), rcnn::Error);
}
