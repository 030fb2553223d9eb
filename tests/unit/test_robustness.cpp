// Reliability of the core without LibTorch (issue 6): encoded-image probing, non-finite and
// degenerate numbers through the stages, and the Detector driven by a plain C++ executor
// (tests/support/fake_exec.hpp) that can disagree with model.json the way a wrong bundle does.
// Complements test_stages.cpp (basic edge cases) and test_bundle.cpp (model.json validation).
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <rcnn/box/softmax_box_inference.hpp>
#include <rcnn/detector.hpp>
#include <rcnn/io/bundle.hpp>
#include <rcnn/io/image_probe.hpp>
#include <rcnn/nms/greedy_nms.hpp>
#include <rcnn/preprocess/preprocess.hpp>
#include <rcnn/proposals/topk_proposal_selector.hpp>

#include <climits>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../support/fake_exec.hpp"
#include "../support/fake_detector.hpp"
#include "../support/invariants.hpp"
#include "../support/test_util.hpp"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
using rcnn_test::contains;
using rcnn_test::error_of;



// ---- encoded images -------------------------------------------------------------------------

void put16(Bytes& b, unsigned v) {
  b.push_back(std::uint8_t(v >> 8));
  b.push_back(std::uint8_t(v));
}
void put32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(std::uint8_t(v >> s));
}

/// The marker structure of a baseline JPEG (contents are not valid image data: the probe
/// does not decode).
Bytes tiny_jpeg(unsigned height, unsigned width) {
  Bytes b{0xFF, 0xD8};
  b.insert(b.end(), {0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0});
  b.insert(b.end(), {0xFF, 0xC0, 0x00, 0x11, 0x08});
  put16(b, height);
  put16(b, width);
  b.insert(b.end(), {0x03, 0x01, 0x11, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01});
  b.insert(b.end(), {0xFF, 0xC4, 0x00, 0x05, 0x00, 0x01, 0x02});
  b.insert(b.end(), {0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00,
                     0x3F, 0x00});
  // Entropy-coded data with a stuffed 0xFF00 and a restart marker.
  b.insert(b.end(), {0x12, 0x34, 0xFF, 0x00, 0x56, 0xFF, 0xD0, 0x78, 0x9A, 0xBC});
  b.insert(b.end(), {0xFF, 0xFF, 0xD9});  // fill byte, end of image
  return b;
}

void png_chunk(Bytes& b, const char* type, const Bytes& data) {
  put32(b, std::uint32_t(data.size()));
  b.insert(b.end(), type, type + 4);
  b.insert(b.end(), data.begin(), data.end());
  put32(b, 0);  // CRC: not checked by the probe
}

Bytes tiny_png(std::uint32_t height, std::uint32_t width) {
  Bytes b{0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  Bytes ihdr;
  put32(ihdr, width);
  put32(ihdr, height);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  png_chunk(b, "IHDR", ihdr);
  png_chunk(b, "IDAT", {1, 2, 3, 4, 5});
  png_chunk(b, "IEND", {});
  return b;
}

rcnn::EncodedImageInfo probe(const Bytes& b) {
  return rcnn::probe_encoded_image(std::span<const std::uint8_t>(b), "x.img");
}

}  // namespace

TEST_CASE("image probe: complete JPEG and PNG give format and size") {
  const auto j = probe(tiny_jpeg(32, 48));
  CHECK(j.format == rcnn::EncodedImageInfo::Format::jpeg);
  CHECK(j.height == 32);
  CHECK(j.width == 48);
  const auto p = probe(tiny_png(5, 7));
  CHECK(p.format == rcnn::EncodedImageInfo::Format::png);
  CHECK(p.height == 5);
  CHECK(p.width == 7);
  // Data after the end of the image (camera trailers, "motion photos") is accepted.
  Bytes trailer = tiny_jpeg(32, 48);
  trailer.insert(trailer.end(), {0x00, 0x11, 0x22, 0xFF, 0xD8});
  CHECK(probe(trailer).width == 48);
  // Other formats are left to the decoder.
  const Bytes text{'h', 'e', 'l', 'l', 'o'};
  CHECK(probe(text).format == rcnn::EncodedImageInfo::Format::unknown);
  CHECK(probe(Bytes{}).format == rcnn::EncodedImageInfo::Format::unknown);
}

