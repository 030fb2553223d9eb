// rcnn-detect: run a model bundle over images, folders, @lists, videos and cameras; stream the
// detections (and, for Mask R-CNN bundles, their masks as COCO RLE) as JSON, JSON Lines or a
// COCO results file; draw them. Helpers: apps/detect/ (inputs, progress, writers).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core/utility.hpp>
#if RCNN_HAVE_VIDEOIO
#include <opencv2/videoio.hpp>
#endif

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <rcnn/cv/draw.hpp>
#include <rcnn/cv/image.hpp>
#include <rcnn/exec/host_allocator.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/mask/omp_paste.hpp>
#include <rcnn/mask/rle.hpp>
#include <rcnn/preprocess/omp_preprocess.hpp>
#include <rcnn/proposals/omp_topk_proposal_selector.hpp>
#include <rcnn/roi_align/simd_roi_align.hpp>
#include <rcnn/version.hpp>

#include "detect/inputs.hpp"
#include "detect/progress.hpp"
#include "detect/writers.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fs = std::filesystem;
using namespace rcnn_detect;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_signal(int) { g_interrupted.store(true); }

/// Threads by default: the CPUs this process may use, at most 4 (more rarely pays for one
/// image at a time).
int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return int(n == 0 ? 1 : std::min(n, 4u));
}

/// OpenMP threads that spin-wait between parallel regions are many times slower when other
/// processes keep the cores busy. libgomp reads OMP_WAIT_POLICY once, when it is loaded (before
/// main), so when the user has not set it the program sets PASSIVE and starts itself again
/// (costs one more program start, the loading of LibTorch: about 0.5 s). Only with more than
/// one thread: a single thread has no OpenMP workers to wait.
void ensure_passive_openmp_waits(char** argv) {
#if defined(__linux__)
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (::setenv("OMP_WAIT_POLICY", "PASSIVE", 0) != 0) return;
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run with the default policy
#else
  (void)argv;
#endif
}

template <class Det>
nlohmann::ordered_json to_json(const Source& src, long frame, const rcnn::DetectionResult& r,
                               const Det& det) {
  const auto& classes = det.config().classes;
  nlohmann::ordered_json dets = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < r.detections.size(); ++i) {
    const rcnn::Detection& d = r.detections[i];
    nlohmann::ordered_json e = {{"box", {d.box.x1, d.box.y1, d.box.x2, d.box.y2}},
                                {"score", d.score},
                                {"class_id", d.class_id},
                                {"class_name", std::size_t(d.class_id) < classes.size()
                                                   ? classes[std::size_t(d.class_id)]
                                                   : std::to_string(d.class_id)}};
    if (i < r.masks.size()) {
      // COCO's results format: compressed RLE of the full image-sized mask (pycocotools'
      // mask.decode reads it), and its pixel count.
      const rcnn::CocoRle rle = rcnn::rle_encode(r.masks[i], r.image_size);
      e["mask_pixels"] = rcnn::rle_area(rle);
      e["segmentation"] = {{"size", {rle.height, rle.width}}, {"counts", rcnn::rle_to_string(rle)}};
    }
    if (r.num_keypoints > 0) {
      // Keypoint R-CNN: one [x, y, score] triple per keypoint (model.json's keypoint_names
      // order), original image pixels.
      nlohmann::ordered_json kps = nlohmann::ordered_json::array();
      for (const rcnn::Keypoint& k : r.keypoints_of(i)) kps.push_back({k.x, k.y, k.score});
      e["keypoints"] = std::move(kps);
    }
    dets.push_back(std::move(e));
  }
  nlohmann::ordered_json timing = nlohmann::ordered_json::object();
  r.timing.for_each([&](const char* name, double ms) { timing[name] = ms; });
  timing["total"] = r.timing.total();
  nlohmann::ordered_json out = {{"image", src.label}};
  if (frame >= 0) out["frame"] = frame;
  out["height"] = r.image_size.height;
  out["width"] = r.image_size.width;
  out["detections"] = std::move(dets);
  out["timing_ms"] = std::move(timing);
  return out;
}

