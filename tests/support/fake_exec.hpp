#pragma once
// A deterministic executor in plain C++ (no LibTorch) for Detector-level tests that must run
// in the unit tests, under AddressSanitizer / UndefinedBehaviorSanitizer and under
// ThreadSanitizer (which cannot instrument LibTorch), and in the fuzzers.
//
// Its "networks" are cheap local functions of the input shaped exactly as a bundle's modules
// are ([N, A, H/s, W/s] objectness, [N, 4A, ...] deltas, [N, C, ...] features; [R, K+1]
// logits and [R, 4K'] deltas; [R, Km, 2P, 2P] mask logits), with read-only "weights" that replicas may share. Faults can
// be injected to make it disagree with model.json the way a wrong bundle does.
#include <rcnn/config.hpp>
#include <rcnn/exec/outputs.hpp>
#include <rcnn/types.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

namespace rcnn_test {

/// Ways to make the fake modules disagree with model.json (0 / false: none).
struct FakeFaults {
  int drop_rpn_levels = 0;      ///< return fewer objectness/deltas tensors
  int drop_roi_levels = 0;      ///< return fewer feature maps
  int extra_anchors = 0;        ///< anchors per cell + this
  int extra_channels = 0;       ///< feature channels + this
  int extra_logit_columns = 0;  ///< class_logits width + this
  int extra_delta_columns = 0;  ///< box_deltas width + this
  int extra_rows = 0;           ///< box head rows + this
  int grid_scale = 1;           ///< RPN / feature grids computed with stride * grid_scale
  bool nan_objectness = false;  ///< every objectness logit NaN (no proposals)
  bool nan_deltas = false;      ///< every RPN delta NaN
  bool nan_logits = false;      ///< every class logit NaN
  bool inf_box_deltas = false;  ///< every box delta +Inf
  float objectness_bias = 0.f;  ///< added to every objectness logit
  float logit_scale = 3.f;      ///< amplitude of the class logits
  int extra_mask_channels = 0;  ///< mask logits channels + this
  int extra_mask_size = 0;      ///< mask side (2P) + this
  bool nan_mask_logits = false; ///< every mask logit NaN
};

/// Read-only parameters shared by replicas.
struct FakeWeights {
  int channels = 0, classes = 0, delta_width = 0;
  std::vector<float> logits_w;  ///< [classes + 1, channels]
  std::vector<float> deltas_w;  ///< [delta_width, channels]
  static std::shared_ptr<const FakeWeights> make(const rcnn::ModelConfig& cfg) {
    auto w = std::make_shared<FakeWeights>();
    const auto& h = cfg.roi_heads;
    w->channels = cfg.backbone.channels;
    w->classes = h.num_classes;
    w->delta_width = h.class_agnostic_box_regression
                         ? 4
                         : (h.background_first ? 4 * (h.num_classes + 1) : 4 * h.num_classes);
    std::uint32_t state = 12345u;
    const auto next = [&state] {
      state = state * 1664525u + 1013904223u;
      return float(state >> 8) / float(1u << 24) - 0.5f;  // [-0.5, 0.5)
    };
    w->logits_w.resize(std::size_t(w->classes + 1) * std::size_t(w->channels));
    for (float& v : w->logits_w) v = next();
    w->deltas_w.resize(std::size_t(w->delta_width) * std::size_t(w->channels));
    for (float& v : w->deltas_w) v = 0.2f * next();
    return w;
  }
};

class FakeExec {
 public:
  explicit FakeExec(const rcnn::ModelConfig& cfg, FakeFaults faults = {},
                    std::shared_ptr<const FakeWeights> weights = nullptr)
      : cfg_(cfg), faults_(faults), weights_(weights ? weights : FakeWeights::make(cfg)) {}

  int backbone_calls = 0;
  std::vector<std::int64_t> head_rows;  ///< rows of every box head call
  std::vector<std::int64_t> mask_rows;  ///< rows of every mask head call