TEST_CASE("image probe: every truncation of a JPEG or PNG is refused with one clear line") {
  const Bytes jpeg = tiny_jpeg(32, 48);
  for (std::size_t n = 3; n < jpeg.size(); ++n) {
    const Bytes cut(jpeg.begin(), jpeg.begin() + std::ptrdiff_t(n));
    const std::string e = error_of([&] { probe(cut); });
    INFO("JPEG cut at " << n << ": " << e);
    CHECK(e.rfind("x.img: truncated JPEG file: its " + std::to_string(n) + " bytes end", 0) == 0);
    CHECK(!contains(e, "\n"));
  }
  const Bytes png = tiny_png(5, 7);
  for (std::size_t n = 8; n < png.size(); ++n) {
    const Bytes cut(png.begin(), png.begin() + std::ptrdiff_t(n));
    const std::string e = error_of([&] { probe(cut); });
    INFO("PNG cut at " << n << ": " << e);
    CHECK(e.rfind("x.img: truncated PNG file: its " + std::to_string(n) + " bytes end", 0) == 0);
  }
}

TEST_CASE("image probe: oversized and corrupt headers") {
  const std::string big = error_of([] { probe(tiny_jpeg(100, rcnn::kMaxImageSide + 1)); });
  CHECK(big == "x.img: image is 100x16385 (height x width); the largest side rcnn accepts is "
               "16384 (rcnn::kMaxImageSide): downscale it first");
  CHECK(probe(tiny_jpeg(rcnn::kMaxImageSide, rcnn::kMaxImageSide)).width == rcnn::kMaxImageSide);
  const std::string big_png = error_of([] { probe(tiny_png(0x7FFFFFFF, 3)); });
  CHECK(contains(big_png, "image is 2147483647x3 (height x width); the largest side"));
  CHECK(contains(error_of([] { probe(tiny_png(0, 3)); }),
                 "corrupt PNG file: IHDR declares an empty image (0x3)"));

  Bytes bad_len = tiny_jpeg(8, 8);
  bad_len[4] = 0;
  bad_len[5] = 1;  // APP0 length 1
  CHECK(contains(error_of([&] { probe(bad_len); }),
                 "x.img: corrupt JPEG file: segment length 1 at byte 4"));
  Bytes no_ihdr = tiny_png(5, 7);
  no_ihdr[12] = 'X';
  CHECK(contains(error_of([&] { probe(no_ihdr); }), "first chunk is \"XHDR\", expected IHDR"));
  Bytes huge_chunk = tiny_png(5, 7);
  huge_chunk[8] = 0xFF;
  CHECK(contains(error_of([&] { probe(huge_chunk); }), "corrupt PNG file: chunk \"IHDR\""));
}

TEST_CASE("preprocess: absurd but parseable resize and padding settings fail cleanly") {
  // model.json accepts any int for these; nothing may overflow before the limits apply.
  rcnn::InputConfig in;
  in.resize.min_size = INT_MAX;
  in.resize.max_size = INT_MAX;
  for (const auto conv : {rcnn::Conventions::torchvision, rcnn::Conventions::detectron2}) {
    const rcnn::Size r = rcnn::resized_shape({1, 1}, in.resize, conv);
    CHECK(r.height == INT_MAX);
    CHECK(error_of([&] { rcnn::detail::checked_resized_shape({1, 1}, in, conv); }) ==
          "preprocess: resized size 2147483647x2147483647 is too large (max side 16384)");
  }
  CHECK(error_of([] { rcnn::detail::padded_shape({320, 320}, INT_MAX, std::nullopt); }) ==
        "preprocess: input.size_divisibility 2147483647 is larger than the largest image side "
        "16384");
  CHECK(rcnn::detail::padded_shape({16384, 1}, 16384, std::nullopt) == rcnn::Size{16384, 16384});
  CHECK(error_of([] { rcnn::detail::padded_shape({320, 320}, 32, rcnn::Size{100000, 800}); }) ==
        "preprocess: static input shape 100000x800 is not within 1..16384 per side "
        "(modules.backbone_rpn.static_shape)");
}

