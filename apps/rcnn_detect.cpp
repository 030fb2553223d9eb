// rcnn-detect: run a model bundle on images, print or write detections (and, for Mask R-CNN
// bundles, their masks as COCO RLE) as JSON, draw them.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <rcnn/cv/draw.hpp>
#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/mask/omp_paste.hpp>
#include <rcnn/mask/rle.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fs = std::filesystem;

namespace {

template <class Det>
nlohmann::ordered_json to_json(const std::string& image, const rcnn::DetectionResult& r, const Det& det) {
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
    dets.push_back(std::move(e));
  }
  nlohmann::ordered_json timing = nlohmann::ordered_json::object();
  r.timing.for_each([&](const char* name, double ms) { timing[name] = ms; });
  timing["total"] = r.timing.total();
  return {{"image", image},
          {"height", r.image_size.height},
          {"width", r.image_size.width},
          {"detections", dets},
          {"timing_ms", timing}};
}

}  // namespace

/// The stages of rcnn-detect: each convention's defaults with the stage profiler and the
/// OpenMP mask pastes.
template <class S>
using CliStages = rcnn::WithProfiler<rcnn::WithOmpPaste<S>>;

int main(int argc, char** argv) {
  CLI::App app{
      "rcnn-detect: run an R-CNN model bundle (TorchScript modules + model.json) on images.\n"
      "Prints a JSON array, one entry per image, with boxes [x1, y1, x2, y2] in original image\n"
      "pixels, scores, class ids and names, and per-stage timing in ms. Mask R-CNN bundles add\n"
      "each detection's mask: \"mask_pixels\" and \"segmentation\" (COCO compressed RLE,\n"
      "{\"size\": [height, width], \"counts\": \"...\"}, as pycocotools' mask.encode writes it)."};
  std::string model;
  std::vector<std::string> images;
  std::string output, draw_dir;
  double score_threshold = -1;
  int threads = 1;
  bool quiet = false;
  bool profile = false;
  bool low_memory = false;
  app.add_option("--model,-m", model, "model bundle directory (contains model.json)")
      ->required();
  app.add_option("--output,-o", output,
                 "write the JSON results to this file (default: print them on stdout)");
  app.add_option("--draw", draw_dir,
                 "write annotated copies of the images into this directory (boxes, labels and, "
                 "for Mask R-CNN bundles, masks overlaid in the box colour)");
  app.add_option("--score-threshold", score_threshold,
                 "override roi_heads.score_threshold of the bundle (0..1)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--threads", threads,
                 "threads for LibTorch's intra-op pool and the OpenMP stages: RoIAlign, mask "
                 "pasting (default 1)")
      ->check(CLI::Range(1, 256));
  app.add_flag("--quiet,-q", quiet, "no summary on stderr");
  app.add_flag("--profile", profile,
               "after all images, print a per-stage profile (calls, total, mean, share) on stderr");
  app.add_flag("--low-memory", low_memory,
               "return LibTorch's large blocks to the system when freed (fixed glibc mmap "
               "threshold of 128 KiB): about half the peak memory, but ~20% slower networks "
               "(docs/performance.md)");
  app.add_option("images", images, "image files (JPEG, PNG, ... anything OpenCV decodes)")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "rcnn-detect: error: %s (see --help)\n", e.what());
    return e.get_exit_code();
  }

#if defined(__GLIBC__)
  // glibc's default raises its mmap threshold as large blocks are freed and then keeps them
  // in the heap: LibTorch's activations are reused without page faults (fast), at the cost
  // of a higher peak RSS. --low-memory trades the other way (measured in
  // docs/performance.md). A process-wide choice: the program's, not the library's.
  if (low_memory) mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#else
  (void)low_memory;
#endif

  try {
    rcnn::ModelConfig cfg = rcnn::read_bundle(model);
    if (score_threshold >= 0) cfg.roi_heads.score_threshold = float(score_threshold);
    rcnn::TorchScriptExec exec(cfg, rcnn::TorchScriptOptions{threads});
    rcnn::OmpRoIAlign roi_align;
    roi_align.num_threads = threads;
    using Exec = rcnn::TorchScriptExec;
    // StageProfiler: a few additions per image; printed with --profile. WithOmpPaste: the
    // OpenMP mask pastes (bit-identical to the references), on --threads threads.
    using Any = rcnn::AnyDetector<Exec, rcnn::OmpRoIAlign, CliStages>;
    auto make = [&]() -> Any {
      if (cfg.conventions == rcnn::Conventions::torchvision)
        return Any(Any::TorchvisionDetector(cfg, std::move(exec), roi_align));
      return Any(Any::Detectron2Detector(cfg, std::move(exec), roi_align));
    };
    Any det = make();
    det.set_mask_paste_threads(threads);
    if (!draw_dir.empty()) fs::create_directories(draw_dir);

    nlohmann::ordered_json all = nlohmann::ordered_json::array();
    for (const auto& path : images) {
      cv::Mat img = rcnn::cv_io::read_image(path);
      cv::Mat storage;
      const rcnn::DetectionResult r = det(rcnn::cv_io::view(img, storage));
      all.push_back(to_json(path, r, det));
      if (!quiet) {
        std::fprintf(stderr, "%s: %zu detections in %.1f ms\n", path.c_str(), r.detections.size(),
                     r.timing.total());
      }
      if (!draw_dir.empty()) {
        if (!r.masks.empty()) rcnn::cv_io::draw_masks(img, r.detections, r.masks);
        rcnn::cv_io::draw_detections(img, r.detections, det.config().classes);
        const fs::path out = fs::path(draw_dir) / fs::path(path).filename();
        if (!cv::imwrite(out.string(), img))
          rcnn::detail::fail(out.string() + ": could not write the annotated image");
      }
    }
    if (profile) {
      std::fprintf(stderr, "profile (%s, %d thread%s):\n", model.c_str(), threads,
                   threads == 1 ? "" : "s");
      det.profiler().print(stderr);
    }
    if (output.empty()) {
      std::cout << all.dump(2) << "\n";
    } else {
      std::ofstream f(output);
      if (!f) rcnn::detail::fail(output + ": cannot open for writing");
      f << all.dump(2) << "\n";
      if (!f) rcnn::detail::fail(output + ": write failed");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rcnn-detect: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