/// COCO results of one image: bbox [x, y, w, h], segmentation (compressed RLE) for masks,
/// keypoints [x, y, v, ...] for Keypoint R-CNN bundles.
nlohmann::ordered_json to_coco(const rcnn::DetectionResult& r, std::int64_t image_id,
                               const CocoIds& ids, bool detectron2) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < r.detections.size(); ++i) {
    const rcnn::Detection& d = r.detections[i];
    const std::int64_t cat = ids.category_id(d.class_id);
    if (cat == CocoIds::kUnknown) continue;
    nlohmann::ordered_json e = {{"image_id", image_id},
                                {"category_id", cat},
                                {"bbox", {d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1}},
                                {"score", d.score}};
    if (i < r.masks.size()) {
      const rcnn::CocoRle rle = rcnn::rle_encode(r.masks[i], r.image_size);
      e["segmentation"] = {{"size", {rle.height, rle.width}}, {"counts", rcnn::rle_to_string(rle)}};
    }
    if (r.num_keypoints > 0) {
      // COCO keypoint results: flat [x1, y1, v1, x2, y2, v2, ...], v the keypoint's score
      // (COCOeval ignores it). Detectron2's COCOEvaluator (instances_to_coco_json) subtracts
      // 0.5 from x and y (COCO's keypoints are pixel indices); torchvision's does not.
      const float shift = detectron2 ? 0.5f : 0.f;
      nlohmann::ordered_json kps = nlohmann::ordered_json::array();
      for (const rcnn::Keypoint& k : r.keypoints_of(i)) {
        kps.push_back(k.x - shift);
        kps.push_back(k.y - shift);
        kps.push_back(k.score);
      }
      e["keypoints"] = std::move(kps);
    }
    out.push_back(std::move(e));
  }
  return out;
}

/// Where --draw writes each output: DIR / draw_name with the chosen extension; names used twice
/// get "_2", "_3"... Never an input file.
class DrawNames {
 public:
  DrawNames(fs::path dir, std::string ext, const std::vector<Source>& sources)
      : dir_(std::move(dir)), ext_(std::move(ext)) {
    for (const Source& s : sources) {
      std::error_code ec;
      if (!s.path.empty() && fs::exists(s.path, ec)) inputs_.insert(fs::weakly_canonical(s.path, ec));
    }
  }

  fs::path next(const fs::path& draw_name) {
    fs::path stem = draw_name;
    stem.replace_extension();
    fs::path out = dir_ / stem;
    out += ext_;
    for (int k = 2; used_.count(out.lexically_normal()) || is_input(out); ++k) {
      out = dir_ / stem;
      out += "_" + std::to_string(k) + ext_;
    }
    used_.insert(out.lexically_normal());
    return out;
  }

 private:
  bool is_input(const fs::path& p) const {
    std::error_code ec;
    return inputs_.count(fs::weakly_canonical(p, ec)) > 0;
  }
  fs::path dir_;
  std::string ext_;
  std::set<fs::path> inputs_, used_;
};

/// Checks up front that `dir` can be created and written (a probe file, removed again).
void check_writable_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) rcnn::detail::fail(dir.string() + ": cannot create the --draw directory: " + ec.message());
  const fs::path probe = dir / (".rcnn-detect-probe-" + std::to_string(::getpid()));
  {
    std::ofstream f(probe);
    if (!f) rcnn::detail::fail(dir.string() + ": the --draw directory is not writable");
  }
  fs::remove(probe, ec);
}

}  // namespace

/// The stages of rcnn-detect: each convention's defaults with the stage profiler, the
/// OpenMP one-pass preprocessing and the OpenMP mask pastes (all bit-identical to the
/// reference policies).
template <class S>
using CliStages = rcnn::WithProfiler<
    rcnn::WithOmpProposals<rcnn::WithOmpPreprocess<rcnn::WithOmpPaste<S>>>>;

