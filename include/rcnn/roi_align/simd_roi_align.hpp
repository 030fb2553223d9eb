#pragma once
/// \file simd_roi_align.hpp
/// Channels-last SIMD multi-level RoIAlign with run-time instruction-set dispatch, OpenMP
/// across RoIs; bit-identical to RoIAlignRef (needs rcnn::omp / -fopenmp).
///
/// How the per-ISA kernels exist in a header-only library: one kernel template over a GCC /
/// Clang vector type (`vector_size`), instantiated in three functions carrying
/// `__attribute__((target("avx512f")))`, `target("avx2")` and no target (the baseline:
/// SSE2 on x86-64), chosen per call from CPUID (`__builtin_cpu_supports`, which also checks
/// that the OS saves the AVX / AVX-512 registers). Every translation unit sees the same three
/// functions whatever its own `-m` flags, so there is nothing per-TU to violate the ODR, and
/// the default build runs on any x86-64. xsimd 8.1 (Debian's libxsimd-dev) cannot do this:
/// its `batch<float, avx2>` / `avx512f` registers and kernels are declared only when the
/// translation unit itself is compiled with `-mavx2` / `-mavx512f` (`XSIMD_WITH_AVX2` is set
/// from `__AVX2__` in config/xsimd_config.hpp, and types/xsimd_avx2_register.hpp declares the
/// register under `#if XSIMD_WITH_AVX2`), and its `xsimd::dispatch` expects one separately
/// compiled translation unit per architecture; its CPUID probe (`available_architectures`)
/// does not check XGETBV either.
///
/// No FMA contraction: the kernels are compiled with `fp-contract=off` (GCC's `optimize`
/// attribute; Clang's `#pragma clang fp contract(off)`), whatever the caller's flags, so a
/// multiply and the following add round separately, as in RoIAlignRef and torchvision.

#ifndef _OPENMP
#error "rcnn/roi_align/simd_roi_align.hpp needs OpenMP: link rcnn::omp (or compile with -fopenmp)"
#endif

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../detail/simd_isa.hpp"
#include "../error.hpp"
#include "../types.hpp"
#include "roi_align_plan.hpp"
#include "roi_align_ref.hpp"

// RCNN_SIMD_TARGET(isa): a kernel for `isa`; RCNN_SIMD_BASELINE: the baseline kernel;
// RCNN_SIMD_NO_CONTRACT: no FMA contraction in a function body (Clang). #undef'd below.
#if defined(__clang__)
#define RCNN_SIMD_TARGET(isa) __attribute__((target(isa)))
#define RCNN_SIMD_BASELINE
#define RCNN_SIMD_NO_CONTRACT _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define RCNN_SIMD_TARGET(isa) __attribute__((target(isa), optimize("fp-contract=off")))
#define RCNN_SIMD_BASELINE __attribute__((optimize("fp-contract=off")))
#define RCNN_SIMD_NO_CONTRACT
#else
#define RCNN_SIMD_BASELINE
#define RCNN_SIMD_NO_CONTRACT
#endif