TEST_CASE("bundle: static_shape sides beyond kMaxImageSide are refused (no silent int wrap)") {
  const fs::path p =
      fs::path(RCNN_TEST_DATA_DIR) / "detectron2" / "narrow_r101_fpn_fixed800" / "model.json";
  std::ifstream in(p);
  std::stringstream text;
  text << in.rdbuf();
  auto doc = nlohmann::json::parse(text.str());
  doc["modules"]["backbone_rpn"]["static_shape"] = {1, 3, 4294968096LL, 800};  // 2^32 + 800
  CHECK(error_of([&] { rcnn::parse_model_json(doc.dump()); }) ==
        "model.json: modules.backbone_rpn.static_shape[2]: expected an integer in [1, 16384] "
        "(rcnn::kMaxImageSide), got 4294968096");
  doc["modules"]["backbone_rpn"]["static_shape"] = {4294967296LL, 3, 800, 800};
  CHECK(error_of([&] { rcnn::parse_model_json(doc.dump()); }) ==
        "model.json: modules.backbone_rpn.static_shape[0]: expected an integer in [1, "
        "2147483647], got 4294967296");
}

// ---- numbers through the stages --------------------------------------------------------------

namespace {

/// One RPN level over a 3x4 grid of 16x16 anchors (1 per cell), deltas zero.
struct RpnLevel {
  std::vector<rcnn::Box> anchors;
  std::vector<float> logits, deltas;
  RpnLevel() {
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 4; ++x)
        anchors.push_back({x * 20.f, y * 20.f, x * 20.f + 16, y * 20.f + 16});
    logits = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    deltas.assign(4 * 12, 0.f);
  }
  rcnn::RpnLevelInput input() const {
    return {{logits.data(), 1, 3, 4}, {deltas.data(), 4, 3, 4}, anchors};
  }
  float& delta(int cell, int k) { return deltas[std::size_t(k * 12 + cell)]; }
};

rcnn::ScoredBoxes select(const RpnLevel& level, const rcnn::RpnConfig& cfg,
                         rcnn::Size image = {100, 100}) {
  const rcnn::RpnLevelInput in = level.input();
  rcnn::GreedyNms nms;
  rcnn::TopKProposalSelector select;
  rcnn::ScoredBoxes out;
  select(std::span(&in, 1), image, cfg, nms, out);
  const std::string problem = rcnn_test::proposals_problem(out, image, cfg, 1);
  CHECK_MESSAGE(problem.empty(), problem);
  return out;
}

}  // namespace

TEST_CASE("numbers: proposal selection with non-finite logits and deltas") {
  rcnn::RpnConfig cfg;
  RpnLevel level;
  SUBCASE("every logit NaN: zero proposals") {
    level.logits.assign(12, kNaN);
    CHECK(select(level, cfg).size() == 0);
  }
  SUBCASE("+/-Inf logits are dropped when ranking on logits (Detectron2: not finite)") {
    level.logits[11] = kInf;
    level.logits[10] = -kInf;
    const auto p = select(level, cfg);
    CHECK(p.size() == 10);
    CHECK(p.scores[0] == 10.f);
  }
  SUBCASE("+/-Inf logits with sigmoid scores are probabilities 1 and 0 (torchvision)") {
    cfg.nms_scores = rcnn::RpnConfig::NmsScores::sigmoid;
    level.logits[11] = kInf;
    level.logits[10] = -kInf;
    const auto p = select(level, cfg);
    REQUIRE(p.size() == 12);
    CHECK(p.scores[0] == 1.f);
    CHECK(p.scores[11] == 0.f);
    CHECK(p.boxes[0] == level.anchors[11]);
  }
  SUBCASE("Inf position deltas drop the box; Inf size deltas are clamped at scale_clamp") {
    level.delta(11, 0) = kInf;   // dx: box not finite
    level.delta(10, 2) = kInf;   // dw: exp(scale_clamp) * width, then clipped
    level.delta(9, 3) = -kInf;   // dh: zero height, removed by the size filter
    level.delta(8, 1) = 1e30f;   // dy: finite but far away: clipped to an empty box
    const auto p = select(level, cfg);
    CHECK(p.size() == 9);
    CHECK(p.scores[0] == 11.f);
    CHECK(p.boxes[0].x1 == 0.f);
    CHECK(p.boxes[0].x2 == 100.f);
  }
  SUBCASE("all boxes degenerate: zero-size anchors give no proposals") {
    for (auto& a : level.anchors) a.x2 = a.x1;
    CHECK(select(level, cfg).size() == 0);
  }
  SUBCASE("min_box_size larger than every box: no proposals") {
    cfg.min_box_size = 50.f;
    CHECK(select(level, cfg).size() == 0);
  }
}