  /// Mask head: channel k of row r at (y, x) is a smooth blob centred in the mask, shifted by
  /// the RoI's mean feature and k; Km = K (background last), K + 1 (first) or 1 (agnostic).
  void run_mask_head(const rcnn::TensorView& rois, rcnn::MaskHeadOutputs& out) {
    const std::int64_t R = rois.shape[0], C = rois.shape[1], P = rois.shape[2];
    mask_rows.push_back(R);
    const auto& h = cfg_.roi_heads;
    const bool agnostic = cfg_.mask_head && cfg_.mask_head->class_agnostic;
    const std::int64_t Km = (agnostic ? 1 : (h.background_first ? h.num_classes + 1 : h.num_classes)) +
                            faults_.extra_mask_channels;
    const std::int64_t M = (cfg_.mask_head ? cfg_.mask_head->mask_size : 2 * P) + faults_.extra_mask_size;
    mask_logits_.assign(std::size_t(std::max<std::int64_t>(R * Km * M * M, 0)), 0.f);
    const std::size_t per = std::size_t(C * P * rois.shape[3]);
    for (std::int64_t r = 0; r < R; ++r) {
      float mean = 0.f;
      for (std::size_t i = 0; i < per; ++i) mean += rois.data[std::size_t(r) * per + i];
      mean /= float(std::max<std::size_t>(per, 1));
      for (std::int64_t k = 0; k < Km; ++k)
        for (std::int64_t y = 0; y < M; ++y)
          for (std::int64_t x = 0; x < M; ++x) {
            const float u = (float(x) + 0.5f) / float(M) - 0.5f, v = (float(y) + 0.5f) / float(M) - 0.5f;
            const float val = 4.f - 30.f * (u * u + v * v) + std::sin(mean + 0.3f * float(k) + 3.f * u);
            mask_logits_[std::size_t(((r * Km + k) * M + y) * M + x)] =
                faults_.nan_mask_logits ? std::numeric_limits<float>::quiet_NaN() : val;
          }
    }
    out.logits = {mask_logits_.data(), {R, Km, M, M}};
  }

