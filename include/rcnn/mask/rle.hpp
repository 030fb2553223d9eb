#pragma once
/// \file rle.hpp
/// COCO run-length encoding of binary masks (the format of pycocotools / the COCO results
/// files): uncompressed `{"size": [h, w], "counts": [...]}` and the compressed ASCII string.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../error.hpp"
#include "../types.hpp"
#include "mask_types.hpp"

namespace rcnn {

/// A COCO RLE. The mask is read in column-major order (x outer, y inner: pixel (x, y) is
/// element `x * height + y`); `counts` are the lengths of alternating runs of 0s and 1s,
/// starting with 0s (a first count of 0 when pixel (0, 0) is set). The counts sum to
/// `height * width`. pycocotools' `rleEncode` convention for an image without pixels:
/// counts `[0]`.
struct CocoRle {
  int height = 0;
  int width = 0;
  std::vector<std::uint32_t> counts;
  friend bool operator==(const CocoRle&, const CocoRle&) = default;
};

namespace detail {

/// Appends the run-length encoding of a column-major pixel sequence; `pixel(i)` is 0 or 1.
template <class Pixel>
inline void rle_runs(std::size_t n, Pixel&& pixel, std::vector<std::uint32_t>& counts) {
  counts.clear();
  std::uint8_t prev = 0;
  std::uint32_t run = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t p = pixel(i);
    if (p != prev) {
      counts.push_back(run);
      run = 0;
      prev = p;
    }
    ++run;
  }
  counts.push_back(run);
}

inline void check_rle_size(Size size, const char* who) {
  if (size.height < 0 || size.width < 0)
    fail(std::string(who) + ": bad mask size " + std::to_string(size.height) + " x " +
         std::to_string(size.width));
  if (std::uint64_t(size.height) * std::uint64_t(size.width) > 0xffffffffull)
    fail(std::string(who) + ": mask of " + std::to_string(size.height) + " x " +
         std::to_string(size.width) + " pixels is too large for 32-bit RLE counts");
}

}  // namespace detail

/// RLE of a full H x W mask, row-major bytes (0: off, anything else: on).
/// Errors: rcnn::Error if `mask.size() != H * W` or the size is negative / too large.
/// Cost: O(H * W).
inline CocoRle rle_encode(std::span<const std::uint8_t> mask, Size size) {
  detail::check_rle_size(size, "rle_encode");
  const std::size_t H = std::size_t(size.height), W = std::size_t(size.width);
  detail::require(mask.size() == H * W, "rle_encode: mask holds " + std::to_string(mask.size()) +
                                            " bytes, expected " + std::to_string(H * W));
  CocoRle r{size.height, size.width, {}};
  detail::rle_runs(
      H * W, [&](std::size_t i) -> std::uint8_t { return mask[(i % H) * W + i / H] ? 1 : 0; },
      r.counts);
  return r;
}

/// RLE of an instance mask in an H x W image, straight from its window (no full buffer).
/// Errors: rcnn::Error if the window does not lie inside the image. Cost: O(H * W) in the
/// worst case, O(window area + number of columns) here.
inline CocoRle rle_encode(const InstanceMask& m, Size image) {
  detail::check_rle_size(image, "rle_encode");
  const std::size_t H = std::size_t(image.height), W = std::size_t(image.width);
  if (m.width > 0 && (m.x0 < 0 || m.y0 < 0 || std::size_t(m.x0) + std::size_t(m.width) > W ||
                      std::size_t(m.y0) + std::size_t(m.height) > H))
    detail::fail("rle_encode: mask window outside the " + std::to_string(W) + " x " +
                 std::to_string(H) + " image");
  CocoRle r{image.height, image.width, {}};
  // Runs accumulate column by column; only window columns can hold set pixels.
  std::uint8_t prev = 0;
  std::uint64_t run = 0;
  const auto push = [&](std::uint8_t p, std::uint64_t len) {
    if (len == 0) return;
    if (p != prev) {
      r.counts.push_back(std::uint32_t(run));
      run = 0;
      prev = p;
    }
    run += len;
  };
  const std::size_t x_begin = m.width > 0 ? std::size_t(m.x0) : W;
  const std::size_t x_end = m.width > 0 ? std::size_t(m.x0) + std::size_t(m.width) : W;
  push(0, x_begin * H);
  for (std::size_t x = x_begin; x < x_end; ++x) {
    push(0, std::size_t(m.y0));
    for (int y = 0; y < m.height; ++y)
      push(m.bits[std::size_t(y) * std::size_t(m.width) + (x - std::size_t(m.x0))] ? 1 : 0, 1);
    push(0, H - std::size_t(m.y0) - std::size_t(m.height));
  }
  push(0, (W - x_end) * H);
  r.counts.push_back(std::uint32_t(run));
  return r;
}