namespace {

struct Head {
  std::vector<rcnn::Box> proposals;
  std::vector<float> logits, deltas;  // K = 2, background last, class-specific deltas
  explicit Head(int rows) {
    for (int r = 0; r < rows; ++r) {
      proposals.push_back({float(r % 10) * 10, float(r / 10) * 10, float(r % 10) * 10 + 8,
                           float(r / 10) * 10 + 8});
      logits.insert(logits.end(), {float(r % 7) * 0.5f, 0.f, -1.f});
      deltas.insert(deltas.end(), 8, 0.f);
    }
  }
  std::vector<rcnn::Detection> run(const rcnn::RoiHeadsConfig& cfg, rcnn::Size image = {100, 100}) {
    rcnn::GreedyNms nms;
    rcnn::SoftmaxBoxInference ws;
    std::vector<rcnn::Detection> out;
    const rcnn::BoxHeadView head{logits.data(), deltas.data(), int(proposals.size()), 3, 8};
    ws(proposals, head, image, cfg, nms, out);
    const std::string problem = rcnn_test::detections_problem(out, image, cfg);
    CHECK_MESSAGE(problem.empty(), problem);
    return out;
  }
};

rcnn::RoiHeadsConfig two_classes() {
  rcnn::RoiHeadsConfig cfg;
  cfg.num_classes = 2;
  cfg.score_threshold = 0.05f;
  return cfg;
}

}  // namespace

TEST_CASE("numbers: box inference with non-finite and degenerate inputs") {
  rcnn::RoiHeadsConfig cfg = two_classes();
  SUBCASE("zero proposals (no rows, null views)") {
    rcnn::GreedyNms nms;
    rcnn::SoftmaxBoxInference ws;
    std::vector<rcnn::Detection> out{{}};
    ws({}, rcnn::BoxHeadView{nullptr, nullptr, 0, 3, 8}, {10, 10}, cfg,
                                nms, out);
    CHECK(out.empty());
  }
  SUBCASE("a -Inf logit is probability 0, the row stays (torch.softmax, Detectron2)") {
    Head h(1);
    h.logits = {2.f, -kInf, 0.f};
    const auto d = h.run(cfg);
    REQUIRE(d.size() == 1);
    CHECK(d[0].class_id == 0);
    CHECK(d[0].score == doctest::Approx(std::exp(2.0) / (std::exp(2.0) + 1.0)));
  }
  SUBCASE("+Inf, NaN or all -Inf logits drop the row (Detectron2 valid_mask)") {
    Head h(3);
    h.logits = {kInf, 0.f, 0.f, 1.f, kNaN, 0.f, -kInf, -kInf, -kInf};
    CHECK(h.run(cfg).empty());
  }
  SUBCASE("NaN and Inf deltas") {
    Head h(3);
    h.logits = {3.f, 0.f, 0.f, 3.f, 0.f, 0.f, 3.f, 0.f, 0.f};
    h.deltas[0] = kNaN;            // row 0, class 0 dx: not finite, dropped
    h.deltas[8 + 2] = kInf;        // row 1, class 0 dw: clamped, clipped to the image
    h.deltas[16 + 3] = -kInf;      // row 2, class 0 dh: zero height, kept (no size filter)
    const auto d = h.run(cfg);
    CHECK(d.size() == 2);
  }
  SUBCASE("scores all below the threshold") {
    Head h(50);
    cfg.score_threshold = 0.99f;
    CHECK(h.run(cfg).empty());
  }
  SUBCASE("more candidates than detections_per_image: the best ones, sorted") {
    Head h(100);
    for (int r = 0; r < 100; ++r) h.logits[std::size_t(3 * r)] = float(r) * 0.01f + 1.f;
    cfg.detections_per_image = 10;
    const auto d = h.run(cfg);
    REQUIRE(d.size() == 10);
    CHECK(d[0].score >= d[9].score);
    CHECK(d[0].box == h.proposals[99]);
  }
}