namespace rcnn {

namespace detail {

/// One axis of a bilinear sample with its indices as float offsets into an NHWC map
/// (row: y * W * C, column: x * C).
struct SimdAxis {
  std::ptrdiff_t low = 0, high = 0;
  float l = 0.f, h = 0.f;
  bool inside = false;
};

/// One RoI's pooling job for a kernel.
struct SimdPoolJob {
  const float* map = nullptr;  ///< NHWC level map
  int channels = 0;
  int pooled = 0;
  RoIAlignGeometry g;
  const SimdAxis* ys = nullptr;  ///< pooled * grid_h samples, (ph, iy) order
  const SimdAxis* xs = nullptr;  ///< pooled * grid_w samples, (pw, ix) order
  float* scratch = nullptr;      ///< 2 * pooled^2 * kSimdBlock floats
  float* out = nullptr;          ///< the RoI's [C, P, P]
};

/// Most channels pooled per pass of a RoI's samples (16 AVX-512 vectors).
inline constexpr int kSimdBlock = 256;

#if defined(__GNUC__)
typedef float SimdF32x4 __attribute__((vector_size(16)));
#endif

/// out[j * bins + b] = in[b * N + j] for j < N, b < bins: a [bins][N] block of pooled
/// bins to the output's N planes. In 4 x 4 blocks of 128-bit shuffles (4 loads, 8
/// shuffles, 4 stores per 16 values) where the compiler has vector types, else one value at
/// a time. Copies only: no arithmetic.
template <int N>
[[gnu::always_inline]] inline void simd_transpose(const float* in, std::size_t bins, float* out) {
  std::size_t b0 = 0;
#if defined(__GNUC__)
  if constexpr (N % 4 == 0) {
    using V = SimdF32x4;
    for (; b0 + 4 <= bins; b0 += 4)
      for (std::size_t j = 0; j < std::size_t(N); j += 4) {
        V r0, r1, r2, r3;
        std::memcpy(&r0, in + (b0 + 0) * N + j, sizeof(V));
        std::memcpy(&r1, in + (b0 + 1) * N + j, sizeof(V));
        std::memcpy(&r2, in + (b0 + 2) * N + j, sizeof(V));
        std::memcpy(&r3, in + (b0 + 3) * N + j, sizeof(V));
        const V t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5);
        const V t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
        const V t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5);
        const V t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
        const V c0 = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
        const V c1 = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
        const V c2 = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
        const V c3 = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
        std::memcpy(out + (j + 0) * bins + b0, &c0, sizeof(V));
        std::memcpy(out + (j + 1) * bins + b0, &c1, sizeof(V));
        std::memcpy(out + (j + 2) * bins + b0, &c2, sizeof(V));
        std::memcpy(out + (j + 3) * bins + b0, &c3, sizeof(V));
      }
  }
#endif
  for (; b0 < bins; ++b0)
    for (std::size_t j = 0; j < std::size_t(N); ++j) out[j * bins + b0] = in[b0 * N + j];
}

/// Pools channels [c0, c0 + K * W) of one RoI with K accumulators of type V (W floats; V =
/// float for the scalar tail). Per channel, RoIAlignRef's operations in its order: per bin
/// `acc = acc + (w1*v1 + w2*v2 + w3*v3 + w4*v4)` over the samples (iy outer, ix inner),
/// then `acc / count`. Samples outside the map read pixel (0, 0) with weight 0, as the
/// kernel does. Bins are gathered in `scratch` ([bin][K * W]) and written out per channel.
template <class V, int W, int K>
[[gnu::always_inline]] inline void simd_pool_block(const SimdPoolJob& job, int c0) {
  RCNN_SIMD_NO_CONTRACT
  constexpr int kWidth = K * W;
  const RoIAlignGeometry& g = job.g;
  const int P = job.pooled;
  const std::size_t bins = std::size_t(P) * std::size_t(P);
  const float* base = job.map + c0;
  for (int ph = 0; ph < P; ++ph) {
    for (int pw = 0; pw < P; ++pw) {
      V acc[K];
      for (int k = 0; k < K; ++k) acc[k] = V{};
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const SimdAxis& y = job.ys[ph * g.grid_h + iy];
        for (int ix = 0; ix < g.grid_w; ++ix) {
          const SimdAxis& x = job.xs[pw * g.grid_w + ix];
          const BilinearTaps t = bilinear_taps(y, x, base, base);
          for (int k = 0; k < K; ++k) {
            V v1, v2, v3, v4;
            std::memcpy(&v1, t.p1 + k * W, sizeof(V));
            std::memcpy(&v2, t.p2 + k * W, sizeof(V));
            std::memcpy(&v3, t.p3 + k * W, sizeof(V));
            std::memcpy(&v4, t.p4 + k * W, sizeof(V));
            acc[k] = acc[k] + (t.w1 * v1 + t.w2 * v2 + t.w3 * v3 + t.w4 * v4);
          }
        }
      }
      float* s = job.scratch + (std::size_t(ph) * std::size_t(P) + std::size_t(pw)) * kWidth;
      for (int k = 0; k < K; ++k) {
        const V q = acc[k] / g.count;
        std::memcpy(s + k * W, &q, sizeof(V));
      }
    }
  }
  // [bin][channel] -> the output's [channel][bin], through a second (cache-resident) half
  // of the scratch: the transpose's 16-byte stores at a stride of P * P floats go to cache,
  // and the output, which is usually not in cache, gets whole contiguous lines (measured:
  // the transpose straight into the output was a quarter of the kernel's time).
  float* staged = job.scratch + bins * std::size_t(kSimdBlock);
  simd_transpose<kWidth>(job.scratch, bins, staged);
  std::memcpy(job.out + std::size_t(c0) * bins, staged, bins * std::size_t(kWidth) * sizeof(float));
}

