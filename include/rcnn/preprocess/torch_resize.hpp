#pragma once
/// \file torch_resize.hpp
/// Bit-exact reimplementation of PyTorch 1.13's CPU
/// `F.interpolate(x, size, mode="bilinear", align_corners=False)` on float32 NCHW tensors, as
/// torchvision 0.14's `GeneralizedRCNNTransform` calls it (`recompute_scale_factor=True`, so
/// the kernel receives no scale and derives it from the sizes).
///
/// Established by measurement against torch 1.13.1 (Debian build, AVX2 kernels; 0 differing
/// values on tens of millions of outputs of real photos, see tests/unit/test_resize.cpp).
/// Source index and weights, per axis:
///
/// * `scale = float(in) / float(out)` (float32);
/// * `src = double(scale) * (dst + 0.5) - 0.5` in double, clamped at 0;
///   `i0 = min(floor(src), in - 1)`, `i1 = i0 + (i0 < in - 1)`;
///   `lambda1 = float(clamp(src - i0, 0, 1))`, `lambda0 = 1.0f - lambda1` (float32);
///   when `in == out` the axis is the identity (`lambda0 = 1`, `lambda1 = 0`, `i1 = i0`).
///
/// ATen then has two kernels that round differently; which one runs depends on the memory
/// layout of the input tensor:
///
/// * `TorchMemoryFormat::contiguous` (NCHW-contiguous input, e.g. from `to_tensor`,
///   `read_image`): the generic separable kernel, compiled with FMA contraction:
///   `row(h) = fma(x[h][w0], lambda0_w, x[h][w1] * lambda1_w)` and
///   `out = fma(row(h0), lambda0_h, row(h1) * lambda1_h)`, all float32.
/// * `TorchMemoryFormat::channels_last` (channels-last-contiguous input, e.g.
///   `from_numpy(hwc).permute(2, 0, 1).float()`): `out = float(double(h0 * w0) * x00 +
///   double(h0 * w1) * x01 + double(h1 * w0) * x10 + double(h1 * w1) * x11)`, weight products
///   in float32, sum in double left to right. PyTorch also takes this kernel for an
///   NCHW-contiguous tensor that is channels-last contiguous as well (one channel, or a 1x1
///   image), and so does `contiguous` here.
///
/// `std::fma` is used explicitly (the project compiles with -ffp-contract=off).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "rcnn/error.hpp"
#include "rcnn/types.hpp"

