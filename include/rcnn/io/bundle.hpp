#pragma once
/// \file bundle.hpp
/// Reads and validates a model bundle: a directory with `model.json` and the TorchScript
/// module files it names. Format (version 1, with rcnn's optional keys):
/// docs/reference/bundle-format.md.
///
/// Every problem is thrown as one `rcnn::Error` whose `what()` is a single line naming the
/// file, the JSON key path and the expected versus the actual value, e.g.
/// `model.json: rpn.nms_threshold: expected a number in (0, 1], got -0.5`.
/// Unknown keys are ignored (forward compatibility); a misspelt required key is reported as
/// missing, with a hint when a similar unknown key is present.

#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "rcnn/config.hpp"
#include "rcnn/detail/sha256.hpp"
#include "rcnn/error.hpp"
#include "rcnn/preprocess/resize_shape.hpp"

namespace rcnn {

/// Bundle format versions this reader understands.
inline constexpr int bundle_supported_versions[] = {1};

namespace detail {

/// A number as written in messages: integral values without a fraction, others with %g.
inline std::string format_number(double v) {
  char buf[40];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

/// One-line rendering of a JSON value for messages; long values are shortened.
inline std::string json_excerpt(const nlohmann::json& value, std::size_t max_chars = 80) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > max_chars) text = text.substr(0, max_chars - 3) + "...";
  return text;
}

/// "string \"abc\"", "number 3", "null", "array [1,2]": the JSON type and the value.
inline std::string json_type_and_value(const nlohmann::json& value) {
  if (value.is_null()) return "null";
  const char* type = value.is_boolean() ? "boolean" : value.type_name();
  return std::string(type) + " " + json_excerpt(value);
}

/// Levenshtein distance, for "did you misspell" hints.
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      const std::size_t substitution = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitution});
      diagonal = up;
    }
  }
  return row[b.size()];
}

inline bool equal_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

/// Every key name version 1 defines (any object): a key in this list is never suggested as a
/// misspelling of another.
inline bool is_known_bundle_key(std::string_view key) {
  static constexpr std::string_view known[] = {
      "format", "version", "architecture", "conventions", "source", "framework",
      "framework_version", "config", "note", "input", "channel_order", "pixel_scale",
      "pixel_mean", "pixel_std", "resize", "mode", "min_size", "max_size", "height", "width",
      "size_divisibility", "modules", "backbone_rpn", "box_head", "mask_head", "file",
      "static_shape", "static_rois", "sha256", "neuron_library", "backbone", "rpn_levels", "roi_levels",
      "strides", "channels", "features_layout", "anchors", "sizes", "aspect_ratios", "offset",
      "round_cell_anchors", "stride_from", "rpn", "pre_nms_topk", "post_nms_topk",
      "nms_threshold", "min_box_size", "min_box_size_inclusive", "score_threshold",
      "nms_scores", "box_weights", "scale_clamp", "roi_heads", "num_classes", "background",
      "class_agnostic_box_regression", "pooler_resolution", "sampling_ratio", "aligned",
      "canonical_box_size", "canonical_level", "level_eps", "level_eps_inside_log",
      "detections_per_image", "class_agnostic", "mask_threshold", "paste", "postprocess",
      "clip", "drop_empty", "classes", "category_ids"};
  return std::find(std::begin(known), std::end(known), key) != std::end(known);
}

/// A JSON value together with its key path and the name of the file it came from, so that
/// every check can report `<file>: <path>: <problem>`.
class JsonNode {
 public:
  JsonNode(const nlohmann::json& value, std::string path, const std::string& source)
      : value_(&value), path_(std::move(path)), source_(&source) {}

  const nlohmann::json& json() const { return *value_; }
  const std::string& path() const { return path_; }
  const std::string& source() const { return *source_; }
  bool is_null() const { return value_->is_null(); }

