#pragma once
/// \file preprocess.hpp
/// Image preprocessing policies: 8-bit interleaved image -> normalised, resized, zero-padded
/// CHW float32, bit-exact with each framework.
///
/// * `Detectron2Preprocess` (DefaultPredictor + `GeneralizedRCNN.preprocess_image`): resize the
///   uint8 image with Pillow bilinear (`pil_resize.hpp`), then `(float(p) - mean) / std`, pad.
/// * `TorchvisionPreprocess` (`GeneralizedRCNNTransform` on `to_tensor`'s `p / 255` image):
///   normalise `(float(p) / 255 - mean) / std` at the original size, resize with torch's
///   bilinear (`torch_resize.hpp`; the ATen kernel follows the tensor's memory format, see
///   `TorchvisionPreprocess::memory_format`), pad.
///
/// Both convert the input's channel order (`ImageView::bgr`) to the model's
/// (`InputConfig::bgr`), replicate a 1-channel image to 3 channels and ignore a 4th (alpha)
/// channel. Padding is zeros, bottom/right, to a multiple of `size_divisibility` or to an
/// exact static shape.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rcnn/config.hpp"
#include "rcnn/error.hpp"
#include "rcnn/preprocess/pil_resize.hpp"
#include "rcnn/preprocess/resize_shape.hpp"
#include "rcnn/preprocess/torch_resize.hpp"
#include "rcnn/stage_io.hpp"
#include "rcnn/types.hpp"