TEST_CASE("numbers: random logits and deltas keep every stage contract") {
  // A deterministic sweep of the fuzzers' contracts (fuzz/fuzz_stages.cpp): values drawn
  // from a mix of ordinary, huge and non-finite numbers.
  std::mt19937 rng(6);
  const float specials[] = {kNaN, kInf, -kInf, 1e30f, -1e30f, 0.f, -0.f, 1e-30f, 88.f, -88.f};
  auto value = [&](float scale) {
    const unsigned pick = rng() % 16;
    if (pick < 10) return std::uniform_real_distribution<float>(-scale, scale)(rng);
    return specials[rng() % 10];
  };
  for (int iter = 0; iter < 300; ++iter) {
    CAPTURE(iter);
    const rcnn::Size image{int(rng() % 200) + 1, int(rng() % 200) + 1};
    rcnn::RpnConfig rpn;
    rpn.pre_nms_topk = int(rng() % 50) + 1;
    rpn.post_nms_topk = int(rng() % 50) + 1;
    rpn.nms_scores = rng() % 2 ? rcnn::RpnConfig::NmsScores::sigmoid
                               : rcnn::RpnConfig::NmsScores::logits;
    rpn.min_box_size_inclusive = rng() % 2;
    if (rng() % 3 == 0) rpn.score_threshold = 0.5f;
    const int A = int(rng() % 3) + 1, H = int(rng() % 6) + 1, W = int(rng() % 6) + 1;
    std::vector<rcnn::Box> anchors;
    for (int i = 0; i < A * H * W; ++i) {
      const float x = value(150.f), y = value(150.f);
      anchors.push_back({x, y, x + std::abs(value(60.f)), y + std::abs(value(60.f))});
    }
    std::vector<float> logits(std::size_t(A * H * W)), deltas(std::size_t(4 * A * H * W));
    for (float& v : logits) v = value(10.f);
    for (float& v : deltas) v = value(3.f);
    const rcnn::RpnLevelInput in{{logits.data(), A, H, W}, {deltas.data(), 4 * A, H, W}, anchors};
    rcnn::GreedyNms nms;
    rcnn::TopKProposalSelector select;
    rcnn::ScoredBoxes props;
    select(std::span(&in, 1), image, rpn, nms, props);
    const std::string p = rcnn_test::proposals_problem(props, image, rpn, 1);
    REQUIRE_MESSAGE(p.empty(), p);

    rcnn::RoiHeadsConfig heads;
    heads.num_classes = int(rng() % 4) + 1;
    heads.background_first = rng() % 2;
    heads.class_agnostic_box_regression = rng() % 4 == 0;
    heads.detections_per_image = int(rng() % 20) + 1;
    heads.score_threshold = float(rng() % 10) * 0.05f;
    if (rng() % 3 == 0) heads.min_box_size = 0.01f;
    const int K = heads.num_classes;
    const int dw = heads.class_agnostic_box_regression ? 4
                   : heads.background_first            ? 4 * (K + 1)
                                                       : 4 * K;
    const int R = int(props.size());
    std::vector<float> cl(std::size_t(R * (K + 1))), bd(std::size_t(R * dw));
    for (float& v : cl) v = value(8.f);
    for (float& v : bd) v = value(3.f);
    std::vector<rcnn::Detection> dets;
    rcnn::SoftmaxBoxInference bws;
    bws(props.boxes, {cl.data(), bd.data(), R, K + 1, dw}, image, heads,
                                nms, dets);
    const std::string d = rcnn_test::detections_problem(dets, image, heads);
    REQUIRE_MESSAGE(d.empty(), d);
  }
}

// ---- the Detector with a plain C++ executor ---------------------------------------------------

namespace {

using rcnn_test::fixture_config;
using rcnn_test::TestImage;

using FakeDetector = rcnn::Detector<rcnn_test::FakeExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>;

FakeDetector make_detector(const rcnn::ModelConfig& cfg, rcnn_test::FakeFaults faults = {}) {
  return FakeDetector(cfg, rcnn_test::FakeExec(cfg, faults));
}

bool same_detections(const std::vector<rcnn::Detection>& a, const std::vector<rcnn::Detection>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i].box == b[i].box) || a[i].score != b[i].score || a[i].class_id != b[i].class_id)
      return false;
  return true;
}

}  // namespace

TEST_CASE("detector (fake executor): a normal image gives valid detections") {
  const rcnn::ModelConfig cfg = fixture_config();
  auto det = make_detector(cfg);
  const TestImage img(60, 90);
  const auto r = det(img.view);
  CHECK(r.image_size == rcnn::Size{60, 90});
  CHECK(!r.detections.empty());
  for (const auto& d : r.detections) {
    CHECK(rcnn_test::box_problem(d.box, r.image_size) == "");
    CHECK(d.box.x2 > d.box.x1);
  }
  CHECK(r.detections.size() <= std::size_t(cfg.roi_heads.detections_per_image));
}

