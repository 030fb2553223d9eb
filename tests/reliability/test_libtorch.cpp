// Reliability with the real LibTorch pipeline (issue 6):
//  - bundles whose modules disagree with model.json, files that are not TorchScript;
//  - unusual images through the Detector (1x1, grayscale, RGBA, 16-bit, ROI, huge);
//  - batches of mixed sizes versus one image at a time (what equality holds);
//  - threads with one Detector each, and a pool of replicas behind a mutex: bit-identical
//    to one thread;
//  - a soak of a few hundred images: resident memory stays flat.
// Bundles are the Detectron2 fixture (tests/data/detectron2/narrow_r101_fpn_shortest_edge)
// copied into a temp directory with an edited model.json.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

#include "reliability_util.hpp"

using namespace reliability;

namespace {

using Exec = rcnn::TorchScriptExec;
using D2Detector = rcnn::Detector<Exec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>;

D2Detector load_d2(const fs::path& dir) {
  return rcnn::load<Exec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>(dir, {1});
}

/// The message of running the bundle in `dir` on one image (loading included).
std::string run_error(const fs::path& dir, const cv::Mat& image) {
  return error_of([&] {
    auto det = rcnn::load<Exec>(dir, {1});
    cv::Mat storage;
    det(rcnn::cv_io::view(image, storage));
  });
}

cv::Mat photo(const char* name) {
  return rcnn::cv_io::read_image(kBundle / "cases" / name / "image.jpg");
}

bool same(const std::vector<rcnn::Detection>& a, const std::vector<rcnn::Detection>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(rcnn::Detection)) == 0);
}

float iou(const rcnn::Box& a, const rcnn::Box& b) {
  const float iw = std::max(0.f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
  const float ih = std::max(0.f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
  const float inter = iw * ih;
  const float uni = a.area() + b.area() - inter;
  return uni > 0 ? inter / uni : 0.f;
}

/// Detections of `b` that have a same-class partner in `a` with IoU >= `min_iou` and score
/// within `max_score_diff` (greedy, one-to-one).
std::size_t matched(const std::vector<rcnn::Detection>& a, const std::vector<rcnn::Detection>& b,
                    float min_iou = 0.9f, float max_score_diff = 0.02f) {
  std::vector<bool> used(a.size(), false);
  std::size_t m = 0;
  for (const auto& d : b)
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!used[i] && a[i].class_id == d.class_id &&
          std::abs(a[i].score - d.score) <= max_score_diff && iou(a[i].box, d.box) >= min_iou) {
        used[i] = true;
        ++m;
        break;
      }
  return m;
}

/// `n` little-endian bytes of `v`.
std::string le(std::size_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
  return s;
}

/// A zip archive holding one empty, stored file `name` (no compression, CRC 0).
std::string empty_zip(const std::string& name) {
  const std::string local = "PK\x03\x04" + le(10, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 2) +
                            le(0, 4) + le(0, 4) + le(0, 4) + le(name.size(), 2) + le(0, 2) + name;
  const std::string central = "PK\x01\x02" + le(20, 2) + le(10, 2) + le(0, 2) + le(0, 2) +
                              le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4) + le(0, 4) +
                              le(name.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 2) +
                              le(0, 4) + le(0, 4) + name;
  const std::string end = "PK\x05\x06" + le(0, 2) + le(0, 2) + le(1, 2) + le(1, 2) +
                          le(central.size(), 4) + le(local.size(), 4) + le(0, 2);
  return local + central + end;
}

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * std::size_t(sysconf(_SC_PAGESIZE));
}

}  // namespace

