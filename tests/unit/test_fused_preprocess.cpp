// The one-pass preprocessing policies (fused_preprocess.hpp) and their OpenMP versions
// (omp_preprocess.hpp) against the reference policies they replace (preprocess.hpp, which
// test_resize.cpp checks against Pillow, torch and Detectron2): every output float
// bit-identical (memcmp), over upscales, downscales (Pillow kernel sizes 3 to 11), unchanged
// axes, fixed sizes, static padding, 1/3/4-channel images with padded row steps, both channel
// orders, and 1 to 3 threads (the blocks must not change the result).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "rcnn/preprocess/fused_preprocess.hpp"
#include "rcnn/preprocess/omp_preprocess.hpp"
#include "rcnn/preprocess/preprocess.hpp"

namespace {

/// A photo-like image: smooth gradients, an edge and noise, so that every byte value and
/// the clip8 saturation at 0 and 255 occur.
std::vector<std::uint8_t> synthetic(int h, int w, int channels, std::size_t step, unsigned seed) {
  std::vector<std::uint8_t> img(step * std::size_t(h), 7);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-40, 40);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c) {
        int v = (x * 255) / std::max(1, w - 1) * (c + 1) / 3 + (y * 97) / std::max(1, h) +
                ((x / 5 + y / 3) % 2 ? 120 : 0) + noise(rng);
        if ((x + 2 * y + c) % 11 == 0) v = (x + y) % 2 ? 300 : -50;  // saturating spikes
        img[std::size_t(y) * step + std::size_t(x) * channels + c] =
            std::uint8_t(std::min(255, std::max(0, v)));
      }
  return img;
}

struct Case {
  int h, w, channels;
  bool bgr;
  rcnn::ResizeConfig resize;
  int size_divisibility;
  std::optional<rcnn::Size> pad_to;
};

rcnn::ResizeConfig shortest(int min_size, int max_size) {
  rcnn::ResizeConfig r;
  r.min_size = min_size;
  r.max_size = max_size;
  return r;
}
rcnn::ResizeConfig fixed(int h, int w) {
  rcnn::ResizeConfig r;
  r.mode = rcnn::ResizeConfig::Mode::fixed;
  r.height = h;
  r.width = w;
  return r;
}

std::vector<Case> cases() {
  return {
      {342, 548, 3, true, shortest(800, 1333), 32, std::nullopt},    // the bench photo, upscale
      {342, 548, 3, false, fixed(800, 800), 32, rcnn::Size{800, 800}},  // fixed800 fixture
      {480, 640, 4, true, shortest(320, 533), 32, std::nullopt},     // RGBA, downscale (k=5)
      {1200, 900, 3, true, shortest(240, 400), 0, std::nullopt},     // downscale k=11
      {700, 333, 1, true, shortest(200, 1333), 32, rcnn::Size{640, 320}},  // gray, k=7, static pad
      {64, 80, 3, false, fixed(64, 200), 16, std::nullopt},          // height unchanged
      {64, 80, 3, true, fixed(150, 80), 1, std::nullopt},            // width unchanged
      {64, 80, 3, true, fixed(64, 80), 32, std::nullopt},            // nothing changes
      {1, 1, 3, true, fixed(5, 7), 32, std::nullopt},                // 1x1 (torch: channels-last kernel)
      {2, 3, 3, true, fixed(2, 2), 0, std::nullopt},                 // narrower than the kernel
      {5, 300, 3, true, fixed(4, 17), 0, std::nullopt},              // strong horizontal shrink
  };
}

