#pragma once
/// \file bicubic_upsample.hpp
/// Bicubic resampling of one float plane with the arithmetic of ATen's CPU kernel
/// (`F.interpolate(mode="bicubic", align_corners=False)`, PyTorch 1.13, the separable
/// generic kernel of aten/src/ATen/native/cpu/UpSampleKernel.cpp as this machine's build
/// runs it). The reference policy: plain loops. Framework-free, allocation-free once the
/// taps are sized.
///
/// Per output axis (in -> out samples), output index i reads the 4 input samples
/// floor(real) - 1 .. floor(real) + 2, each clamped to [0, in - 1], where
///   scale = float(in) / float(out)                      (float32)
///   real  = double(scale) * (i + 0.5) - 0.5             (double: ATen adds the double 0.5)
///   t     = float(real - floor(real))
/// with Keys' cubic convolution weights, A = -0.75:
///   w0 = k2(t + 1), w1 = k1(t), w2 = k1(1 - t), w3 = k2((1 - t) + 1)
///   (the arguments computed in double and rounded to float, as ATen's `x + 1.0`),
///   k1(x) = ((A + 2) x - (A + 3)) x x + 1,  k2(x) = ((A x - 5A) x + 8A) x - 4A.
/// Measured against torch here: ATen's compiled kernel fuses some of these products into
/// fused multiply-adds (its AVX2 / AVX-512 builds contract them); the fused steps below
/// (std::fma: the first two steps of k2, the first of k1) reproduce its weights bit for bit
/// on every output index (tests/unit/test_keypoint_decode.cpp, one-hot rows: 56 samples to
/// 13, 29, 97, 200). The output is then the weighted sum over the 4 width taps of each of the
/// 4 height taps, then over the height taps, accumulated with fused multiply-adds; ATen's
/// vectorised accumulation is not reproduced bit for bit: the values agree with torch's to
/// 1.2e-7 relative to the plane's largest |value| (tests: 5e-7).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace rcnn {

/// The 4 taps (input indices and weights) of every output index along one axis.
struct CubicTaps {
  std::vector<int> index;     ///< [out * 4]
  std::vector<float> weight;  ///< [out * 4]
};

namespace detail {

constexpr float kCubicA = -0.75f;

/// Keys' kernel for |x| <= 1 (ATen's cubic_convolution1), with its fused step.
inline float cubic_near(float x) {
  const float A = kCubicA;
  const float a = std::fma(A + 2.f, x, -(A + 3.f));
  return (a * x) * x + 1.f;
}

/// Keys' kernel for 1 < |x| < 2 (ATen's cubic_convolution2), with its fused step.
inline float cubic_far(float x) {
  const float A = kCubicA;
  const float a = std::fma(A, x, -5.f * A);
  const float b = std::fma(a, x, 8.f * A);
  return b * x - 4.f * A;
}

}  // namespace detail

/// Fills `taps` for resampling `in` samples to `out` (align_corners=False, no scale factor).
inline void cubic_taps(int in, int out, CubicTaps& taps) {
  taps.index.resize(std::size_t(out) * 4);
  taps.weight.resize(std::size_t(out) * 4);
  const float scale = float(in) / float(out);
  for (int i = 0; i < out; ++i) {
    const double real = double(scale) * (double(i) + 0.5) - 0.5;
    const double floor_real = std::floor(real);
    const int base = int(floor_real);
    const float t = float(real - floor_real);
    const float u = float(1.0 - double(t));
    float* w = &taps.weight[std::size_t(i) * 4];
    w[0] = detail::cubic_far(float(double(t) + 1.0));
    w[1] = detail::cubic_near(t);
    w[2] = detail::cubic_near(u);
    w[3] = detail::cubic_far(float(double(u) + 1.0));
    for (int j = 0; j < 4; ++j)
      taps.index[std::size_t(i) * 4 + std::size_t(j)] = std::clamp(base - 1 + j, 0, in - 1);
  }
}

/// Reference bicubic resampling of one row-major plane [in_h, in_w] into [out_h, out_w]
/// with precomputed taps (`cubic_taps(in_h, out_h, th)`, `cubic_taps(in_w, out_w, tw)`).
inline void upsample_bicubic_ref(const float* in, int in_w, const CubicTaps& th,
                                 const CubicTaps& tw, int out_h, int out_w, float* out) {
  for (int y = 0; y < out_h; ++y) {
    const int* hi = &th.index[std::size_t(y) * 4];
    const float* hw = &th.weight[std::size_t(y) * 4];
    for (int x = 0; x < out_w; ++x) {
      const int* wi = &tw.index[std::size_t(x) * 4];
      const float* ww = &tw.weight[std::size_t(x) * 4];
      float acc = 0.f;
      for (int j = 0; j < 4; ++j) {
        const float* row = in + std::size_t(hi[j]) * std::size_t(in_w);
        float inner = row[wi[0]] * ww[0];
        for (int k = 1; k < 4; ++k) inner = std::fma(row[wi[k]], ww[k], inner);
        acc = j == 0 ? inner * hw[0] : std::fma(inner, hw[j], acc);
      }
      out[std::size_t(y) * std::size_t(out_w) + std::size_t(x)] = acc;
    }
  }
}

/// Convenience: resamples [in_h, in_w] to [out_h, out_w] (computes the taps).
inline void upsample_bicubic_ref(const float* in, int in_h, int in_w, int out_h, int out_w,
                                 float* out) {
  CubicTaps th, tw;
  cubic_taps(in_h, out_h, th);
  cubic_taps(in_w, out_w, tw);
  upsample_bicubic_ref(in, in_w, th, tw, out_h, out_w, out);
}

}  // namespace rcnn
