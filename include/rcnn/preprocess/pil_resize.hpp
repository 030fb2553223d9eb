#pragma once
/// \file pil_resize.hpp
/// Bit-exact reimplementation of Pillow 9.4 `Image.resize(size, Image.BILINEAR)` on 8-bit
/// images (modes "L" and "RGB"), which is how Detectron2's `ResizeTransform` resizes uint8
/// images. Written from the documented algorithm of Pillow's `libImaging/Resample.c`:
///
/// * Separable: a horizontal pass into an 8-bit intermediate (only the source rows the
///   vertical pass reads), then a vertical pass. A pass is skipped when its dimension is
///   unchanged; when neither changes the image is copied.
/// * Per axis, `scale = in / out`, `filterscale = max(scale, 1)` (so shrinking antialiases),
///   triangle filter of support `1 * filterscale`. For output `xx`:
///   `center = (xx + 0.5) * scale`, taps `[int(center - support + 0.5), int(center + support +
///   0.5))` clipped to the image, weight `triangle((x - center + 0.5) * (1 / filterscale))`,
///   normalised to sum 1 (all in double).
/// * Weights are converted to 22-bit fixed point (round half away from zero); each output
///   channel accumulates `pixel * weight` in int32 starting at `1 << 21`, then `clip8`:
///   `>= 1 << 30 -> 255`, `<= 0 -> 0`, else `>> 22`.
///
/// Channels are processed independently (Pillow does no cross-channel arithmetic for "RGB"),
/// so any channel count works and the channel order is irrelevant.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "rcnn/error.hpp"
#include "rcnn/types.hpp"

