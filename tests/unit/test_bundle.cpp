// Model bundle reader: fixture model.json files, validation messages, read_bundle, SHA-256.
#include <doctest/doctest.h>

#include <rcnn/detail/sha256.hpp>
#include <rcnn/io/bundle.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../support/test_util.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const shortest_edge = "narrow_r101_fpn_shortest_edge";
const char* const fixed800 = "narrow_r101_fpn_fixed800";
const char* const mask_rcnn = "narrow_mask_rcnn_r101_fpn_shortest_edge";

using rcnn_test::contains;
using rcnn_test::error_of;
using rcnn_test::read_text;
using rcnn_test::write_text;
struct TempDir : rcnn_test::TempDir {
  TempDir() : rcnn_test::TempDir("rcnn-test-bundle") {}
};

fs::path fixture_dir(const std::string& bundle) {
  return fs::path(RCNN_TEST_DATA_DIR) / "detectron2" / bundle;
}



json load_fixture(const std::string& bundle) {
  return json::parse(read_text(fixture_dir(bundle) / "model.json"));
}


/// `doc` three times: without `key`, with `key` null, with `key` an empty array.
std::vector<json> absent_null_or_empty(const json& doc, const std::string& key) {
  std::vector<json> out(3, doc);
  out[0].erase(key);
  out[1][key] = nullptr;
  out[2][key] = json::array();
  return out;
}

std::string parse_error(const json& doc) {
  return error_of([&] { rcnn::parse_model_json(doc.dump()); });
}



/// Writes `doc` as model.json and a small non-empty file for each module it names.
void write_bundle(const fs::path& dir, const json& doc) {
  write_text(dir / "model.json", doc.dump(2));
  for (const auto& item : doc["modules"].items())
    write_text(dir / item.value()["file"].get<std::string>(), "module " + item.key());
}

/// Every key path of the objects in `doc` (not descending into arrays), e.g. "rpn.nms_threshold".
void collect_key_paths(const json& doc, const json::json_pointer& at,
                       std::vector<json::json_pointer>& out) {
  for (const auto& item : doc.items()) {
    const json::json_pointer child = at / item.key();
    out.push_back(child);
    if (item.value().is_object()) collect_key_paths(item.value(), child, out);
  }
}

/// "/rpn/nms_threshold" -> "rpn.nms_threshold".
std::string dotted(const json::json_pointer& p) {
  std::string s = p.to_string().substr(1);
  for (char& c : s)
    if (c == '/') c = '.';
  return s;
}

}  // namespace