template <class Ref, class Fast>
void check_same(Ref& ref, Fast& fast, bool torchvision, const std::string& name) {
  int index = 0;
  for (const Case& k : cases()) {
    CAPTURE(name);
    CAPTURE(index);
    ++index;
    const std::size_t step = std::size_t(k.w) * k.channels + 5;  // a padded row step
    const auto img = synthetic(k.h, k.w, k.channels, step, unsigned(index));
    const rcnn::ImageView view{img.data(), k.h, k.w, k.channels, step, k.bgr};
    rcnn::InputConfig cfg;
    cfg.resize = k.resize;
    cfg.size_divisibility = k.size_divisibility;
    if (torchvision) {
      cfg.bgr = false;
      cfg.pixel_scale = 1.f / 255.f;
      cfg.pixel_mean = {0.485f, 0.456f, 0.406f};
      cfg.pixel_std = {0.229f, 0.224f, 0.225f};
    } else {
      cfg.pixel_mean = {103.53f, 116.28f, 123.675f};
      cfg.pixel_std = {57.375f, 57.12f, 58.395f};
    }
    std::vector<float> expected, got(7, 123.f);  // got: stale contents must be overwritten
    const rcnn::PreprocessResult a = ref(view, cfg, expected, k.pad_to);
    for (int pass = 0; pass < 2; ++pass) {  // the second pass reuses the buffers
      std::fill(got.begin(), got.end(), 123.f);
      const rcnn::PreprocessResult b = fast(view, cfg, got, k.pad_to);
      CHECK(b.original == a.original);
      CHECK(b.resized == a.resized);
      CHECK(b.padded == a.padded);
      REQUIRE(got.size() == expected.size());
      std::size_t differ = 0;
      for (std::size_t i = 0; i < got.size(); ++i)
        differ += std::memcmp(&got[i], &expected[i], sizeof(float)) != 0;
      CHECK(differ == 0);
    }
  }
}

}  // namespace

TEST_CASE("preprocess: FusedTorchvisionPreprocess and OmpTorchvisionPreprocess are bit-identical to TorchvisionPreprocess") {
  rcnn::TorchvisionPreprocess ref;
  rcnn::FusedTorchvisionPreprocess fused;
  check_same(ref, fused, true, "fused");
  for (int t : {1, 2, 3}) {
    rcnn::OmpTorchvisionPreprocess omp;
    omp.num_threads = t;
    check_same(ref, omp, true, "omp x" + std::to_string(t));
  }
  // The channels-last kernel (an image handed over as a permuted HWC tensor) goes through
  // the reference path of the fused policy.
  rcnn::TorchvisionPreprocess ref_cl;
  ref_cl.memory_format = rcnn::TorchMemoryFormat::channels_last;
  rcnn::FusedTorchvisionPreprocess fused_cl;
  fused_cl.reference.memory_format = rcnn::TorchMemoryFormat::channels_last;
  check_same(ref_cl, fused_cl, true, "channels_last");
}

TEST_CASE("preprocess: FusedDetectron2Preprocess and OmpDetectron2Preprocess are bit-identical to Detectron2Preprocess") {
  rcnn::Detectron2Preprocess ref;
  rcnn::FusedDetectron2Preprocess fused;
  check_same(ref, fused, false, "fused");
  for (int t : {1, 2, 3}) {
    rcnn::OmpDetectron2Preprocess omp;
    omp.num_threads = t;
    check_same(ref, omp, false, "omp x" + std::to_string(t));
  }
}

TEST_CASE("preprocess: the fused policies reject bad images like the reference") {
  rcnn::InputConfig cfg;
  std::vector<float> out;
  std::vector<std::uint8_t> px(64 * 64 * 4, 0);
  rcnn::FusedDetectron2Preprocess d2;
  rcnn::OmpTorchvisionPreprocess tv;
  tv.num_threads = 2;
  for (const rcnn::ImageView& v :
       {rcnn::ImageView{nullptr, 10, 10, 3, 0, true}, rcnn::ImageView{px.data(), 0, 10, 3, 0, true},
        rcnn::ImageView{px.data(), 8, 8, 2, 0, true}, rcnn::ImageView{px.data(), 8, 8, 3, 10, true}}) {
    CHECK_THROWS_AS(d2(v, cfg, out), rcnn::Error);
    CHECK_THROWS_AS(tv(v, cfg, out), rcnn::Error);
  }
}
