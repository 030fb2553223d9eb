#pragma once
/// \file json_node.hpp
/// Reading JSON with one-line errors: a value with its key path and file name (`JsonNode`)
/// and readers of numbers, integers, booleans, strings and choices that check bounds and say
/// `<file>: <path>: expected <what>, got <value>`, with "did you mean" hints for misspelt
/// keys (the key names of bundle format v1 are never suggested as misspellings). Used by the
/// bundle schema (bundle_schema.hpp).

#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "rcnn/error.hpp"

namespace rcnn::detail {

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
      "detections_per_image", "class_agnostic", "mask_threshold", "paste", "mask_size", "postprocess",
      "clip", "drop_empty", "classes", "category_ids", "cascade", "module"};
  return std::find(std::begin(known), std::end(known), key) != std::end(known);
}


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

}  // namespace rcnn::detail
