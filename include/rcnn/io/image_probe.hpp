#pragma once
/// \file image_probe.hpp
/// Container-level checks of an encoded image before it is decoded: format, declared size and
/// completeness of JPEG and PNG files. Framework-free (no OpenCV), so it is unit-tested and
/// fuzzed on its own; `rcnn::cv_io::read_image` calls it before decoding.
///
/// Why: decoders are lenient in ways that hide broken inputs. libjpeg decodes a truncated
/// JPEG into a full-size image whose missing part is grey (printing "Premature end of JPEG
/// file" on stderr); libpng prints "libpng error: Read Error" and OpenCV returns nothing.
/// rcnn refuses both with one clear message instead, and refuses an image larger than
/// `kMaxImageSide` from its header, before allocating and decoding it.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "rcnn/error.hpp"
#include "rcnn/preprocess/resize_shape.hpp"

namespace rcnn {

/// What `probe_encoded_image` found in the header of an encoded image.
struct EncodedImageInfo {
  enum class Format { unknown, jpeg, png };
  Format format = Format::unknown;
  /// Size declared by the header; 0 when the format is unknown (or a JPEG declares its
  /// height later, in a DNL marker).
  int width = 0;
  int height = 0;
};

namespace detail {

inline std::uint32_t read_be16(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 8) | std::uint32_t(p[1]);
}
inline std::uint32_t read_be32(const std::uint8_t* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
         std::uint32_t(p[3]);
}

/// Start-of-frame markers (SOF0..SOF15 except DHT, JPG and DAC) carry the image size.
inline bool is_jpeg_sof(std::uint8_t m) {
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

/// Walks the JPEG marker segments (and skips entropy-coded data) up to the end-of-image
/// marker. Bytes between segments that are not a marker are skipped, as libjpeg does.
inline EncodedImageInfo probe_jpeg(std::span<const std::uint8_t> b, const std::string& name) {
  EncodedImageInfo info;
  info.format = EncodedImageInfo::Format::jpeg;
  const std::size_t n = b.size();
  const auto truncated = [&](const std::string& where) {
    fail(name + ": truncated JPEG file: its " + std::to_string(n) + " bytes end " + where +
         ", before the end-of-image marker (incomplete download or copy?)");
  };
  std::size_t pos = 2;  // after SOI
  for (;;) {
    while (pos < n && b[pos] != 0xFF) ++pos;
    while (pos < n && b[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) truncated("between segments");
    const std::uint8_t m = b[pos++];
    if (m == 0xD9) return info;  // EOI
    if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length
    if (pos + 2 > n) truncated("inside a segment header");
    const std::size_t len = read_be16(&b[pos]);
    if (len < 2)
      fail(name + ": corrupt JPEG file: segment length " + std::to_string(len) + " at byte " +
           std::to_string(pos) + " (expected >= 2)");
    if (pos + len > n) truncated("inside a segment");
    if (is_jpeg_sof(m) && len >= 7) {
      info.height = int(read_be16(&b[pos + 3]));
      info.width = int(read_be16(&b[pos + 5]));
    }
    pos += len;
    if (m != 0xDA) continue;
    // Start of scan: entropy-coded data up to the next marker that is not RSTn or a
    // stuffed 0xFF00.
    for (;;) {
      const void* ff = pos < n ? std::memchr(b.data() + pos, 0xFF, n - pos) : nullptr;
      if (ff == nullptr) truncated("inside the compressed image data");
      pos = std::size_t(static_cast<const std::uint8_t*>(ff) - b.data());
      if (pos + 1 >= n) truncated("inside the compressed image data");
      const std::uint8_t next = b[pos + 1];
      if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
        pos += 2;
      } else if (next == 0xFF) {
        ++pos;
      } else {
        break;  // a marker: the outer loop reads it
      }
    }
  }
}

/// Walks the PNG chunks up to IEND.
inline EncodedImageInfo probe_png(std::span<const std::uint8_t> b, const std::string& name) {
  EncodedImageInfo info;
  info.format = EncodedImageInfo::Format::png;
  const std::size_t n = b.size();
  std::size_t pos = 8;  // after the signature
  for (bool first = true;; first = false) {
    if (pos + 8 > n)
      fail(name + ": truncated PNG file: its " + std::to_string(n) +
           " bytes end before the IEND chunk (incomplete download or copy?)");
    const std::uint32_t len = read_be32(&b[pos]);
    const std::string type(reinterpret_cast<const char*>(&b[pos + 4]), 4);
    std::string printable = type;
    for (char& c : printable)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    if (len > 0x7FFFFFFFu)
      fail(name + ": corrupt PNG file: chunk \"" + printable + "\" at byte " +
           std::to_string(pos) + " has length " + std::to_string(len) + " (max 2^31 - 1)");
    if (std::uint64_t(pos) + 12u + len > n)
      fail(name + ": truncated PNG file: its " + std::to_string(n) +
           " bytes end inside chunk \"" + printable + "\", before the IEND chunk (incomplete "
           "download or copy?)");
    if (first && type != "IHDR")
      fail(name + ": corrupt PNG file: the first chunk is \"" + printable + "\", expected IHDR");
    if (type == "IHDR") {
      if (len < 8) fail(name + ": corrupt PNG file: IHDR chunk of " + std::to_string(len) + " bytes");
      const std::uint32_t w = read_be32(&b[pos + 8]), h = read_be32(&b[pos + 12]);
      if (w == 0 || h == 0)
        fail(name + ": corrupt PNG file: IHDR declares an empty image (" + std::to_string(h) +
             "x" + std::to_string(w) + ")");
      // Clamp to just above the limit: the size check below reports it.
      const std::uint32_t cap = std::uint32_t(kMaxImageSide) + 1;
      info.width = int(w > cap ? cap : w);
      info.height = int(h > cap ? cap : h);
      if (w > cap || h > cap)
        fail(name + ": image is " + std::to_string(h) + "x" + std::to_string(w) +
             " (height x width); the largest side rcnn accepts is " +
             std::to_string(kMaxImageSide) + " (rcnn::kMaxImageSide): downscale it first");
    }
    if (type == "IEND") return info;
    pos += 12u + len;
  }
}

}  // namespace detail

/// Identifies JPEG and PNG data by their signatures and checks that the file is complete
/// (JPEG: the end-of-image marker is reached; PNG: the IEND chunk is reached) and that the
/// declared size is within `kMaxImageSide`. Other formats are returned as `unknown`
/// (the decoder checks them). Throws rcnn::Error naming `name` (the file) on a truncated or
/// structurally corrupt JPEG / PNG, or one that is too large. Does not validate the
/// compressed data itself: a complete file with corrupt image data is left to the decoder.
/// Cost: one pass over the bytes, no allocation.
inline EncodedImageInfo probe_encoded_image(std::span<const std::uint8_t> data,
                                            const std::string& name) {
  static constexpr std::uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  EncodedImageInfo info;
  if (data.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
    info = detail::probe_jpeg(data, name);
  else if (data.size() >= 8 && std::memcmp(data.data(), png_signature, 8) == 0)
    info = detail::probe_png(data, name);
  else
    return info;
  if (info.width > kMaxImageSide || info.height > kMaxImageSide)
    detail::fail(name + ": image is " + std::to_string(info.height) + "x" +
                 std::to_string(info.width) +
                 " (height x width); the largest side rcnn accepts is " +
                 std::to_string(kMaxImageSide) + " (rcnn::kMaxImageSide): downscale it first");
  return info;
}

}  // namespace rcnn
