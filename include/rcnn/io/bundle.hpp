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
/// The schema (what each key means, its bounds) is bundle_schema.hpp; this is the reader.

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include "rcnn/config.hpp"
#include "rcnn/detail/sha256.hpp"
#include "rcnn/error.hpp"
#include "rcnn/io/bundle_schema.hpp"

namespace rcnn {

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
