// expect: NmsPolicy
// A stage bundle whose box NMS has no reserve(): the Detector refuses it at its boundary,
// naming the concept, instead of a policy that silently allocates per image.
#include <rcnn/detector.hpp>

#include "executor_stub.hpp"

struct NoReserveNms {
  void operator()(std::span<const rcnn::Box>, std::span<const float>, double, std::vector<int>&) {}
};
struct Stages : rcnn::Detectron2Stages {
  using box_nms = NoReserveNms;
};
rcnn::Detector<StubExec, rcnn::RoIAlignRef, Stages>* d = nullptr;
int main() { return d != nullptr; }
