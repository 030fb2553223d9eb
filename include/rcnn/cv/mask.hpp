#pragma once
/// \file mask.hpp
/// OpenCV views of instance masks. Link rcnn::opencv.

#include <opencv2/core.hpp>

#include <cstddef>
#include <cstring>
#include <string>

#include "../error.hpp"
#include "../mask/mask_types.hpp"
#include "../types.hpp"

namespace rcnn::cv_io {

/// The full `image`-sized mask of `m` as a new CV_8UC1 cv::Mat (`image.height` rows,
/// `image.width` columns): `value` where the mask is set, 0 elsewhere (the default 255 suits
/// `cv::imwrite` and OpenCV's mask arguments; 1 gives the 0/1 mask).
///
/// Errors: rcnn::Error if the size is negative or the mask's window does not lie inside the
/// image (as `InstanceMask::expand`). Cost: O(H * W) to clear, O(window area) to fill; one
/// allocation.
inline cv::Mat to_mat(const InstanceMask& m, Size image, uchar value = 255) {
  if (image.height < 0 || image.width < 0)
    detail::fail("to_mat: bad image size " + std::to_string(image.height) + " x " +
                 std::to_string(image.width));
  if (m.width > 0 && (m.x0 < 0 || m.y0 < 0 || m.x0 + m.width > image.width ||
                      m.y0 + m.height > image.height))
    detail::fail("to_mat: mask window (" + std::to_string(m.x0) + ", " + std::to_string(m.y0) +
                 ", " + std::to_string(m.width) + " x " + std::to_string(m.height) +
                 ") outside the " + std::to_string(image.width) + " x " +
                 std::to_string(image.height) + " image");
  cv::Mat out = cv::Mat::zeros(image.height, image.width, CV_8UC1);
  for (int y = 0; y < m.height; ++y) {
    const std::uint8_t* src = m.bits.data() + std::size_t(y) * std::size_t(m.width);
    uchar* dst = out.ptr<uchar>(m.y0 + y) + m.x0;
    for (int x = 0; x < m.width; ++x) dst[x] = src[x] ? value : uchar{0};
  }
  return out;
}

}  // namespace rcnn::cv_io