TEST_CASE("libtorch: modules that disagree with model.json name the file, key and values") {
  TempDir tmp;
  const cv::Mat image = photo("fruits");  // 480x512 -> 320x341, padded 320x352
  const json base = fixture_json();
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    std::vector<std::string> parts;  // after "<dir>/"
  };
  const std::vector<Case> cases = {
      {"channels", [](json& d) { d["backbone"]["channels"] = 64; },
       {"backbone_rpn.pt: feature map p2 has shape [1, 32, 80, 88], expected [1, 64, H, W] "
        "(backbone.channels in model.json)"}},
      {"aspect_ratios",
       [](json& d) { d["anchors"]["aspect_ratios"] = {{0.25, 0.5, 1.0, 2.0}}; },
       {"backbone_rpn.pt: objectness of level p2 has shape [1, 3, 80, 88], expected [1, 4, H, "
        "W] (anchors per cell = 1 anchors.sizes x 4 anchors.aspect_ratios in model.json)"}},
      {"num_classes",
       [](json& d) {
         d["roi_heads"]["num_classes"] = 79;
         d.erase("classes");
       },
       {"box_head.pt: class_logits has 81 columns, model.json roi_heads.num_classes + 1 = 80"}},
      {"rpn_levels",
       [](json& d) {
         d["backbone"]["rpn_levels"] = {"p2", "p3", "p4", "p5"};
         d["anchors"]["sizes"] = {{32}, {64}, {128}, {256}};
       },
       {"backbone_rpn.pt: returned 5/5/4 objectness/deltas/feature tensors, model.json expects "
        "4/4/4"}},
      {"strides",
       [](json& d) {
         d["backbone"]["strides"] = {{"p2", 8}, {"p3", 16}, {"p4", 32}, {"p5", 64}, {"p6", 128}};
       },
       {"backbone_rpn.pt: objectness of level p2 has shape [1, 3, 80, 88] for an input of "
        "320x352, expected a grid of about 40x44 (input / backbone.strides.p2 = 8 in "
        "model.json)"}},
      {"pooler_resolution", [](json& d) { d["roi_heads"]["pooler_resolution"] = 5; },
       {"box_head.pt: forward failed on input [", ", 32, 5, 5]: "}},
      {"swapped",
       [](json& d) {
         d["modules"]["backbone_rpn"]["file"] = "box_head.pt";
         d["modules"]["box_head"]["file"] = "backbone_rpn.pt";
       },
       {"box_head.pt: forward failed on input [1, 3, 320, 352]: "}},
  };
  for (const Case& c : cases) {
    json doc = base;
    c.edit(doc);
    const fs::path dir = make_bundle(tmp.path / c.name, doc);
    const std::string e = run_error(dir, image);
    INFO(std::string(c.name) << ": " << e);
    CHECK(e.rfind(dir.string() + "/", 0) == 0);
    for (const auto& part : c.parts) CHECK_MESSAGE(contains(e, part), "missing: " << part);
    CHECK(!contains(e, "\n"));
  }
}

TEST_CASE("libtorch: files that are not TorchScript modules") {
  TempDir tmp;
  const json doc = fixture_json();
  const cv::Mat image = photo("fruits");
  const auto with_box_head = [&](const std::string& name, const std::string& bytes) {
    const fs::path dir = tmp.path / name;
    fs::create_directories(dir);
    fs::create_symlink(kBundle / "backbone_rpn.pt", dir / "backbone_rpn.pt");
    write_bytes(dir / "box_head.pt", bytes);
    write_bytes(dir / "model.json", doc.dump());
    return dir;
  };
  std::string random(4096, '\0');
  for (std::size_t i = 0; i < random.size(); ++i) random[i] = char((i * 2654435761u) >> 13);
  // A valid zip archive (one stored, empty file) that is not a TorchScript archive.
  const std::string zip = empty_zip("empty.txt");
  for (const auto& [name, bytes] : std::vector<std::pair<std::string, std::string>>{
           {"random", random}, {"zip", zip}, {"text", "not a module\n"}}) {
    const fs::path dir = with_box_head(name, bytes);
    const std::string e = run_error(dir, image);
    INFO(name << ": " << e);
    CHECK(e.rfind((dir / "box_head.pt").string() + ": not a loadable TorchScript module (", 0) == 0);
    CHECK(!contains(e, "\n"));
  }
  // A TorchScript module without forward().
  {
    torch::jit::Module empty("Empty");
    const fs::path dir = with_box_head("no_forward", "");
    empty.save((dir / "box_head.pt").string());
    const std::string e = run_error(dir, image);
    INFO(e);
    CHECK(e == (dir / "box_head.pt").string() +
                   ": the TorchScript module has no forward() method (not an exported rcnn module?)");
  }
  // Missing bundle directory and module file.
  CHECK(run_error(tmp.path / "nope", image) ==
        (tmp.path / "nope").string() + ": bundle directory does not exist");
  const fs::path dir = with_box_head("missing", "x");
  fs::remove(dir / "box_head.pt");
  CHECK(contains(run_error(dir, image), "box_head.pt: module file not found"));
}