/// The mask of an RLE, H x W row-major 0/1. Errors: rcnn::Error if the counts do not sum to
/// H * W.
inline std::vector<std::uint8_t> rle_decode(const CocoRle& rle) {
  detail::check_rle_size({rle.height, rle.width}, "rle_decode");
  const std::size_t H = std::size_t(rle.height), W = std::size_t(rle.width);
  std::uint64_t total = 0;
  for (const std::uint32_t c : rle.counts) total += c;
  detail::require(total == std::uint64_t(H) * W,
                  "rle_decode: counts sum to " + std::to_string(total) + ", expected " +
                      std::to_string(H * W) + " (" + std::to_string(H) + " x " +
                      std::to_string(W) + ")");
  std::vector<std::uint8_t> mask(H * W, 0);
  std::size_t i = 0;
  for (std::size_t k = 0; k < rle.counts.size(); ++k) {
    if (k % 2 == 1)
      for (std::size_t j = i; j < i + rle.counts[k]; ++j) mask[(j % H) * W + j / H] = 1;
    i += rle.counts[k];
  }
  return mask;
}

/// Number of set pixels of an RLE (pycocotools `area`).
inline std::uint64_t rle_area(const CocoRle& rle) {
  std::uint64_t a = 0;
  for (std::size_t k = 1; k < rle.counts.size(); k += 2) a += rle.counts[k];
  return a;
}

/// pycocotools' compressed counts string (`rleToString`): each count, from the third on
/// minus the count two before it, is written as a signed little-endian base-32 number, 5
/// bits per character: bits 0-4 of the value, 0x20 set when more characters follow, the
/// last character's 0x10 bit being the sign; each character is that 6-bit value + 48.
inline std::string rle_to_string(const CocoRle& rle) {
  std::string s;
  for (std::size_t i = 0; i < rle.counts.size(); ++i) {
    std::int64_t x = std::int64_t(rle.counts[i]);
    if (i > 2) x -= std::int64_t(rle.counts[i - 2]);
    bool more = true;
    while (more) {
      std::int64_t c = x & 0x1f;
      x >>= 5;  // arithmetic shift (C++20)
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(char(c + 48));
    }
  }
  return s;
}

/// Inverse of `rle_to_string` (pycocotools `rleFrString`) for a mask of size `size`.
/// Errors: rcnn::Error on a character outside '0'..'o', a truncated number, a negative or
/// out-of-range count, or counts that do not sum to H * W.
inline CocoRle rle_from_string(std::string_view s, Size size) {
  detail::check_rle_size(size, "rle_from_string");
  CocoRle r{size.height, size.width, {}};
  std::size_t p = 0;
  std::uint64_t total = 0;
  while (p < s.size()) {
    std::int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) detail::fail("rle_from_string: truncated count at the end");
      const int c = int(static_cast<unsigned char>(s[p])) - 48;
      if (c < 0 || c > 0x3f)
        detail::fail("rle_from_string: character " + std::to_string(int(static_cast<unsigned char>(s[p]))) +
                     " at " + std::to_string(p) + " is not an RLE digit");
      if (k >= 12) detail::fail("rle_from_string: count too long at " + std::to_string(p));
      x |= std::int64_t(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= std::int64_t(-1) * (std::int64_t(1) << (5 * k));
    }
    if (r.counts.size() > 2) x += std::int64_t(r.counts[r.counts.size() - 2]);
    if (x < 0 || x > 0xffffffffll)
      detail::fail("rle_from_string: count " + std::to_string(x) + " out of range");
    r.counts.push_back(std::uint32_t(x));
    total += std::uint64_t(x);
  }
  detail::require(total == std::uint64_t(size.height) * std::uint64_t(size.width),
                  "rle_from_string: counts sum to " + std::to_string(total) + ", expected " +
                      std::to_string(std::uint64_t(size.height) * std::uint64_t(size.width)));
  return r;
}

}  // namespace rcnn
