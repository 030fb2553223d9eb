// expect: a re-scoring NMS policy \(taking std::span<float> scores\) needs writable scores
// batched_nms with a re-scoring (soft-NMS) policy and read-only scores would lose the new
// scores: refused with one line.
#include <rcnn/nms/batched_nms.hpp>

struct Rescoring {
  void reserve(std::size_t) {}
  void operator()(std::span<const rcnn::Box>, std::span<float>, double, std::vector<int>&) {}
};
int main() {
  const std::vector<rcnn::Box> boxes(2);
  const std::vector<float> scores(2, 0.5f);
  const std::vector<int> groups(2, 0);
  std::vector<int> keep;
  rcnn::BatchedNmsWorkspace ws;
  Rescoring nms;
  rcnn::batched_nms(nms, boxes, scores, groups, 0.5, keep, ws);
  return int(keep.size());
}