namespace rcnn {


namespace detail {

inline std::string size_string(Size s) {
  return std::to_string(s.height) + "x" + std::to_string(s.width);
}

/// Validates `img` and returns its size.
inline Size check_image(const ImageView& img) {
  require(img.data != nullptr && img.height > 0 && img.width > 0, [&] {
    return "preprocess: empty image (" + std::to_string(img.height) + "x" +
           std::to_string(img.width) + (img.data ? ")" : ", null data)");
  });
  require(img.channels == 1 || img.channels == 3 || img.channels == 4, [&] {
    return "preprocess: unsupported channel count " + std::to_string(img.channels) +
           " (expected 1, 3 or 4)";
  });
  require(img.height <= kMaxImageSide && img.width <= kMaxImageSide, [&] {
    return "preprocess: image " + size_string({img.height, img.width}) +
           " is too large (max side " + std::to_string(kMaxImageSide) + ")";
  });
  require(img.row_step() >= std::size_t(img.width) * std::size_t(img.channels), [&] {
    return "preprocess: row step " + std::to_string(img.step) +
           " is smaller than width * channels " +
           std::to_string(std::size_t(img.width) * std::size_t(img.channels));
  });
  return {img.height, img.width};
}

/// Resized size, validated against kMaxImageSide.
inline Size checked_resized_shape(Size in, const InputConfig& cfg, Conventions conv) {
  const Size out = resized_shape(in, cfg.resize, conv);
  require(out.height > 0 && out.width > 0, [&] {
    return "preprocess: image " + size_string(in) + " resizes to the empty size " +
           size_string(out);
  });
  require(out.height <= kMaxImageSide && out.width <= kMaxImageSide, [&] {
    return "preprocess: resized size " + size_string(out) + " is too large (max side " +
           std::to_string(kMaxImageSide) + ")";
  });
  return out;
}

/// Padded size: exactly `pad_to` when given, else rounded up to `size_divisibility`.
/// `resized` is at most kMaxImageSide per side (checked_resized_shape); a size_divisibility
/// above kMaxImageSide is refused (it would only pad, and could overflow).
inline Size padded_shape(Size resized, int size_divisibility, const std::optional<Size>& pad_to) {
  if (pad_to) {
    require(pad_to->height > 0 && pad_to->width > 0 && pad_to->height <= kMaxImageSide &&
                pad_to->width <= kMaxImageSide,
            [&] {
              return "preprocess: static input shape " + size_string(*pad_to) +
                     " is not within 1.." + std::to_string(kMaxImageSide) +
                     " per side (modules.backbone_rpn.static_shape)";
            });
    require(pad_to->height >= resized.height && pad_to->width >= resized.width, [&] {
      return "preprocess: resized image " + size_string(resized) +
             " does not fit the static input shape " + size_string(*pad_to);
    });
    return *pad_to;
  }
  if (size_divisibility <= 1) return resized;
  require(size_divisibility <= kMaxImageSide, [&] {
    return "preprocess: input.size_divisibility " + std::to_string(size_divisibility) +
           " is larger than the largest image side " + std::to_string(kMaxImageSide);
  });
  const int d = size_divisibility;
  return {(resized.height + d - 1) / d * d, (resized.width + d - 1) / d * d};
}

/// Source channel (in the image) feeding each of the 3 model channels.
inline std::array<int, 3> channel_map(const ImageView& img, const InputConfig& cfg) {
  if (img.channels == 1) return {0, 0, 0};
  if (img.bgr == cfg.bgr) return {0, 1, 2};
  return {2, 1, 0};
}

/// 256-entry lookup table per model channel: the framework's float32 normalisation of every
/// byte value. `pixel_scale == 1/k` for an integer k divides by k (torch's `div(255)`),
/// another scale != 1 multiplies; then `(t - mean) / std`.
inline void normalization_table(const InputConfig& cfg, std::array<std::array<float, 256>, 3>& lut) {
  const float scale = cfg.pixel_scale;
  require(std::isfinite(scale) && scale > 0.f,
          [&] { return "preprocess: pixel_scale must be positive, got " + std::to_string(scale); });
  float divisor = 0.f;
  if (scale != 1.f) {
    const double k = std::round(1.0 / double(scale));
    if (k >= 2.0 && float(1.0 / k) == scale) divisor = float(k);
  }
  for (int c = 0; c < 3; ++c) {
    const float mean = cfg.pixel_mean[std::size_t(c)];
    const float std_ = cfg.pixel_std[std::size_t(c)];
    for (int p = 0; p < 256; ++p) {
      float t = float(p);
      if (divisor != 0.f)
        t = t / divisor;
      else if (scale != 1.f)
        t = t * scale;
      lut[std::size_t(c)][std::size_t(p)] = (t - mean) / std_;
    }
  }
}

/// Sizes `chw_out` to 3 * padded (allocating only when it grows).
inline float* prepare_output(std::vector<float>& chw_out, Size padded) {
  chw_out.resize(std::size_t(3) * std::size_t(padded.height) * std::size_t(padded.width));
  return chw_out.data();
}

/// Zeroes the padding of every plane (columns >= resized.width and rows >= resized.height).
inline void zero_padding(float* out, Size resized, Size padded) {
  const std::size_t W = std::size_t(padded.width);
  const std::size_t plane = std::size_t(padded.height) * W;
  for (int c = 0; c < 3; ++c) {
    float* p = out + std::size_t(c) * plane;
    if (resized.width < padded.width)
      for (int y = 0; y < resized.height; ++y)
        std::fill(p + std::size_t(y) * W + std::size_t(resized.width), p + std::size_t(y + 1) * W,
                  0.f);
    std::fill(p + std::size_t(resized.height) * W, p + plane, 0.f);
  }
}

}  // namespace detail

/// Detectron2 preprocessing: Pillow-bilinear resize of the uint8 image
/// (`ResizeShortestEdge` / fixed size), `(float(p) - pixel_mean) / pixel_std` in float32,
/// zero padding (`ImageList.from_tensors`). Holds reusable buffers: one instance per thread.
struct Detectron2Preprocess {
  PilResizeWorkspace workspace;       ///< resize coefficient tables and intermediate
  std::vector<std::uint8_t> resized;  ///< resized HWC bytes, reused

  /// Capacity for an image resized to `s.resized`.
  void reserve(const StageSizing& s) {
    resized.reserve(std::size_t(s.resized.height) * std::size_t(s.resized.width) * 3);
  }

