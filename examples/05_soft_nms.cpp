// 05: a stage with a run-time parameter, given as a value through rcnn::load(). Gaussian
// soft-NMS (Bodla et al. 2017) for the box head only: instead of dropping a box that overlaps
// a better one, its score is multiplied by exp(-IoU^2 / sigma), and boxes whose score falls
// below `min_score` are dropped. A re-scoring NMS takes its scores as std::span<float>; the
// detector's batched per-class NMS writes the new scores back and orders the detections by
// them. The RPN keeps its hard NMS (the `rpn_nms` slot is not touched).
//   build/bin/example-05_soft_nms BUNDLE_DIR IMAGE [SIGMA]   (a Detectron2 bundle)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

/// Gaussian soft-NMS. No default constructor: sigma must be chosen.
class SoftNms {
 public:
  explicit SoftNms(float sigma, float min_score = 1e-3f) : sigma_(sigma), min_score_(min_score) {}

  void reserve(std::size_t n) {
    alive_.reserve(n);
  }

  /// keep = the boxes whose decayed score stays >= min_score, best first; scores[i] is box
  /// i's decayed score. The IoU threshold of the bundle is not used (soft-NMS has none).
  void operator()(std::span<const rcnn::Box> boxes, std::span<float> scores, double /*iou*/,
                  std::vector<int>& keep) {
    keep.clear();
    alive_.assign(boxes.size(), 1);
    for (;;) {
      int best = -1;
      for (std::size_t i = 0; i < boxes.size(); ++i)
        if (alive_[i] && (best < 0 || scores[i] > scores[std::size_t(best)])) best = int(i);
      if (best < 0 || scores[std::size_t(best)] < min_score_) break;
      alive_[std::size_t(best)] = 0;
      keep.push_back(best);
      const rcnn::Box& b = boxes[std::size_t(best)];
      for (std::size_t i = 0; i < boxes.size(); ++i) {
        if (!alive_[i]) continue;
        const float iou = overlap(b, boxes[i]);
        scores[i] *= std::exp(-(iou * iou) / sigma_);
      }
    }
  }

 private:
  static float overlap(const rcnn::Box& a, const rcnn::Box& b) {
    const float w = std::max(0.f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1));
    const float h = std::max(0.f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1));
    const float inter = w * h;
    return inter / (a.area() + b.area() - inter);
  }
  float sigma_, min_score_;
  std::vector<char> alive_;
};

struct SoftNmsStages : rcnn::Detectron2Stages {
  using box_nms = SoftNms;
};

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s BUNDLE_DIR IMAGE [SIGMA] (a Detectron2 bundle)\n", argv[0]);
    return 2;
  }
  const float sigma = argc == 4 ? std::strtof(argv[3], nullptr) : 0.5f;
  try {
    rcnn::OmpRoIAlign roi_align;
    roi_align.num_threads = 2;
    auto det = rcnn::load<rcnn::TorchScriptExec, rcnn::OmpRoIAlign, SoftNmsStages>(
        argv[1], {/*intra_op_threads=*/2}, roi_align,
        rcnn::StageSet<SoftNmsStages>{.box_nms = SoftNms(sigma)});
    auto hard = rcnn::load<rcnn::TorchScriptExec, rcnn::OmpRoIAlign, rcnn::Detectron2Stages>(
        argv[1], {2}, roi_align);
    cv::Mat image = rcnn::cv_io::read_image(argv[2]);
    cv::Mat storage;
    const rcnn::ImageView view = rcnn::cv_io::view(image, storage);
    const auto soft = det(view);
    const auto plain = hard(view);
    std::printf("soft-NMS (sigma %.2f): %zu detections; hard NMS: %zu\n", double(sigma),
                soft.detections.size(), plain.detections.size());
    for (std::size_t i = 0; i < soft.detections.size() && i < 5; ++i) {
      const auto& d = soft.detections[i];
      std::printf("  %-12s %.3f [%.1f %.1f %.1f %.1f]\n", det.config().classes[std::size_t(d.class_id)].c_str(),
                  double(d.score), double(d.box.x1), double(d.box.y1), double(d.box.x2),
                  double(d.box.y2));
    }
  } catch (const rcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
