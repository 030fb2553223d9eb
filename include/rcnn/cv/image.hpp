#pragma once
/// \file image.hpp
/// OpenCV adapters: decode image files and view cv::Mat as rcnn::ImageView. Link rcnn::opencv.
/// Every failure is an rcnn::Error; no cv::Exception escapes.

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../io/image_probe.hpp"
#include "../preprocess/resize_shape.hpp"
#include "../types.hpp"

namespace rcnn::cv_io {

/// Decodes an image file to 8-bit BGR exactly as `cv2.imread(path)` does (the decoding
/// Detectron2's DefaultPredictor examples use; EXIF orientation applied): grayscale is
/// replicated, alpha dropped, 16-bit scaled to 8-bit. Throws rcnn::Error naming the file
/// when it is missing, empty, unreadable, not a decodable image, larger than
/// `kMaxImageSide` on a side, or a truncated JPEG / PNG (see rcnn/io/image_probe.hpp: a
/// truncated JPEG is refused rather than decoded into a partly grey image). A complete file
/// with corrupt compressed data is decoded as OpenCV decodes it (libjpeg may print a
/// "Corrupt JPEG data" warning on stderr).
inline cv::Mat read_image(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) detail::fail(name + ": image file not found");
  if (!std::filesystem::is_regular_file(path, ec)) detail::fail(name + ": not a regular file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) detail::fail(name + ": cannot read the file size: " + ec.message());
  if (size == 0) detail::fail(name + ": image file is empty");
  std::vector<std::uint8_t> bytes(size);
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::fail(name + ": cannot open the image file: " + std::strerror(errno));
    in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size));
    if (std::size_t(in.gcount()) != size)
      detail::fail(name + ": read error (got " + std::to_string(in.gcount()) + " of " +
                   std::to_string(size) + " bytes)");
  }
  probe_encoded_image(std::span<const std::uint8_t>(bytes), name);
  cv::Mat img;
  try {
    img = cv::imdecode(bytes, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    detail::fail(name + ": OpenCV could not decode it (" + e.msg + ")");
  }
  if (img.empty())
    detail::fail(name + ": not a decodable image (unknown format or corrupt data)");
  if (img.rows > kMaxImageSide || img.cols > kMaxImageSide)
    detail::fail(name + ": image is " + std::to_string(img.rows) + "x" + std::to_string(img.cols) +
                 " (height x width); the largest side rcnn accepts is " +
                 std::to_string(kMaxImageSide) + " (rcnn::kMaxImageSide): downscale it first");
  return img;
}

/// Views an 8-bit cv::Mat (1, 3 or 4 channels, BGR/BGRA as OpenCV loads it, any row
/// step: a region of interest of a bigger Mat works without a copy) as an ImageView without
/// copying. Other depths are converted into `storage` (16-bit unsigned: / 257, rounded;
/// other integer and float depths: saturated to 0..255). The view is valid while `m` /
/// `storage` live. Throws rcnn::Error for an empty Mat, more than 2 dimensions or a channel
/// count other than 1, 3 or 4.
inline ImageView view(const cv::Mat& m, cv::Mat& storage, bool bgr = true) {
  if (m.empty()) detail::fail("image: empty cv::Mat");
  if (m.dims != 2) detail::fail("image: cv::Mat has " + std::to_string(m.dims) + " dimensions, expected 2");
  const int ch = m.channels();
  if (ch != 1 && ch != 3 && ch != 4)
    detail::fail("image: cv::Mat has " + std::to_string(ch) + " channels, expected 1, 3 or 4");
  const cv::Mat* src = &m;
  if (m.depth() != CV_8U) {
    const double scale = m.depth() == CV_16U ? 1.0 / 257.0 : 1.0;
    try {
      m.convertTo(storage, CV_MAKETYPE(CV_8U, ch), scale);
    } catch (const cv::Exception& e) {
      detail::fail("image: cannot convert the cv::Mat of depth " + std::to_string(m.depth()) +
                   " to 8 bits (" + e.msg + ")");
    }
    src = &storage;
  }
  ImageView v;
  v.data = src->data;
  v.height = src->rows;
  v.width = src->cols;
  v.channels = ch;
  v.step = src->step[0];
  v.bgr = bgr;
  return v;
}

}  // namespace rcnn::cv_io