TEST_CASE("detector (fake executor): zero proposals, non-finite head outputs, nothing found") {
  rcnn::ModelConfig cfg = fixture_config();
  const TestImage img(40, 50);
  SUBCASE("NaN objectness: no proposals, the box head is not run") {
    auto det = make_detector(cfg, {.nan_objectness = true});
    CHECK(det(img.view).detections.empty());
    CHECK(det.executor().head_rows.empty());
  }
  SUBCASE("NaN RPN deltas: no proposals") {
    auto det = make_detector(cfg, {.nan_deltas = true});
    CHECK(det(img.view).detections.empty());
  }
  SUBCASE("no proposals with static_rois: the head sees static_rois zero rows, none is used") {
    cfg.modules.box_head.static_rois = 64;
    auto det = make_detector(cfg, {.nan_objectness = true});
    CHECK(det(img.view).detections.empty());
    CHECK(det.executor().head_rows == std::vector<std::int64_t>{64});
  }
  SUBCASE("NaN class logits: no detections") {
    auto det = make_detector(cfg, {.nan_logits = true});
    CHECK(det(img.view).detections.empty());
  }
  SUBCASE("+Inf box deltas: no detections") {
    auto det = make_detector(cfg, {.inf_box_deltas = true});
    CHECK(det(img.view).detections.empty());
  }
  SUBCASE("every score below the threshold") {
    auto det = make_detector(cfg, {.logit_scale = 0.f});  // uniform: 1 / 81 < 0.05
    CHECK(det(img.view).detections.empty());
  }
}

TEST_CASE("detector (fake executor): modules that disagree with model.json") {
  const rcnn::ModelConfig cfg = fixture_config();
  const TestImage img(40, 50);
  const std::string backbone = "/bundles/narrow/backbone_rpn.pt: ";
  const std::string head = "/bundles/narrow/box_head.pt: ";
  struct Case {
    rcnn_test::FakeFaults faults;
    std::string message;
  };
  const Case cases[] = {
      {{.drop_rpn_levels = 1},
       backbone + "returned 4/4/4 objectness/deltas/feature tensors, model.json expects 5/5/4 "
                  "(backbone.rpn_levels / backbone.rpn_levels / backbone.roi_levels)"},
      {{.drop_roi_levels = 1}, backbone + "returned 5/5/3 objectness/deltas/feature tensors"},
      {{.extra_anchors = 1},
       backbone + "objectness of level p2 has shape [1, 4, 80, 104], expected [1, 3, H, W] "
                  "(anchors per cell = 1 anchors.sizes x 3 anchors.aspect_ratios in model.json)"},
      {{.extra_channels = 32},
       backbone + "feature map p2 has shape [1, 64, 80, 104], expected [1, 32, H, W] "
                  "(backbone.channels in model.json)"},
      {{.grid_scale = 2},
       backbone + "objectness of level p2 has shape [1, 3, 40, 52] for an input of 320x416, "
                  "expected a grid of about 80x104 (input / backbone.strides.p2 = 4 in "
                  "model.json)"},
      {{.extra_logit_columns = -2},
       head + "class_logits has 79 columns, model.json roi_heads.num_classes + 1 = 81"},
      {{.extra_delta_columns = 4},
       head + "box_deltas has 324 columns, expected 320 from model.json roi_heads"},
      {{.extra_rows = -1}, head + "returned "},
  };
  for (const Case& c : cases) {
    auto det = make_detector(cfg, c.faults);
    const std::string e = error_of([&] { det(img.view); });
    INFO(e);
    CHECK_MESSAGE(e.rfind(c.message, 0) == 0, "expected to start with: " << c.message);
    CHECK(!contains(e, "\n"));
  }
}

TEST_CASE("detector (fake executor): bad image views are clear errors, state is not poisoned") {
  const rcnn::ModelConfig cfg = fixture_config();
  auto det = make_detector(cfg);
  const TestImage img(60, 90);
  const auto reference = det(img.view).detections;

  const TestImage wide(2, rcnn::kMaxImageSide + 1, 0, 1);
  const TestImage two(4, 4, 0, 2);
  rcnn::ImageView null_view = img.view;
  null_view.data = nullptr;
  rcnn::ImageView short_step = img.view;
  short_step.step = 10;
  rcnn::ImageView empty_view = img.view;
  empty_view.width = 0;
  const std::pair<rcnn::ImageView, std::string> bad[] = {
      {wide.view, "preprocess: image 2x16385 is too large (max side 16384)"},
      {two.view, "preprocess: unsupported channel count 2 (expected 1, 3 or 4)"},
      {null_view, "preprocess: empty image (60x90, null data)"},
      {short_step, "preprocess: row step 10 is smaller than width * channels 270"},
      {empty_view, "preprocess: empty image (60x0)"},
  };
  for (const auto& [view, message] : bad) {
    CHECK(error_of([&] { det(view); }) == message);
    // The detector is still usable and gives the same result as before.
    CHECK(same_detections(det(img.view).detections, reference));
  }
  CHECK(error_of([&] { det(std::span<const rcnn::ImageView>()); }) == "detector: empty batch");
  // An extremely elongated image resizes to zero rows.
  const TestImage line(1, 16000, 0, 1);
  CHECK(contains(error_of([&] { det(line.view); }), "resizes to the empty size 0x533"));
  CHECK(same_detections(det(img.view).detections, reference));
}

