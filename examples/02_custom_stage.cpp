// 02: customise one stage by deriving from a stage bundle. Here: an NMS policy that wraps
// the reference NMS and counts how many boxes it suppressed, in the box head's slot
// (`box_nms`: per-class NMS; the RPN keeps its own `rpn_nms`), in a Detectron2 detector
// with the OpenMP RoIAlign kernel.
//   build/bin/example-02_custom_stage BUNDLE_DIR IMAGE
#include <cstdio>

#include <rcnn/cv/image.hpp>
#include <rcnn/detector.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/io/bundle.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

/// Satisfies rcnn::NmsPolicy: same contract as rcnn::GreedyNms (no re-scoring, no scratch).
struct CountingNms {
  rcnn::GreedyNms inner;
  std::size_t suppressed = 0;
  void reserve(std::size_t) {}
  void operator()(std::span<const rcnn::Box> boxes, std::span<const float> scores, double iou,
                  std::vector<int>& keep) {
    inner(boxes, scores, iou, keep);
    suppressed += boxes.size() - keep.size();
  }
};

struct MyStages : rcnn::Detectron2Stages {
  using box_nms = CountingNms;
};

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s BUNDLE_DIR IMAGE (a Detectron2 bundle)\n", argv[0]);
    return 2;
  }
  try {
    rcnn::ModelConfig cfg = rcnn::read_bundle(argv[1]);
    rcnn::TorchScriptExec exec(cfg, {2});
    rcnn::OmpRoIAlign roi_align;
    roi_align.num_threads = 2;
    rcnn::Detector<rcnn::TorchScriptExec, rcnn::OmpRoIAlign, MyStages> det(cfg, std::move(exec),
                                                                            roi_align);
    cv::Mat image = rcnn::cv_io::read_image(argv[2]);
    cv::Mat storage;
    const auto result = det(rcnn::cv_io::view(image, storage));
    std::printf("%zu detections; the box head's NMS suppressed %zu boxes\n",
                result.detections.size(), det.stages().box_nms.suppressed);
  } catch (const rcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
