// expect: a stage of this bundle has no default constructor; pass the stages
// A stage with a run-time parameter (no default constructor) must be passed as a value;
// building the Detector without the stages says so in one line.
#include <rcnn/detector.hpp>

#include "executor_stub.hpp"

struct SigmaNms {
  explicit SigmaNms(float s) : sigma(s) {}
  float sigma;
  void reserve(std::size_t) {}
  void operator()(std::span<const rcnn::Box>, std::span<float>, double, std::vector<int>&) {}
};
struct Stages : rcnn::Detectron2Stages {
  using box_nms = SigmaNms;
};
int main() {
  rcnn::Detector<StubExec, rcnn::RoIAlignRef, Stages> det(rcnn::ModelConfig{}, StubExec{});
  return det.has_masks();
}