TEST_CASE("bundle: sha256 known vectors") {
  using rcnn::detail::sha256_hex;
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the length no longer fits the first block.
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(sha256_hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  // Streaming in uneven pieces gives the same digest.
  rcnn::detail::Sha256 hasher;
  std::size_t pos = 0, step = 1;
  while (pos < million.size()) {
    const std::size_t n = std::min(step, million.size() - pos);
    hasher.update(million.data() + pos, n);
    pos += n;
    step = step * 3 + 1;
    if (step > 70000) step = 63;
  }
  CHECK(hasher.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  TempDir tmp;
  write_text(tmp.path / "abc.bin", "abc");
  CHECK(rcnn::detail::sha256_file_hex(tmp.path / "abc.bin") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string missing = error_of([&] { rcnn::detail::sha256_file_hex(tmp.path / "no.bin"); });
  CHECK(contains(missing, "no.bin"));
}

TEST_CASE("bundle: fixture narrow_r101_fpn_shortest_edge parses") {
  const rcnn::ModelConfig c =
      rcnn::parse_model_json(read_text(fixture_dir(shortest_edge) / "model.json"));
  CHECK(c.version == 1);
  CHECK(c.architecture == rcnn::Architecture::faster_rcnn);
  CHECK(c.conventions == rcnn::Conventions::detectron2);
  CHECK(c.framework == "detectron2");
  CHECK(c.source.framework_version == "0.6");
  CHECK(c.source.config == "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml");
  CHECK(c.bundle_dir.empty());
  // input
  CHECK(c.input.bgr);
  CHECK(c.input.pixel_scale == 1.0f);
  CHECK(c.input.pixel_mean[0] == 103.53f);
  CHECK(c.input.pixel_mean[2] == 123.675f);
  CHECK(c.input.pixel_std[1] == 1.0f);
  CHECK(c.input.resize.mode == rcnn::ResizeConfig::Mode::shortest_edge);
  CHECK(c.input.resize.min_size == 320);
  CHECK(c.input.resize.max_size == 533);
  CHECK(c.input.size_divisibility == 32);
  // modules
  CHECK(c.modules.backbone_rpn.file == "backbone_rpn.pt");
  CHECK(!c.modules.backbone_rpn.static_shape);
  CHECK(c.modules.box_head.file == "box_head.pt");
  CHECK(!c.modules.box_head.static_rois);
  CHECK(!c.modules.box_head.sha256);
  CHECK(!c.modules.mask_head);
  // backbone
  CHECK(c.backbone.rpn_levels == std::vector<std::string>{"p2", "p3", "p4", "p5", "p6"});
  CHECK(c.backbone.roi_levels == std::vector<std::string>{"p2", "p3", "p4", "p5"});
  CHECK(c.backbone.rpn_strides == std::vector<int>{4, 8, 16, 32, 64});
  CHECK(c.backbone.roi_strides == std::vector<int>{4, 8, 16, 32});
  CHECK(c.backbone.channels == 32);
  // anchors
  REQUIRE(c.anchors.sizes.size() == 5);
  CHECK(c.anchors.sizes[0] == std::vector<float>{32.f});
  CHECK(c.anchors.sizes[4] == std::vector<float>{512.f});
  REQUIRE(c.anchors.aspect_ratios.size() == 1);
  CHECK(c.anchors.aspect_ratios[0] == std::vector<float>{0.5f, 1.0f, 2.0f});
  CHECK(c.anchors.aspect_ratios_at(3) == std::vector<float>{0.5f, 1.0f, 2.0f});
  CHECK(c.anchors.anchors_per_cell(2) == 3);
  CHECK(c.anchors.offset == 0.0f);
  CHECK(!c.anchors.round_cell_anchors);
  CHECK(c.anchors.stride_from == rcnn::AnchorConfig::StrideFrom::backbone);
  // rpn
  CHECK(c.rpn.pre_nms_topk == 1000);
  CHECK(c.rpn.post_nms_topk == 1000);
  CHECK(c.rpn.nms_threshold == 0.7);
  CHECK(c.rpn.min_box_size == 0.0f);
  CHECK(!c.rpn.min_box_size_inclusive);
  CHECK(!c.rpn.score_threshold);
  CHECK(c.rpn.nms_scores == rcnn::RpnConfig::NmsScores::logits);
  CHECK(c.rpn.box_weights == std::array<float, 4>{1.f, 1.f, 1.f, 1.f});
  CHECK(c.rpn.scale_clamp == float(4.135166556742356));
  // roi_heads
  CHECK(c.roi_heads.num_classes == 80);
  CHECK(!c.roi_heads.background_first);
  CHECK(!c.roi_heads.class_agnostic_box_regression);
  CHECK(c.roi_heads.pooler.resolution == 7);
  CHECK(c.roi_heads.pooler.sampling_ratio == 0);
  CHECK(c.roi_heads.pooler.aligned);
  CHECK(c.roi_heads.pooler.canonical_box_size == 224.f);
  CHECK(c.roi_heads.pooler.canonical_level == 4);
  CHECK(c.roi_heads.pooler.level_eps == 1e-8f);
  CHECK(c.roi_heads.pooler.level_eps_inside_log);
  CHECK(c.roi_heads.box_weights == std::array<float, 4>{10.f, 10.f, 5.f, 5.f});
  CHECK(c.roi_heads.score_threshold == 0.05f);
  CHECK(c.roi_heads.nms_threshold == 0.5);
  CHECK(c.roi_heads.detections_per_image == 100);
  CHECK(!c.roi_heads.min_box_size);
  CHECK(!c.mask_head);
  // postprocess, classes
  CHECK(c.postprocess.clip);
  CHECK(c.postprocess.drop_empty);
  REQUIRE(c.classes.size() == 80);
  CHECK(c.classes[0] == "person");
  CHECK(c.classes[9] == "traffic light");
  CHECK(c.classes[79] == "toothbrush");
}

TEST_CASE("bundle: fixture narrow_r101_fpn_fixed800 parses") {
  const rcnn::ModelConfig c = rcnn::parse_model_json(
      read_text(fixture_dir(fixed800) / "model.json"), "fixed800/model.json");
  CHECK(c.architecture == rcnn::Architecture::faster_rcnn);
  CHECK(c.input.resize.mode == rcnn::ResizeConfig::Mode::fixed);
  CHECK(c.input.resize.height == 800);
  CHECK(c.input.resize.width == 800);
  REQUIRE(c.modules.backbone_rpn.static_shape);
  CHECK(*c.modules.backbone_rpn.static_shape == std::array<std::int64_t, 4>{1, 3, 800, 800});
  REQUIRE(c.modules.box_head.static_rois);
  CHECK(*c.modules.box_head.static_rois == 1000);
  CHECK(c.backbone.channels == 32);
  CHECK(c.roi_heads.score_threshold == 0.05f);
  CHECK(c.classes.size() == 80);
}

TEST_CASE("bundle: mask_head.mask_size (Detectron2 C4: res5 then the deconvolution, M = P)") {
  json doc = load_fixture(mask_rcnn);
  doc["mask_head"]["mask_size"] = 14;
  CHECK(rcnn::parse_model_json(doc.dump()).mask_head->mask_size == 14);
  doc["mask_head"]["mask_size"] = nullptr;  // null: the default, 2 x pooler_resolution
  CHECK(rcnn::parse_model_json(doc.dump()).mask_head->mask_size == 28);
}

TEST_CASE("bundle: fixture narrow_mask_rcnn_r101_fpn_shortest_edge parses") {
  const rcnn::ModelConfig c =
      rcnn::parse_model_json(read_text(fixture_dir(mask_rcnn) / "model.json"));
  CHECK(c.architecture == rcnn::Architecture::mask_rcnn);
  CHECK(c.source.config == "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml");
  REQUIRE(c.modules.mask_head);
  CHECK(c.modules.mask_head->file == "mask_head.pt");
  CHECK(!c.modules.mask_head->static_rois);
  REQUIRE(c.mask_head);
  CHECK(c.mask_head->pooler.resolution == 14);
  CHECK(c.mask_head->pooler.sampling_ratio == 0);
  CHECK(c.mask_head->pooler.aligned);
  CHECK(c.mask_head->pooler.canonical_box_size == 224.f);
  CHECK(c.mask_head->pooler.canonical_level == 4);
  CHECK(c.mask_head->pooler.level_eps == 1e-8f);
  CHECK(!c.mask_head->class_agnostic);
  CHECK(c.mask_head->mask_threshold == 0.5f);
  CHECK(c.mask_head->mask_size == 28);  // no mask_size: 2 x pooler_resolution
  CHECK(c.mask_head->paste == rcnn::MaskHeadConfig::Paste::detectron2);
  CHECK(c.roi_heads.pooler.resolution == 7);
  CHECK(c.input.resize.min_size == 320);
}

TEST_CASE("bundle: optional keys and accepted variants") {
  SUBCASE("classes absent, null or empty: generated names") {
    for (const json& doc : absent_null_or_empty(load_fixture(shortest_edge), "classes")) {
      const rcnn::ModelConfig c = rcnn::parse_model_json(doc.dump());
      REQUIRE(c.classes.size() == 80);
      CHECK(c.classes[0] == "class_0");
      CHECK(c.classes[79] == "class_79");
    }
  }
  SUBCASE("backbone.features_layout: absent / null = nchw, or nhwc; anything else is refused") {
    json doc = load_fixture(shortest_edge);
    CHECK(rcnn::parse_model_json(doc.dump()).backbone.features_layout == rcnn::Layout::nchw);
    doc["backbone"]["features_layout"] = nullptr;
    CHECK(rcnn::parse_model_json(doc.dump()).backbone.features_layout == rcnn::Layout::nchw);
    doc["backbone"]["features_layout"] = "nchw";
    CHECK(rcnn::parse_model_json(doc.dump()).backbone.features_layout == rcnn::Layout::nchw);
    doc["backbone"]["features_layout"] = "nhwc";
    CHECK(rcnn::parse_model_json(doc.dump()).backbone.features_layout == rcnn::Layout::nhwc);
    doc["backbone"]["features_layout"] = "NHWC";
    CHECK(parse_error(doc) == "model.json: backbone.features_layout: expected one of \"nchw\", "
                              "\"nhwc\", got \"NHWC\"");
    doc["backbone"]["features_layout"] = 1;
    const std::string e = parse_error(doc);
    CHECK(e.find("backbone.features_layout") != std::string::npos);
    CHECK(e.find('\n') == std::string::npos);
  }
  SUBCASE("source absent") {
    json doc = load_fixture(shortest_edge);
    doc.erase("source");
    const rcnn::ModelConfig c = rcnn::parse_model_json(doc.dump());
    CHECK(c.framework.empty());
    CHECK(c.source.note.empty());
  }
  SUBCASE("unknown keys are ignored") {
    json doc = load_fixture(shortest_edge);
    doc["future_key"] = {{"a", 1}};
    doc["rpn"]["future_rpn_key"] = "x";
    doc["modules"]["extra_module"] = {{"file", "extra.pt"}};
    doc["backbone"]["strides"]["p7"] = 128;
    CHECK(rcnn::parse_model_json(doc.dump()).rpn.nms_threshold == 0.7);
  }
  SUBCASE("mask_head keys are ignored for faster_rcnn") {
    json doc = load_fixture(mask_rcnn);
    doc["architecture"] = "faster_rcnn";
    doc["mask_head"]["paste"] = "bogus";
    const rcnn::ModelConfig c = rcnn::parse_model_json(doc.dump());
    CHECK(!c.mask_head);
    CHECK(!c.modules.mask_head);
  }
  SUBCASE("size_divisibility 0 means no padding") {
    json doc = load_fixture(fixed800);
    doc["input"]["size_divisibility"] = 0;
    doc["modules"]["backbone_rpn"]["static_shape"] = {1, 3, 801, 803};
    const rcnn::ModelConfig c = rcnn::parse_model_json(doc.dump());
    CHECK(c.input.size_divisibility == 0);
    CHECK((*c.modules.backbone_rpn.static_shape)[3] == 803);
  }
  SUBCASE("integral floats are accepted for integers") {
    json doc = load_fixture(shortest_edge);
    doc["input"]["resize"]["min_size"] = 320.0;
    CHECK(rcnn::parse_model_json(doc.dump()).input.resize.min_size == 320);
  }
  SUBCASE("sha256 is normalised to lowercase") {
    json doc = load_fixture(shortest_edge);
    doc["modules"]["box_head"]["sha256"] =
        "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
    const rcnn::ModelConfig c = rcnn::parse_model_json(doc.dump());
    CHECK(c.modules.box_head.sha256 ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  }
  SUBCASE("torchvision-style bundle") {
    json doc = load_fixture(shortest_edge);
    doc["conventions"] = "torchvision";
    doc["input"]["channel_order"] = "RGB";
    doc["input"]["pixel_scale"] = 1.0 / 255.0;
    doc["input"]["pixel_mean"] = {0.485, 0.456, 0.406};
    doc["input"]["pixel_std"] = {0.229, 0.224, 0.225};
    doc["backbone"]["rpn_levels"] = {"0", "1", "2", "3", "pool"};
    doc["backbone"]["roi_levels"] = {"0", "1", "2", "3"};
    doc["backbone"]["strides"] = {{"0", 4}, {"1", 8}, {"2", 16}, {"3", 32}, {"pool", 64}};
    doc["anchors"]["sizes"] = {{32}, {64}, {128}, {256}, {512}};
    doc["anchors"]["aspect_ratios"] = {{0.5, 1.0, 2.0}, {0.5, 1.0, 2.0}, {0.5, 1.0, 2.0},
                                       {0.5, 1.0, 2.0}, {0.5, 1.0, 2.0}};
    doc["anchors"]["round_cell_anchors"] = true;
    doc["anchors"]["stride_from"] = "image";
    doc["rpn"]["nms_scores"] = "sigmoid";
    doc["rpn"]["score_threshold"] = 0.0;
    doc["rpn"]["min_box_size"] = 1e-3;
    doc["rpn"]["min_box_size_inclusive"] = true;
    doc["roi_heads"]["num_classes"] = 90;
    doc["roi_heads"]["background"] = "first";
    doc["roi_heads"]["sampling_ratio"] = 2;
    doc["roi_heads"]["aligned"] = false;
    doc["roi_heads"]["level_eps"] = 1e-6;
    doc["roi_heads"]["level_eps_inside_log"] = false;
    doc["roi_heads"]["min_box_size"] = 1e-2;
    doc["postprocess"] = {{"clip", false}, {"drop_empty", false}};
    doc.erase("classes");
    const rcnn::ModelConfig c = rcnn::parse_model_json(doc.dump());
    CHECK(c.conventions == rcnn::Conventions::torchvision);
    CHECK(!c.input.bgr);
    CHECK(c.input.pixel_scale == float(1.0 / 255.0));
    CHECK(c.backbone.rpn_strides == std::vector<int>{4, 8, 16, 32, 64});
    CHECK(c.backbone.roi_strides == std::vector<int>{4, 8, 16, 32});
    CHECK(c.anchors.aspect_ratios.size() == 5);
    CHECK(c.anchors.round_cell_anchors);
    CHECK(c.anchors.stride_from == rcnn::AnchorConfig::StrideFrom::image);
    CHECK(c.rpn.nms_scores == rcnn::RpnConfig::NmsScores::sigmoid);
    CHECK(c.rpn.score_threshold == 0.0f);
    CHECK(c.rpn.min_box_size == 1e-3f);
    CHECK(c.rpn.min_box_size_inclusive);
    CHECK(c.roi_heads.background_first);
    CHECK(c.roi_heads.pooler.sampling_ratio == 2);
    CHECK(!c.roi_heads.pooler.aligned);
    CHECK(c.roi_heads.pooler.level_eps == 1e-6f);
    CHECK(!c.roi_heads.pooler.level_eps_inside_log);
    CHECK(c.roi_heads.min_box_size == 1e-2f);
    CHECK(!c.postprocess.clip);
    CHECK(c.classes.size() == 90);
  }
  SUBCASE("roi levels may be a strict subset, e.g. p3..p5") {
    json doc = load_fixture(shortest_edge);
    doc["backbone"]["roi_levels"] = {"p3", "p4", "p5"};
    CHECK(rcnn::parse_model_json(doc.dump()).backbone.roi_strides == std::vector<int>{8, 16, 32});
  }
}

TEST_CASE("bundle: malformed JSON names the file and the position") {
  const std::string text = read_text(fixture_dir(shortest_edge) / "model.json");
  const std::string truncated = text.substr(0, 200);
  const std::string e = error_of([&] { rcnn::parse_model_json(truncated); });
  INFO(e);
  CHECK(e.rfind("model.json: invalid JSON: ", 0) == 0);
  CHECK(contains(e, "line"));
  CHECK(contains(e, "column"));
  CHECK(!contains(e, "\n"));

  const std::string e2 = error_of([&] { rcnn::parse_model_json("", "bundles/x/model.json"); });
  CHECK(e2.rfind("bundles/x/model.json: invalid JSON", 0) == 0);
  const std::string e3 = error_of([&] { rcnn::parse_model_json(text + "}"); });
  CHECK(contains(e3, "invalid JSON"));
  // Raw bytes the parser quotes back are replaced: the message stays printable ASCII.
  const std::string e5 = error_of([&] { rcnn::parse_model_json("{\"a\": \"\xff\x01\"}"); });
  CHECK(contains(e5, "invalid JSON"));
  CHECK(std::all_of(e5.begin(), e5.end(), [](char c) { return c >= 0x20 && c < 0x7f; }));
  const std::string e4 = error_of([&] { rcnn::parse_model_json("[1, 2]"); });
  CHECK(contains(e4, "expected a JSON object at the top level, got array [1,2]"));
}

TEST_CASE("bundle: every missing required key is reported by its path") {
  for (const char* bundle : {shortest_edge, fixed800, mask_rcnn}) {
    const json original = load_fixture(bundle);
    std::vector<json::json_pointer> paths;
    collect_key_paths(original, json::json_pointer(), paths);
    for (const auto& p : paths) {
      const std::string key = dotted(p);
      // Optional keys (and their insides): removing them is fine.
      if (key == "classes" || key.rfind("source", 0) == 0) continue;
      json doc = original;
      doc[p.parent_pointer()].erase(p.back());
      const std::string e = parse_error(doc);
      INFO(bundle << ": removed " << key << " -> " << e);
      CHECK(e.rfind("model.json: " + key + ": missing", 0) == 0);
      CHECK(!contains(e, "\n"));
    }
  }
}

TEST_CASE("bundle: every wrongly typed value is reported with expected and actual type") {
  for (const char* bundle : {shortest_edge, fixed800, mask_rcnn}) {
    const json original = load_fixture(bundle);
    std::vector<json::json_pointer> paths;
    collect_key_paths(original, json::json_pointer(), paths);
    // Also one element of every array (and of the first inner array).
    std::vector<json::json_pointer> all = paths;
    for (const auto& p : paths) {
      const json& v = original[p];
      if (v.is_array() && !v.empty()) {
        all.push_back(p / 0);
        if (v[0].is_array() && !v[0].empty()) all.push_back(p / 0 / 0);
      }
    }
    for (const auto& p : all) {
      const std::string key = p.to_string();
      // "/anchors/sizes/0/0" -> "anchors.sizes[0][0]"
      std::string expected_path;
      json::json_pointer walked;
      std::stringstream tokens(key.substr(1));
      for (std::string token; std::getline(tokens, token, '/');) {
        if (original[walked].is_array())
          expected_path += "[" + token + "]";
        else
          expected_path += (expected_path.empty() ? "" : ".") + token;
        walked /= json::json_pointer("/" + token);
      }
      const json& v = original[p];
      json wrong;
      if (v.is_number() || v.is_boolean() || v.is_null()) wrong = "x";
      else if (v.is_string()) wrong = 5;
      else if (v.is_array()) wrong = json::object();
      else wrong = json::array();
      json doc = original;
      doc[p] = wrong;
      const std::string e = parse_error(doc);
      INFO(bundle << ": " << key << " = " << wrong.dump() << " -> " << e);
      CHECK(e.rfind("model.json: " + expected_path + ": expected ", 0) == 0);
      CHECK(contains(e, ", got " + std::string(wrong.type_name()) + " " + wrong.dump()));
      CHECK(!contains(e, "\n"));
    }
  }
}

TEST_CASE("bundle: invalid values are reported with key path, expectation and value") {
  struct Mutation {
    const char* bundle;
    std::function<void(json&)> mutate;
    std::vector<std::string> parts;  // substrings the message must contain
  };
  const std::vector<Mutation> mutations = {
      // header
      {shortest_edge, [](json& d) { d["format"] = "rcnn-bundel"; },
       {"format: expected \"rcnn-bundle\", got \"rcnn-bundel\""}},
      {shortest_edge, [](json& d) { d["version"] = 2; },
       {"version: unsupported bundle version 2", "versions: 1"}},
      {shortest_edge, [](json& d) { d["version"] = 0; }, {"version: unsupported bundle version 0"}},
      {shortest_edge, [](json& d) { d["version"] = 1.5; }, {"version: expected an integer, got 1.5"}},
      {shortest_edge, [](json& d) { d["architecture"] = "retinanet"; },
       {"architecture: expected one of \"faster_rcnn\", \"mask_rcnn\", \"keypoint_rcnn\", got "
        "\"retinanet\""}},
      {shortest_edge, [](json& d) { d["conventions"] = "caffe2"; },
       {"conventions: expected one of \"torchvision\", \"detectron2\", got \"caffe2\""}},
      // input
      {shortest_edge, [](json& d) { d["input"]["channel_order"] = "bgr"; },
       {"input.channel_order: expected one of \"BGR\", \"RGB\", got \"bgr\""}},
      {shortest_edge, [](json& d) { d["input"]["pixel_scale"] = -1.0; },
       {"input.pixel_scale: expected a number > 0, got -1"}},
      {shortest_edge, [](json& d) { d["input"]["pixel_scale"] = 0; },
       {"input.pixel_scale: expected a number > 0, got 0"}},
      {shortest_edge, [](json& d) { d["input"]["pixel_std"][1] = 0.0; },
       {"input.pixel_std[1]: expected a number > 0, got 0"}},
      {shortest_edge, [](json& d) { d["input"]["pixel_std"][2] = -1.0; },
       {"input.pixel_std[2]: expected a number > 0, got -1"}},
      {shortest_edge, [](json& d) { d["input"]["pixel_mean"] = {1.0, 2.0}; },
       {"input.pixel_mean: expected an array of 3 numbers, got [1.0,2.0]"}},
      {shortest_edge, [](json& d) { d["input"]["pixel_std"] = {1, 1, 1, 1}; },
       {"input.pixel_std: expected an array of 3 numbers, got [1,1,1,1]"}},
      {shortest_edge, [](json& d) { d["input"]["pixel_mean"][0] = 1e39; },
       {"input.pixel_mean[0]: expected a number within float32 range"}},
      {shortest_edge, [](json& d) { d["input"]["resize"]["mode"] = "longest_edge"; },
       {"input.resize.mode: expected one of \"shortest_edge\", \"fixed\", got \"longest_edge\""}},
      {shortest_edge, [](json& d) { d["input"]["resize"]["min_size"] = 0; },
       {"input.resize.min_size: expected an integer > 0, got 0"}},
      {shortest_edge, [](json& d) { d["input"]["resize"]["min_size"] = 7.5; },
       {"input.resize.min_size: expected an integer > 0, got 7.5"}},
      {shortest_edge, [](json& d) { d["input"]["resize"]["min_size"] = 1000000000000LL; },
       {"input.resize.min_size: expected an integer in [1, 2147483647], got 1000000000000"}},
      {shortest_edge, [](json& d) { d["input"]["resize"]["max_size"] = 100; },
       {"input.resize.max_size: expected an integer >= input.resize.min_size (320), got 100"}},
      {shortest_edge, [](json& d) { d["input"]["resize"] = {{"mode", "fixed"}, {"height", 800}}; },
       {"input.resize.width: missing required key"}},
      {fixed800, [](json& d) { d["input"]["resize"]["height"] = 0; },
       {"input.resize.height: expected an integer > 0, got 0"}},
      {fixed800, [](json& d) { d["input"]["resize"]["width"] = -800; },
       {"input.resize.width: expected an integer > 0, got -800"}},
      {shortest_edge, [](json& d) { d["input"]["size_divisibility"] = -1; },
       {"input.size_divisibility: expected an integer >= 0, got -1"}},
      // modules
      {fixed800, [](json& d) { d["modules"]["backbone_rpn"]["static_shape"] = {1, 3, 810, 800}; },
       {"modules.backbone_rpn.static_shape[2]: expected a multiple of input.size_divisibility "
        "(32)",
        "got 810"}},
      {fixed800, [](json& d) { d["modules"]["backbone_rpn"]["static_shape"] = {1, 3, 800, 820}; },
       {"modules.backbone_rpn.static_shape[3]: expected a multiple of input.size_divisibility "
        "(32), got 820"}},
      {fixed800, [](json& d) { d["modules"]["backbone_rpn"]["static_shape"] = {1, 3, 768, 800}; },
       {"modules.backbone_rpn.static_shape[2]: expected a value >= input.resize.height (800)",
        "got 768"}},
      {fixed800, [](json& d) { d["modules"]["backbone_rpn"]["static_shape"] = {1, 1, 800, 800}; },
       {"modules.backbone_rpn.static_shape[1]: expected 3 (image channels), got 1"}},
      {fixed800, [](json& d) { d["modules"]["backbone_rpn"]["static_shape"] = {0, 3, 800, 800}; },
       {"modules.backbone_rpn.static_shape[0]: expected an integer > 0, got 0"}},
      {fixed800, [](json& d) { d["modules"]["backbone_rpn"]["static_shape"] = {1, 3, 800}; },
       {"modules.backbone_rpn.static_shape: expected null or an array [N, 3, H, W] of 4 "
        "integers, got [1,3,800]"}},
      {fixed800, [](json& d) { d["modules"]["box_head"]["static_rois"] = 0; },
       {"modules.box_head.static_rois: expected null or an integer > 0, got 0"}},
      {fixed800, [](json& d) { d["modules"]["box_head"]["static_rois"] = -1000; },
       {"modules.box_head.static_rois: expected null or an integer > 0, got -1000"}},
      {shortest_edge, [](json& d) { d["modules"]["box_head"]["file"] = ""; },
       {"modules.box_head.file: expected a non-empty file name, got \"\""}},
      {shortest_edge, [](json& d) { d["modules"]["box_head"]["file"] = "/abs/box_head.pt"; },
       {"modules.box_head.file: expected a path relative to the bundle directory",
        "/abs/box_head.pt"}},
      {shortest_edge, [](json& d) { d["modules"]["box_head"]["sha256"] = "abc"; },
       {"modules.box_head.sha256: expected 64 hexadecimal digits", "got \"abc\""}},
      {shortest_edge, [](json& d) { d["modules"]["box_head"]["sha256"] = 5; },
       {"modules.box_head.sha256: expected a string of 64 hexadecimal digits", "got number 5"}},
      // backbone
      {shortest_edge, [](json& d) { d["backbone"]["rpn_levels"] = json::array(); },
       {"backbone.rpn_levels: expected a non-empty array of level names, got []"}},
      {shortest_edge, [](json& d) { d["backbone"]["roi_levels"] = json::array(); },
       {"backbone.roi_levels: expected a non-empty array of level names, got []"}},
      {shortest_edge, [](json& d) { d["backbone"]["rpn_levels"][1] = "p2"; },
       {"backbone.rpn_levels[1]: duplicate level name \"p2\""}},
      {shortest_edge, [](json& d) { d["backbone"]["rpn_levels"][1] = ""; },
       {"backbone.rpn_levels[1]: expected a non-empty level name, got \"\""}},
      {shortest_edge, [](json& d) { d["backbone"]["roi_levels"][3] = "p9"; },
       {"backbone.roi_levels[3]: expected one of backbone.rpn_levels (\"p2\", \"p3\", \"p4\", "
        "\"p5\", \"p6\"), got \"p9\""}},
      {shortest_edge, [](json& d) { d["backbone"]["rpn_levels"].push_back("p7"); },
       {"backbone.strides.p7: missing stride for level \"p7\" of backbone.rpn_levels"}},
      {shortest_edge,
       [](json& d) {
         d["backbone"]["strides"].erase("p3");
         d["backbone"]["strides"]["P3"] = 8;
       },
       {"backbone.strides.p3: missing stride"}},
      {shortest_edge, [](json& d) { d["backbone"]["strides"]["p4"] = 20; },
       {"backbone.strides.p4: expected 16, twice the stride of the previous roi level \"p3\"",
        "consecutive", "got 20"}},
      {shortest_edge, [](json& d) { d["backbone"]["roi_levels"] = {"p3", "p2"}; },
       {"backbone.strides.p2: expected 16", "got 4"}},
      {shortest_edge, [](json& d) { d["backbone"]["roi_levels"] = {"p2", "p4"}; },
       {"backbone.strides.p4: expected 8", "got 16"}},
      {shortest_edge, [](json& d) { d["backbone"]["strides"]["p2"] = 6; },
       {"backbone.strides.p2: expected a power of two", "got 6"}},
      {shortest_edge, [](json& d) { d["backbone"]["strides"]["p6"] = 0; },
       {"backbone.strides.p6: expected an integer > 0, got 0"}},
      {shortest_edge, [](json& d) { d["backbone"]["channels"] = 0; },
       {"backbone.channels: expected an integer > 0, got 0"}},
      // anchors
      {shortest_edge, [](json& d) { d["anchors"]["sizes"] = {{32}, {64}, {128}}; },
       {"anchors.sizes: expected an array with 1 list or one list per rpn level (5), got 3 "
        "lists"}},
      {shortest_edge, [](json& d) { d["anchors"]["sizes"] = json::array(); },
       {"anchors.sizes: expected an array with 1 list or one list per rpn level (5), got 0 "
        "lists"}},
      {shortest_edge, [](json& d) { d["anchors"]["sizes"] = {json::array()}; },
       {"anchors.sizes[0]: expected a non-empty array of numbers > 0, got []"}},
      {shortest_edge, [](json& d) { d["anchors"]["sizes"][1][0] = -64; },
       {"anchors.sizes[1][0]: expected a number > 0, got -64"}},
      {shortest_edge, [](json& d) { d["anchors"]["sizes"][1][0] = 0; },
       {"anchors.sizes[1][0]: expected a number > 0, got 0"}},
      {shortest_edge, [](json& d) { d["anchors"]["sizes"] = {32, 64, 128, 256, 512}; },
       {"anchors.sizes[0]: expected a non-empty array of numbers > 0, got number 32"}},
      {shortest_edge, [](json& d) { d["anchors"]["aspect_ratios"][0][1] = 0.0; },
       {"anchors.aspect_ratios[0][1]: expected a number > 0, got 0"}},
      {shortest_edge, [](json& d) { d["anchors"]["aspect_ratios"] = {{1.0}, {1.0}}; },
       {"anchors.aspect_ratios: expected an array with 1 list or one list per rpn level (5), "
        "got 2 lists"}},
      {shortest_edge, [](json& d) { d["anchors"]["offset"] = 1.0; },
       {"anchors.offset: expected a number in [0, 1), got 1.0"}},
      {shortest_edge, [](json& d) { d["anchors"]["offset"] = -0.5; },
       {"anchors.offset: expected a number in [0, 1), got -0.5"}},
      {shortest_edge, [](json& d) { d["anchors"]["stride_from"] = "grid"; },
       {"anchors.stride_from: expected one of \"backbone\", \"image\", got \"grid\""}},
      // rpn
      {shortest_edge, [](json& d) { d["rpn"]["pre_nms_topk"] = 0; },
       {"rpn.pre_nms_topk: expected an integer > 0, got 0"}},
      {shortest_edge, [](json& d) { d["rpn"]["post_nms_topk"] = -5; },
       {"rpn.post_nms_topk: expected an integer > 0, got -5"}},
      {shortest_edge, [](json& d) { d["rpn"]["nms_threshold"] = 0; },
       {"rpn.nms_threshold: expected a number in (0, 1], got 0"}},
      {shortest_edge, [](json& d) { d["rpn"]["nms_threshold"] = 1.5; },
       {"rpn.nms_threshold: expected a number in (0, 1], got 1.5"}},
      {shortest_edge, [](json& d) { d["rpn"]["min_box_size"] = -1.0; },
       {"rpn.min_box_size: expected a number >= 0, got -1.0"}},
      {shortest_edge, [](json& d) { d["rpn"]["score_threshold"] = 1.5; },
       {"rpn.score_threshold: expected a number in [0, 1], got 1.5"}},
      {shortest_edge, [](json& d) { d["rpn"]["score_threshold"] = -0.1; },
       {"rpn.score_threshold: expected a number in [0, 1], got -0.1"}},
      {shortest_edge, [](json& d) { d["rpn"]["score_threshold"] = "0.5"; },
       {"rpn.score_threshold: expected null or a number in [0, 1], got string \"0.5\""}},
      {shortest_edge, [](json& d) { d["roi_heads"]["min_box_size"] = false; },
       {"roi_heads.min_box_size: expected null or a number >= 0, got boolean false"}},
      {shortest_edge, [](json& d) { d["rpn"]["nms_scores"] = "softmax"; },
       {"rpn.nms_scores: expected one of \"logits\", \"sigmoid\", got \"softmax\""}},
      {shortest_edge, [](json& d) { d["rpn"]["box_weights"] = {1.0, 1.0, 1.0}; },
       {"rpn.box_weights: expected an array of 4 numbers, got [1.0,1.0,1.0]"}},
      {shortest_edge, [](json& d) { d["rpn"]["box_weights"][2] = 0.0; },
       {"rpn.box_weights[2]: expected a number > 0, got 0"}},
      {shortest_edge, [](json& d) { d["rpn"]["scale_clamp"] = 0.0; },
       {"rpn.scale_clamp: expected a number > 0, got 0"}},
      {shortest_edge, [](json& d) { d["rpn"]["min_box_size_inclusive"] = 1; },
       {"rpn.min_box_size_inclusive: expected a boolean (true or false), got number 1"}},
      // roi_heads
      {shortest_edge, [](json& d) { d["roi_heads"]["num_classes"] = 0; },
       {"roi_heads.num_classes: expected an integer > 0, got 0"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["background"] = "middle"; },
       {"roi_heads.background: expected one of \"first\", \"last\", got \"middle\""}},
      {shortest_edge, [](json& d) { d["roi_heads"]["pooler_resolution"] = 0; },
       {"roi_heads.pooler_resolution: expected an integer > 0, got 0"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["sampling_ratio"] = -1; },
       {"roi_heads.sampling_ratio: expected an integer >= 0, got -1"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["canonical_box_size"] = 0; },
       {"roi_heads.canonical_box_size: expected a number > 0, got 0"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["canonical_level"] = -1; },
       {"roi_heads.canonical_level: expected an integer >= 0, got -1"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["level_eps"] = -1e-8; },
       {"roi_heads.level_eps: expected a number >= 0, got -1e-08"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["box_weights"][0] = -10.0; },
       {"roi_heads.box_weights[0]: expected a number > 0, got -10.0"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["scale_clamp"] = -1.0; },
       {"roi_heads.scale_clamp: expected a number > 0, got -1.0"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["score_threshold"] = 1.0; },
       {"roi_heads.score_threshold: expected a number in [0, 1), got 1.0"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["score_threshold"] = -0.05; },
       {"roi_heads.score_threshold: expected a number in [0, 1), got -0.05"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["nms_threshold"] = -0.5; },
       {"roi_heads.nms_threshold: expected a number in (0, 1], got -0.5"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["detections_per_image"] = 0; },
       {"roi_heads.detections_per_image: expected an integer > 0, got 0"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["min_box_size"] = -0.01; },
       {"roi_heads.min_box_size: expected a number >= 0, got -0.01"}},
      // mask_head
      {mask_rcnn, [](json& d) { d.erase("mask_head"); },
       {"mask_head: missing required key (architecture \"mask_rcnn\" needs it)"}},
      {mask_rcnn, [](json& d) { d["modules"].erase("mask_head"); },
       {"modules.mask_head: missing required key (architecture \"mask_rcnn\" needs the "
        "mask_head module)"}},
      {mask_rcnn, [](json& d) { d["mask_head"]["pooler_resolution"] = 0; },
       {"mask_head.pooler_resolution: expected an integer > 0, got 0"}},
      {mask_rcnn, [](json& d) { d["mask_head"]["mask_threshold"] = 1.5; },
       {"mask_head.mask_threshold: expected a number in [0, 1], got 1.5"}},
      {mask_rcnn, [](json& d) { d["mask_head"]["mask_size"] = 0; },
       {"mask_head.mask_size: expected an integer > 0, got 0"}},
      {mask_rcnn, [](json& d) { d["mask_head"]["paste"] = "opencv"; },
       {"mask_head.paste: expected one of \"detectron2\", \"torchvision\", got \"opencv\""}},
      {mask_rcnn, [](json& d) { d["modules"]["mask_head"]["static_rois"] = 0; },
       {"modules.mask_head.static_rois: expected null or an integer > 0, got 0"}},
      // postprocess
      {shortest_edge, [](json& d) { d["postprocess"]["clip"] = "yes"; },
       {"postprocess.clip: expected a boolean (true or false), got string \"yes\""}},
      // classes
      {shortest_edge, [](json& d) { d["classes"].erase(d["classes"].size() - 1); },
       {"classes: expected 80 class names (roi_heads.num_classes), got 79"}},
      {shortest_edge, [](json& d) { d["roi_heads"]["num_classes"] = 81; },
       {"classes: expected 81 class names (roi_heads.num_classes), got 80"}},
      {shortest_edge, [](json& d) { d["classes"][5] = nullptr; },
       {"classes[5]: expected a class name (string), got null"}},
      // misspelt required key: reported missing, with a hint
      {shortest_edge,
       [](json& d) {
         d["rpn"]["nms_treshold"] = d["rpn"]["nms_threshold"];
         d["rpn"].erase("nms_threshold");
       },
       {"rpn.nms_threshold: missing required key; found unknown key \"nms_treshold\": misspelt?"}},
      {shortest_edge,
       [](json& d) {
         d["Version"] = 1;
         d.erase("version");
       },
       {"version: missing required key; found unknown key \"Version\""}},
  };

  for (std::size_t i = 0; i < mutations.size(); ++i) {
    const Mutation& m = mutations[i];
    json doc = load_fixture(m.bundle);
    m.mutate(doc);
    const std::string e = parse_error(doc);
    INFO("mutation #" << i << " on " << m.bundle << ": " << e);
    CHECK(e.rfind("model.json: ", 0) == 0);
    CHECK(!contains(e, "\n"));
    for (const std::string& part : m.parts) CHECK_MESSAGE(contains(e, part), "missing: " << part);
  }
}

TEST_CASE("bundle: message format of the brief's example") {
  json doc = load_fixture(shortest_edge);
  doc["rpn"]["nms_threshold"] = -0.5;
  CHECK(parse_error(doc) == "model.json: rpn.nms_threshold: expected a number in (0, 1], got -0.5");
}

TEST_CASE("bundle: read_bundle") {
  TempDir tmp;
  const json se = load_fixture(shortest_edge);

  SUBCASE("valid bundle") {
    write_bundle(tmp.path, se);
    const rcnn::ModelConfig c = rcnn::read_bundle(tmp.path);
    CHECK(c.bundle_dir == tmp.path.string());
    CHECK(c.input.resize.max_size == 533);
    CHECK(c.classes.size() == 80);
  }
  SUBCASE("valid mask bundle, module in a subdirectory") {
    json doc = load_fixture(mask_rcnn);
    doc["modules"]["mask_head"]["file"] = "heads/mask_head.pt";
    fs::create_directories(tmp.path / "heads");
    write_bundle(tmp.path, doc);
    const rcnn::ModelConfig c = rcnn::read_bundle(tmp.path);
    CHECK(c.modules.mask_head->file == "heads/mask_head.pt");
  }
  SUBCASE("missing directory") {
    const fs::path dir = tmp.path / "nope";
    const std::string e = error_of([&] { rcnn::read_bundle(dir); });
    CHECK(e == dir.string() + ": bundle directory does not exist");
  }
  SUBCASE("a file, not a directory") {
    write_text(tmp.path / "file.txt", "x");
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path / "file.txt"); });
    CHECK(e.rfind((tmp.path / "file.txt").string() + ": not a directory", 0) == 0);
  }
  SUBCASE("directory without model.json") {
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path); });
    CHECK(e.rfind((tmp.path / "model.json").string() + ": file not found", 0) == 0);
  }
  SUBCASE("invalid model.json names its full path") {
    write_bundle(tmp.path, se);
    write_text(tmp.path / "model.json", "{\"format\": \"rcnn-bundle\",");
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path); });
    CHECK(e.rfind((tmp.path / "model.json").string() + ": invalid JSON: ", 0) == 0);
    json doc = se;
    doc["rpn"]["nms_threshold"] = 2;
    write_text(tmp.path / "model.json", doc.dump());
    const std::string e2 = error_of([&] { rcnn::read_bundle(tmp.path); });
    CHECK(e2 == (tmp.path / "model.json").string() +
                    ": rpn.nms_threshold: expected a number in (0, 1], got 2");
  }
  SUBCASE("missing module file") {
    write_bundle(tmp.path, se);
    fs::remove(tmp.path / "box_head.pt");
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path); });
    INFO(e);
    CHECK(e.rfind((tmp.path / "box_head.pt").string() + ": module file not found", 0) == 0);
    CHECK(contains(e, "modules.box_head.file"));
  }
  SUBCASE("missing mask module file") {
    write_bundle(tmp.path, load_fixture(mask_rcnn));
    fs::remove(tmp.path / "mask_head.pt");
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path); });
    CHECK(e.rfind((tmp.path / "mask_head.pt").string() + ": module file not found", 0) == 0);
    CHECK(contains(e, "modules.mask_head.file"));
  }
  SUBCASE("empty module file") {
    write_bundle(tmp.path, se);
    write_text(tmp.path / "backbone_rpn.pt", "");
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path); });
    INFO(e);
    CHECK(e.rfind((tmp.path / "backbone_rpn.pt").string() + ": module file is empty", 0) == 0);
    CHECK(contains(e, "modules.backbone_rpn.file"));
  }
  SUBCASE("module path is a directory") {
    write_bundle(tmp.path, se);
    fs::remove(tmp.path / "box_head.pt");
    fs::create_directories(tmp.path / "box_head.pt");
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path); });
    CHECK(contains(e, "module file is not a regular file"));
  }
  SUBCASE("sha256 match and mismatch") {
    json doc = se;
    write_bundle(tmp.path, doc);
    const std::string actual = rcnn::detail::sha256_file_hex(tmp.path / "box_head.pt");
    CHECK(actual == rcnn::detail::sha256_hex("module box_head"));
    doc["modules"]["box_head"]["sha256"] = actual;
    write_text(tmp.path / "model.json", doc.dump());
    CHECK(rcnn::read_bundle(tmp.path).modules.box_head.sha256 == actual);

    const std::string wrong(64, '0');
    doc["modules"]["box_head"]["sha256"] = wrong;
    write_text(tmp.path / "model.json", doc.dump());
    const std::string e = error_of([&] { rcnn::read_bundle(tmp.path); });
    INFO(e);
    CHECK(e == (tmp.path / "box_head.pt").string() + ": SHA-256 mismatch (modules.box_head.sha256 in " +
                   (tmp.path / "model.json").string() + "): expected " + wrong + ", got " + actual);
  }
}