TEST_CASE("detector (fake executor): 1x1, grayscale, RGBA and strided views") {
  const rcnn::ModelConfig cfg = fixture_config();
  auto det = make_detector(cfg);
  const TestImage one(1, 1);
  const auto r1 = det(one.view);
  CHECK(r1.resized_size == rcnn::Size{320, 320});
  for (const auto& d : r1.detections) CHECK(rcnn_test::box_problem(d.box, {1, 1}) == "");

  // RGBA with the alpha channel ignored equals the BGR image; grayscale equals the grey BGR.
  const TestImage bgr(30, 40);
  TestImage bgra(30, 40, 0, 4);
  for (std::size_t p = 0; p < 30 * 40; ++p) {
    for (std::size_t c = 0; c < 3; ++c) bgra.pixels[4 * p + c] = bgr.pixels[3 * p + c];
    bgra.pixels[4 * p + 3] = std::uint8_t(p * 7);
  }
  CHECK(same_detections(det(bgra.view).detections, det(bgr.view).detections));
  const TestImage gray(30, 40, 1, 1);
  TestImage gray3(30, 40, 1, 3);
  for (std::size_t p = 0; p < 30 * 40; ++p)
    for (std::size_t c = 0; c < 3; ++c) gray3.pixels[3 * p + c] = gray.pixels[p];
  CHECK(same_detections(det(gray.view).detections, det(gray3.view).detections));

  // A region of interest of a bigger image (row step > width * channels).
  const TestImage big(50, 70, 2);
  rcnn::ImageView roi = big.view;
  roi.data = big.pixels.data() + (10 * 70 + 5) * 3;
  roi.height = 30;
  roi.width = 40;
  roi.step = 70 * 3;
  TestImage copy(30, 40);
  for (int y = 0; y < 30; ++y)
    for (int x = 0; x < 120; ++x)
      copy.pixels[std::size_t(y * 120 + x)] = roi.data[std::size_t(y) * roi.step + std::size_t(x)];
  CHECK(same_detections(det(roi).detections, det(copy.view).detections));
}

TEST_CASE("detector (fake executor): a batch of equal-size images equals one image at a time") {
  const rcnn::ModelConfig cfg = fixture_config();
  const TestImage a(48, 64, 1), b(48, 64, 2), c(48, 64, 3);
  const rcnn::ImageView views[] = {a.view, b.view, c.view};
  auto det = make_detector(cfg);
  const auto batch = det(std::span<const rcnn::ImageView>(views));
  REQUIRE(batch.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    auto single = make_detector(cfg);
    CHECK(same_detections(batch[i].detections, single(views[i]).detections));
  }
}

// ---------------------------------------------------------------------------------------
// Mask R-CNN with the fake executor (no LibTorch: also under the sanitizers).

namespace {

rcnn::ModelConfig mask_fixture_config() {
  return fixture_config("narrow_mask_rcnn_r101_fpn_shortest_edge", "/bundles/mask");
}

}  // namespace

