// 01: the one-call path. Load a bundle, detect objects in a photo, print them.
//   build/bin/example-01_detect_image BUNDLE_DIR IMAGE
#include <cstdio>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s BUNDLE_DIR IMAGE\n", argv[0]);
    return 2;
  }
  try {
    auto det = rcnn::load<rcnn::TorchScriptExec>(argv[1], {/*intra_op_threads=*/2});
    cv::Mat image = rcnn::cv_io::read_image(argv[2]);  // BGR, as OpenCV loads it
    cv::Mat storage;
    const rcnn::DetectionResult result = det(rcnn::cv_io::view(image, storage));
    for (const rcnn::Detection& d : result.detections) {
      std::printf("%-14s %.3f  [%.1f, %.1f, %.1f, %.1f]\n",
                  det.config().classes[std::size_t(d.class_id)].c_str(), double(d.score),
                  double(d.box.x1), double(d.box.y1), double(d.box.x2), double(d.box.y2));
    }
  } catch (const rcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