TEST_CASE("bundle: category_ids (optional dataset id per class)") {
  // COCO's ids of the 80 contiguous classes: 1..90 without the 10 unused ones.
  std::vector<std::int64_t> coco_ids;
  for (int id = 1; id <= 90; ++id)
    if (id != 12 && id != 26 && id != 29 && id != 30 && id != 45 && id != 66 && id != 68 &&
        id != 69 && id != 71 && id != 83)
      coco_ids.push_back(id);
  REQUIRE(coco_ids.size() == 80);
  SUBCASE("absent, null or empty: none") {
    for (const json& doc : absent_null_or_empty(load_fixture(shortest_edge), "category_ids"))
      CHECK(rcnn::parse_model_json(doc.dump()).category_ids.empty());
  }
  SUBCASE("one id per class") {
    json doc = load_fixture(shortest_edge);
    doc["category_ids"] = coco_ids;
    const rcnn::ModelConfig c = rcnn::parse_model_json(doc.dump());
    REQUIRE(c.category_ids.size() == 80);
    CHECK(c.classes[68] == "microwave");
    CHECK(c.category_ids[68] == 78);
  }
  SUBCASE("errors name the field") {
    json doc = load_fixture(shortest_edge);
    doc["category_ids"] = std::vector<std::int64_t>(coco_ids.begin(), coco_ids.begin() + 79);
    std::string e = error_of([&] { rcnn::parse_model_json(doc.dump()); });
    CHECK(contains(e, "category_ids"));
    CHECK(contains(e, "expected 80 category ids"));
    doc["category_ids"] = coco_ids;
    doc["category_ids"][3] = "four";
    e = error_of([&] { rcnn::parse_model_json(doc.dump()); });
    CHECK(contains(e, "category_ids[3]"));
    CHECK(contains(e, "integer"));
    doc["category_ids"] = coco_ids;
    doc["category_ids"][5] = 1.5;
    CHECK(contains(error_of([&] { rcnn::parse_model_json(doc.dump()); }), "category_ids[5]"));
    doc["category_ids"] = coco_ids;
    doc["category_ids"][4] = -3;
    e = error_of([&] { rcnn::parse_model_json(doc.dump()); });
    CHECK(contains(e, "category_ids[4]"));
    CHECK(contains(e, ">= 0"));
    doc["category_ids"] = coco_ids;
    doc["category_ids"][7] = coco_ids[2];
    e = error_of([&] { rcnn::parse_model_json(doc.dump()); });
    CHECK(contains(e, "category_ids[7]"));
    CHECK(contains(e, "repeats element 2"));
    doc["category_ids"] = {{"a", 1}};
    CHECK(contains(error_of([&] { rcnn::parse_model_json(doc.dump()); }), "category_ids"));
  }
}
