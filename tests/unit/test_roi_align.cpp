// RoIAlign policies (RoIAlignRef, OmpRoIAlign, SimdRoIAlign on each instruction set the CPU
// has) and the FPN level mapper against torchvision 0.14's roi_align / MultiScaleRoIAlign and
// Detectron2's level formula (references from tests/reference/gen_ops.py), and against each
// other, on NCHW and channels-last (NHWC) feature maps.

#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "rcnn/concepts.hpp"
#include "rcnn/roi_align/level_mapper.hpp"
#include "rcnn/roi_align/omp_roi_align.hpp"
#include "rcnn/roi_align/roi_align_ref.hpp"
#include "rcnn/roi_align/simd_roi_align.hpp"

namespace {

const std::string kOpsDir = RCNN_REFERENCE_DIR "/gen_ops";

nlohmann::json ops_manifest() {
  std::ifstream f(kOpsDir + "/manifest.json");
  REQUIRE_MESSAGE(f.good(), "missing " << kOpsDir
                                       << "/manifest.json: run tests/reference/gen_ops.py");
  return nlohmann::json::parse(f);
}

template <class T>
xt::xarray<T> load(const std::string& case_dir, const std::string& name) {
  return xt::load_npy<T>(kOpsDir + "/" + case_dir + "/" + name + ".npy");
}

template <class T>
std::vector<T> load_vec(const std::string& case_dir, const std::string& name) {
  const auto a = load<T>(case_dir, name);
  return std::vector<T>(a.begin(), a.end());
}

std::vector<rcnn::Box> load_boxes(const std::string& case_dir, const std::string& name) {
  const std::vector<float> f = load_vec<float>(case_dir, name);
  std::vector<rcnn::Box> boxes(f.size() / 4);
  for (std::size_t i = 0; i < boxes.size(); ++i)
    boxes[i] = {f[4 * i], f[4 * i + 1], f[4 * i + 2], f[4 * i + 3]};
  return boxes;
}

std::vector<int> load_levels(const std::string& case_dir, const std::string& name) {
  const auto v = load_vec<std::int64_t>(case_dir, name);
  return std::vector<int>(v.begin(), v.end());
}

/// The four multi-level maps of gen_ops.py, kept alive with their views.
struct Maps {
  std::vector<xt::xarray<float>> arrays;
  std::vector<rcnn::FeatureMap> views;
  explicit Maps(const nlohmann::json& meta) {
    const std::string dir = meta["dir"];
    for (std::size_t l = 0; l < meta["strides"].size(); ++l) {
      std::string name = "p";
      name += std::to_string(l);
      arrays.push_back(load<float>(dir, name));
    }
    for (const auto& a : arrays)
      views.push_back({a.data(), int(a.shape()[0]), int(a.shape()[1]), int(a.shape()[2])});
  }
};

rcnn::PoolerConfig pooler_config(const nlohmann::json& c) {
  rcnn::PoolerConfig cfg;
  cfg.resolution = c["resolution"];
  cfg.sampling_ratio = c["sampling_ratio"];
  cfg.aligned = c["aligned"];
  cfg.canonical_box_size = 224.f;
  cfg.canonical_level = 4;
  cfg.level_eps = c["level_eps"].get<float>();
  cfg.level_eps_inside_log = c["level_eps_inside_log"];
  return cfg;
}

std::vector<float> scales_of(const nlohmann::json& c) {
  std::vector<float> s;
  for (const auto& v : c["scales"]) s.push_back(float(v.get<double>()));  // kernel: float(scale)
  return s;
}

struct Diff {
  double max_abs = 0, max_rel = 0;
  std::size_t not_identical = 0;
};

Diff compare(std::span<const float> got, std::span<const float> ref) {
  Diff d;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::bit_cast<std::uint32_t>(got[i]) != std::bit_cast<std::uint32_t>(ref[i]))
      ++d.not_identical;
    const double a = std::abs(double(got[i]) - double(ref[i]));
    d.max_abs = std::max(d.max_abs, a);
    d.max_rel = std::max(d.max_rel, a / std::max(1.0, std::abs(double(ref[i]))));
  }
  return d;
}