/// Pools every channel of one RoI with W-float vectors V: blocks of K vectors (as many
/// accumulators as the ISA's registers hold next to the 4 weights and the loads), then of 4,
/// 2 and 1 vectors, then single channels. (Measured, 1000 RoIs x 256 channels: AVX-512
/// 16 x 16 channels 10-20 % faster than 4 x 16, AVX2 8 x 8 about 20 % faster than 4 x 8.)
template <class V, int W, int K>
[[gnu::always_inline]] inline void simd_pool_roi(const SimdPoolJob& job) {
  static_assert(K * W <= kSimdBlock && K >= 4);
  int c = 0;
  if constexpr (K > 4)
    for (; c + K * W <= job.channels; c += K * W) simd_pool_block<V, W, K>(job, c);
  for (; c + 4 * W <= job.channels; c += 4 * W) simd_pool_block<V, W, 4>(job, c);
  for (; c + 2 * W <= job.channels; c += 2 * W) simd_pool_block<V, W, 2>(job, c);
  for (; c + W <= job.channels; c += W) simd_pool_block<V, W, 1>(job, c);
  for (; c < job.channels; ++c) simd_pool_block<float, 1, 1>(job, c);
}

using SimdKernel = void (*)(const SimdPoolJob&);

#if defined(__GNUC__)
#if defined(__x86_64__) || defined(__i386__)
typedef float SimdF32x8 __attribute__((vector_size(32)));
typedef float SimdF32x16 __attribute__((vector_size(64)));

RCNN_SIMD_TARGET("avx512f") inline void simd_pool_roi_avx512(const SimdPoolJob& job) {
  simd_pool_roi<SimdF32x16, 16, 16>(job);
}
RCNN_SIMD_TARGET("avx2") inline void simd_pool_roi_avx2(const SimdPoolJob& job) {
  simd_pool_roi<SimdF32x8, 8, 8>(job);
}
#endif
RCNN_SIMD_BASELINE inline void simd_pool_roi_baseline(const SimdPoolJob& job) {
  simd_pool_roi<SimdF32x4, 4, 8>(job);
}
#else
inline void simd_pool_roi_baseline(const SimdPoolJob& job) { simd_pool_roi<float, 1, 4>(job); }
#endif

inline SimdKernel simd_kernel(SimdIsa isa) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if (isa == SimdIsa::avx512) return &simd_pool_roi_avx512;
  if (isa == SimdIsa::avx2) return &simd_pool_roi_avx2;
#endif
  (void)isa;
  return &simd_pool_roi_baseline;
}

/// dst (H x W x C) = src (C x H x W) transposed, rows [y_begin, y_end). Blocks of 16
/// pixels with the channel loop inside, so that the 16 destination pixels being filled stay
/// in L1 (a whole row at a stride of C floats would alias a few cache sets when C * 4 is a
/// multiple of 1 KiB).
inline void nchw_to_nhwc_rows(const FeatureMap& src, float* dst, int y_begin, int y_end) {
  constexpr std::size_t kBlock = 16;
  const std::size_t C = std::size_t(src.channels), Wd = std::size_t(src.width);
  const std::size_t plane = std::size_t(src.height) * Wd;
  for (int y = y_begin; y < y_end; ++y)
    for (std::size_t x0 = 0; x0 < Wd; x0 += kBlock) {
      const std::size_t n = std::min(kBlock, Wd - x0);
      const float* s = src.data + std::size_t(y) * Wd + x0;
      float* d = dst + (std::size_t(y) * Wd + x0) * C;
      for (std::size_t c = 0; c < C; ++c)
        for (std::size_t i = 0; i < n; ++i) d[i * C + c] = s[c * plane + i];
    }
}

}  // namespace detail

/// Scratch of `SimdRoIAlign`: plans and order per RoI (grown to the most RoIs seen, or set
/// up front with `reserve`), channels-last copies of NCHW input maps, and per thread the
/// axis samples and bin scratch of one RoI.
struct SimdRoIAlignWorkspace {
  std::vector<detail::RoIAlignPlan> plans;
  std::vector<int> order;
  std::vector<std::vector<float>> nhwc;                 // per level, NCHW inputs only
  std::vector<std::vector<detail::SimdAxis>> axes;      // per thread
  std::vector<std::vector<float>> scratch;              // per thread
  std::vector<detail::AxisSample> plan_scratch;
  std::vector<FeatureMap> maps;                         // the NHWC maps pooled from
};

