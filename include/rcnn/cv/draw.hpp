#pragma once
/// \file draw.hpp
/// Draw detections on an image (OpenCV). Link rcnn::opencv.

#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../types.hpp"

namespace rcnn::cv_io {

/// A distinct, stable colour per class id.
inline cv::Scalar class_colour(int class_id) {
  static const int kPalette[][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                    {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
                                    {210, 245, 60}, {250, 190, 212}, {0, 128, 128}, {220, 190, 255},
                                    {170, 110, 40}, {255, 250, 200}, {128, 0, 0},  {170, 255, 195}};
  const auto& c = kPalette[std::size_t(class_id < 0 ? 0 : class_id) % 16];
  return cv::Scalar(c[2], c[1], c[0]);  // BGR
}

/// Draws boxes with "name score" labels onto a BGR image, in place. Throws rcnn::Error (never
/// cv::Exception) when OpenCV cannot draw on `bgr` (e.g. an empty or unsupported Mat).
inline void draw_detections(cv::Mat& bgr, const std::vector<Detection>& dets,
                            const std::vector<std::string>& class_names) try {
  const int thickness = std::max(1, int(std::lround(std::max(bgr.rows, bgr.cols) / 400.0)));
  const double font = std::max(0.4, std::max(bgr.rows, bgr.cols) / 1000.0);
  for (const auto& d : dets) {
    const cv::Scalar colour = class_colour(d.class_id);
    const cv::Point p1(int(std::lround(d.box.x1)), int(std::lround(d.box.y1)));
    const cv::Point p2(int(std::lround(d.box.x2)), int(std::lround(d.box.y2)));
    cv::rectangle(bgr, p1, p2, colour, thickness);
    const std::string name = d.class_id >= 0 && std::size_t(d.class_id) < class_names.size()
                                 ? class_names[std::size_t(d.class_id)]
                                 : std::to_string(d.class_id);
    char label[160];
    std::snprintf(label, sizeof label, "%s %.2f", name.c_str(), double(d.score));
    int base = 0;
    const cv::Size ts = cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, font, 1, &base);
    const cv::Point org(p1.x, std::max(ts.height + 2, p1.y - 2));
    cv::rectangle(bgr, cv::Point(org.x, org.y - ts.height - 2), cv::Point(org.x + ts.width, org.y + base),
                  colour, cv::FILLED);
    cv::putText(bgr, label, org, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  }
} catch (const cv::Exception& e) {
  rcnn::detail::fail("draw_detections: OpenCV could not draw on the " + std::to_string(bgr.rows) +
                     "x" + std::to_string(bgr.cols) + " image (" + e.msg + ")");
}

}  // namespace rcnn::cv_io
