#pragma once
// The Mask R-CNN fixtures' masks.npz (shared/fixtures/detectron2/README.md, "Mask case
// files"): bool [D, H, W] packed with numpy.packbits in an uncompressed numpy.savez zip,
// read without zlib. Used by the unit and parity tests (doctest REQUIREs on bad files).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include <rcnn/mask/mask_types.hpp>

namespace rcnn_test {

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "missing " << path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline std::uint64_t le(const std::string& s, std::size_t at, int bytes) {
  REQUIRE(at + std::size_t(bytes) <= s.size());
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | std::uint8_t(s[at + std::size_t(i)]);
  return v;
}

/// The members of an uncompressed zip (numpy.savez), by name: walks the local file headers
/// (sizes from the header, or from its ZIP64 extra field when they read 0xffffffff).
inline std::vector<std::pair<std::string, std::string>> read_stored_zip(const std::string& path) {
  const std::string z = read_file(path);
  std::vector<std::pair<std::string, std::string>> members;
  std::size_t p = 0;
  while (p + 4 <= z.size() && le(z, p, 4) == 0x04034b50) {
    const auto flags = le(z, p + 6, 2), method = le(z, p + 8, 2);
    REQUIRE_MESSAGE(method == 0, path << ": member compressed (method " << method << ")");
    REQUIRE_MESSAGE((flags & 8) == 0, path << ": member with a data descriptor");
    std::uint64_t size = le(z, p + 18, 4);
    const std::size_t name_len = le(z, p + 26, 2), extra_len = le(z, p + 28, 2);
    const std::string name = z.substr(p + 30, name_len);
    if (size == 0xffffffffu) {  // ZIP64: extra field 0x0001 holds (uncompressed, compressed)
      std::size_t e = p + 30 + name_len;
      bool found = false;
      while (e + 4 <= p + 30 + name_len + extra_len) {
        const auto id = le(z, e, 2), len = le(z, e + 2, 2);
        if (id == 1) {
          size = le(z, e + 12, 8);
          found = true;
        }
        e += 4 + len;
      }
      REQUIRE_MESSAGE(found, path << ": ZIP64 sizes missing");
    }
    const std::size_t data = p + 30 + name_len + extra_len;
    REQUIRE(data + size <= z.size());
    members.emplace_back(name, z.substr(data, size));
    p = data + size;
  }
  REQUIRE_MESSAGE(!members.empty(), path << ": no zip members");
  return members;
}

/// masks.npz of the fixture: bool [D, H, W] as row-major 0/1 bytes.
struct FixtureMasks {
  int count = 0, height = 0, width = 0;
  std::vector<std::uint8_t> bits;
  std::span<const std::uint8_t> mask(int i) const {
    const std::size_t n = std::size_t(height) * std::size_t(width);
    return {bits.data() + std::size_t(i) * n, n};
  }
};

inline FixtureMasks read_fixture_masks(const std::string& path) {
  xt::xarray<std::uint8_t> packed;
  xt::xarray<std::int64_t> shape;
  for (const auto& [name, bytes] : read_stored_zip(path)) {
    std::istringstream in(bytes);
    if (name == "packed.npy") packed = xt::load_npy<std::uint8_t>(in);
    if (name == "shape.npy") shape = xt::load_npy<std::int64_t>(in);
  }
  REQUIRE(shape.size() == 3);
  FixtureMasks m{int(shape(0)), int(shape(1)), int(shape(2)), {}};
  const std::size_t row_bytes = (std::size_t(m.width) + 7) / 8;
  REQUIRE(packed.size() == std::size_t(m.count) * std::size_t(m.height) * row_bytes);
  m.bits.resize(std::size_t(m.count) * std::size_t(m.height) * std::size_t(m.width));
  for (std::size_t r = 0; r < std::size_t(m.count) * std::size_t(m.height); ++r)
    for (std::size_t x = 0; x < std::size_t(m.width); ++x)  // numpy.packbits: high bit first
      m.bits[r * std::size_t(m.width) + x] =
          (packed.data()[r * row_bytes + x / 8] >> (7 - x % 8)) & 1;
  return m;
}

/// Intersection over union of two equally sized 0/1 masks (1 when both are empty).
inline double mask_iou(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  std::size_t inter = 0, uni = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    inter += a[i] & b[i];
    uni += a[i] | b[i];
  }
  return uni ? double(inter) / double(uni) : 1.0;
}

/// Per-detection comparison of masks (expanded to the full image) with a masks.npz.
struct MaskReport {
  double min_iou = 1.0;
  std::size_t differing_pixels = 0;  ///< over all detections
  std::size_t max_count_diff = 0;    ///< max |pixel count - reference pixel count|
  double max_rel_count_diff = 0;     ///< that over the reference count (the count when 0)
  std::size_t pixels = 0;            ///< mask pixels, all detections
  std::size_t ref_pixels = 0;        ///< reference mask pixels, all detections
};

/// Requires as many masks as ``ref`` holds and ``image`` = its size; checks each mask's
/// area() against its expanded pixel count.
inline MaskReport compare_masks(const std::vector<rcnn::InstanceMask>& masks, rcnn::Size image,
                                const FixtureMasks& ref) {
  MaskReport rep;
  REQUIRE(int(masks.size()) == ref.count);
  REQUIRE(image == (rcnn::Size{ref.height, ref.width}));
  for (int i = 0; i < ref.count; ++i) {
    CAPTURE(i);
    const auto full = masks[std::size_t(i)].expand(image);
    const auto want = ref.mask(i);
    std::size_t a = 0, b = 0, differ = 0;
    for (std::size_t k = 0; k < full.size(); ++k)
      a += full[k], b += want[k], differ += full[k] != want[k];
    CHECK(a == masks[std::size_t(i)].area());
    const std::size_t d = a > b ? a - b : b - a;
    rep.min_iou = std::min(rep.min_iou, mask_iou(full, want));
    rep.differing_pixels += differ;
    rep.max_count_diff = std::max(rep.max_count_diff, d);
    rep.max_rel_count_diff =
        std::max(rep.max_rel_count_diff, b ? double(d) / double(b) : double(d));
    rep.pixels += a;
    rep.ref_pixels += b;
  }
  return rep;
}

}  // namespace rcnn_test