TEST_CASE("detector (fake executor): Mask R-CNN masks follow the detections") {
  rcnn::ModelConfig cfg = mask_fixture_config();
  const TestImage img(60, 90);
  auto det = make_detector(cfg);
  CHECK(det.has_masks());
  rcnn::Trace trace;
  const auto r = det(img.view, &trace);
  REQUIRE(!r.detections.empty());
  REQUIRE(r.masks.size() == r.detections.size());
  CHECK(trace.mask_size == 28);
  CHECK(trace.mask_levels.size() == trace.detections_resized.size());
  CHECK(trace.mask_probs.size() == trace.detections_resized.size() * 28 * 28);
  CHECK(det.executor().mask_rows == std::vector<std::int64_t>{std::int64_t(r.detections.size())});
  std::size_t set = 0;
  for (std::size_t i = 0; i < r.masks.size(); ++i) {
    const auto& m = r.masks[i];
    CHECK(m.x0 >= 0);
    CHECK(m.y0 >= 0);
    CHECK(m.x0 + m.width <= 90);
    CHECK(m.y0 + m.height <= 60);
    set += m.area();
  }
  CHECK(set > 0);  // the fake head's blobs are positive in the middle of each box
  CHECK(r.timing.mask_paste >= 0);

  SUBCASE("static_rois: chunks of exactly that many rows, the same masks") {
    cfg.modules.mask_head->static_rois = 8;
    auto chunked = make_detector(cfg);
    const auto r2 = chunked(img.view);
    const std::size_t D = r2.detections.size();
    CHECK(chunked.executor().mask_rows == std::vector<std::int64_t>((D + 7) / 8, 8));
    REQUIRE(r2.masks.size() == r.masks.size());
    for (std::size_t i = 0; i < D; ++i) CHECK(r2.masks[i].bits == r.masks[i].bits);
  }
  SUBCASE("a batch of two images equals one image at a time") {
    const TestImage other(60, 90, 3);
    const auto single = make_detector(cfg)(other.view);
    const rcnn::ImageView views[] = {img.view, other.view};
    auto batch_det = make_detector(cfg);
    const auto both = batch_det(std::span<const rcnn::ImageView>(views));
    REQUIRE(both.size() == 2);
    CHECK(same_detections(both[0].detections, r.detections));
    CHECK(same_detections(both[1].detections, single.detections));
    REQUIRE(both[1].masks.size() == single.masks.size());
    for (std::size_t i = 0; i < single.masks.size(); ++i)
      CHECK(both[1].masks[i].bits == single.masks[i].bits);
  }
  SUBCASE("no detections: no masks, the mask head is not run") {
    auto none = make_detector(cfg, {.nan_logits = true});
    const auto r3 = none(img.view);
    CHECK(r3.detections.empty());
    CHECK(r3.masks.empty());
    CHECK(none.executor().mask_rows.empty());
  }
  SUBCASE("NaN mask logits: empty masks, no crash") {
    auto nan = make_detector(cfg, {.nan_mask_logits = true});
    const auto r4 = nan(img.view);
    REQUIRE(r4.masks.size() == r4.detections.size());
    for (const auto& m : r4.masks) CHECK(m.area() == 0);
  }
}

TEST_CASE("detector (fake executor): mask_head.mask_size sets the mask side (Detectron2 C4: M = P)") {
  rcnn::ModelConfig cfg = mask_fixture_config();
  cfg.mask_head->mask_size = cfg.mask_head->pooler.resolution;  // 14, as Res5ROIHeads' head
  const TestImage img(60, 90);
  auto det = make_detector(cfg);
  rcnn::Trace trace;
  const auto r = det(img.view, &trace);
  REQUIRE(!r.detections.empty());
  REQUIRE(r.masks.size() == r.detections.size());
  CHECK(trace.mask_size == 14);
  CHECK(trace.mask_probs.size() == trace.detections_resized.size() * 14 * 14);
  std::size_t set = 0;
  for (const auto& m : r.masks) set += m.area();
  CHECK(set > 0);
  // A head whose logits are 2P while model.json says P is refused with one line.
  auto wrong = make_detector(cfg, rcnn_test::FakeFaults{.extra_mask_size = 14});
  const std::string e = error_of([&] { wrong(img.view); });
  INFO(e);
  CHECK(contains(e, "expected ["));
  CHECK(contains(e, "mask_head.mask_size"));
  CHECK(!contains(e, "\n"));
}

TEST_CASE("detector (fake executor): a mask head that disagrees with model.json") {
  const rcnn::ModelConfig cfg = mask_fixture_config();
  const TestImage img(60, 90);
  for (const rcnn_test::FakeFaults& f :
       {rcnn_test::FakeFaults{.extra_mask_channels = 1}, rcnn_test::FakeFaults{.extra_mask_size = -2}}) {
    auto det = make_detector(cfg, f);
    const std::string e = error_of([&] { det(img.view); });
    INFO(e);
    CHECK(e.rfind("/bundles/mask/mask_head.pt: returned mask logits [", 0) == 0);
    CHECK(contains(e, "expected ["));
    CHECK(!contains(e, "\n"));
  }
  // A Faster R-CNN bundle never calls the mask head and has no masks.
  auto plain = make_detector(fixture_config());
  const auto r = plain(img.view);
  CHECK(r.masks.empty());
  CHECK(plain.executor().mask_rows.empty());
}
