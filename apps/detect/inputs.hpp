#pragma once
// rcnn-detect's inputs: the command-line arguments expanded into a list of sources.
//   IMAGE            an image file (extension decides nothing: OpenCV decodes what it can)
//   DIR              every file below DIR (recursive, sorted) with an image extension
//   @LIST            the paths in the text file LIST, one per line (blank lines and lines
//                    starting with # skipped; relative paths are relative to LIST's folder);
//                    a listed directory or video is expanded as on the command line
//   VIDEO            a file with a video extension, read with cv::VideoCapture
//   N                a camera index (digits only, and no file of that name)
// Each source also gets the relative name under which --draw writes it and --format coco
// looks it up (draw_name).
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <rcnn/error.hpp>

namespace rcnn_detect {

namespace fs = std::filesystem;

struct Source {
  enum class Kind { image, video, camera } kind = Kind::image;
  fs::path path;    ///< image or video file
  int camera = -1;  ///< camera index
  /// Relative path naming the input in outputs: --draw writes DIR / draw_name (extension
  /// replaced), --format coco matches it (or its file name) against the annotation file.
  fs::path draw_name;
  /// The path below the directory argument it was found in, else its file name: the first
  /// name --format coco looks up (then draw_name, then the file name).
  fs::path rel_name;
  std::string label;  ///< as the user wrote it (reported in the JSON "image" field)
};

inline std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline bool has_extension(const fs::path& p, std::initializer_list<const char*> exts) {
  const std::string e = lower(p.extension().string());
  for (const char* x : exts)
    if (e == x) return true;
  return false;
}

inline bool is_image_file_name(const fs::path& p) {
  return has_extension(p, {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff",
                           ".webp", ".pbm", ".pgm", ".ppm", ".pnm", ".jp2", ".sr", ".ras",
                           ".exr", ".hdr", ".pic"});
}

inline bool is_video_file_name(const fs::path& p) {
  return has_extension(p, {".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg",
                           ".wmv", ".flv", ".ogv", ".3gp", ".mjpeg", ".mjpg"});
}

/// The path as written when it is relative and does not climb out (no ".."), else `fallback`.
inline fs::path relative_or(const fs::path& written, const fs::path& fallback) {
  const fs::path n = written.lexically_normal();
  if (n.is_absolute() || n.empty()) return fallback;
  for (const auto& part : n)
    if (part == "..") return fallback;
  if (n == ".") return fallback;
  return n;
}

/// "parent/name" of an absolute (or climbing) path: enough to keep cases/a/x.jpg and
/// cases/b/x.jpg apart under --draw.
inline fs::path parent_and_name(const fs::path& p) {
  const fs::path n = p.lexically_normal();
  const fs::path parent = n.parent_path().filename();
  return parent.empty() || parent == ".." || parent == "." ? n.filename() : parent / n.filename();
}

class InputCollector {
 public:
  /// Adds what `arg` names; `base` is the folder relative paths are taken from ("" = cwd).
  /// Throws rcnn::Error naming the argument when it names nothing usable.
  void add(const std::string& arg, const fs::path& base = {}, int depth = 0) {
    if (arg.empty()) rcnn::detail::fail("empty input argument");
    if (arg[0] == '@') return add_list(arg.substr(1), base, depth);
    const fs::path written(arg);
    const fs::path p = base.empty() || written.is_absolute() ? written : base / written;
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    if (fs::is_directory(st)) return add_directory(p, p);
    if (fs::exists(st)) {
      Source s;
      s.kind = is_video_file_name(p) ? Source::Kind::video : Source::Kind::image;
      s.path = p;
      s.label = p.string();
      s.draw_name = relative_or(p, parent_and_name(p));
      s.rel_name = p.filename();
      sources_.push_back(std::move(s));
      return;
    }
    if (!arg.empty() && arg.size() <= 4 &&
        std::all_of(arg.begin(), arg.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      Source s;
      s.kind = Source::Kind::camera;
      s.camera = std::stoi(arg);
      s.label = "camera " + arg;
      s.draw_name = "camera" + arg;
      sources_.push_back(std::move(s));
      return;
    }
    // Not present: kept as an image so that --keep-going reports it with the others.
    Source s;
    s.path = p;
    s.label = p.string();
    s.draw_name = relative_or(p, parent_and_name(p));
    s.rel_name = p.filename();
    sources_.push_back(std::move(s));
  }

  const std::vector<Source>& sources() const { return sources_; }
  std::vector<Source>& sources() { return sources_; }

 private:
  void add_directory(const fs::path& dir, const fs::path& written) {
    std::vector<fs::path> found;
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) rcnn::detail::fail(dir.string() + ": cannot list the directory: " + ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) rcnn::detail::fail(dir.string() + ": error while listing: " + ec.message());
      std::error_code fec;
      if (it->is_regular_file(fec) && is_image_file_name(it->path())) found.push_back(it->path());
    }
    std::sort(found.begin(), found.end());
    // Under --draw: DIR as written when relative, else DIR's own name, then the path below it.
    fs::path n = written.lexically_normal();
    if (n.filename().empty()) n = n.parent_path();
    const fs::path dir_name = relative_or(n, n.filename());
    for (const fs::path& f : found) {
      Source s;
      s.path = f;
      s.label = f.string();
      s.rel_name = f.lexically_relative(dir);
      s.draw_name = (dir_name / s.rel_name).lexically_normal();
      sources_.push_back(std::move(s));
    }
    if (found.empty())
      rcnn::detail::fail(dir.string() + ": no image files in this directory (extensions such as "
                         ".jpg, .jpeg, .png, .bmp, .tif, .webp)");
  }

  void add_list(const std::string& list, const fs::path& base, int depth) {
    if (depth > 8) rcnn::detail::fail(list + ": @list files nested too deeply (a cycle?)");
    const fs::path p = base.empty() || fs::path(list).is_absolute() ? fs::path(list) : base / list;
    std::ifstream in(p);
    if (!in) rcnn::detail::fail(p.string() + ": cannot open the list file (@" + list + ")");
    std::string line;
    int line_no = 0;
    const fs::path list_dir = p.parent_path();
    while (std::getline(in, line)) {
      ++line_no;
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
        line.pop_back();
      std::size_t start = line.find_first_not_of(" \t");
      if (start == std::string::npos || line[start] == '#') continue;
      try {
        add(line.substr(start), list_dir, depth + 1);
      } catch (const rcnn::Error& e) {
        rcnn::detail::fail(p.string() + ":" + std::to_string(line_no) + ": " + e.what());
      }
    }
    if (in.bad()) rcnn::detail::fail(p.string() + ": read error");
  }

  std::vector<Source> sources_;
};

}  // namespace rcnn_detect