int main(int argc, char** argv) {
  CLI::App app{
      "rcnn-detect: run an R-CNN model bundle (TorchScript modules + model.json) over images,\n"
      "folders, @lists, videos and cameras.\n"
      "INPUT is an image file; a folder (every image below it, recursively, by extension); @LIST\n"
      "(a text file of inputs, one per line, relative to its folder); a video file (.mp4, .avi,\n"
      ".mkv, ...; every --every'th frame); or a camera index (0, 1, ...).\n"
      "Results are streamed as each image finishes (an error or Ctrl-C keeps what is done):\n"
      "  --format json   a JSON array, one entry per image: {\"image\", [\"frame\",] \"height\", \"width\",\n"
      "                  \"detections\": [{\"box\": [x1, y1, x2, y2], \"score\", \"class_id\", \"class_name\"\n"
      "                  [, \"mask_pixels\", \"segmentation\"] [, \"keypoints\"]}], \"timing_ms\"}; boxes in\n"
      "                  original image pixels; masks of Mask R-CNN bundles as COCO compressed RLE;\n"
      "                  keypoints of Keypoint R-CNN bundles as one [x, y, score] per keypoint\n"
      "  --format jsonl  the same entries, one per line (JSON Lines), flushed after each image\n"
      "  --format coco   a COCO results file: [{\"image_id\", \"category_id\", \"bbox\": [x, y, w, h],\n"
      "                  \"score\" [, \"segmentation\"] [, \"keypoints\": [x, y, v, ...]]}] (rcnn-eval and\n"
      "                  pycocotools read it)\n"
      "Progress goes to stderr (a bar on a terminal, else a line every --progress-every images)."};
  std::string model;
  std::vector<std::string> inputs;
  std::string output, draw_dir, draw_format = "jpg", format_name = "json", coco_annotations;
  double score_threshold = -1;
  std::string threads_text;
  int every = 1;
  std::size_t progress_every = 10;
  bool quiet = false, profile = false, low_memory = false, keep_going = false;
  app.set_version_flag("--version", std::string("rcnn-detect ") + RCNN_VERSION_STRING +
                                        " (OpenCV " + CV_VERSION + ")");
  app.add_option("--model,-m", model, "model bundle directory (contains model.json)")->required();
  app.add_option("--output,-o", output,
                 "write the results to this file (default: stdout); opened before any work");
  app.add_option("--format,-f", format_name, "json (default), jsonl or coco")
      ->check(CLI::IsMember({"json", "jsonl", "coco"}));
  app.add_option("--coco-annotations", coco_annotations,
                 "with --format coco: a COCO annotation file (instances.json); image ids by "
                 "file_name, category ids by class name. Without it: image ids 1, 2, ... in input "
                 "order and the bundle's category_ids");
  app.add_option("--draw", draw_dir,
                 "write annotated copies of the images into this directory, keeping their "
                 "relative paths (a/x.jpg and b/x.jpg stay apart; an absolute path keeps its "
                 "folder's name and the file name; names still repeated get _2, _3); never "
                 "overwrites an input");
  app.add_option("--draw-format", draw_format, "file format of --draw: jpg (default) or png")
      ->check(CLI::IsMember({"jpg", "png"}));
  app.add_option("--score-threshold", score_threshold,
                 "override roi_heads.score_threshold of the bundle (0..1)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--threads", threads_text,
                 "threads for LibTorch's intra-op pool and the OpenMP stages (RoIAlign: SimdRoIAlign, "
                 "mask pasting); default: the CPUs available, at most 4 (here " +
                     std::to_string(default_threads()) +
                     "). With more than one, OpenMP threads wait passively (OMP_WAIT_POLICY="
                     "PASSIVE unless you set it; the program restarts itself once to apply it), so "
                     "a busy machine slows them down gracefully instead of 5x")
      ->type_name("INT")
      ->check([](const std::string& s) -> std::string {
        std::size_t pos = 0;
        long v = 0;
        try {
          v = std::stol(s, &pos);
        } catch (...) {
          pos = 0;
        }
        if (pos == 0 || pos != s.size()) return "'" + s + "' is not a whole number (1 to 256)";
        if (v < 1 || v > 256) return s + " is outside 1 to 256";
        return {};
      });
  app.add_option("--every", every, "videos and cameras: run on every N-th frame (default 1)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--keep-going,-k", keep_going,
               "report an unreadable input (missing, corrupt, not an image) on stderr, skip it "
               "and go on; a summary counts them (exit status 0)");
  app.add_flag("--quiet,-q", quiet, "no progress or summary on stderr (errors only)");
  app.add_option("--progress-every", progress_every,
                 "when stderr is not a terminal: a progress line every N images (default 10)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--profile", profile,
               "after all images, print a per-stage profile (calls, total, mean, share) on stderr");
  app.add_flag("--low-memory", low_memory,
               "return LibTorch's large blocks to the system when freed (LibTorch's default "
               "CPU allocator instead of rcnn's caching huge-page one, and a fixed glibc mmap "
               "threshold of 128 KiB): lower peak memory, but slower networks and glue "
               "(docs/performance.md)");
  app.add_option("inputs", inputs, "images, folders, @lists, videos, camera indices")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "rcnn-detect: error: %s (see --help)\n", e.what());
    return e.get_exit_code();
  }
  const int threads = threads_text.empty() ? default_threads() : std::stoi(threads_text);
  if (threads > 1) ensure_passive_openmp_waits(argv);
  const Format format = format_name == "jsonl" ? Format::jsonl
                        : format_name == "coco" ? Format::coco
                                                : Format::json;
  if (!coco_annotations.empty() && format != Format::coco)
    std::fprintf(stderr, "rcnn-detect: warning: --coco-annotations is used only with --format coco\n");