namespace rcnn {

namespace detail {

/// Two-tap interpolation of one output sample along one axis.
struct LinearTap {
  int i0 = 0;
  int i1 = 0;
  float lambda0 = 1.f;
  float lambda1 = 0.f;
};

/// ATen's `compute_source_index_and_lambda` (align_corners=False) for output index `i` of
/// `out_size` (64-bit: rcnn/mask/torchvision_paste.hpp resizes to box sizes). Pre:
/// `in_size > 0`, `0 <= i < out_size`.
inline LinearTap torch_linear_tap(int in_size, std::int64_t out_size, std::int64_t i) {
  if (std::int64_t(in_size) == out_size) return {int(i), int(i), 1.f, 0.f};
  const float scale = float(in_size) / float(out_size);
  double src = double(scale) * (double(i) + 0.5) - 0.5;
  if (src < 0.0) src = 0.0;
  const int i0 = int(std::min(std::floor(src), double(in_size - 1)));
  const int i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  const float l1 = float(std::min(std::max(src - double(i0), 0.0), 1.0));
  return {i0, i1, 1.f - l1, l1};
}

/// `torch_linear_tap` for every output index.
inline void torch_linear_taps(int in_size, int out_size, std::vector<LinearTap>& taps) {
  taps.resize(std::size_t(out_size));
  for (int i = 0; i < out_size; ++i) taps[std::size_t(i)] = torch_linear_tap(in_size, out_size, i);
}

/// One output value of the channels-last kernel from rows `r0` (tap h.i0) and `r1` (h.i1):
/// weight products in float32, sum in double left to right, rounded once.
inline float torch_bilinear_channels_last(const float* r0, const float* r1, const LinearTap& h,
                                          const LinearTap& w) {
  const float w00 = h.lambda0 * w.lambda0;
  const float w01 = h.lambda0 * w.lambda1;
  const float w10 = h.lambda1 * w.lambda0;
  const float w11 = h.lambda1 * w.lambda1;
  double acc = double(w00) * double(r0[w.i0]);
  acc += double(w01) * double(r0[w.i1]);
  acc += double(w10) * double(r1[w.i0]);
  acc += double(w11) * double(r1[w.i1]);
  return float(acc);
}

/// One output row of the generic (NCHW-contiguous) kernel:
/// `fma(fma(r0[w0], l0w, r0[w1] * l1w), l0h, fma(r1[w0], l0w, r1[w1] * l1w) * l1h)`.
inline void torch_row_fma(const float* r0, const float* r1, const LinearTap& h,
                          const LinearTap* cols, int width, float* o) {
  for (int x = 0; x < width; ++x) {
    const LinearTap& w = cols[x];
    const float t0 = std::fma(r0[w.i0], w.lambda0, r0[w.i1] * w.lambda1);
    const float t1 = std::fma(r1[w.i0], w.lambda0, r1[w.i1] * w.lambda1);
    o[x] = std::fma(t0, h.lambda0, t1 * h.lambda1);
  }
}

/// The generic kernel split in its two passes, with the same operations on the same values:
/// the horizontal pass of one input row, `t[x] = fma(r[w0], l0w, r[w1] * l1w)`, ...
inline void torch_hrow_fma(const float* r, const LinearTap* cols, int width, float* t) {
  for (int x = 0; x < width; ++x) {
    const LinearTap& w = cols[x];
    t[x] = std::fma(r[w.i0], w.lambda0, r[w.i1] * w.lambda1);
  }
}
/// ... and the vertical pass of one output row, `o[x] = fma(t0[x], l0h, t1[x] * l1h)`.
inline void torch_vrow_fma(const float* t0, const float* t1, const LinearTap& h, int width,
                           float* o) {
  for (int x = 0; x < width; ++x) o[x] = std::fma(t0[x], h.lambda0, t1[x] * h.lambda1);
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__FMA__)
#define RCNN_TORCH_RESIZE_FMA_DISPATCH 1
/// `torch_hrow_fma` / `torch_vrow_fma` compiled for CPUs with the FMA instruction (the
/// vertical pass vectorises).
__attribute__((target("fma"))) inline void torch_hrow_fma_native(const float* r,
                                                                 const LinearTap* cols, int width,
                                                                 float* t) {
  for (int x = 0; x < width; ++x) {
    const LinearTap& w = cols[x];
    t[x] = __builtin_fmaf(r[w.i0], w.lambda0, r[w.i1] * w.lambda1);
  }
}
__attribute__((target("fma"))) inline void torch_vrow_fma_native(const float* t0, const float* t1,
                                                                 const LinearTap& h, int width,
                                                                 float* o) {
  for (int x = 0; x < width; ++x) o[x] = __builtin_fmaf(t0[x], h.lambda0, t1[x] * h.lambda1);
}
/// `torch_row_fma` compiled for CPUs with the FMA instruction (same results: fma is exact;
/// without it `std::fma` is a slow library call on baseline x86-64 builds).
__attribute__((target("fma"))) inline void torch_row_fma_native(const float* r0, const float* r1,
                                                                const LinearTap& h,
                                                                const LinearTap* cols, int width,
                                                                float* o) {
  for (int x = 0; x < width; ++x) {
    const LinearTap& w = cols[x];
    const float t0 = __builtin_fmaf(r0[w.i0], w.lambda0, r0[w.i1] * w.lambda1);
    const float t1 = __builtin_fmaf(r1[w.i0], w.lambda0, r1[w.i1] * w.lambda1);
    o[x] = __builtin_fmaf(t0, h.lambda0, t1 * h.lambda1);
  }
}
inline bool cpu_has_fma() {
  static const bool has = __builtin_cpu_supports("fma");
  return has;
}
#endif

/// The horizontal pass regrouped for vector permutes (`torch_hrow`): outputs in blocks of
/// `lanes`; a block whose taps all lie in `[base, base + lanes)` of the input row (with
/// `base + lanes <= in_width`, so one vector load stays inside the row) gets `base`, and
/// per output the tap offsets `i0 - base`, `i1 - base` and the two weights (SoA, for
/// vector loads). Other blocks (downscaling, the row's end) have `base = -1` and run the
/// scalar kernel. `lanes` is 16 (AVX-512F + FMA), 8 (AVX2 + FMA) or 0 (no vector kernel:
/// every block scalar), chosen from CPUID by `torch_hrow_lanes`.
struct TorchHrowPlan {
  int lanes = 0;
  int width = 0;  ///< outputs
  std::vector<int> base;
  std::vector<std::int32_t> rel0, rel1;
  std::vector<float> l0, l1;