namespace rcnn {

namespace detail {

/// Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2.
inline constexpr int kPilPrecisionBits = 22;

/// Fixed-point resampling coefficients of one axis (Pillow's `precompute_coeffs` followed by
/// `normalize_coeffs_8bpc`). Reused across calls: recomputed only when the sizes change.
struct PilAxisCoefficients {
  int in_size = -1;
  int out_size = -1;
  int ksize = 0;                      ///< coefficient slots per output sample
  std::vector<int> first;             ///< first input index of each output sample
  std::vector<int> count;             ///< number of taps of each output sample
  std::vector<std::int32_t> weights;  ///< `ksize` fixed-point weights per output sample
  std::vector<double> scratch;        ///< one output sample's double weights
};

/// Pillow's bilinear (triangle) filter.
inline double pil_triangle(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

/// Fills `c` for resampling `in_size` samples to `out_size` (box = the whole axis).
inline void pil_precompute_axis(int in_size, int out_size, PilAxisCoefficients& c) {
  if (c.in_size == in_size && c.out_size == out_size) return;
  const double scale = double(float(in_size)) / out_size;  // Pillow: (double)(in1 - in0) / out
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;
  const int ksize = int(std::ceil(support)) * 2 + 1;
  const double ss = 1.0 / filterscale;
  const double fixed_one = double(1 << kPilPrecisionBits);

  c.first.resize(std::size_t(out_size));
  c.count.resize(std::size_t(out_size));
  c.weights.assign(std::size_t(out_size) * std::size_t(ksize), 0);
  c.scratch.resize(std::size_t(ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = 0.0 + (xx + 0.5) * scale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    const int n = xmax - xmin;
    double ww = 0.0;
    for (int x = 0; x < n; ++x) {
      const double w = pil_triangle((double(x + xmin) - center + 0.5) * ss);
      c.scratch[std::size_t(x)] = w;
      ww += w;
    }
    std::int32_t* k = c.weights.data() + std::size_t(xx) * std::size_t(ksize);
    for (int x = 0; x < n; ++x) {
      double w = c.scratch[std::size_t(x)];
      if (ww != 0.0) w /= ww;
      k[x] = w < 0.0 ? std::int32_t(-0.5 + w * fixed_one) : std::int32_t(0.5 + w * fixed_one);
    }
    c.first[std::size_t(xx)] = xmin;
    c.count[std::size_t(xx)] = n;
  }
  c.ksize = ksize;
  c.in_size = in_size;
  c.out_size = out_size;
}

/// Pillow's `clip8`: fixed-point accumulator to byte.
inline std::uint8_t pil_clip8(std::int32_t v) {
  if (v >= (1 << kPilPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return std::uint8_t(v >> kPilPrecisionBits);
}

/// Horizontal pass over `rows` rows: `src` rows `src_row_step` bytes apart with pixels
/// `src_pixel_step` bytes apart; `dst` rows `dst_row_step` apart, pixels `C` bytes apart.
template <int C>
void pil_horizontal_pass(const std::uint8_t* src, std::size_t src_row_step, int src_pixel_step,
                         int rows, std::uint8_t* dst, std::size_t dst_row_step,
                         const PilAxisCoefficients& c) {
  constexpr std::int32_t half = 1 << (kPilPrecisionBits - 1);
  for (int y = 0; y < rows; ++y) {
    const std::uint8_t* in = src + std::size_t(y) * src_row_step;
    std::uint8_t* out = dst + std::size_t(y) * dst_row_step;
    for (int xx = 0; xx < c.out_size; ++xx) {
      const std::int32_t* k = c.weights.data() + std::size_t(xx) * std::size_t(c.ksize);
      const std::uint8_t* p = in + std::size_t(c.first[std::size_t(xx)]) * src_pixel_step;
      const int n = c.count[std::size_t(xx)];
      std::int32_t acc[C];
      for (int ch = 0; ch < C; ++ch) acc[ch] = half;
      for (int x = 0; x < n; ++x, p += src_pixel_step)
        for (int ch = 0; ch < C; ++ch) acc[ch] += std::int32_t(p[ch]) * k[x];
      for (int ch = 0; ch < C; ++ch) out[std::size_t(xx) * C + ch] = pil_clip8(acc[ch]);
    }
  }
}

/// Vertical pass: output row `yy` reads input rows `first[yy] - row_offset + i`.
template <int C>
void pil_vertical_pass(const std::uint8_t* src, std::size_t src_row_step, int src_pixel_step,
                       int row_offset, int width, std::uint8_t* dst, std::size_t dst_row_step,
                       const PilAxisCoefficients& c) {
  constexpr std::int32_t half = 1 << (kPilPrecisionBits - 1);
  for (int yy = 0; yy < c.out_size; ++yy) {
    const std::int32_t* k = c.weights.data() + std::size_t(yy) * std::size_t(c.ksize);
    const std::uint8_t* rows = src + std::size_t(c.first[std::size_t(yy)] - row_offset) * src_row_step;
    const int n = c.count[std::size_t(yy)];
    std::uint8_t* out = dst + std::size_t(yy) * dst_row_step;
    for (int xx = 0; xx < width; ++xx) {
      const std::uint8_t* p = rows + std::size_t(xx) * src_pixel_step;
      std::int32_t acc[C];
      for (int ch = 0; ch < C; ++ch) acc[ch] = half;
      for (int y = 0; y < n; ++y, p += src_row_step)
        for (int ch = 0; ch < C; ++ch) acc[ch] += std::int32_t(p[ch]) * k[y];
      for (int ch = 0; ch < C; ++ch) out[std::size_t(xx) * C + ch] = pil_clip8(acc[ch]);
    }
  }
}

}  // namespace detail

/// Reusable buffers of `pil_resize_bilinear`: coefficient tables (cached per size pair) and
/// the 8-bit intermediate of the horizontal pass. Grows only; not thread-safe to share.
struct PilResizeWorkspace {
  detail::PilAxisCoefficients horizontal;
  detail::PilAxisCoefficients vertical;
  std::vector<std::uint8_t> intermediate;
};

namespace detail {

template <int C>
void pil_resize_impl(const std::uint8_t* src, Size in, std::size_t src_row_step,
                     int src_pixel_step, std::uint8_t* dst, Size out, std::size_t dst_row_step,
                     PilResizeWorkspace& ws) {
  const bool need_h = out.width != in.width;
  const bool need_v = out.height != in.height;
  if (!need_h && !need_v) {  // Pillow returns a copy
    for (int y = 0; y < in.height; ++y) {
      const std::uint8_t* p = src + std::size_t(y) * src_row_step;
      std::uint8_t* q = dst + std::size_t(y) * dst_row_step;
      if (src_pixel_step == C) {
        std::memcpy(q, p, std::size_t(in.width) * C);
      } else {
        for (int x = 0; x < in.width; ++x)
          for (int ch = 0; ch < C; ++ch) q[std::size_t(x) * C + ch] = p[std::size_t(x) * src_pixel_step + ch];
      }
    }
    return;
  }
  pil_precompute_axis(in.width, out.width, ws.horizontal);
  pil_precompute_axis(in.height, out.height, ws.vertical);
  if (!need_v) {
    pil_horizontal_pass<C>(src, src_row_step, src_pixel_step, in.height, dst, dst_row_step,
                           ws.horizontal);
    return;
  }
  if (!need_h) {
    pil_vertical_pass<C>(src, src_row_step, src_pixel_step, 0, in.width, dst, dst_row_step,
                         ws.vertical);
    return;
  }
  // Source rows the vertical pass needs: [first of output 0, last tap of the last output).
  const auto& v = ws.vertical;
  const int row_first = v.first.front();
  const int row_last = v.first.back() + v.count.back();
  const int rows = row_last - row_first;
  const std::size_t temp_step = std::size_t(out.width) * C;
  const std::size_t need = temp_step * std::size_t(rows);
  if (ws.intermediate.size() < need) ws.intermediate.resize(need);
  pil_horizontal_pass<C>(src + std::size_t(row_first) * src_row_step, src_row_step,
                         src_pixel_step, rows, ws.intermediate.data(), temp_step, ws.horizontal);
  pil_vertical_pass<C>(ws.intermediate.data(), temp_step, C, row_first, out.width, dst,
                       dst_row_step, v);
}

}  // namespace detail

/// Resizes an interleaved 8-bit image like Pillow's `Image.resize(BILINEAR)`.
///
/// Reads `channels` bytes per pixel from `src` (pixels `src_pixel_step` bytes apart, rows
/// `src_row_step` bytes apart; `src_pixel_step > channels` skips trailing channels such as
/// alpha) and writes `out` pixels of `channels` bytes into `dst` (rows `dst_row_step` bytes
/// apart). `channels` is 1 to 4. Allocates only inside `ws`, and only when it must grow.
inline void pil_resize_bilinear(const std::uint8_t* src, Size in, std::size_t src_row_step,
                                int src_pixel_step, int channels, std::uint8_t* dst, Size out,
                                std::size_t dst_row_step, PilResizeWorkspace& ws) {
  detail::require(src != nullptr && dst != nullptr, "pil_resize_bilinear: null image pointer");
  detail::require(in.height > 0 && in.width > 0 && out.height > 0 && out.width > 0, [&] {
    return "pil_resize_bilinear: empty size (" + std::to_string(in.height) + "x" +
           std::to_string(in.width) + " -> " + std::to_string(out.height) + "x" +
           std::to_string(out.width) + ")";
  });
  detail::require(channels >= 1 && channels <= 4 && src_pixel_step >= channels, [&] {
    return "pil_resize_bilinear: unsupported channels " + std::to_string(channels) +
           " with pixel step " + std::to_string(src_pixel_step);
  });
  switch (channels) {
    case 1:
      detail::pil_resize_impl<1>(src, in, src_row_step, src_pixel_step, dst, out, dst_row_step, ws);
      break;
    case 2:
      detail::pil_resize_impl<2>(src, in, src_row_step, src_pixel_step, dst, out, dst_row_step, ws);
      break;
    case 3:
      detail::pil_resize_impl<3>(src, in, src_row_step, src_pixel_step, dst, out, dst_row_step, ws);
      break;
    default:
      detail::pil_resize_impl<4>(src, in, src_row_step, src_pixel_step, dst, out, dst_row_step, ws);
      break;
  }
}

/// Resizes `src` (all its channels) into the contiguous HWC buffer `dst`, which must hold
/// `out.height * out.width * src.channels` bytes.
inline void pil_resize_bilinear(const ImageView& src, Size out, std::span<std::uint8_t> dst,
                                PilResizeWorkspace& ws) {
  const std::size_t need = std::size_t(out.height) * std::size_t(out.width) * std::size_t(src.channels);
  detail::require(dst.size() >= need, [&] {
    return "pil_resize_bilinear: output buffer holds " + std::to_string(dst.size()) +
           " bytes, need " + std::to_string(need);
  });
  pil_resize_bilinear(src.data, {src.height, src.width}, src.row_step(), src.channels,
                      src.channels, dst.data(), out,
                      std::size_t(out.width) * std::size_t(src.channels), ws);
}

}  // namespace rcnn