#if defined(__GLIBC__)
  // glibc's default raises its mmap threshold (up to 32 MiB) as large blocks are freed and
  // then keeps blocks below it in the heap, reused without page faults (fast), at the cost
  // of a higher peak RSS. --low-memory trades the other way (measured in
  // docs/performance.md). A process-wide choice: the program's, not the library's.
  if (low_memory) mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
  // By default LibTorch's tensors come from rcnn's caching huge-page allocator: the next
  // image reuses the last one's activation blocks instead of mapping and faulting them in
  // again (rcnn/exec/host_allocator.hpp). Process-wide, so the program's choice.
  if (!low_memory) rcnn::install_caching_host_allocator();

  std::size_t skipped = 0, images_done = 0, detections = 0;
  std::vector<std::string> skipped_names;
  Progress progress(quiet, progress_every);
  try {
    // Everything that can be checked is checked before the model loads: inputs, outputs.
    InputCollector collector;
    for (const std::string& a : inputs) {
      try {
        collector.add(a);
      } catch (const rcnn::Error& e) {
        if (!keep_going) throw;
        std::fprintf(stderr, "rcnn-detect: warning: %s (skipped)\n", e.what());
        ++skipped;
        skipped_names.push_back(a);
      }
    }
    std::vector<Source>& sources = collector.sources();
    rcnn::ModelConfig cfg = rcnn::read_bundle(model);
    if (score_threshold >= 0) cfg.roi_heads.score_threshold = float(score_threshold);
    std::optional<CocoIds> coco_ids;
    if (format == Format::coco) {
      coco_ids.emplace(coco_annotations, cfg);
      if (!coco_ids->missing_classes().empty() && !quiet) {
        std::string names;
        for (const auto& n : coco_ids->missing_classes()) names += (names.empty() ? "" : ", ") + n;
        std::fprintf(stderr, "rcnn-detect: warning: %s has no category for the classes %s: "
                             "their detections are left out\n", coco_annotations.c_str(), names.c_str());
      }
      // Image ids of all image files, before hours of work.
      for (std::size_t i = 0; i < sources.size(); ++i)
        if (sources[i].kind == Source::Kind::image)
          coco_ids->image_id({sources[i].rel_name, sources[i].draw_name}, 1);
    }
    std::optional<DrawNames> draw_names;
    if (!draw_dir.empty()) {
      check_writable_dir(draw_dir);
      draw_names.emplace(draw_dir, "." + draw_format, sources);
    }
    StreamWriter writer(format, output);

    rcnn::TorchScriptExec exec(cfg, rcnn::TorchScriptOptions{threads});
    rcnn::SimdRoIAlign roi_align;  // the threaded channel-vectorised RoIAlign, bit-identical to RoIAlignRef
    roi_align.num_threads = threads;
    using Exec = rcnn::TorchScriptExec;
    // StageProfiler: a few additions per image; printed with --profile. WithOmpPaste: the
    // OpenMP mask pastes (bit-identical to the references), on --threads threads.
    using Any = rcnn::AnyDetector<Exec, rcnn::SimdRoIAlign, CliStages>;
    auto make = [&]() -> Any {
      if (cfg.conventions == rcnn::Conventions::torchvision)
        return Any(Any::TorchvisionDetector(cfg, std::move(exec), roi_align));
      return Any(Any::Detectron2Detector(cfg, std::move(exec), roi_align));
    };
    Any det = make();
    det.set_threads(threads);  // the OpenMP stages: preprocess, RoIAlign, mask paste

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::size_t image_total = 0;
    for (const Source& s : sources) image_total += s.kind == Source::Kind::image;
    progress.set_total(image_total);

    std::int64_t ordinal = 0;
    auto process = [&](const Source& src, cv::Mat& img, long frame) {
      cv::Mat storage;
      const rcnn::DetectionResult r = det(rcnn::cv_io::view(img, storage));
      ++ordinal;
      if (format == Format::coco) {
        const std::int64_t id = src.kind == Source::Kind::image
                                    ? coco_ids->image_id({src.rel_name, src.draw_name}, ordinal)
                                    : ordinal;
        for (const auto& e : to_coco(r, id, *coco_ids,
                                            det.config().conventions == rcnn::Conventions::detectron2)) writer.write(e);
      } else {
        writer.write(to_json(src, frame, r, det));
      }
      ++images_done;
      detections += r.detections.size();
      if (draw_names) {
        if (!r.masks.empty()) rcnn::cv_io::draw_masks(img, r.detections, r.masks);
        if (r.num_keypoints > 0)
          rcnn::cv_io::draw_keypoints(img, r, det.config().keypoint_head->skeleton);
        rcnn::cv_io::draw_detections(img, r.detections, det.config().classes);
        fs::path name = src.draw_name;
        if (frame >= 0) {
          char suffix[32];
          std::snprintf(suffix, sizeof suffix, "_frame%06ld", frame);
          name.replace_extension();
          name += suffix;
        }
        const fs::path out = draw_names->next(name);
        std::error_code ec;
        fs::create_directories(out.parent_path(), ec);
        bool ok = false;
        try {
          ok = cv::imwrite(out.string(), img);
        } catch (const cv::Exception&) {
        }
        if (!ok) rcnn::detail::fail(out.string() + ": could not write the annotated image");
      }
      progress.step(frame >= 0 ? src.label + " frame " + std::to_string(frame) : src.label);
    };
    auto skip = [&](const std::string& what, const std::string& why) {
      progress.break_line();
      std::fprintf(stderr, "rcnn-detect: warning: %s (skipped)\n", why.c_str());
      ++skipped;
      skipped_names.push_back(what);
    };

    for (const Source& src : sources) {
      if (g_interrupted) break;
      if (src.kind == Source::Kind::image) {
        cv::Mat img;
        try {
          img = rcnn::cv_io::read_image(src.path);
        } catch (const rcnn::Error& e) {
          if (!keep_going) throw;
          skip(src.label, e.what());
          continue;
        }
        process(src, img, -1);
        continue;
      }
#if RCNN_HAVE_VIDEOIO
      cv::VideoCapture cap;
      try {
        if (src.kind == Source::Kind::camera)
          cap.open(src.camera);
        else
          cap.open(src.path.string());
      } catch (const cv::Exception&) {
      }
      if (!cap.isOpened()) {
        const std::string why = src.label + ": OpenCV cannot open it as a video" +
                                (src.kind == Source::Kind::camera ? std::string(" camera") : std::string(""));
        if (!keep_going) rcnn::detail::fail(why);
        skip(src.label, why);
        continue;
      }
      const double count = cap.get(cv::CAP_PROP_FRAME_COUNT);
      if (count > 0) progress.add_total(std::size_t((long(count) + every - 1) / every));
      cv::Mat frame;
      for (long index = 0; !g_interrupted; ++index) {
        if (index % every != 0) {
          if (!cap.grab()) break;
          continue;
        }
        if (!cap.read(frame) || frame.empty()) break;
        process(src, frame, index);
      }
#else
      const std::string why = src.label + ": this rcnn-detect was built without OpenCV videoio";
      if (!keep_going) rcnn::detail::fail(why);
      skip(src.label, why);
#endif
    }
    progress.break_line();
    writer.finish();
    if (profile) {
      std::fprintf(stderr, "profile (%s, %d thread%s):\n", model.c_str(), threads,
                   threads == 1 ? "" : "s");
      det.profiler().print(stderr);
    }
    if (!quiet || skipped > 0) {
      std::fprintf(stderr, "rcnn-detect: %zu image%s, %zu detections in %.1f s (%.1f images/s)%s",
                   images_done, images_done == 1 ? "" : "s", detections, progress.seconds(),
                   progress.seconds() > 0 ? double(images_done) / progress.seconds() : 0.0,
                   output.empty() ? "" : (", written to " + output).c_str());
      if (skipped) {
        std::fprintf(stderr, "; %zu skipped:", skipped);
        for (const auto& n : skipped_names) std::fprintf(stderr, " %s", n.c_str());
      }
      std::fprintf(stderr, "\n");
    }
    if (g_interrupted) {
      std::fprintf(stderr, "rcnn-detect: interrupted; the results of the %zu images done are kept\n",
                   images_done);
      return 130;
    }
  } catch (const std::exception& e) {
    progress.break_line();
    // One line; the results already written stay (the JSON array is closed).
    std::fprintf(stderr, "rcnn-detect: error: %s", e.what());
    if (images_done > 0)
      std::fprintf(stderr, " (the results of the %zu image%s done before are kept)", images_done,
                   images_done == 1 ? "" : "s");
    std::fprintf(stderr, "\n");
    return 1;
  }
  return 0;
}