  void run_backbone_rpn(const rcnn::TensorView& in, rcnn::BackboneOutputs& out) {
    ++backbone_calls;
    const std::int64_t N = in.shape[0], Hin = in.shape[2], Win = in.shape[3];
    const auto& b = cfg_.backbone;
    const std::size_t L = b.rpn_levels.size() - std::size_t(faults_.drop_rpn_levels);
    const std::size_t RL = b.roi_levels.size() - std::size_t(faults_.drop_roi_levels);
    objectness_.resize(L);
    deltas_.resize(L);
    features_.resize(RL);
    out.objectness.assign(L, {});
    out.deltas.assign(L, {});
    out.features.assign(RL, {});
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (std::size_t l = 0; l < L; ++l) {
      const int s = b.rpn_strides[l] * faults_.grid_scale;
      const std::int64_t H = (Hin + s - 1) / s, W = (Win + s - 1) / s;
      const std::int64_t A = cfg_.anchors.anchors_per_cell(l) + faults_.extra_anchors;
      objectness_[l].resize(std::size_t(N * A * H * W));
      deltas_[l].resize(std::size_t(N * 4 * A * H * W));
      for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t a = 0; a < A; ++a)
          for (std::int64_t y = 0; y < H; ++y)
            for (std::int64_t x = 0; x < W; ++x) {
              const float p = pixel(in, n, 0, y * s, x * s);
              const float v = 0.02f * p + std::sin(0.37f * float(x) + 0.91f * float(y) +
                                                   1.3f * float(a) + float(l)) +
                              faults_.objectness_bias;
              objectness_[l][std::size_t(((n * A + a) * H + y) * W + x)] =
                  faults_.nan_objectness ? nan : v;
              for (int k = 0; k < 4; ++k) {
                const float d = 0.1f * std::sin(0.5f * float(x) - 0.7f * float(y) + float(k) +
                                                0.01f * p);
                deltas_[l][std::size_t((((n * A + a) * 4 + k) * H + y) * W + x)] =
                    faults_.nan_deltas ? nan : d;
              }
            }
      out.objectness[l] = {objectness_[l].data(), {N, A, H, W}};
      out.deltas[l] = {deltas_[l].data(), {N, 4 * A, H, W}};
    }
    const std::int64_t C = b.channels + faults_.extra_channels;
    for (std::size_t l = 0; l < RL; ++l) {
      const int s = b.roi_strides[l] * faults_.grid_scale;
      const std::int64_t H = (Hin + s - 1) / s, W = (Win + s - 1) / s;
      features_[l].resize(std::size_t(N * C * H * W));
      for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t c = 0; c < C; ++c)
          for (std::int64_t y = 0; y < H; ++y)
            for (std::int64_t x = 0; x < W; ++x)
              features_[l][std::size_t(((n * C + c) * H + y) * W + x)] =
                  std::tanh(pixel(in, n, c % 3, y * s, x * s) / 64.f) + 0.01f * float(c);
      out.features[l] = {features_[l].data(), {N, C, H, W}};
    }
  }

  void run_box_head(const rcnn::TensorView& rois, rcnn::BoxHeadOutputs& out) {
    const std::int64_t R = rois.shape[0], C = rois.shape[1];
    const std::size_t per = std::size_t(rois.shape[1] * rois.shape[2] * rois.shape[3]);
    head_rows.push_back(R);
    const FakeWeights& w = *weights_;
    const std::int64_t rows = R + faults_.extra_rows;
    const std::int64_t K1 = w.classes + 1 + faults_.extra_logit_columns;
    const std::int64_t D = w.delta_width + faults_.extra_delta_columns;
    logits_.assign(std::size_t(rows * K1), 0.f);
    box_deltas_.assign(std::size_t(rows * D), 0.f);
    std::vector<float> mean(std::size_t(w.channels), 0.f);
    const std::size_t plane = per / std::size_t(C);
    for (std::int64_t r = 0; r < std::min(R, rows); ++r) {
      const float* f = rois.data + std::size_t(r) * per;
      for (std::int64_t c = 0; c < w.channels && c < C; ++c) {
        float s = 0.f;
        for (std::size_t i = 0; i < plane; ++i) s += f[std::size_t(c) * plane + i];
        mean[std::size_t(c)] = s / float(plane);
      }
      for (std::int64_t k = 0; k < K1; ++k) {
        float s = 0.f;
        for (int c = 0; c < w.channels; ++c)
          s += w.logits_w[std::size_t((k % (w.classes + 1)) * w.channels + c)] *
               mean[std::size_t(c)];
        logits_[std::size_t(r * K1 + k)] =
            faults_.nan_logits ? std::numeric_limits<float>::quiet_NaN()
                               : faults_.logit_scale * std::sin(8.f * s + 0.5f * float(k));
      }
      for (std::int64_t j = 0; j < D; ++j) {
        float s = 0.f;
        for (int c = 0; c < w.channels; ++c)
          s += w.deltas_w[std::size_t((j % w.delta_width) * w.channels + c)] *
               mean[std::size_t(c)];
        box_deltas_[std::size_t(r * D + j)] =
            faults_.inf_box_deltas ? std::numeric_limits<float>::infinity() : s;
      }
    }
    out.class_logits = {logits_.data(), {rows, K1, 1, 1}};
    out.box_deltas = {box_deltas_.data(), {rows, D, 1, 1}};
  }

 private:
  static float pixel(const rcnn::TensorView& in, std::int64_t n, std::int64_t c, std::int64_t y,
                     std::int64_t x) {
    const std::int64_t H = in.shape[2], W = in.shape[3];
    y = std::min(y, H - 1);
    x = std::min(x, W - 1);
    return in.data[std::size_t(((n * in.shape[1] + c) * H + y) * W + x)];
  }

  rcnn::ModelConfig cfg_;
  FakeFaults faults_;
  std::shared_ptr<const FakeWeights> weights_;
  std::vector<std::vector<float>> objectness_, deltas_, features_;
  std::vector<float> logits_, box_deltas_, mask_logits_;
};

}  // namespace rcnn_test