TEST_CASE("libtorch: unusual images through the detector") {
  auto det = load_d2(kBundle);
  cv::Mat storage;
  const auto run = [&](const cv::Mat& m) { return det(rcnn::cv_io::view(m, storage)); };
  const cv::Mat fruits = photo("fruits");
  const auto reference = run(fruits).detections;
  REQUIRE(!reference.empty());

  SUBCASE("1x1") {
    const auto r = run(cv::Mat(1, 1, CV_8UC3, cv::Scalar(10, 200, 30)));
    CHECK(r.resized_size == rcnn::Size{320, 320});
    for (const auto& d : r.detections) {
      CHECK(d.box.x1 >= 0.f);
      CHECK(d.box.x2 <= 1.f);
      CHECK(d.box.y2 <= 1.f);
    }
  }
  SUBCASE("grayscale equals the same grey image in BGR") {
    cv::Mat gray, gray3;
    cv::cvtColor(fruits, gray, cv::COLOR_BGR2GRAY);
    cv::cvtColor(gray, gray3, cv::COLOR_GRAY2BGR);
    CHECK(same(run(gray).detections, run(gray3).detections));
  }
  SUBCASE("BGRA: alpha ignored") {
    cv::Mat bgra;
    cv::cvtColor(fruits, bgra, cv::COLOR_BGR2BGRA);
    CHECK(same(run(bgra).detections, reference));
  }
  SUBCASE("16-bit: v * 257 gives the 8-bit result") {
    cv::Mat deep;
    fruits.convertTo(deep, CV_16UC3, 257.0);
    CHECK(same(run(deep).detections, reference));
  }
  SUBCASE("a ROI of a bigger image equals its copy") {
    cv::Mat big(700, 800, CV_8UC3, cv::Scalar(0, 0, 0));
    fruits.copyTo(big(cv::Rect(100, 50, fruits.cols, fruits.rows)));
    const cv::Mat roi = big(cv::Rect(100, 50, fruits.cols, fruits.rows));
    REQUIRE(!roi.isContinuous());
    CHECK(same(run(roi).detections, reference));
  }
  SUBCASE("too large, too thin, then the detector still works") {
    const cv::Mat huge(8, rcnn::kMaxImageSide + 1, CV_8UC3, cv::Scalar(1, 2, 3));
    CHECK(error_of([&] { run(huge); }) == "preprocess: image 8x16385 is too large (max side 16384)");
    const cv::Mat thin(1, 4000, CV_8UC3, cv::Scalar(1, 2, 3));
    CHECK(error_of([&] { run(thin); }) ==
          "preprocess: image 1x4000 resizes to the empty size 0x533");
    CHECK(same(run(fruits).detections, reference));
  }
  SUBCASE("the largest accepted side") {
    cv::Mat wide;
    cv::resize(fruits, wide, cv::Size(rcnn::kMaxImageSide, 512), 0, 0, cv::INTER_NEAREST);
    const auto r = run(wide);
    CHECK(r.resized_size.width == 533);
    CHECK(r.image_size == rcnn::Size{512, rcnn::kMaxImageSide});
  }
}