bool bit_identical(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

/// OmpRoIAlign with a fixed thread count, for TEST_CASE_TEMPLATE.
template <int N>
struct OmpRoIAlignN : rcnn::OmpRoIAlign {
  OmpRoIAlignN() { num_threads = N; }
};

/// SimdRoIAlign forced to one instruction set, with a fixed thread count.
template <rcnn::SimdIsa Isa, int N>
struct SimdRoIAlignN : rcnn::SimdRoIAlign {
  SimdRoIAlignN() {
    num_threads = N;
    isa = Isa;
  }
};
static_assert(rcnn::RoIAlignPolicy<rcnn::SimdRoIAlign>);
static_assert(rcnn::RoIAlignPolicy<SimdRoIAlignN<rcnn::SimdIsa::avx2, 2>>);

using SimdBaseline1 = SimdRoIAlignN<rcnn::SimdIsa::baseline, 1>;
using SimdBaseline3 = SimdRoIAlignN<rcnn::SimdIsa::baseline, 3>;
using SimdAvx2x1 = SimdRoIAlignN<rcnn::SimdIsa::avx2, 1>;
using SimdAvx2x2 = SimdRoIAlignN<rcnn::SimdIsa::avx2, 2>;
using SimdAvx512x1 = SimdRoIAlignN<rcnn::SimdIsa::avx512, 1>;
using SimdAvx512x3 = SimdRoIAlignN<rcnn::SimdIsa::avx512, 3>;

/// False (with a message) for a SimdRoIAlign forced to an instruction set this CPU lacks:
/// such a test has nothing to run here (it runs on a CPU that has it).
template <class Pool>
bool runnable(const Pool& pool) {
  if constexpr (std::is_base_of_v<rcnn::SimdRoIAlign, Pool>) {
    if (!rcnn::simd_isa_supported(pool.isa)) {
      MESSAGE("skipped: this CPU has no " << rcnn::simd_isa_name(pool.isa));
      return false;
    }
  }
  return true;
}

/// Channels-last copies of NCHW maps, with their views.
struct NhwcMaps {
  std::vector<std::vector<float>> data;
  std::vector<rcnn::FeatureMap> views;
  explicit NhwcMaps(std::span<const rcnn::FeatureMap> maps) {
    for (const rcnn::FeatureMap& m : maps) {
      std::vector<float> d(m.size());
      const std::size_t plane = std::size_t(m.height) * std::size_t(m.width);
      for (std::size_t c = 0; c < std::size_t(m.channels); ++c)
        for (std::size_t p = 0; p < plane; ++p) d[p * std::size_t(m.channels) + c] = m.data[c * plane + p];
      data.push_back(std::move(d));
    }
    for (std::size_t l = 0; l < maps.size(); ++l)
      views.push_back({data[l].data(), maps[l].channels, maps[l].height, maps[l].width,
                       rcnn::Layout::nhwc});
  }
};

}  // namespace