  /// The plan of `cols` (the taps of `width` outputs over an `in_width` row) for `lanes`.
  void build(const std::vector<LinearTap>& cols, int in_width, int lanes_) {
    lanes = lanes_;
    width = int(cols.size());
    base.clear();
    rel0.clear();
    rel1.clear();
    l0.clear();
    l1.clear();
    if (lanes <= 0) return;
    const std::size_t blocks = (cols.size() + std::size_t(lanes) - 1) / std::size_t(lanes);
    base.assign(blocks, -1);
    const std::size_t n = blocks * std::size_t(lanes);
    rel0.assign(n, 0);
    rel1.assign(n, 0);
    l0.assign(n, 0.f);
    l1.assign(n, 0.f);
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t x0 = b * std::size_t(lanes);
      if (x0 + std::size_t(lanes) > cols.size()) break;  // a partial block: scalar
      int lo = cols[x0].i0, hi = cols[x0].i1;
      for (std::size_t x = x0; x < x0 + std::size_t(lanes); ++x) {
        lo = std::min({lo, cols[x].i0, cols[x].i1});
        hi = std::max({hi, cols[x].i0, cols[x].i1});
      }
      if (hi - lo >= lanes || lo + lanes > in_width) continue;
      base[b] = lo;
      for (std::size_t x = x0; x < x0 + std::size_t(lanes); ++x) {
        rel0[x] = cols[x].i0 - lo;
        rel1[x] = cols[x].i1 - lo;
        l0[x] = cols[x].lambda0;
        l1[x] = cols[x].lambda1;
      }
    }
  }
};

/// The widest vector kernel of `torch_hrow` this CPU runs: 16, 8 or 0 (see TorchHrowPlan).
inline int torch_hrow_lanes() {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
  static const int lanes = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) return 0;
    if (__builtin_cpu_supports("avx512f")) return 16;
    if (__builtin_cpu_supports("avx2")) return 8;
    return 0;
  }();
  return lanes;
#else
  return 0;
#endif
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
/// Outputs [x0, x1) of `torch_hrow_fma`, one at a time: the vector kernels' blocks that do
/// not fit a vector (inlined there, so `__builtin_fmaf` is their FMA instruction).
[[gnu::always_inline]] inline void torch_hrow_span(const float* r, const LinearTap* cols,
                                                   std::size_t x0, std::size_t x1, float* t) {
  for (std::size_t x = x0; x < x1; ++x)
    t[x] = __builtin_fmaf(r[cols[x].i0], cols[x].lambda0, r[cols[x].i1] * cols[x].lambda1);
}