TEST_CASE("libtorch: batches versus one image at a time") {
  // What equality holds (docs/reference/errors.md, "Batches"). The batch is zero-padded to
  // its largest padded size, as in Detectron2 and torchvision themselves.
  //  - rcnn's own part is exact: each image's slice of the batched backbone input is
  //    bit-identical to its single-image input when its padded size is the batch's, and
  //    with a deterministic executor batch results equal single results bit for bit
  //    (tests/unit/test_robustness.cpp).
  //  - LibTorch's CPU convolutions do not compute an image of a batch bit-identically to the
  //    same image alone (different blocking), so detections agree only up to float
  //    rounding: same classes and boxes, scores within 1e-3.
  //  - A smaller image sees more zero padding. Its Detectron2 anchors do not move (the grid
  //    only grows), but the backbone's features near its bottom / right border change, and
  //    with torchvision anchors (stride_from "image") the anchors of a level whose stride
  //    does not divide the padded size move too: its detections are close, not equal.
  const cv::Mat fruits = photo("fruits");  // padded 320x352
  const cv::Mat messi = photo("messi5");   // padded 320x544
  cv::Mat fruits_flipped;
  cv::flip(fruits, fruits_flipped, 1);
  cv::Mat s1, s2, s3;
  const auto view = [](const cv::Mat& m, cv::Mat& s) { return rcnn::cv_io::view(m, s); };

  TempDir tmp;
  json tv = fixture_json();
  tv["conventions"] = "torchvision";
  tv["anchors"]["stride_from"] = "image";
  tv["anchors"]["round_cell_anchors"] = true;
  const fs::path tv_dir = make_bundle(tmp.path / "torchvision", tv);

  for (const fs::path& dir : {kBundle, tv_dir}) {
    auto det = rcnn::load<Exec>(dir, {1});
    const std::string name = dir == tv_dir ? "torchvision" : "detectron2";
    CAPTURE(name);
    rcnn::Trace single_trace, batch_trace;
    const auto single_f = det(view(fruits, s1), &single_trace).detections;
    const auto single_ff = det(view(fruits_flipped, s2)).detections;
    const auto single_m = det(view(messi, s3)).detections;
    REQUIRE(single_f.size() >= 20);

    // Same-size batch.
    const rcnn::ImageView same_size[] = {view(fruits, s1), view(fruits_flipped, s2)};
    std::vector<rcnn::DetectionResult> b1;
    det.run(std::span<const rcnn::ImageView>(same_size), b1, &batch_trace);
    CHECK(batch_trace.padded == single_trace.padded);
    CHECK(batch_trace.input == single_trace.input);  // rcnn's part: bit-identical
    for (const auto& [got, want] : {std::pair{&b1[0].detections, &single_f},
                                    std::pair{&b1[1].detections, &single_ff}}) {
      const std::size_t m = matched(*want, *got, 0.99f, 1e-3f);
      MESSAGE(name << " anchors, same-size batch: " << m << " of " << got->size()
                   << " detections match the " << want->size()
                   << " single-image ones (IoU >= 0.99, |score diff| <= 1e-3); bit-identical: "
                   << std::string(same(*got, *want) ? "yes" : "no"));
      CHECK(got->size() == want->size());
      CHECK(m == want->size());
    }

    // Mixed sizes: messi5 sets the padded size, fruits gets extra padding.
    const rcnn::ImageView mixed[] = {view(fruits, s1), view(messi, s3)};
    const auto b2 = det(std::span<const rcnn::ImageView>(mixed));
    CHECK(matched(single_m, b2[1].detections, 0.99f, 1e-3f) == single_m.size());
    CHECK(b2[1].detections.size() == single_m.size());
    const std::size_t m = matched(single_f, b2[0].detections);
    MESSAGE(name << " anchors, fruits in a batch padded to 320x544: " << m << " of "
                 << b2[0].detections.size() << " detections match the " << single_f.size()
                 << " single-image ones (IoU >= 0.9, |score diff| <= 0.02)");
    CHECK(b2[0].image_size == rcnn::Size{480, 512});
    CHECK(b2[0].detections.size() <= 100);
    for (const auto& d : b2[0].detections) {
      CHECK(d.box.x1 >= 0.f);
      CHECK(d.box.x2 <= 512.f);
      CHECK(d.box.y2 <= 480.f);
    }
    CHECK(m * 2 >= single_f.size());
  }
}

