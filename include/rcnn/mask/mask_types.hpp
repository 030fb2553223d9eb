#pragma once
/// \file mask_types.hpp
/// Instance masks: the per-detection M x M probabilities of a mask head (`MaskProbs`) and the
/// binary mask pasted into the image, stored cropped to the window it was evaluated in
/// (`InstanceMask`). Framework-free.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../error.hpp"
#include "../types.hpp"

namespace rcnn {

/// Non-owning view of D mask probability maps, `[D, M, M]` contiguous float32 (row-major,
/// mask `i` starts at `data + i * M * M`).
struct MaskProbs {
  const float* data = nullptr;
  int count = 0;  ///< D
  int size = 0;   ///< M
  std::size_t plane() const { return std::size_t(size) * std::size_t(size); }
  std::size_t numel() const { return std::size_t(count) * plane(); }
  /// Mask `i` (row `r` at `mask(i) + r * size`).
  const float* mask(int i) const { return data + std::size_t(i) * plane(); }
};

/// One detection's binary mask in an image of some size H x W, cropped to a window.
///
/// Pixel (x, y) of the image is set iff `x0 <= x < x0 + width`, `y0 <= y < y0 + height` and
/// `bits[(y - y0) * width + (x - x0)] == 1`; every pixel outside the window is 0. The window
/// lies inside the image and is the region the paste policy evaluated (not the tight bounding
/// box of the set pixels; it may contain none). An empty window (`width == 0` or
/// `height == 0`) is an empty mask. `bits` holds `height * width` bytes, each 0 or 1.
struct InstanceMask {
  int x0 = 0;
  int y0 = 0;
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> bits;

  /// Sets the window and sizes `bits` (contents unspecified; capacity is kept, so a reused
  /// mask does not allocate once it has held a window as large).
  void reset(int x, int y, int w, int h) {
    x0 = x;
    y0 = y;
    width = std::max(w, 0);
    height = std::max(h, 0);
    if (width == 0 || height == 0) width = height = 0;
    bits.resize(std::size_t(width) * std::size_t(height));
  }

  /// Number of set pixels.
  std::size_t area() const {
    std::size_t n = 0;
    for (const std::uint8_t b : bits) n += b;
    return n;
  }

  /// Pixel (x, y) of the image: 0 or 1 (0 outside the window).
  std::uint8_t at(int x, int y) const {
    if (x < x0 || y < y0 || x - x0 >= width || y - y0 >= height) return 0;
    return bits[std::size_t(y - y0) * std::size_t(width) + std::size_t(x - x0)];
  }

  /// Writes the full H x W mask (row-major, 0/1) into `out` (`image.height * image.width`
  /// bytes; every byte written). Errors: rcnn::Error if `out` has the wrong size or the
  /// window does not lie inside `image`.
  void expand(Size image, std::span<std::uint8_t> out) const {
    const std::size_t H = std::size_t(std::max(image.height, 0));
    const std::size_t W = std::size_t(std::max(image.width, 0));
    if (out.size() != H * W)
      detail::fail("InstanceMask::expand: output holds " + std::to_string(out.size()) +
                   " bytes, expected " + std::to_string(H * W));
    if (width > 0 && (x0 < 0 || y0 < 0 || std::size_t(x0) + std::size_t(width) > W ||
                      std::size_t(y0) + std::size_t(height) > H))
      detail::fail("InstanceMask::expand: window (" + std::to_string(x0) + ", " +
                   std::to_string(y0) + ", " + std::to_string(width) + " x " +
                   std::to_string(height) + ") outside the " + std::to_string(W) + " x " +
                   std::to_string(H) + " image");
    std::fill(out.begin(), out.end(), std::uint8_t{0});
    for (int r = 0; r < height; ++r)
      std::copy_n(bits.data() + std::size_t(r) * std::size_t(width), std::size_t(width),
                  out.data() + (std::size_t(y0) + std::size_t(r)) * W + std::size_t(x0));
  }

  /// The full H x W mask as a new buffer (see `expand(Size, std::span)`).
  std::vector<std::uint8_t> expand(Size image) const {
    std::vector<std::uint8_t> out(std::size_t(std::max(image.height, 0)) *
                                  std::size_t(std::max(image.width, 0)));
    expand(image, out);
    return out;
  }
};

namespace detail {

/// Argument checks shared by the paste policies; throws rcnn::Error naming `who`.
inline void check_paste_inputs(const MaskProbs& probs, std::span<const Box> boxes, Size image,
                               float threshold, const char* who) {
  const std::string_view w(who);  // no allocation unless it fails
  if (probs.count < 0 || probs.size < 0 || (probs.count > 0 && probs.size == 0))
    fail(std::string(w) + ": bad mask probabilities shape [" + std::to_string(probs.count) + ", " +
         std::to_string(probs.size) + ", " + std::to_string(probs.size) + "]");
  if (probs.count > 0 && probs.data == nullptr) fail(std::string(w) + ": null mask probabilities");
  if (boxes.size() != std::size_t(probs.count))
    fail(std::string(w) + ": " + std::to_string(boxes.size()) + " boxes for " +
         std::to_string(probs.count) + " masks");
  if (image.height < 0 || image.width < 0)
    fail(std::string(w) + ": bad image size " + std::to_string(image.height) + " x " +
         std::to_string(image.width));
  // Both frameworks' binary masks are `value >= threshold` inside the evaluated window and
  // false outside it, which is the same as thresholding the full soft mask only when the
  // threshold is above 0 (the soft mask is 0 outside the window).
  if (!(threshold > 0.f) || !(threshold < 3.4e38f))
    fail(std::string(w) + ": mask threshold " + std::to_string(threshold) +
         " must be finite and > 0");
}

}  // namespace detail

}  // namespace rcnn
