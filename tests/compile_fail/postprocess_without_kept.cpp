// expect: PostprocessPolicy
// A postprocess policy that does not report the detections it keeps cannot be used: masks
// and keypoints follow detections by those indices.
#include <rcnn/detector.hpp>

#include "executor_stub.hpp"

struct OldPostprocess {
  void reserve(const rcnn::StageSizing&) {}
  void operator()(rcnn::Size, rcnn::Size, rcnn::Conventions, const rcnn::PostprocessConfig&,
                  std::vector<rcnn::Detection>&) {}
};
struct Stages : rcnn::TorchvisionStages {
  using postprocess = OldPostprocess;
};
rcnn::Detector<StubExec, rcnn::RoIAlignRef, Stages>* d = nullptr;
int main() { return d != nullptr; }