/// `torch_hrow_fma` on a plan's vector blocks: per block one load of `lanes` input floats
/// at `base`, two lane permutes (the taps), then per lane the kernel's own operations,
/// `fma(r[i0], l0, r[i1] * l1)`, on the same values: the same result bits. Scalar
/// `fma` for the other blocks.
__attribute__((target("avx512f,fma"))) inline void torch_hrow_avx512(const float* r,
                                                                    const TorchHrowPlan& p,
                                                                    const LinearTap* cols,
                                                                    float* t) {
  for (std::size_t b = 0; b < p.base.size(); ++b) {
    const std::size_t x0 = b * 16;
    if (p.base[b] >= 0) {
      // (maskz with a full mask: the unmasked intrinsic trips GCC 12's -Wmaybe-uninitialized)
      const __m512 v = _mm512_loadu_ps(r + p.base[b]);
      const __m512i i0 = _mm512_loadu_si512(p.rel0.data() + x0);
      const __m512i i1 = _mm512_loadu_si512(p.rel1.data() + x0);
      const __m512 a = _mm512_maskz_permutexvar_ps(__mmask16(0xFFFF), i0, v);
      const __m512 c = _mm512_maskz_permutexvar_ps(__mmask16(0xFFFF), i1, v);
      const __m512 m = _mm512_mul_ps(c, _mm512_loadu_ps(p.l1.data() + x0));
      _mm512_storeu_ps(t + x0, _mm512_fmadd_ps(a, _mm512_loadu_ps(p.l0.data() + x0), m));
      continue;
    }
    torch_hrow_span(r, cols, x0, std::min(x0 + 16, std::size_t(p.width)), t);
  }
}
__attribute__((target("avx2,fma"))) inline void torch_hrow_avx2(const float* r,
                                                               const TorchHrowPlan& p,
                                                               const LinearTap* cols, float* t) {
  for (std::size_t b = 0; b < p.base.size(); ++b) {
    const std::size_t x0 = b * 8;
    if (p.base[b] >= 0) {
      const __m256 v = _mm256_loadu_ps(r + p.base[b]);
      const __m256 a = _mm256_permutevar8x32_ps(
          v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.rel0.data() + x0)));
      const __m256 c = _mm256_permutevar8x32_ps(
          v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.rel1.data() + x0)));
      const __m256 m = _mm256_mul_ps(c, _mm256_loadu_ps(p.l1.data() + x0));
      _mm256_storeu_ps(t + x0, _mm256_fmadd_ps(a, _mm256_loadu_ps(p.l0.data() + x0), m));
      continue;
    }
    torch_hrow_span(r, cols, x0, std::min(x0 + 8, std::size_t(p.width)), t);
  }
}
#endif

/// The horizontal pass `t[x] = fma(r[i0], l0, r[i1] * l1)` of one input row over
/// `cols.size()` outputs, bit-identical to `torch_hrow_fma`: with `plan`'s vector kernel
/// when it has one (`plan` built from `cols`), else the FMA-instruction build where the
/// CPU has it, else `torch_hrow_fma`.
inline void torch_hrow(const float* r, const TorchHrowPlan& plan,
                       const std::vector<LinearTap>& cols, float* t) {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
  if (plan.lanes == 16 && plan.width == int(cols.size()))
    return torch_hrow_avx512(r, plan, cols.data(), t);
  if (plan.lanes == 8 && plan.width == int(cols.size()))
    return torch_hrow_avx2(r, plan, cols.data(), t);
#endif
#ifdef RCNN_TORCH_RESIZE_FMA_DISPATCH
  if (cpu_has_fma()) return torch_hrow_fma_native(r, cols.data(), int(cols.size()), t);
#endif
  torch_hrow_fma(r, cols.data(), int(cols.size()), t);
}

}  // namespace detail

/// Memory layout of the tensor torch interpolates: selects ATen's kernel (see the file comment).
enum class TorchMemoryFormat { contiguous, channels_last };

/// Reusable tap tables of `torch_resize_bilinear`, recomputed only when the sizes change.
struct TorchResizeWorkspace {
  std::vector<detail::LinearTap> rows;
  std::vector<detail::LinearTap> cols;
  std::vector<float> hrows;  ///< two horizontally interpolated input rows (generic kernel)
  Size in{-1, -1};
  Size out{-1, -1};
};

