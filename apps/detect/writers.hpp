#pragma once
// rcnn-detect's outputs, streamed: every image's result is written (and flushed) as soon as it
// is computed, so that an error or an interrupt later keeps what is done.
//   json   one JSON array, an element per image (closed on errors and interrupts too)
//   jsonl  JSON Lines: one object per line per image
//   coco   a COCO results file: one array of {image_id, category_id, bbox [x, y, w, h], score
//          [, segmentation]} (pycocotools' COCO.loadRes reads it)
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <rcnn/config.hpp>
#include <rcnn/error.hpp>

namespace rcnn_detect {

enum class Format { json, jsonl, coco };

/// Writes elements of a JSON array (json, coco) or JSON lines (jsonl) to a file or stdout.
/// The file is opened (created / truncated) by the constructor, before any work starts.
class StreamWriter {
 public:
  StreamWriter(Format format, const std::string& path) : format_(format), path_(path) {
    if (!path.empty()) {
      file_.open(path, std::ios::binary | std::ios::trunc);
      if (!file_)
        rcnn::detail::fail(path + ": cannot open for writing (the output file; " +
                           (std::filesystem::is_directory(path) ? std::string("it is a directory")
                                                                : std::string("does its folder exist? is it writable?")) +
                           ")");
    }
  }
  /// Without finish() (an error is unwinding): closes the array if anything was written, so
  /// that the results already computed stay a valid file; writes nothing otherwise.
  ~StreamWriter() {
    if (finished_ || count_ == 0) return;
    try {
      finish();
    } catch (...) {
    }
  }

  void write(const nlohmann::ordered_json& element) {
    std::ostream& o = out();
    if (format_ == Format::jsonl) {
      o << element.dump() << '\n';
    } else {
      o << (count_ == 0 ? "[\n" : ",\n");
      if (format_ == Format::json) {
        // As dump(2) of the whole array would write it: each element indented by two.
        const std::string text = element.dump(2);
        o << "  ";
        for (char c : text) {
          o << c;
          if (c == '\n') o << "  ";
        }
      } else {
        o << element.dump();
      }
    }
    ++count_;
    o.flush();
    if (!o) rcnn::detail::fail((path_.empty() ? std::string("stdout") : path_) + ": write failed");
  }

  /// Closes the array (json, coco; "[]" when nothing was written). Idempotent.
  void finish() {
    if (finished_) return;
    finished_ = true;
    std::ostream& o = out();
    if (format_ != Format::jsonl) o << (count_ == 0 ? "[]\n" : "\n]\n");
    o.flush();
    if (file_.is_open()) file_.close();
    if (!o) rcnn::detail::fail((path_.empty() ? std::string("stdout") : path_) + ": write failed");
  }

  std::size_t count() const { return count_; }

 private:
  std::ostream& out() { return path_.empty() ? std::cout : static_cast<std::ostream&>(file_); }
  Format format_;
  std::string path_;
  std::ofstream file_;
  std::size_t count_ = 0;
  bool finished_ = false;
};

/// image_id and category_id of COCO results. From an annotation file (instances.json: images
/// by file_name, categories by name), else image ids 1, 2, ... in input order and the
/// bundle's `category_ids`.
class CocoIds {
 public:
  /// Throws rcnn::Error when ids cannot be had: no annotation file and no category_ids, an
  /// unreadable or malformed annotation file.
  CocoIds(const std::string& annotations, const rcnn::ModelConfig& cfg) {
    const std::vector<std::string>& classes = cfg.classes;
    if (annotations.empty()) {
      if (cfg.category_ids.empty())
        rcnn::detail::fail(
            "--format coco needs category ids: give --coco-annotations instances.json (ids by "
            "class name), or use a bundle whose model.json has \"category_ids\" "
            "(docs/reference/bundle-format.md)");
      category_of_class_ = cfg.category_ids;
      return;
    }
    std::ifstream in(annotations, std::ios::binary);
    if (!in) rcnn::detail::fail(annotations + ": cannot open the COCO annotation file");
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      rcnn::detail::fail(annotations + ": not valid JSON (" + e.what() + ")");
    }
    if (!doc.is_object() || !doc.contains("images") || !doc["images"].is_array() ||
        !doc.contains("categories") || !doc["categories"].is_array())
      rcnn::detail::fail(annotations + ": expected a COCO annotation file (an object with "
                         "\"images\" and \"categories\" arrays)");
    have_annotations_ = true;
    std::size_t i = 0;
    try {
      for (const auto& img : doc["images"]) {
        const std::string name = img.at("file_name").get<std::string>();
        const std::int64_t id = img.at("id").get<std::int64_t>();
        by_file_[name] = id;
        const std::string base = std::filesystem::path(name).filename().string();
        auto [it, inserted] = by_base_.emplace(base, id);
        if (!inserted && it->second != id) it->second = kAmbiguous;
        ++i;
      }
      std::map<std::string, std::int64_t> by_name;
      for (const auto& c : doc["categories"])
        by_name[c.at("name").get<std::string>()] = c.at("id").get<std::int64_t>();
      for (const std::string& name : classes) {
        const auto it = by_name.find(name);
        category_of_class_.push_back(it == by_name.end() ? kUnknown : it->second);
        if (it == by_name.end()) missing_.push_back(name);
      }
    } catch (const nlohmann::json::exception& e) {
      rcnn::detail::fail(annotations + ": images[" + std::to_string(i) +
                         "] or a category lacks a field or has the wrong type (" + e.what() + ")");
    }
  }

  /// Class names of the bundle that the annotation file has no category for (their detections
  /// are left out).
  const std::vector<std::string>& missing_classes() const { return missing_; }

  /// The image id of the image known by `names` (relative paths, tried in order, then their
  /// file names), or `ordinal` (1-based input order) without an annotation file. Throws when
  /// the annotation file has none.
  std::int64_t image_id(std::initializer_list<std::filesystem::path> names, std::int64_t ordinal) const {
    if (!have_annotations_) return ordinal;
    for (const auto& n : names)
      if (auto it = by_file_.find(n.generic_string()); it != by_file_.end()) return it->second;
    for (const auto& n : names) {
      const std::string base = n.filename().string();
      if (auto it = by_base_.find(base); it != by_base_.end()) {
        if (it->second == kAmbiguous)
          rcnn::detail::fail(n.string() + ": several images of the annotation file are named " +
                             base + " (give the folder whose paths match their file_name)");
        return it->second;
      }
    }
    rcnn::detail::fail(names.begin()->string() +
                       ": no image with this file_name in the COCO annotation file");
  }

  /// The category id of contiguous class `class_id`, or kUnknown.
  std::int64_t category_id(int class_id) const {
    return class_id >= 0 && std::size_t(class_id) < category_of_class_.size()
               ? category_of_class_[std::size_t(class_id)]
               : kUnknown;
  }

  static constexpr std::int64_t kUnknown = INT64_MIN;

 private:
  static constexpr std::int64_t kAmbiguous = INT64_MIN + 1;
  bool have_annotations_ = false;
  std::map<std::string, std::int64_t> by_file_, by_base_;
  std::vector<std::int64_t> category_of_class_;
  std::vector<std::string> missing_;
};

}  // namespace rcnn_detect
