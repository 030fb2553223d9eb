#pragma once
/// \file image.hpp
/// OpenCV adapters: decode image files and view cv::Mat as rcnn::ImageView. Link rcnn::opencv.

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <string>

#include "../error.hpp"
#include "../types.hpp"

namespace rcnn::cv_io {

/// Decodes an image file to 8-bit BGR exactly as `cv2.imread(path)` does (the decoding
/// Detectron2's DefaultPredictor examples use): grayscale is replicated, alpha dropped,
/// 16-bit scaled to 8-bit. Throws rcnn::Error naming the file when it is missing, empty
/// or not a decodable image.
inline cv::Mat read_image(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    detail::fail(path.string() + ": image file not found");
  if (!std::filesystem::is_regular_file(path, ec))
    detail::fail(path.string() + ": not a regular file");
  if (std::filesystem::file_size(path, ec) == 0)
    detail::fail(path.string() + ": image file is empty");
  cv::Mat img;
  try {
    img = cv::imread(path.string(), cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    detail::fail(path.string() + ": OpenCV could not decode it (" + e.what() + ")");
  }
  if (img.empty())
    detail::fail(path.string() + ": not a decodable image (unknown format or corrupt data)");
  return img;
}

/// Views an 8-bit cv::Mat (1, 3 or 4 channels, BGR/BGRA as OpenCV loads it, any row
/// step) as an ImageView without copying. Other depths are converted into `storage`
/// (16-bit: / 257, float: assumed 0..255). The view is valid while `m` / `storage` live.
inline ImageView view(const cv::Mat& m, cv::Mat& storage, bool bgr = true) {
  if (m.empty()) detail::fail("image: empty cv::Mat");
  if (m.dims != 2) detail::fail("image: cv::Mat has " + std::to_string(m.dims) + " dimensions, expected 2");
  const int ch = m.channels();
  if (ch != 1 && ch != 3 && ch != 4)
    detail::fail("image: cv::Mat has " + std::to_string(ch) + " channels, expected 1, 3 or 4");
  const cv::Mat* src = &m;
  if (m.depth() != CV_8U) {
    double scale = 1.0;
    if (m.depth() == CV_16U) scale = 1.0 / 257.0;
    else if (m.depth() == CV_16S || m.depth() == CV_8S || m.depth() == CV_32S) scale = 1.0;
    m.convertTo(storage, CV_MAKETYPE(CV_8U, ch), scale);
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