  /// Throws `<file>: <path>: <what>`.
  [[noreturn]] void fail(const std::string& what) const {
    detail::fail(*source_ + ": " + (path_.empty() ? std::string("(top level)") : path_) +
                 ": " + what);
  }
  /// Wrong type: `expected <expectation>, got <type> <value>`.
  [[noreturn]] void expected_type(const std::string& expectation) const {
    fail("expected " + expectation + ", got " + json_type_and_value(*value_));
  }
  /// Right type, bad value: `expected <expectation>, got <value>`.
  [[noreturn]] void expected_value(const std::string& expectation) const {
    fail("expected " + expectation + ", got " + json_excerpt(*value_));
  }

  std::string child_path(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  /// This value must be a JSON object.
  void require_object() const {
    if (!value_->is_object()) expected_type("an object");
  }

  /// The member `key` or nothing (this value must be an object).
  std::optional<JsonNode> find(std::string_view key) const {
    require_object();
    const auto it = value_->find(key);
    if (it == value_->end()) return std::nullopt;
    return JsonNode(*it, child_path(key), *source_);
  }

  /// The required member `key`; `why`, when given, is added to the "missing" message.
  JsonNode child(std::string_view key, const std::string& why = "") const {
    if (auto found = find(key)) return *found;
    std::string message = "missing required key";
    if (!why.empty()) message += " (" + why + ")";
    for (const auto& item : value_->items()) {
      const std::string& other = item.key();
      if (is_known_bundle_key(other)) continue;
      if (equal_ignoring_case(other, key) || edit_distance(other, key) <= 2) {
        message += "; found unknown key \"" + other + "\": misspelt?";
        break;
      }
    }
    detail::fail(*source_ + ": " + child_path(key) + ": " + message);
  }

  /// Number of elements (this value must be an array; `expectation` describes it).
  std::size_t array_size(const std::string& expectation = "an array") const {
    if (!value_->is_array()) expected_type(expectation);
    return value_->size();
  }
  JsonNode element(std::size_t i) const {
    return JsonNode((*value_)[i], path_ + "[" + std::to_string(i) + "]", *source_);
  }

 private:
  const nlohmann::json* value_;
  std::string path_;
  const std::string* source_;
};

/// Any JSON number.
inline double read_number(const JsonNode& n) {
  if (!n.json().is_number()) n.expected_type("a number");
  return n.json().get<double>();
}

/// A number in an interval; infinite bounds mean "unbounded".
inline double read_number_in(const JsonNode& n, double lo, bool lo_open, double hi,
                             bool hi_open) {
  std::string range;
  const bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
  if (has_lo && has_hi)
    range = std::string(lo_open ? "in (" : "in [") + format_number(lo) + ", " + format_number(hi) +
            (hi_open ? ")" : "]");
  else if (has_lo)
    range = std::string(lo_open ? "> " : ">= ") + format_number(lo);
  else if (has_hi)
    range = std::string(hi_open ? "< " : "<= ") + format_number(hi);
  if (!n.json().is_number()) n.expected_type(range.empty() ? "a number" : "a number " + range);
  const double v = n.json().get<double>();
  const bool ok = std::isfinite(v) && (!has_lo || (lo_open ? v > lo : v >= lo)) &&
                  (!has_hi || (hi_open ? v < hi : v <= hi));
  if (!ok) n.expected_value("a number " + range);
  return v;
}

/// A number that must also be representable as a finite float32.
inline float to_float32(const JsonNode& n, double v) {
  if (!std::isfinite(static_cast<float>(v))) n.expected_value("a number within float32 range");
  return static_cast<float>(v);
}
inline float read_float_in(const JsonNode& n, double lo, bool lo_open, double hi,
                           bool hi_open) {
  return to_float32(n, read_number_in(n, lo, lo_open, hi, hi_open));
}
inline float read_float(const JsonNode& n) { return to_float32(n, read_number(n)); }

inline constexpr double unbounded = std::numeric_limits<double>::infinity();

/// An integer (a float with an integral value, such as 800.0, is accepted).
inline std::int64_t read_integer(const JsonNode& n, const std::string& expectation = "an integer") {
  const nlohmann::json& v = n.json();
  if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<std::int64_t>();
  if (v.is_number_unsigned()) {
    const std::uint64_t u = v.get<std::uint64_t>();
    if (u > std::uint64_t(std::numeric_limits<std::int64_t>::max())) n.expected_value(expectation);
    return std::int64_t(u);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) return std::int64_t(d);
    n.expected_value(expectation);
  }
  n.expected_type(expectation);
}