/// Multi-level RoIAlign vectorised across channels over channels-last (NHWC) feature maps,
/// OpenMP across RoIs; same contract and bit-identical output as `RoIAlignRef` (per channel,
/// the same float operations on the same values in the same order: the vector lanes are
/// channels, and no multiply-add is fused).
///
/// Per RoI (in the cache-friendly order of `detail::plan_rois`), the sample coordinates are
/// computed once per axis; then, a block of channels at a time (256 with AVX-512: 16
/// vectors; 64 with AVX2 and the baseline: 8 vectors), every bin's samples are accumulated
/// with one contiguous vector load per bilinear tap and vector; bins are gathered in a
/// per-thread scratch and written out as the RoI's [C, P, P] planes (4 x 4 shuffles).
/// Channels beyond a multiple of the vector width are pooled one at a time with the same
/// arithmetic.
///
/// Layouts: NHWC maps are read in place (zero copy). NCHW maps are first transposed into
/// a workspace copy (one pass over every map per call; O(sum C * H * W), in parallel):
/// correct, but bundles exported with `--features-layout nhwc` avoid it.
/// Instruction set: `isa` (default `automatic`: AVX-512F, else AVX2, else the baseline
/// 128-bit vectors, chosen from CPUID); a forced ISA the CPU lacks is an rcnn::Error, never
/// an illegal instruction. `num_threads` goes to the `num_threads` clause of the parallel
/// region (values < 1 mean 1; 1 runs without a parallel region); the global OpenMP thread
/// count is never changed. RoIs whose per-axis samples exceed `kMaxAxisSamples` (only RoIs
/// far larger than their map) are pooled as RoIAlignRef does.
///
/// Cost: 4 * R * C * P^2 * grid_h * grid_w multiply-adds (1000 proposals x 256 channels x 7 x 7:
/// 200 M with 2 x 2 samples per bin, 408 M with Detectron2's adaptive grids on
/// bench/workloads.hpp's proposals) + O(R * C * P^2) scratch-to-output copies + an
/// O(R log R) sort; memory traffic about one read of each RoI's window of its map and one
/// write of the output. Memory: 32 bytes per RoI, per thread 64 KiB of axis samples and
/// 2 P^2 KiB of scratch, and a copy of the maps for NCHW inputs. No heap allocation once the
/// RoI count, resolution, thread count and map sizes have been seen.
/// Thread-safety: stateful (mutable workspace): use one instance per calling thread.
struct SimdRoIAlign {
  int num_threads = 1;
  SimdIsa isa = SimdIsa::automatic;
  mutable SimdRoIAlignWorkspace ws{};

  /// Per-axis sample capacity of one RoI: P * (grid_h + grid_w).
  static constexpr std::size_t kMaxAxisSamples = 2048;

  /// The instruction set calls run with (`isa` resolved); rcnn::Error when the CPU lacks it.
  SimdIsa kernel_isa() const { return checked_simd_isa(isa, "SimdRoIAlign"); }

  /// Sizes the workspace for calls with up to `rois` RoIs, resolution up to `pooled` (and
  /// the current thread count).
  void reserve(std::size_t rois, int pooled = 14) const {
    ws.plans.reserve(rois);
    ws.order.reserve(rois);
    reserve_threads(std::size_t(std::max(num_threads, 1)), pooled);
  }

  void operator()(std::span<const FeatureMap> maps, std::span<const float> spatial_scales,
                  std::span<const Box> rois, std::span<const int> levels,
                  const PoolerConfig& cfg, std::span<float> out) const {
    detail::check_roi_align_inputs(maps, spatial_scales, rois, levels, cfg, out,
                                   "SimdRoIAlign");
    const detail::SimdKernel kernel = detail::simd_kernel(kernel_isa());
    const int threads = std::max(num_threads, 1);
    const std::size_t R = rois.size();
    if (R == 0) return;
    const int pooled = cfg.resolution;
    // Everything is sized before the parallel regions: nothing is allocated inside.
    reserve_threads(std::size_t(threads), pooled);
    channels_last(maps, threads);
    if (ws.plans.size() < R) ws.plans.resize(R);
    if (ws.order.size() < R) ws.order.resize(R);
    if (ws.plan_scratch.size() < kMaxAxisSamples) ws.plan_scratch.resize(kMaxAxisSamples);
    detail::plan_rois(ws.maps, spatial_scales, rois, levels, cfg, kMaxAxisSamples,
                      std::numeric_limits<std::size_t>::max(), ws.plan_scratch.data(),
                      std::span(ws.plans.data(), R), std::span(ws.order.data(), R));
    const std::size_t roi_size =
        std::size_t(maps[0].channels) * std::size_t(pooled) * std::size_t(pooled);
    const auto run = [&](std::size_t k, std::size_t t) {
      const std::size_t r = std::size_t(ws.order[k]);
      const detail::RoIAlignPlan& p = ws.plans[r];
      pool_roi(ws.maps[std::size_t(p.level)], p, pooled, kernel, ws.axes[t].data(),
               ws.scratch[t].data(), out.data() + r * roi_size);
    };
    if (threads == 1) {
      for (std::size_t k = 0; k < R; ++k) run(k, 0);
      return;
    }
    const std::ptrdiff_t n = std::ptrdiff_t(R);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
    for (std::ptrdiff_t k = 0; k < n; ++k) run(std::size_t(k), std::size_t(omp_get_thread_num()));
  }

