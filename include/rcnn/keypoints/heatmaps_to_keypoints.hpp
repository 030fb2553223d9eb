#pragma once
/// \file heatmaps_to_keypoints.hpp
/// Heatmap logits of one detection -> its keypoints, in each framework's convention
/// (Detectron2 `heatmaps_to_keypoints` in structures/keypoints.py, torchvision
/// `heatmaps_to_keypoints` in models/detection/roi_heads.py; docs/explanation/keypoints.md).
/// Reference policy: plain loops over one keypoint plane at a time. Framework-free.
///
/// Both frameworks, in float32, for a box (x1, y1, x2, y2) in the resized frame:
///   w = max(x2 - x1, 1), h = max(y2 - y1, 1), W = ceil(w), H = ceil(h)
///   map_k = bicubic(heatmap_k, H x W)                      (bicubic_upsample.hpp)
///   (xi, yi) = first maximum of map_k in row-major order   (torch.argmax)
///   x = (xi + 0.5) * (w / W) + x1,  y = (yi + 0.5) * (h / H) + y1
/// and the score:
///   detectron2:  exp(map_k[yi, xi] - max) / sum(exp(heatmap_k - max)) = 1 / sum(...), the
///                spatial softmax at the peak normalised over the S x S heatmap (column 3 of
///                its xy_preds, which keypoint_rcnn_inference keeps as the score);
///   torchvision: map_k[yi, xi], the upsampled logit at the peak (keypoints_scores).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../types.hpp"
#include "bicubic_upsample.hpp"
#include "keypoint_types.hpp"

namespace rcnn {

/// Reusable buffers of the decoding (sized by the largest box seen).
struct KeypointDecodeWorkspace {
  CubicTaps taps_h, taps_w;
  std::vector<float> plane;
};

/// Decodes the K heatmaps [K, S, S] of one detection with box `box` (resized frame) into
/// `out[0..K)` (resized frame), by `decode`'s convention.
inline void heatmaps_to_keypoints(const float* heatmaps, int K, int S, const Box& box,
                                  KeypointHeadConfig::Decode decode,
                                  KeypointDecodeWorkspace& ws, std::span<Keypoint> out) {
  detail::require(out.size() == std::size_t(K), "heatmaps_to_keypoints: output size != K");
  const float w = std::max(box.x2 - box.x1, 1.f);
  const float h = std::max(box.y2 - box.y1, 1.f);
  detail::require(std::isfinite(w) && std::isfinite(h) && w <= 65536.f && h <= 65536.f, [&] {
    return "heatmaps_to_keypoints: box [" + std::to_string(box.x1) + ", " + std::to_string(box.y1) +
           ", " + std::to_string(box.x2) + ", " + std::to_string(box.y2) +
           "] is not finite or wider than 65536 pixels";
  });
  const float wc = std::ceil(w), hc = std::ceil(h);
  const float w_corr = w / wc, h_corr = h / hc;
  const int W = int(wc), H = int(hc);
  cubic_taps(S, H, ws.taps_h);
  cubic_taps(S, W, ws.taps_w);
  ws.plane.resize(std::size_t(H) * std::size_t(W));
  const std::size_t plane_in = std::size_t(S) * std::size_t(S);
  for (int k = 0; k < K; ++k) {
    const float* hm = heatmaps + std::size_t(k) * plane_in;
    upsample_bicubic_ref(hm, S, ws.taps_h, ws.taps_w, H, W, ws.plane.data());
    // First maximum, as torch.argmax (a NaN, should one appear, wins as torch's does).
    std::size_t pos = 0;
    float best = ws.plane[0];
    for (std::size_t p = 1; p < ws.plane.size(); ++p) {
      const float v = ws.plane[p];
      if (std::isnan(best)) break;
      if (v > best || std::isnan(v)) best = v, pos = p;
    }
    const int xi = int(pos % std::size_t(W)), yi = int(pos / std::size_t(W));
    Keypoint& kp = out[std::size_t(k)];
    kp.x = (float(xi) + 0.5f) * w_corr + box.x1;
    kp.y = (float(yi) + 0.5f) * h_corr + box.y1;
    if (decode == KeypointHeadConfig::Decode::torchvision) {
      kp.score = best;
    } else {
      double sum = 0;  // torch sums in float with its own order: ~1e-7 relative apart
      for (std::size_t p = 0; p < plane_in; ++p) sum += double(std::exp(hm[p] - best));
      kp.score = 1.f / float(sum);
    }
  }
}

}  // namespace rcnn