/// An integer >= `min` that fits an int.
inline int read_int(const JsonNode& n, std::int64_t min) {
  const std::string expectation =
      min == 1 ? std::string("an integer > 0") : "an integer >= " + std::to_string(min);
  const std::int64_t v = read_integer(n, expectation);
  if (v < min) n.expected_value(expectation);
  if (v > INT_MAX)
    n.expected_value("an integer in [" + std::to_string(min) + ", " + std::to_string(INT_MAX) + "]");
  return int(v);
}

inline bool read_bool(const JsonNode& n) {
  if (!n.json().is_boolean()) n.expected_type("a boolean (true or false)");
  return n.json().get<bool>();
}

inline std::string read_string(const JsonNode& n, const std::string& expectation = "a string") {
  if (!n.json().is_string()) n.expected_type(expectation);
  return n.json().get<std::string>();
}

/// One of a fixed set of strings (case-sensitive); returns its index in `choices`.
inline std::size_t read_choice(const JsonNode& n, std::initializer_list<std::string_view> choices) {
  std::string listed;
  for (std::string_view c : choices) {
    if (!listed.empty()) listed += ", ";
    listed.append(1, '"').append(c).append(1, '"');
  }
  const std::string expectation = "one of " + listed;
  const std::string s = read_string(n, "a string (" + expectation + ")");
  std::size_t i = 0;
  for (std::string_view c : choices) {
    if (s == c) return i;
    ++i;
  }
  n.expected_value(expectation);
}

/// An array of exactly `count` numbers, each checked against the interval.
template <std::size_t count>
std::array<float, count> read_float_array(const JsonNode& n, double lo, bool lo_open) {
  const std::string expectation = "an array of " + std::to_string(count) + " numbers";
  if (n.array_size(expectation) != count) n.expected_value(expectation);
  std::array<float, count> out{};
  for (std::size_t i = 0; i < count; ++i)
    out[i] = read_float_in(n.element(i), lo, lo_open, unbounded, false);
  return out;
}

/// A non-empty array of distinct non-empty strings (level names).
inline std::vector<std::string> read_level_names(const JsonNode& n) {
  const std::string expectation = "a non-empty array of level names";
  if (n.array_size(expectation) == 0) n.expected_value(expectation);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < n.json().size(); ++i) {
    const JsonNode e = n.element(i);
    std::string name = read_string(e, "a level name (string)");
    if (name.empty()) e.expected_value("a non-empty level name");
    if (std::find(names.begin(), names.end(), name) != names.end())
      e.fail("duplicate level name \"" + name + "\"");
    names.push_back(std::move(name));
  }
  return names;
}

/// `anchors.sizes` / `anchors.aspect_ratios`: one list for every level or one per rpn level.
inline std::vector<std::vector<float>> read_per_level_lists(const JsonNode& n,
                                                            std::size_t num_levels) {
  const std::string expectation = "an array with 1 list or one list per rpn level (" +
                                  std::to_string(num_levels) + ")";
  const std::size_t size = n.array_size(expectation);
  if (size != 1 && size != num_levels)
    n.fail("expected " + expectation + ", got " + std::to_string(size) + " lists");
  std::vector<std::vector<float>> lists;
  for (std::size_t l = 0; l < size; ++l) {
    const JsonNode list = n.element(l);
    const std::string inner = "a non-empty array of numbers > 0";
    if (list.array_size(inner) == 0) list.expected_value(inner);
    std::vector<float> values;
    for (std::size_t i = 0; i < list.json().size(); ++i)
      values.push_back(read_float_in(list.element(i), 0.0, true, unbounded, false));
    lists.push_back(std::move(values));
  }
  return lists;
}