  /// Fills `chw_out` with the [3, padded.height, padded.width] input tensor of `img`.
  /// `pad_to`: pad to exactly this size (static-shape modules) instead of size_divisibility.
  PreprocessResult operator()(const ImageView& img, const InputConfig& cfg,
                              std::vector<float>& chw_out,
                              std::optional<Size> pad_to = std::nullopt) {
    const Size in = detail::check_image(img);
    const Size out = detail::checked_resized_shape(in, cfg, Conventions::detectron2);
    const Size padded = detail::padded_shape(out, cfg.size_divisibility, pad_to);
    std::array<std::array<float, 256>, 3> lut;
    detail::normalization_table(cfg, lut);
    const std::array<int, 3> map = detail::channel_map(img, cfg);

    // Resize the colour channels only (1 or 3); a 4th channel is skipped via the pixel step.
    const int channels = img.channels == 1 ? 1 : 3;
    const std::size_t need = std::size_t(out.height) * std::size_t(out.width) * std::size_t(channels);
    if (resized.size() < need) resized.resize(need);
    pil_resize_bilinear(img.data, in, img.row_step(), img.channels, channels, resized.data(), out,
                        std::size_t(out.width) * std::size_t(channels), workspace);

    float* dst = detail::prepare_output(chw_out, padded);
    const std::size_t W = std::size_t(padded.width);
    const std::size_t plane = std::size_t(padded.height) * W;
    for (int c = 0; c < 3; ++c) {
      const std::array<float, 256>& table = lut[std::size_t(c)];
      const int sc = map[std::size_t(c)];
      for (int y = 0; y < out.height; ++y) {
        const std::uint8_t* p = resized.data() + std::size_t(y) * std::size_t(out.width) * std::size_t(channels);
        float* o = dst + std::size_t(c) * plane + std::size_t(y) * W;
        for (int x = 0; x < out.width; ++x)
          o[x] = table[p[std::size_t(x) * std::size_t(channels) + std::size_t(sc)]];
      }
    }
    detail::zero_padding(dst, out, padded);
    return {in, out, padded};
  }
};

/// torchvision preprocessing (`GeneralizedRCNNTransform`, eval mode, batch of one) for an image
/// given to the model as `to_tensor(img)` = `p / 255`: `(p / 255 - image_mean) / image_std` in
/// float32, torch bilinear resize (`_resize_image_and_masks`), zero padding (`batch_images`).
/// Holds reusable buffers: one instance per thread.
struct TorchvisionPreprocess {
  TorchResizeWorkspace workspace;  ///< resize tap tables
  std::vector<float> normalized;   ///< normalised CHW image at the original size, reused
  /// Layout of the float tensor the reference pipeline hands to the transform, which selects
  /// ATen's interpolation kernel: `contiguous` for `to_tensor` / `read_image` images (the
  /// default), `channels_last` for e.g. `from_numpy(hwc).permute(2, 0, 1).float() / 255`.
  TorchMemoryFormat memory_format = TorchMemoryFormat::contiguous;

  /// Capacity for an image of `s.image` pixels.
  void reserve(const StageSizing& s) {
    normalized.reserve(3 * std::size_t(s.image.height) * std::size_t(s.image.width));
  }

  /// Fills `chw_out` with the [3, padded.height, padded.width] input tensor of `img`.
  /// `pad_to`: pad to exactly this size (static-shape modules) instead of size_divisibility.
  PreprocessResult operator()(const ImageView& img, const InputConfig& cfg,
                              std::vector<float>& chw_out,
                              std::optional<Size> pad_to = std::nullopt) {
    const Size in = detail::check_image(img);
    const Size out = detail::checked_resized_shape(in, cfg, Conventions::torchvision);
    const Size padded = detail::padded_shape(out, cfg.size_divisibility, pad_to);
    std::array<std::array<float, 256>, 3> lut;
    detail::normalization_table(cfg, lut);
    const std::array<int, 3> map = detail::channel_map(img, cfg);

    const std::size_t in_plane = std::size_t(in.height) * std::size_t(in.width);
    if (normalized.size() < 3 * in_plane) normalized.resize(3 * in_plane);
    const std::size_t step = img.row_step();
    const std::size_t px = std::size_t(img.channels);
    for (int c = 0; c < 3; ++c) {
      const std::array<float, 256>& table = lut[std::size_t(c)];
      const std::size_t sc = std::size_t(map[std::size_t(c)]);
      float* o = normalized.data() + std::size_t(c) * in_plane;
      for (int y = 0; y < in.height; ++y) {
        const std::uint8_t* p = img.data + std::size_t(y) * step + sc;
        float* row = o + std::size_t(y) * std::size_t(in.width);
        for (int x = 0; x < in.width; ++x) row[x] = table[p[std::size_t(x) * px]];
      }
    }

    float* dst = detail::prepare_output(chw_out, padded);
    torch_resize_bilinear(normalized.data(), 3, in, dst, out, std::size_t(padded.width),
                          std::size_t(padded.height) * std::size_t(padded.width), workspace,
                          memory_format);
    detail::zero_padding(dst, out, padded);
    return {in, out, padded};
  }
};

}  // namespace rcnn
