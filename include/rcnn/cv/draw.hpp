#pragma once
/// \file draw.hpp
/// Draw detections, their instance masks and keypoints on an image (OpenCV). Link rcnn::opencv.

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../mask/mask_types.hpp"
#include "../results.hpp"
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
    // Above the box, moved left where it would leave the image on the right.
    const int x = std::max(0, std::min(p1.x, bgr.cols - ts.width));
    const cv::Point org(x, std::max(ts.height + 2, p1.y - 2));
    cv::rectangle(bgr, cv::Point(org.x, org.y - ts.height - 2), cv::Point(org.x + ts.width, org.y + base),
                  colour, cv::FILLED);
    cv::putText(bgr, label, org, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  }
} catch (const cv::Exception& e) {
  rcnn::detail::fail("draw_detections: OpenCV could not draw on the " + std::to_string(bgr.rows) +
                     "x" + std::to_string(bgr.cols) + " image (" + e.msg + ")");
}

/// Overlays each detection's instance mask on an 8-bit BGR image, in place: every set pixel
/// becomes `(1 - alpha) * pixel + alpha * colour`, rounded, in the detection's class colour
/// (`class_colour`, the colour `draw_detections` gives its box). `masks[i]` belongs to
/// `dets[i]` (`DetectionResult::masks`); call it before `draw_detections` so that the boxes
/// and labels stay on top. Overlapping masks blend in order.
///
/// Errors: rcnn::Error (never cv::Exception) if `bgr` is not CV_8UC3, if the counts differ,
/// if `alpha` is outside [0, 1], or if a mask's window does not lie inside the image (masks
/// of another image size). Cost: O(sum of window areas); no allocation.
inline void draw_masks(cv::Mat& bgr, const std::vector<Detection>& dets,
                       const std::vector<InstanceMask>& masks, double alpha = 0.5) {
  if (bgr.type() != CV_8UC3 || bgr.dims != 2)
    rcnn::detail::fail("draw_masks: expected an 8-bit 3-channel (BGR) image, got type " +
                       std::to_string(bgr.type()) + " of " + std::to_string(bgr.rows) + "x" +
                       std::to_string(bgr.cols));
  if (masks.size() != dets.size())
    rcnn::detail::fail("draw_masks: " + std::to_string(masks.size()) + " masks for " +
                       std::to_string(dets.size()) + " detections");
  if (!(alpha >= 0.0 && alpha <= 1.0))
    rcnn::detail::fail("draw_masks: alpha " + std::to_string(alpha) + " outside [0, 1]");
  for (const InstanceMask& m : masks)
    if (m.width > 0 && (m.x0 < 0 || m.y0 < 0 || m.x0 + m.width > bgr.cols ||
                        m.y0 + m.height > bgr.rows))
      rcnn::detail::fail("draw_masks: mask window (" + std::to_string(m.x0) + ", " +
                         std::to_string(m.y0) + ", " + std::to_string(m.width) + " x " +
                         std::to_string(m.height) + ") outside the " + std::to_string(bgr.cols) +
                         " x " + std::to_string(bgr.rows) + " image");
  const float a = float(alpha), keep = 1.f - a;
  for (std::size_t i = 0; i < masks.size(); ++i) {
    const InstanceMask& m = masks[i];
    const cv::Scalar colour = class_colour(dets[i].class_id);
    const float add[3] = {a * float(colour[0]), a * float(colour[1]), a * float(colour[2])};
    for (int y = 0; y < m.height; ++y) {
      const std::uint8_t* bits = m.bits.data() + std::size_t(y) * std::size_t(m.width);
      uchar* px = bgr.ptr<uchar>(m.y0 + y) + 3 * std::size_t(m.x0);
      for (int x = 0; x < m.width; ++x, px += 3) {
        if (!bits[x]) continue;
        for (int c = 0; c < 3; ++c)
          px[c] = uchar(std::clamp(std::lround(keep * float(px[c]) + add[c]), 0L, 255L));
      }
    }
  }
}

/// Draws each detection's keypoints (Keypoint R-CNN results) onto a BGR image, in place:
/// the `skeleton`'s edges (model.json keypoint_head.skeleton, keypoint index pairs) as lines
/// and every keypoint as a dot, in the detection's class colour; only keypoints whose score
/// (in the bundle's decode convention) is at least `min_score`: by default all. Throws rcnn::Error (never
/// cv::Exception) when OpenCV cannot draw on `bgr` or the result's counts disagree.
inline void draw_keypoints(cv::Mat& bgr, const DetectionResult& r,
                           const std::vector<std::array<int, 2>>& skeleton,
                           float min_score = 0.f) try {
  const std::size_t K = std::size_t(std::max(r.num_keypoints, 0));
  rcnn::detail::require(r.keypoints.size() == r.detections.size() * K,
                        "draw_keypoints: the result has " + std::to_string(r.keypoints.size()) +
                            " keypoints for " + std::to_string(r.detections.size()) +
                            " detections of " + std::to_string(K));
  const int radius = std::max(2, int(std::lround(std::max(bgr.rows, bgr.cols) / 300.0)));
  const int thickness = std::max(1, radius / 2);
  const auto point = [](const Keypoint& k) {
    return cv::Point(int(std::lround(k.x)), int(std::lround(k.y)));
  };
  for (std::size_t i = 0; i < r.detections.size(); ++i) {
    const cv::Scalar colour = class_colour(r.detections[i].class_id);
    const std::span<const Keypoint> kps = r.keypoints_of(i);
    for (const auto& [a, b] : skeleton) {
      if (a < 0 || b < 0 || std::size_t(a) >= K || std::size_t(b) >= K) continue;
      const Keypoint& ka = kps[std::size_t(a)];
      const Keypoint& kb = kps[std::size_t(b)];
      if (ka.score >= min_score && kb.score >= min_score)
        cv::line(bgr, point(ka), point(kb), colour, thickness, cv::LINE_AA);
    }
    for (const Keypoint& k : kps)
      if (k.score >= min_score) cv::circle(bgr, point(k), radius, colour, cv::FILLED, cv::LINE_AA);
  }
} catch (const cv::Exception& e) {
  rcnn::detail::fail("draw_keypoints: OpenCV could not draw on the " + std::to_string(bgr.rows) +
                     "x" + std::to_string(bgr.cols) + " image (" + e.msg + ")");
}

}  // namespace rcnn::cv_io