/// RoIAlign and level-mapper keys shared by `roi_heads` and `mask_head`.
inline PoolerConfig read_pooler(const JsonNode& obj) {
  PoolerConfig p;
  p.resolution = read_int(obj.child("pooler_resolution"), 1);
  p.sampling_ratio = read_int(obj.child("sampling_ratio"), 0);
  p.aligned = read_bool(obj.child("aligned"));
  p.canonical_box_size = read_float_in(obj.child("canonical_box_size"), 0.0, true, unbounded, false);
  p.canonical_level = read_int(obj.child("canonical_level"), 0);
  p.level_eps = read_float_in(obj.child("level_eps"), 0.0, false, unbounded, false);
  p.level_eps_inside_log = read_bool(obj.child("level_eps_inside_log"));
  return p;
}

inline bool is_hex_digest(std::string_view s) {
  if (s.size() != 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

/// One entry of `modules`: `backbone` true reads `static_shape` (backbone_rpn), false reads
/// `static_rois` (box_head, mask_head). Module files are checked by read_bundle, not here.
inline ModuleConfig read_module(const JsonNode& m, const InputConfig& input, bool backbone) {
  m.require_object();
  ModuleConfig out;
  const JsonNode file = m.child("file");
  out.file = read_string(file, "a file name (string)");
  if (out.file.empty()) file.expected_value("a non-empty file name");
  if (std::filesystem::path(out.file).is_absolute())
    file.expected_value("a path relative to the bundle directory");

  if (backbone) {
    const JsonNode shape = m.child("static_shape");
    if (!shape.is_null()) {
      const std::string expectation = "null or an array [N, 3, H, W] of 4 integers";
      if (shape.array_size(expectation) != 4) shape.expected_value(expectation);
      std::array<std::int64_t, 4> s{};
      for (std::size_t i = 0; i < 4; ++i) {
        const JsonNode e = shape.element(i);
        s[i] = read_integer(e, "an integer > 0");
        if (s[i] <= 0) e.expected_value("an integer > 0");
        // Sides beyond the preprocessing limit (and batch sizes beyond int) cannot run.
        const std::int64_t max = i >= 2 ? std::int64_t(kMaxImageSide) : std::int64_t(INT_MAX);
        if (s[i] > max)
          e.expected_value("an integer in [1, " + std::to_string(max) + "]" +
                           (i >= 2 ? " (rcnn::kMaxImageSide)" : ""));
      }
      if (s[1] != 3) shape.element(1).expected_value("3 (image channels)");
      const char* axis_names[] = {"", "", "height", "width"};
      for (std::size_t i = 2; i < 4; ++i) {
        const std::int64_t d = input.size_divisibility;
        if (d > 1 && s[i] % d != 0)
          shape.element(i).expected_value("a multiple of input.size_divisibility (" +
                                          std::to_string(d) + ")");
        if (input.resize.mode == ResizeConfig::Mode::fixed) {
          const int resized = i == 2 ? input.resize.height : input.resize.width;
          if (s[i] < resized)
            shape.element(i).expected_value(
                std::string("a value >= input.resize.") + axis_names[i] + " (" +
                std::to_string(resized) + ") so that the resized image fits");
        }
      }
      out.static_shape = s;
    }
  } else {
    const JsonNode rois = m.child("static_rois");
    if (!rois.is_null()) {
      const std::string expectation = "null or an integer > 0";
      const std::int64_t r = read_integer(rois, expectation);
      if (r <= 0 || r > INT_MAX) rois.expected_value(expectation);
      out.static_rois = int(r);
    }
  }

  if (const auto sha = m.find("sha256")) {
    const std::string expectation = "64 hexadecimal digits (SHA-256 of the file)";
    std::string hex = read_string(*sha, "a string of " + expectation);
    if (!is_hex_digest(hex)) sha->expected_value(expectation);
    for (char& c : hex) c = char(std::tolower(static_cast<unsigned char>(c)));
    out.sha256 = hex;
  }
  return out;
}

}  // namespace detail

/// Parses and validates the text of a bundle's model.json. `source_name` is the file name used
/// in error messages. Does not touch the file system (`bundle_dir` stays empty and module
/// files are not checked: see `read_bundle`).
///
/// Optional keys: `source` (informational), `classes` (absent, null or [] gives the generated
/// names "class_0" .. "class_<num_classes-1>"), `category_ids` (absent, null or [] gives none;
/// otherwise one distinct integer per class), `modules.*.sha256` (checked by read_bundle).
/// `mask_head` and `modules.mask_head` are required for "mask_rcnn" and ignored otherwise.
/// `input.size_divisibility` 0 (like 1) means no padding.
inline ModelConfig parse_model_json(std::string_view json_text,
                                    const std::string& source_name = "model.json") {
  using detail::JsonNode;
  using detail::read_bool;
  using detail::read_choice;
  using detail::read_float_in;
  using detail::read_int;
  using detail::unbounded;

  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    const auto bracket = what.find("] ");
    if (what.rfind("[json.exception.", 0) == 0 && bracket != std::string::npos)
      what = what.substr(bracket + 2);
    // One printable ASCII line: the "last read" excerpt may hold raw control or non-UTF-8 bytes.
    for (char& c : what)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    detail::fail(source_name + ": invalid JSON: " + what);
  }

  ModelConfig cfg;
  const JsonNode root(doc, "", source_name);
  if (!doc.is_object()) root.expected_type("a JSON object at the top level");

  // Header: format and version first, so that a newer bundle reports its version rather
  // than whatever key it renamed.
  {
    const JsonNode format = root.child("format");
    if (detail::read_string(format) != "rcnn-bundle") format.expected_value("\"rcnn-bundle\"");
    const JsonNode version = root.child("version");
    const std::int64_t v = detail::read_integer(version);
    bool supported = false;
    std::string listed;
    for (int s : bundle_supported_versions) {
      supported = supported || v == s;
      listed += (listed.empty() ? "" : ", ") + std::to_string(s);
    }
    if (!supported)
      version.fail("unsupported bundle version " + std::to_string(v) +
                   " (this rcnn reads versions: " + listed + ")");
    cfg.version = int(v);
    cfg.architecture =
        read_choice(root.child("architecture"), {"faster_rcnn", "mask_rcnn"}) == 0
            ? Architecture::faster_rcnn
            : Architecture::mask_rcnn;
    cfg.conventions = read_choice(root.child("conventions"), {"torchvision", "detectron2"}) == 0
                          ? Conventions::torchvision
                          : Conventions::detectron2;
  }

  // source (optional, informational).
  if (const auto source = root.find("source"); source && !source->is_null()) {
    source->require_object();
    const auto text = [&](const char* key, std::string& out) {
      if (const auto v = source->find(key); v && !v->is_null()) out = detail::read_string(*v);
    };
    text("framework", cfg.source.framework);
    text("framework_version", cfg.source.framework_version);
    text("config", cfg.source.config);
    text("note", cfg.source.note);
    cfg.framework = cfg.source.framework;
  }

  // input
  {
    const JsonNode input = root.child("input");
    input.require_object();
    InputConfig& in = cfg.input;
    in.bgr = read_choice(input.child("channel_order"), {"BGR", "RGB"}) == 0;
    in.pixel_scale = read_float_in(input.child("pixel_scale"), 0.0, true, unbounded, false);
    in.pixel_mean = detail::read_float_array<3>(input.child("pixel_mean"), -unbounded, false);
    in.pixel_std = detail::read_float_array<3>(input.child("pixel_std"), 0.0, true);
    const JsonNode resize = input.child("resize");
    resize.require_object();
    if (read_choice(resize.child("mode"), {"shortest_edge", "fixed"}) == 0) {
      in.resize.mode = ResizeConfig::Mode::shortest_edge;
      in.resize.min_size = read_int(resize.child("min_size"), 1);
      const JsonNode max_size = resize.child("max_size");
      const std::string expectation = "an integer >= input.resize.min_size (" +
                                      std::to_string(in.resize.min_size) + ")";
      const std::int64_t m = detail::read_integer(max_size, expectation);
      if (m < in.resize.min_size || m > INT_MAX) max_size.expected_value(expectation);
      in.resize.max_size = int(m);
    } else {
      in.resize.mode = ResizeConfig::Mode::fixed;
      in.resize.height = read_int(resize.child("height"), 1);
      in.resize.width = read_int(resize.child("width"), 1);
    }
    in.size_divisibility = read_int(input.child("size_divisibility"), 0);
  }

  // modules
  {
    const JsonNode modules = root.child("modules");
    modules.require_object();
    cfg.modules.backbone_rpn = detail::read_module(modules.child("backbone_rpn"), cfg.input, true);
    cfg.modules.box_head = detail::read_module(modules.child("box_head"), cfg.input, false);
    if (cfg.architecture == Architecture::mask_rcnn)
      cfg.modules.mask_head = detail::read_module(
          modules.child("mask_head", "architecture \"mask_rcnn\" needs the mask_head module"),
          cfg.input, false);
    if (const auto lib = modules.find("neuron_library"); lib && !lib->is_null()) {
      const std::string expectation = "null or a non-empty library path or name";
      std::string path = detail::read_string(*lib, expectation);
      if (path.empty()) lib->expected_value(expectation);
      cfg.modules.neuron_library = std::move(path);
    }
  }

  // backbone
  {
    const JsonNode backbone = root.child("backbone");
    backbone.require_object();
    BackboneConfig& b = cfg.backbone;
    b.rpn_levels = detail::read_level_names(backbone.child("rpn_levels"));
    const JsonNode roi_levels = backbone.child("roi_levels");
    b.roi_levels = detail::read_level_names(roi_levels);
    std::string rpn_listed;
    for (const auto& name : b.rpn_levels)
      rpn_listed += (rpn_listed.empty() ? "\"" : ", \"") + name + "\"";
    for (std::size_t i = 0; i < b.roi_levels.size(); ++i)
      if (std::find(b.rpn_levels.begin(), b.rpn_levels.end(), b.roi_levels[i]) ==
          b.rpn_levels.end())
        roi_levels.element(i).expected_value("one of backbone.rpn_levels (" + rpn_listed + ")");

    const JsonNode strides = backbone.child("strides");
    strides.require_object();
    const auto stride_of = [&](const std::string& level) {
      const auto s = strides.find(level);
      if (!s)
        detail::fail(source_name + ": " + strides.child_path(level) +
                     ": missing stride for level \"" + level + "\" of backbone.rpn_levels");
      return read_int(*s, 1);
    };
    for (const auto& level : b.rpn_levels) b.rpn_strides.push_back(stride_of(level));
    for (std::size_t i = 0; i < b.roi_levels.size(); ++i) {
      const int s = stride_of(b.roi_levels[i]);
      const JsonNode at = *strides.find(b.roi_levels[i]);
      if (i == 0 && (s & (s - 1)) != 0)
        at.expected_value("a power of two (the RoI level mapper uses log2 of the roi level "
                          "strides)");
      // torchvision's mobilenet FPN pools from two maps of the same stride (32, 32): all
      // RoIs then map to the first one, as torchvision's LevelMapper does.
      if (i > 0 && s != 2 * b.roi_strides.back() && s != b.roi_strides.back())
        at.expected_value(std::to_string(2 * b.roi_strides.back()) +
                          ", twice the stride of the previous roi level \"" +
                          b.roi_levels[i - 1] + "\" (or " + std::to_string(b.roi_strides.back()) +
                          ", equal to it: the RoI level mapper needs consecutive pyramid levels)");
      b.roi_strides.push_back(s);
    }
    b.channels = read_int(backbone.child("channels"), 1);
    if (const auto layout = backbone.find("features_layout"); layout && !layout->is_null())
      b.features_layout = read_choice(*layout, {"nchw", "nhwc"}) == 0 ? Layout::nchw : Layout::nhwc;
  }

  // anchors
  {
    const JsonNode anchors = root.child("anchors");
    anchors.require_object();
    AnchorConfig& a = cfg.anchors;
    const std::size_t levels = cfg.backbone.rpn_levels.size();
    a.sizes = detail::read_per_level_lists(anchors.child("sizes"), levels);
    a.aspect_ratios = detail::read_per_level_lists(anchors.child("aspect_ratios"), levels);
    a.offset = read_float_in(anchors.child("offset"), 0.0, false, 1.0, true);
    a.round_cell_anchors = read_bool(anchors.child("round_cell_anchors"));
    a.stride_from = read_choice(anchors.child("stride_from"), {"backbone", "image"}) == 0
                        ? AnchorConfig::StrideFrom::backbone
                        : AnchorConfig::StrideFrom::image;
  }

  // rpn
  {
    const JsonNode rpn = root.child("rpn");
    rpn.require_object();
    RpnConfig& r = cfg.rpn;
    r.pre_nms_topk = read_int(rpn.child("pre_nms_topk"), 1);
    r.post_nms_topk = read_int(rpn.child("post_nms_topk"), 1);
    r.nms_threshold = detail::read_number_in(rpn.child("nms_threshold"), 0.0, true, 1.0, false);
    r.min_box_size = read_float_in(rpn.child("min_box_size"), 0.0, false, unbounded, false);
    r.min_box_size_inclusive = read_bool(rpn.child("min_box_size_inclusive"));
    const JsonNode score = rpn.child("score_threshold");
    if (!score.is_null()) {
      if (!score.json().is_number()) score.expected_type("null or a number in [0, 1]");
      r.score_threshold = read_float_in(score, 0.0, false, 1.0, false);
    }
    r.nms_scores = read_choice(rpn.child("nms_scores"), {"logits", "sigmoid"}) == 0
                       ? RpnConfig::NmsScores::logits
                       : RpnConfig::NmsScores::sigmoid;
    r.box_weights = detail::read_float_array<4>(rpn.child("box_weights"), 0.0, true);
    r.scale_clamp = read_float_in(rpn.child("scale_clamp"), 0.0, true, unbounded, false);
  }

  // roi_heads
  {
    const JsonNode heads = root.child("roi_heads");
    heads.require_object();
    RoiHeadsConfig& h = cfg.roi_heads;
    h.num_classes = read_int(heads.child("num_classes"), 1);
    h.background_first = read_choice(heads.child("background"), {"first", "last"}) == 0;
    h.class_agnostic_box_regression = read_bool(heads.child("class_agnostic_box_regression"));
    h.pooler = detail::read_pooler(heads);
    h.box_weights = detail::read_float_array<4>(heads.child("box_weights"), 0.0, true);
    h.scale_clamp = read_float_in(heads.child("scale_clamp"), 0.0, true, unbounded, false);
    h.score_threshold = read_float_in(heads.child("score_threshold"), 0.0, false, 1.0, true);
    h.nms_threshold = detail::read_number_in(heads.child("nms_threshold"), 0.0, true, 1.0, false);
    h.detections_per_image = read_int(heads.child("detections_per_image"), 1);
    const JsonNode min_box = heads.child("min_box_size");
    if (!min_box.is_null()) {
      if (!min_box.json().is_number()) min_box.expected_type("null or a number >= 0");
      h.min_box_size = read_float_in(min_box, 0.0, false, unbounded, false);
    }
  }

  // mask_head (mask_rcnn only)
  if (cfg.architecture == Architecture::mask_rcnn) {
    const JsonNode mask = root.child("mask_head", "architecture \"mask_rcnn\" needs it");
    mask.require_object();
    MaskHeadConfig m;
    m.pooler = detail::read_pooler(mask);
    m.class_agnostic = read_bool(mask.child("class_agnostic"));
    m.mask_threshold = read_float_in(mask.child("mask_threshold"), 0.0, false, 1.0, false);
    m.paste = read_choice(mask.child("paste"), {"detectron2", "torchvision"}) == 0
                  ? MaskHeadConfig::Paste::detectron2
                  : MaskHeadConfig::Paste::torchvision;
    cfg.mask_head = m;
  }

  // postprocess
  {
    const JsonNode post = root.child("postprocess");
    post.require_object();
    cfg.postprocess.clip = read_bool(post.child("clip"));
    cfg.postprocess.drop_empty = read_bool(post.child("drop_empty"));
  }

  // classes (optional)
  {
    const auto classes = root.find("classes");
    const int k = cfg.roi_heads.num_classes;
    if (classes && !classes->is_null() && classes->array_size("an array of class names") > 0) {
      const std::size_t n = classes->json().size();
      if (n != std::size_t(k))
        classes->fail("expected " + std::to_string(k) +
                      " class names (roi_heads.num_classes), got " + std::to_string(n));
      for (std::size_t i = 0; i < n; ++i)
        cfg.classes.push_back(detail::read_string(classes->element(i), "a class name (string)"));
    } else {
      for (int i = 0; i < k; ++i) cfg.classes.push_back("class_" + std::to_string(i));
    }
  }

  // category_ids (optional): the dataset id of each contiguous class, distinct integers
  {
    const auto ids = root.find("category_ids");
    if (ids && !ids->is_null() && ids->array_size("an array of integer category ids") > 0) {
      const std::size_t n = ids->json().size();
      if (n != cfg.classes.size())
        ids->fail("expected " + std::to_string(cfg.classes.size()) +
                  " category ids (one per class, roi_heads.num_classes), got " + std::to_string(n));
      for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t id = detail::read_integer(ids->element(i), "an integer category id >= 0");
        if (id < 0) ids->element(i).expected_value("an integer category id >= 0");
        for (std::size_t j = 0; j < i; ++j)
          if (cfg.category_ids[j] == id)
            ids->element(i).fail("category id " + std::to_string(id) + " repeats element " +
                                 std::to_string(j) + " (each class needs its own id)");
        cfg.category_ids.push_back(id);
      }
    }
  }
  return cfg;
}