/// Resizes `channels` float32 planes like torch 1.13 bilinear interpolation
/// (align_corners=False, no antialias) of a tensor in memory format `format`.
///
/// `src`: contiguous CHW, `in.height * in.width` floats per plane. `dst`: plane `c` row `y`
/// starts at `dst + c * dst_plane_stride + y * dst_row_stride` (strides in floats), so the
/// result can be written straight into a padded batch buffer. No allocation beyond `ws`.
inline void torch_resize_bilinear(const float* src, int channels, Size in, float* dst, Size out,
                                  std::size_t dst_row_stride, std::size_t dst_plane_stride,
                                  TorchResizeWorkspace& ws,
                                  TorchMemoryFormat format = TorchMemoryFormat::contiguous) {
  detail::require(src != nullptr && dst != nullptr, "torch_resize_bilinear: null pointer");
  detail::require(channels > 0 && in.height > 0 && in.width > 0 && out.height > 0 && out.width > 0,
                  [&] {
                    return "torch_resize_bilinear: empty size (" + std::to_string(channels) + "x" +
                           std::to_string(in.height) + "x" + std::to_string(in.width) + " -> " +
                           std::to_string(out.height) + "x" + std::to_string(out.width) + ")";
                  });
  detail::require(dst_row_stride >= std::size_t(out.width) &&
                      dst_plane_stride >= dst_row_stride * std::size_t(out.height),
                  "torch_resize_bilinear: output strides too small");
  if (!(ws.in == in && ws.out == out)) {
    detail::torch_linear_taps(in.height, out.height, ws.rows);
    detail::torch_linear_taps(in.width, out.width, ws.cols);
    ws.in = in;
    ws.out = out;
  }
  // An NCHW-contiguous tensor with one channel or a 1x1 image is channels-last contiguous too,
  // and ATen then takes the channels-last kernel.
  const bool channels_last = format == TorchMemoryFormat::channels_last || channels == 1 ||
                             (in.height == 1 && in.width == 1);
  const std::size_t in_plane = std::size_t(in.height) * std::size_t(in.width);
  if (channels_last) {
    for (int c = 0; c < channels; ++c) {
      const float* plane = src + std::size_t(c) * in_plane;
      float* out_plane = dst + std::size_t(c) * dst_plane_stride;
      for (int y = 0; y < out.height; ++y) {
        const detail::LinearTap& h = ws.rows[std::size_t(y)];
        const float* r0 = plane + std::size_t(h.i0) * std::size_t(in.width);
        const float* r1 = plane + std::size_t(h.i1) * std::size_t(in.width);
        float* o = out_plane + std::size_t(y) * dst_row_stride;
        for (int x = 0; x < out.width; ++x)
          o[x] = detail::torch_bilinear_channels_last(r0, r1, h, ws.cols[std::size_t(x)]);
      }
    }
    return;
  }
  // Generic kernel: an output row needs the horizontal pass of input rows i0 and i1 (the
  // same values for every output row that uses them), kept in two slots: each input row is
  // interpolated once per channel instead of once per output row that reads it.
  const std::size_t W = std::size_t(out.width);
  if (ws.hrows.size() < 2 * W) ws.hrows.resize(2 * W);
#ifdef RCNN_TORCH_RESIZE_FMA_DISPATCH
  const bool native = detail::cpu_has_fma();
#endif
  for (int c = 0; c < channels; ++c) {
    const float* plane = src + std::size_t(c) * in_plane;
    float* out_plane = dst + std::size_t(c) * dst_plane_stride;
    float* slot[2] = {ws.hrows.data(), ws.hrows.data() + W};
    int held[2] = {-1, -1};  // input row in each slot
    const auto hrow = [&](int i, int keep) -> const float* {
      if (held[0] == i) return slot[0];
      if (held[1] == i) return slot[1];
      const int s = held[0] == keep ? 1 : 0;  // never evict the other row in use
      const float* r = plane + std::size_t(i) * std::size_t(in.width);
#ifdef RCNN_TORCH_RESIZE_FMA_DISPATCH
      if (native)
        detail::torch_hrow_fma_native(r, ws.cols.data(), out.width, slot[s]);
      else
#endif
        detail::torch_hrow_fma(r, ws.cols.data(), out.width, slot[s]);
      held[s] = i;
      return slot[s];
    };
    for (int y = 0; y < out.height; ++y) {
      const detail::LinearTap& h = ws.rows[std::size_t(y)];
      const float* t0 = hrow(h.i0, h.i1);
      const float* t1 = hrow(h.i1, h.i0);
      float* o = out_plane + std::size_t(y) * dst_row_stride;
#ifdef RCNN_TORCH_RESIZE_FMA_DISPATCH
      if (native) {
        detail::torch_vrow_fma_native(t0, t1, h, out.width, o);
        continue;
      }
#endif
      detail::torch_vrow_fma(t0, t1, h, out.width, o);
    }
  }
}

/// Dense-output convenience overload: `dst` is contiguous CHW of size `out`.
inline void torch_resize_bilinear(const float* src, int channels, Size in, float* dst, Size out,
                                  TorchResizeWorkspace& ws,
                                  TorchMemoryFormat format = TorchMemoryFormat::contiguous) {
  torch_resize_bilinear(src, channels, in, dst, out, std::size_t(out.width),
                        std::size_t(out.width) * std::size_t(out.height), ws, format);
}

}  // namespace rcnn