 private:
  void reserve_threads(std::size_t sets, int pooled) const {
    const std::size_t scratch = 2 * std::size_t(std::max(pooled, 1)) *
                                std::size_t(std::max(pooled, 1)) * std::size_t(detail::kSimdBlock);
    if (ws.axes.size() < sets) ws.axes.resize(sets);
    if (ws.scratch.size() < sets) ws.scratch.resize(sets);
    for (std::size_t t = 0; t < sets; ++t) {
      if (ws.axes[t].size() < kMaxAxisSamples) ws.axes[t].resize(kMaxAxisSamples);
      if (ws.scratch[t].size() < scratch) ws.scratch[t].resize(scratch);
    }
  }

  /// ws.maps = the maps in NHWC: NHWC inputs as they are, NCHW inputs transposed.
  void channels_last(std::span<const FeatureMap> maps, int threads) const {
    ws.maps.assign(maps.begin(), maps.end());
    if (ws.nhwc.size() < maps.size()) ws.nhwc.resize(maps.size());
    for (std::size_t l = 0; l < maps.size(); ++l) {
      const FeatureMap& m = maps[l];
      if (m.layout == Layout::nhwc) continue;
      std::vector<float>& copy = ws.nhwc[l];
      if (copy.size() < m.size()) copy.resize(m.size());
      if (threads == 1) {
        detail::nchw_to_nhwc_rows(m, copy.data(), 0, m.height);
      } else {
        const int H = m.height;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int y = 0; y < H; ++y) detail::nchw_to_nhwc_rows(m, copy.data(), y, y + 1);
      }
      ws.maps[l] = {copy.data(), m.channels, m.height, m.width, Layout::nhwc};
    }
  }

  /// Pools one RoI into out[0 .. C * P * P).
  static void pool_roi(const FeatureMap& map, const detail::RoIAlignPlan& p, int pooled,
                       detail::SimdKernel kernel, detail::SimdAxis* axes, float* scratch,
                       float* out) {
    const detail::RoIAlignGeometry& g = p.g;
    if (g.grid_h <= 0 || g.grid_w <= 0) {  // no samples: 0 / count
      std::fill(out, out + std::size_t(map.channels) * std::size_t(pooled) * std::size_t(pooled),
                0.f / g.count);
      return;
    }
    if (p.direct) {
      detail::pool_roi_channels(map, g, pooled, 0, map.channels, out);
      return;
    }
    detail::SimdAxis* ys = axes;
    detail::SimdAxis* xs = axes + std::size_t(pooled) * std::size_t(g.grid_h);
    const std::ptrdiff_t C = map.channels;
    const std::ptrdiff_t row = std::ptrdiff_t(map.width) * C;
    const auto fill = [pooled](float start, float bin, int grid, int size, std::ptrdiff_t step,
                               detail::SimdAxis* dst) {
      for (int q = 0; q < pooled; ++q)
        for (int i = 0; i < grid; ++i) {
          const detail::AxisSample a =
              detail::axis_sample(detail::roi_align_coord(start, q, bin, i, grid), size);
          dst[q * grid + i] = {a.low * step, a.high * step, a.l, a.h, a.inside};
        }
    };
    fill(g.start_h, g.bin_h, g.grid_h, map.height, row, ys);
    fill(g.start_w, g.bin_w, g.grid_w, map.width, C, xs);
    kernel({map.data, map.channels, pooled, g, ys, xs, scratch, out});
  }
};

}  // namespace rcnn

#undef RCNN_SIMD_TARGET
#undef RCNN_SIMD_BASELINE
#undef RCNN_SIMD_NO_CONTRACT