/// Reads the bundle in directory `dir`: parses and validates `dir/model.json`, sets
/// `bundle_dir`, and checks that every module file exists, is a regular non-empty file and,
/// when its `sha256` is given, has that SHA-256.
inline ModelConfig read_bundle(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string dir_name = dir.string();
  const fs::file_status dir_status = fs::status(dir, ec);
  if (!fs::exists(dir_status)) detail::fail(dir_name + ": bundle directory does not exist");
  if (!fs::is_directory(dir_status))
    detail::fail(dir_name + ": not a directory (expected a model bundle directory)");

  const fs::path json_path = dir / "model.json";
  const std::string json_name = json_path.string();
  const fs::file_status json_status = fs::status(json_path, ec);
  if (!fs::exists(json_status))
    detail::fail(json_name + ": file not found (a model bundle directory must contain model.json)");
  if (!fs::is_regular_file(json_status)) detail::fail(json_name + ": not a regular file");
  std::ifstream in(json_path, std::ios::binary);
  if (!in) detail::fail(json_name + ": cannot open file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) detail::fail(json_name + ": read error");

  ModelConfig cfg = parse_model_json(text.str(), json_name);
  cfg.bundle_dir = dir_name;

  const auto check_module = [&](const char* key, const ModuleConfig& m) {
    const fs::path file = dir / m.file;
    const std::string file_name = file.string();
    const std::string where =
        std::string("modules.") + key + ".file \"" + m.file + "\" in " + json_name;
    std::error_code file_ec;
    const fs::file_status st = fs::status(file, file_ec);
    if (!fs::exists(st)) detail::fail(file_name + ": module file not found (" + where + ")");
    if (!fs::is_regular_file(st))
      detail::fail(file_name + ": module file is not a regular file (" + where + ")");
    const auto size = fs::file_size(file, file_ec);
    if (file_ec) detail::fail(file_name + ": cannot read module file size: " + file_ec.message());
    if (size == 0) detail::fail(file_name + ": module file is empty (" + where + ")");
    if (m.sha256) {
      const std::string actual = detail::sha256_file_hex(file);
      if (actual != *m.sha256)
        detail::fail(file_name + ": SHA-256 mismatch (modules." + key + ".sha256 in " +
                     json_name + "): expected " + *m.sha256 + ", got " + actual);
    }
  };
  check_module("backbone_rpn", cfg.modules.backbone_rpn);
  check_module("box_head", cfg.modules.box_head);
  if (cfg.modules.mask_head) check_module("mask_head", *cfg.modules.mask_head);
  return cfg;
}

}  // namespace rcnn