TEST_CASE("assign_levels matches the frameworks' level mappers") {
  const nlohmann::json m = ops_manifest();
  // The RoIs of the roi_align cases, with the levels the reference used.
  for (const auto& c : m["roi_align"]) {
    const std::string dir = c["dir"];
    CAPTURE(dir);
    const auto rois = load_boxes(dir, "rois");
    const auto expected = load_levels(dir, "levels");
    std::vector<int> levels(rois.size());
    rcnn::assign_levels(rois, pooler_config(c), c["min_level"], c["max_level"], levels);
    CHECK(levels == expected);
  }
  // 200k boxes: random sizes plus boxes within a few ulps of every level boundary.
  for (const auto& c : m["levels"]) {
    const std::string dir = c["dir"];
    const auto boxes = load_boxes(dir, "boxes");
    for (const bool d2 : {true, false}) {
      rcnn::PoolerConfig cfg;
      cfg.level_eps_inside_log = d2;
      cfg.level_eps = d2 ? 1e-8f : 1e-6f;
      const auto expected = load_levels(dir, d2 ? "levels_detectron2" : "levels_torchvision");
      std::vector<int> levels(boxes.size());
      rcnn::assign_levels(boxes, cfg, c["min_level"], c["max_level"], levels);
      std::size_t mismatches = 0;
      for (std::size_t i = 0; i < levels.size(); ++i) mismatches += levels[i] != expected[i];
      MESSAGE(std::string(d2 ? "detectron2" : "torchvision") << " level mapper: " << mismatches
                                                  << " mismatches in " << levels.size()
                                                  << " boxes");
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("std::log2(float) versus torch.log2 on float tensors (measured)") {
  // torch (AVX2 build) evaluates log2 of full 8-lane vectors with SLEEF's Sleef_log2f8_u10
  // and the tail with libm; rcnn uses libm's log2f. Measure how often they differ.
  const nlohmann::json m = ops_manifest();
  const std::string dir = m["log2"]["dir"];
  const auto x = load_vec<float>(dir, "x");
  const auto y = load_vec<float>(dir, "torch_log2");
  std::size_t differ = 0;
  std::int64_t max_ulp = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float ours = std::log2(x[i]);
    if (std::bit_cast<std::uint32_t>(ours) == std::bit_cast<std::uint32_t>(y[i])) continue;
    ++differ;
    const auto ulp = std::abs(std::int64_t(std::bit_cast<std::int32_t>(ours)) -
                              std::int64_t(std::bit_cast<std::int32_t>(y[i])));
    max_ulp = std::max(max_ulp, ulp);
  }
  MESSAGE("log2f vs torch.log2: " << differ << " of " << x.size()
                                  << " values differ, max " << max_ulp << " ulp");
  CHECK(max_ulp <= 1);
  // sqrt is correctly rounded on both sides (sqrtss / vsqrtps): expect no difference.
  const auto a = load_vec<float>(dir, "sqrt_x");
  const auto r = load_vec<float>(dir, "torch_sqrt");
  std::size_t sqrt_differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    sqrt_differ += std::bit_cast<std::uint32_t>(std::sqrt(a[i])) != std::bit_cast<std::uint32_t>(r[i]);
  MESSAGE("sqrtf vs torch.sqrt: " << sqrt_differ << " of " << a.size() << " values differ");
  CHECK(sqrt_differ == 0);
}

TEST_CASE_TEMPLATE("RoIAlign matches torchvision roi_align / MultiScaleRoIAlign", Pool,
                   rcnn::RoIAlignRef, OmpRoIAlignN<1>, OmpRoIAlignN<3>, SimdBaseline1,
                   SimdAvx2x2, SimdAvx512x1, SimdAvx512x3) {
  const nlohmann::json m = ops_manifest();
  const Maps maps(m["roi_align_maps"]);
  const NhwcMaps nhwc(maps.views);
  Pool pool;
  if (!runnable(pool)) return;
  std::vector<float> out;
  REQUIRE(m["roi_align"].size() == 3);
  for (const auto& c : m["roi_align"]) {
    const std::string dir = c["dir"];
    CAPTURE(dir);
    const auto rois = load_boxes(dir, "rois");
    const auto levels = load_levels(dir, "levels");
    const auto ref = load_vec<float>(dir, "out");
    const rcnn::PoolerConfig cfg = pooler_config(c);
    const auto scales = scales_of(c);
    for (const bool channels_last : {false, true}) {
      CAPTURE(channels_last);
      out.assign(ref.size(), -12345.f);  // no pre-zeroing needed: poison it
      pool(channels_last ? nhwc.views : maps.views, scales, rois, levels, cfg, out);
      const Diff d = compare(out, ref);
      MESSAGE(dir << (channels_last ? " (NHWC)" : " (NCHW)") << ": max |diff| " << d.max_abs
                  << ", max rel " << d.max_rel << ", " << d.not_identical << " of "
                  << ref.size() << " values not bit-identical");
      CHECK(d.max_rel <= 1e-5);
      CHECK(d.not_identical == 0);  // measured: bit-identical to torchvision 0.14 (Debian)
    }
  }
}

TEST_CASE("OmpRoIAlign is bit-identical to RoIAlignRef (thread counts, work splits)") {
  std::mt19937 rng(4242);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int channels = 11;  // one full group of 8 channels + a tail of 3
  const int sizes[3][2] = {{37, 51}, {19, 26}, {1, 3}};  // odd sizes, a 1-row map
  std::vector<std::vector<float>> storage;
  std::vector<rcnn::FeatureMap> maps;
  for (const auto& s : sizes) {
    storage.emplace_back(std::size_t(channels) * s[0] * s[1]);
    for (auto& v : storage.back()) v = nd(rng);
  }
  for (std::size_t l = 0; l < 3; ++l)
    maps.push_back({storage[l].data(), channels, sizes[l][0], sizes[l][1]});
  const std::vector<float> scales{0.25f, 0.125f, 1.f / 64.f};
  std::uniform_real_distribution<float> pos(-40.f, 240.f), side(-2.f, 150.f);
  std::vector<float> ref, got;
  rcnn::RoIAlignRef reference;
  for (const int threads : {1, 2, 4, 7}) {
    rcnn::OmpRoIAlign pool{threads};
    for (const int num_rois : {0, 1, 2, 3, 9, 40, 200}) {
      std::vector<rcnn::Box> rois(static_cast<std::size_t>(num_rois));
      std::vector<int> levels(static_cast<std::size_t>(num_rois));
      for (std::size_t r = 0; r < rois.size(); ++r) {
        const float x = pos(rng), y = pos(rng);
        rois[r] = {x, y, x + std::max(side(rng), 0.f), y + std::max(side(rng), 0.f)};
        levels[r] = int(rng() % 3);
      }
      for (const auto& [res, ratio, aligned] :
           {std::tuple{7, 0, true}, std::tuple{7, 2, false}, std::tuple{5, 3, true},
            std::tuple{14, 0, false}, std::tuple{3, 1, true}}) {
        rcnn::PoolerConfig cfg;
        cfg.resolution = res;
        cfg.sampling_ratio = ratio;
        cfg.aligned = aligned;
        const std::size_t n = rois.size() * channels * std::size_t(res) * res;
        ref.assign(n, 1.f);
        got.assign(n, 2.f);
        reference(maps, scales, rois, levels, cfg, ref);
        pool(maps, scales, rois, levels, cfg, got);
        CAPTURE(threads);
        CAPTURE(num_rois);
        CAPTURE(res);
        CHECK(bit_identical(got, ref));
      }
    }
  }
}

TEST_CASE_TEMPLATE("Optimised RoIAlign policies are bit-identical to RoIAlignRef (layouts, "
                   "channel tails, borders, degenerate RoIs)",
                   Pool, OmpRoIAlignN<1>, OmpRoIAlignN<2>, SimdBaseline1, SimdBaseline3,
                   SimdAvx2x1, SimdAvx2x2, SimdAvx512x1, SimdAvx512x3) {
  Pool pool;
  if (!runnable(pool)) return;
  std::mt19937 rng(777);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int sizes[4][2] = {{50, 38}, {25, 19}, {13, 10}, {1, 5}};  // odd sizes, a 1-row map
  const std::vector<float> scales{0.25f, 0.125f, 0.0625f, 0.03125f};
  // Channel counts around the vector widths (4, 8, 16 floats) and the 64-channel block.
  for (const int channels : {1, 3, 4, 9, 16, 21, 40, 64, 83}) {
    std::vector<std::vector<float>> storage;
    std::vector<rcnn::FeatureMap> maps;
    for (const auto& s : sizes) {
      storage.emplace_back(std::size_t(channels) * std::size_t(s[0] * s[1]));
      for (auto& v : storage.back()) v = nd(rng);
    }
    for (std::size_t l = 0; l < 4; ++l)
      maps.push_back({storage[l].data(), channels, sizes[l][0], sizes[l][1]});
    const NhwcMaps nhwc(maps);
    // Random RoIs (some reaching outside, some empty) plus fixed ones on every border, fully
    // outside, a point, inverted and covering the map, on every level.
    std::uniform_real_distribution<float> pos(-40.f, 200.f), side(-2.f, 150.f);
    std::vector<rcnn::Box> rois;
    std::vector<int> levels;
    for (int r = 0; r < 24; ++r) {
      const float x = pos(rng), y = pos(rng);
      rois.push_back({x, y, x + std::max(side(rng), 0.f), y + std::max(side(rng), 0.f)});
      levels.push_back(int(rng() % 4));
    }
    for (int l = 0; l < 4; ++l) {
      const float w = float(sizes[l][1]) / scales[std::size_t(l)];
      const float h = float(sizes[l][0]) / scales[std::size_t(l)];
      for (const rcnn::Box b : {rcnn::Box{0, 0, w, h}, rcnn::Box{-9, -9, 12, 12},
                                rcnn::Box{w - 10, h - 10, w + 5, h + 5}, rcnn::Box{w - 3, 0, w, h},
                                rcnn::Box{w + 20, h + 20, w + 60, h + 60},
                                rcnn::Box{-80, -80, -30, -30}, rcnn::Box{7, 7, 7, 7},
                                rcnn::Box{30, 30, 10, 10}, rcnn::Box{-20, -20, 2 * w, 2 * h}}) {
        rois.push_back(b);
        levels.push_back(l);
      }
    }
    for (const auto& [res, ratio, aligned] :
         {std::tuple{7, 0, true}, std::tuple{7, 2, false}, std::tuple{7, 0, false},
          std::tuple{14, 0, true}, std::tuple{14, 2, false}, std::tuple{5, 3, true}}) {
      rcnn::PoolerConfig cfg;
      cfg.resolution = res;
      cfg.sampling_ratio = ratio;
      cfg.aligned = aligned;
      const std::size_t n = rois.size() * std::size_t(channels) * std::size_t(res * res);
      std::vector<float> ref(n, 1.f), got(n);
      rcnn::RoIAlignRef{}(maps, scales, rois, levels, cfg, ref);
      for (const bool channels_last : {false, true}) {
        std::fill(got.begin(), got.end(), 2.f);
        pool(channels_last ? nhwc.views : maps, scales, rois, levels, cfg, got);
        CAPTURE(channels);
        CAPTURE(res);
        CAPTURE(ratio);
        CAPTURE(aligned);
        CAPTURE(channels_last);
        CHECK(bit_identical(got, ref));
      }
    }
  }
}

TEST_CASE("RoIAlignRef reads NHWC maps as it reads NCHW ones") {
  std::vector<float> data(5 * 6 * 7);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = float(i % 13) * 0.5f - 2.f;
  const std::vector<rcnn::FeatureMap> nchw{{data.data(), 5, 6, 7}};
  const NhwcMaps nhwc(nchw);
  CHECK(nhwc.views[0].pixel_stride() == 5);
  CHECK(nhwc.views[0].channel_stride() == 1);
  CHECK(nchw[0].pixel_stride() == 1);
  CHECK(nchw[0].channel_stride() == 42);
  const std::vector<float> scales{1.f};
  const std::vector<rcnn::Box> rois{{0.3f, 0.2f, 5.5f, 4.1f}, {-2, -2, 3, 3}};
  const std::vector<int> levels{0, 0};
  rcnn::PoolerConfig cfg;
  std::vector<float> a(2 * 5 * 49), b(a.size(), 1.f);
  rcnn::RoIAlignRef{}(nchw, scales, rois, levels, cfg, a);
  rcnn::RoIAlignRef{}(nhwc.views, scales, rois, levels, cfg, b);
  CHECK(bit_identical(a, b));
  // Not all zeros: the comparison above means something.
  CHECK(std::any_of(a.begin(), a.end(), [](float v) { return v != 0.f; }));
}

TEST_CASE("SimdRoIAlign: instruction-set dispatch") {
  // automatic resolves to an instruction set this CPU has; the baseline is always there.
  const rcnn::SimdRoIAlign automatic;
  const rcnn::SimdIsa chosen = automatic.kernel_isa();
  CHECK(chosen != rcnn::SimdIsa::automatic);
  CHECK(rcnn::simd_isa_supported(chosen));
  CHECK(rcnn::simd_isa_supported(rcnn::SimdIsa::baseline));
  MESSAGE("SimdRoIAlign runs " << std::string(rcnn::simd_isa_name(chosen)) << " here (avx2: "
                               << rcnn::simd_isa_supported(rcnn::SimdIsa::avx2) << ", avx512: "
                               << rcnn::simd_isa_supported(rcnn::SimdIsa::avx512) << ")");
  // A forced instruction set the CPU lacks is an error, never an illegal instruction.
  for (const rcnn::SimdIsa isa : {rcnn::SimdIsa::avx2, rcnn::SimdIsa::avx512}) {
    const rcnn::SimdRoIAlign forced{1, isa};
    if (rcnn::simd_isa_supported(isa))
      CHECK(forced.kernel_isa() == isa);
    else
      CHECK_THROWS_AS(static_cast<void>(forced.kernel_isa()), rcnn::Error);
  }
}

TEST_CASE("RoIAlign: empty / inverted RoIs give zeros; validation errors") {
  std::vector<float> data(2 * 8 * 8, 1.f);
  const std::vector<rcnn::FeatureMap> maps{{data.data(), 2, 8, 8}};
  const std::vector<float> scales{1.f};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<rcnn::Box> rois{
      {5, 5, 5, 5}, {6, 6, 2, 2}, {100, 100, 120, 120}, {nan, 1, 5, 5}, {1, 1, 5, nan}};
  const std::vector<int> levels{0, 0, 0, 0, 0};
  rcnn::PoolerConfig cfg;  // aligned, adaptive sampling
  std::vector<float> out(rois.size() * 2 * 49, 7.f);
  // Adaptive sampling: empty and inverted RoIs have no samples (grid 0); the RoI outside the
  // map and the NaN RoIs have no valid samples. With a fixed ratio the empty / inverted RoIs
  // do sample the map (a point, or a mirrored grid), as in the kernel.
  const auto zero_roi = [&](std::size_t r) {
    return std::all_of(out.begin() + std::ptrdiff_t(r * 98), out.begin() + std::ptrdiff_t(r * 98 + 98),
                       [](float v) { return v == 0.f; });
  };
  for (const int ratio : {0, 2}) {
    cfg.sampling_ratio = ratio;
    for (const bool omp : {false, true}) {
      std::fill(out.begin(), out.end(), 7.f);
      if (omp)
        rcnn::OmpRoIAlign{2}(maps, scales, rois, levels, cfg, out);
      else
        rcnn::RoIAlignRef{}(maps, scales, rois, levels, cfg, out);
      CAPTURE(ratio);
      CAPTURE(omp);
      CHECK(zero_roi(0) == (ratio == 0));
      CHECK(zero_roi(1) == (ratio == 0));
      CHECK(zero_roi(2));
      CHECK(zero_roi(3));
      CHECK(zero_roi(4));
    }
  }
  cfg.sampling_ratio = 0;

  const std::vector<int> bad_levels{0, 1, 0, 0, 0};
  CHECK_THROWS_AS(rcnn::RoIAlignRef{}(maps, scales, rois, bad_levels, cfg, out), rcnn::Error);
  CHECK_THROWS_AS(rcnn::OmpRoIAlign{}(maps, scales, rois, bad_levels, cfg, out), rcnn::Error);
  CHECK_THROWS_AS(rcnn::SimdRoIAlign{}(maps, scales, rois, bad_levels, cfg, out), rcnn::Error);
  std::vector<float> small(10);
  CHECK_THROWS_AS(rcnn::RoIAlignRef{}(maps, scales, rois, levels, cfg, small), rcnn::Error);
  std::vector<int> lv(2);
  CHECK_THROWS_AS(rcnn::assign_levels(rois, cfg, 2, 5, lv), rcnn::Error);
}

TEST_CASE("OmpRoIAlign reuses its sample tables at steady state") {
  std::vector<float> data(4 * 64 * 64);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = float(i % 97) * 0.01f;
  const std::vector<rcnn::FeatureMap> maps{{data.data(), 4, 64, 64}};
  const std::vector<float> scales{0.5f};
  std::vector<rcnn::Box> rois;
  for (int i = 0; i < 64; ++i) rois.push_back({float(i), float(i), float(i + 2 * i + 8), float(i + 40)});
  const std::vector<int> levels(rois.size(), 0);
  rcnn::PoolerConfig cfg;
  std::vector<float> out(rois.size() * 4 * 49);
  rcnn::OmpRoIAlign pool{2};
  pool(maps, scales, rois, levels, cfg, out);
  const auto buffers = [&pool] {
    std::vector<const void*> b{pool.ws.plans.data(), pool.ws.order.data()};
    for (const auto& t : pool.ws.tiles) b.push_back(t.data());
    for (const auto& a : pool.ws.axes) b.push_back(a.data());
    return b;
  };
  const std::vector<const void*> before = buffers();
  for (int k = 0; k < 5; ++k) pool(maps, scales, rois, levels, cfg, out);
  CHECK(buffers() == before);
  // Fewer or smaller RoIs reuse the same buffers too.
  rois.resize(10);
  pool(maps, scales, rois, std::span<const int>(levels.data(), rois.size()), cfg,
       std::span<float>(out.data(), rois.size() * 4 * 49));
  CHECK(buffers() == before);
}

TEST_CASE("OmpRoIAlign / SimdRoIAlign: pixel (0, 0) read with weight 0 and non-finite features") {
  // Samples outside the map read pixel (0, 0) with weight 0 in the kernel: 0 * inf = NaN
  // must come out of OmpRoIAlign's tile exactly as from RoIAlignRef. Channel counts with a
  // partial group, RoIs reaching outside every border.
  for (const int channels : {3, 8, 13}) {
    std::vector<float> data(std::size_t(channels) * 9 * 12);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = float(int(i % 23) - 11) * 0.37f;
    const std::size_t plane = 9 * 12;
    data[0] = std::numeric_limits<float>::infinity();                        // channel 0, (0, 0)
    data[plane] = -std::numeric_limits<float>::infinity();                   // channel 1, (0, 0)
    if (channels > 2) data[2 * plane + 5] = std::numeric_limits<float>::quiet_NaN();  // inside
    const std::vector<rcnn::FeatureMap> maps{{data.data(), channels, 9, 12}};
    const std::vector<float> scales{0.5f};
    const std::vector<rcnn::Box> rois{{-30, -30, 10, 10}, {20, 10, 40, 30},  {-5, 4, 30, 60},
                                      {2, 2, 6, 6},       {30, -8, 60, 12},  {0, 0, 24, 18},
                                      {-40, -40, -20, -20}, {22, 16, 23, 17}};
    const std::vector<int> levels(rois.size(), 0);
    for (const bool aligned : {true, false})
      for (const int ratio : {0, 2}) {
        rcnn::PoolerConfig cfg;
        cfg.aligned = aligned;
        cfg.sampling_ratio = ratio;
        const std::size_t n = rois.size() * std::size_t(channels) * 49;
        std::vector<float> ref(n, 1.f), got(n, 2.f);
        rcnn::RoIAlignRef{}(maps, scales, rois, levels, cfg, ref);
        for (const int threads : {1, 2, 3}) {
          std::fill(got.begin(), got.end(), 2.f);
          rcnn::OmpRoIAlign{threads}(maps, scales, rois, levels, cfg, got);
          CAPTURE(channels);
          CAPTURE(aligned);
          CAPTURE(ratio);
          CAPTURE(threads);
          CHECK(bit_identical(got, ref));
        }
        for (const rcnn::SimdIsa isa :
             {rcnn::SimdIsa::baseline, rcnn::SimdIsa::avx2, rcnn::SimdIsa::avx512}) {
          if (!rcnn::simd_isa_supported(isa)) continue;
          std::fill(got.begin(), got.end(), 2.f);
          rcnn::SimdRoIAlign{2, isa}(maps, scales, rois, levels, cfg, got);
          const std::string isa_name = rcnn::simd_isa_name(isa);
          CAPTURE(isa_name);
          CHECK(bit_identical(got, ref));
        }
      }
  }
}

TEST_CASE("OmpRoIAlign: RoIs too large for the tile or the axis buffer, bit-identical") {
  // A 120 x 90 map: a RoI covering it has a 10800-pixel window (> kTilePixels); a sampling
  // ratio of 200 gives 7 * 400 axis samples (> kMaxAxisSamples). Both are pooled straight
  // from the map, next to ordinary RoIs.
  const int channels = 10;
  std::vector<float> data(std::size_t(channels) * 120 * 90);
  std::mt19937 rng(31);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (auto& v : data) v = nd(rng);
  const std::vector<rcnn::FeatureMap> maps{{data.data(), channels, 120, 90}};
  const std::vector<float> scales{1.f};
  const std::vector<rcnn::Box> rois{{0, 0, 90, 120}, {3, 4, 20, 30}, {-10, -10, 100, 130},
                                    {40, 50, 45, 52}};
  const std::vector<int> levels(rois.size(), 0);
  static_assert(rcnn::OmpRoIAlign::kTilePixels < 120 * 90);
  for (const int ratio : {0, 2, 200}) {
    rcnn::PoolerConfig cfg;
    cfg.sampling_ratio = ratio;
    const std::size_t n = rois.size() * channels * 49;
    std::vector<float> ref(n, 1.f), got(n, 2.f);
    rcnn::RoIAlignRef{}(maps, scales, rois, levels, cfg, ref);
    for (const int threads : {1, 2}) {
      rcnn::OmpRoIAlign pool{threads};
      pool(maps, scales, rois, levels, cfg, got);
      CAPTURE(ratio);
      CAPTURE(threads);
      CHECK(bit_identical(got, ref));
      CHECK(pool.ws.plans[0].direct);
      CHECK(pool.ws.plans[1].direct == (ratio == 200));
      // SimdRoIAlign has no tile: only the RoIs with too many axis samples go direct.
      rcnn::SimdRoIAlign simd{threads};
      std::fill(got.begin(), got.end(), 2.f);
      simd(maps, scales, rois, levels, cfg, got);
      CHECK(bit_identical(got, ref));
      CHECK(simd.ws.plans[0].direct == (ratio == 200));
    }
  }
}

TEST_CASE("assign_levels: edge cases") {
  rcnn::PoolerConfig d2;  // Detectron2 defaults: eps 1e-8 inside the log
  rcnn::PoolerConfig tv;
  tv.level_eps_inside_log = false;
  tv.level_eps = 1e-6f;
  const std::vector<rcnn::Box> boxes{
      {0, 0, 224, 224},      // canonical: level 4
      {0, 0, 112, 112},      // level 3
      {0, 0, 0, 10},         // zero area: min level
      {0, 0, 5000, 5000},    // huge: max level
      {10, 10, 0, 20},       // negative area -> NaN -> min level (documented)
  };
  std::vector<int> a(boxes.size()), b(boxes.size());
  rcnn::assign_levels(boxes, d2, 2, 5, a);
  rcnn::assign_levels(boxes, tv, 2, 5, b);
  CHECK(a == std::vector<int>{2, 1, 0, 3, 0});
  CHECK(b == std::vector<int>{2, 1, 0, 3, 0});
}