TEST_CASE("libtorch: threads with their own replicas are bit-identical to one thread") {
  const std::vector<cv::Mat> images = [] {
    const cv::Mat f = photo("fruits"), m = photo("messi5");
    cv::Mat small, gray;
    cv::resize(f, small, cv::Size(200, 150));
    cv::cvtColor(m, gray, cv::COLOR_BGR2GRAY);
    return std::vector<cv::Mat>{f, m, small, gray};
  }();
  std::vector<std::vector<rcnn::Detection>> reference;
  {
    auto det = load_d2(kBundle);
    cv::Mat s;
    for (const auto& im : images) reference.push_back(det(rcnn::cv_io::view(im, s)).detections);
  }
  constexpr int kThreads = 3;

  SUBCASE("one Detector per thread") {
    std::vector<std::vector<std::vector<rcnn::Detection>>> got(kThreads);
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        auto det = load_d2(kBundle);
        got[std::size_t(t)].resize(images.size());
        cv::Mat s;
        start.arrive_and_wait();
        for (std::size_t k = 0; k < 2 * images.size(); ++k) {
          const std::size_t i = (k + std::size_t(t)) % images.size();
          got[std::size_t(t)][i] = det(rcnn::cv_io::view(images[i], s)).detections;
        }
      });
    for (auto& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t)
      for (std::size_t i = 0; i < images.size(); ++i) {
        CAPTURE(t);
        CAPTURE(i);
        CHECK(same(got[std::size_t(t)][i], reference[i]));
      }
  }
  SUBCASE("a pool of 2 replicas behind a mutex, shared by 4 threads") {
    std::vector<D2Detector> pool;
    pool.push_back(load_d2(kBundle));
    pool.push_back(load_d2(kBundle));
    std::vector<bool> busy(pool.size(), false);
    std::mutex mutex;
    std::condition_variable freed;
    std::vector<std::vector<rcnn::Detection>> got(4 * images.size());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (std::size_t i = 0; i < images.size(); ++i) {
          std::size_t r = 0;
          {
            std::unique_lock lock(mutex);
            freed.wait(lock, [&] {
              for (r = 0; r < busy.size(); ++r)
                if (!busy[r]) return true;
              return false;
            });
            busy[r] = true;
          }
          cv::Mat s;
          got[std::size_t(t) * images.size() + i] =
              pool[r](rcnn::cv_io::view(images[(i + std::size_t(t)) % images.size()], s)).detections;
          {
            std::lock_guard lock(mutex);
            busy[r] = false;
          }
          freed.notify_one();
        }
      });
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t)
      for (std::size_t i = 0; i < images.size(); ++i)
        CHECK(same(got[std::size_t(t) * images.size() + i],
                   reference[(i + std::size_t(t)) % images.size()]));
  }
}

TEST_CASE("libtorch: a soak of a few hundred images keeps resident memory flat") {
  // Smaller resized images keep the soak quick; sizes vary so that workspaces are resized.
  TempDir tmp;
  json doc = fixture_json();
  doc["input"]["resize"]["min_size"] = 128;
  doc["input"]["resize"]["max_size"] = 213;
  auto det = load_d2(make_bundle(tmp.path / "small", doc));
  const cv::Mat fruits = photo("fruits"), messi = photo("messi5");
  std::vector<cv::Mat> images;
  for (int i = 0; i < 6; ++i) {
    cv::Mat m;
    cv::resize(i % 2 ? messi : fruits, m, cv::Size(160 + 37 * i, 120 + 23 * i));
    images.push_back(m);
  }
  images.push_back(cv::Mat(1, 1, CV_8UC3, cv::Scalar(5, 6, 7)));
  constexpr int kWarmup = 40, kImages = 300;
  std::size_t after_warmup = 0, peak = 0, errors = 0;
  cv::Mat s;
  std::vector<rcnn::DetectionResult> results;
  for (int i = 0; i < kImages; ++i) {
    if (i % 25 == 24) {  // error paths are part of the soak
      const cv::Mat bad(2, 20000, CV_8UC3);
      errors += error_of([&] { det(rcnn::cv_io::view(bad, s)); }).empty() ? 0 : 1;
    }
    if (i % 10 == 9) {  // and batches
      const rcnn::ImageView two[] = {rcnn::cv_io::view(images[0], s),
                                     rcnn::cv_io::view(images[3], s)};
      det.run(std::span<const rcnn::ImageView>(two), results);
    } else {
      det(rcnn::cv_io::view(images[std::size_t(i) % images.size()], s));
    }
    if (i == kWarmup) after_warmup = resident_bytes();
    if (i > kWarmup) peak = std::max(peak, resident_bytes());
  }
  const double growth_mb = (double(peak) - double(after_warmup)) / (1 << 20);
  MESSAGE("soak: " << kImages << " images, resident " << after_warmup / (1 << 20)
                   << " MiB after warm-up, peak " << peak / (1 << 20) << " MiB (growth "
                   << growth_mb << " MiB)");
  CHECK(errors == kImages / 25);
  CHECK(growth_mb < 64.0);
}
