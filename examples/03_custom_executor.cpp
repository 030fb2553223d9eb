// 03: a user-written executor. Anything with the two member functions of rcnn::Executor
// (concepts.hpp) plugs into rcnn::Detector; nothing is registered, nothing is virtual.
// This one wraps TorchScriptExec and runs the box head in fixed chunks of at most
// `chunk_rows` RoIs (bounding the head's peak memory), concatenating the chunks' outputs
// into buffers it owns, and counts the head calls it made.
//   build/bin/example-03_custom_executor BUNDLE_DIR IMAGE [CHUNK_ROWS]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <rcnn/cv/image.hpp>
#include <rcnn/detector.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/io/bundle.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

/// Satisfies rcnn::Executor: same contract as TorchScriptExec (views valid until the next
/// call of the same function; 2-D head outputs stored as {R, width, 1, 1}).
class ChunkedHeadExec {
 public:
  ChunkedHeadExec(const rcnn::ModelConfig& cfg, int chunk_rows, int threads)
      : inner_(cfg, {threads}), chunk_rows_(std::max(chunk_rows, 1)) {}

  void run_backbone_rpn(const rcnn::TensorView& images, rcnn::BackboneOutputs& out) {
    inner_.run_backbone_rpn(images, out);
  }

  void run_box_head(const rcnn::TensorView& rois, rcnn::BoxHeadOutputs& out) {
    const std::int64_t rows = rois.shape[0];
    const std::size_t per_roi = std::size_t(rois.shape[1] * rois.shape[2] * rois.shape[3]);
    logits_.clear();
    deltas_.clear();
    std::int64_t logits_w = 0, deltas_w = 0;
    for (std::int64_t start = 0; start < rows; start += chunk_rows_) {
      const std::int64_t n = std::min<std::int64_t>(chunk_rows_, rows - start);
      const rcnn::TensorView chunk{rois.data + std::size_t(start) * per_roi,
                                   {n, rois.shape[1], rois.shape[2], rois.shape[3]}};
      rcnn::BoxHeadOutputs part;
      inner_.run_box_head(chunk, part);  // part's views live until the next head call
      ++calls_;
      logits_w = part.class_logits.shape[1];
      deltas_w = part.box_deltas.shape[1];
      logits_.insert(logits_.end(), part.class_logits.data,
                     part.class_logits.data + part.class_logits.numel());
      deltas_.insert(deltas_.end(), part.box_deltas.data,
                     part.box_deltas.data + part.box_deltas.numel());
    }
    out.class_logits = {logits_.data(), {rows, logits_w, 1, 1}};
    out.box_deltas = {deltas_.data(), {rows, deltas_w, 1, 1}};
  }

  long calls() const { return calls_; }

 private:
  rcnn::TorchScriptExec inner_;
  std::int64_t chunk_rows_;
  std::vector<float> logits_, deltas_;
  long calls_ = 0;
};

static_assert(rcnn::Executor<ChunkedHeadExec>, "ChunkedHeadExec must satisfy rcnn::Executor");

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s BUNDLE_DIR IMAGE [CHUNK_ROWS] (a Detectron2 bundle)\n", argv[0]);
    return 2;
  }
  try {
    const int chunk = argc == 4 ? std::atoi(argv[3]) : 256;
    rcnn::ModelConfig cfg = rcnn::read_bundle(argv[1]);
    rcnn::OmpRoIAlign roi_align;
    roi_align.num_threads = 2;
    rcnn::Detector<ChunkedHeadExec, rcnn::OmpRoIAlign, rcnn::Detectron2Stages> det(
        cfg, ChunkedHeadExec(cfg, chunk, 2), roi_align);
    cv::Mat image = rcnn::cv_io::read_image(argv[2]);
    cv::Mat storage;
    const auto result = det(rcnn::cv_io::view(image, storage));
    std::printf("%zu detections; box head run in %ld chunk(s) of at most %d RoIs\n",
                result.detections.size(), det.executor().calls(), chunk);
    for (std::size_t i = 0; i < std::min<std::size_t>(result.detections.size(), 5); ++i) {
      const rcnn::Detection& d = result.detections[i];
      std::printf("  %-12s %.3f [%.1f %.1f %.1f %.1f]\n",
                  det.config().classes[std::size_t(d.class_id)].c_str(), d.score, d.box.x1,
                  d.box.y1, d.box.x2, d.box.y2);
    }
  } catch (const rcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
