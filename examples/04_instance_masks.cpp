// 04: Mask R-CNN. Detect objects with instance masks, using the OpenMP mask paste; write
// each detection's full-image mask as a PNG and print its pixel count.
//   build/bin/example-04_instance_masks MASK_RCNN_BUNDLE_DIR IMAGE OUT_DIR
#include <cstdio>
#include <filesystem>
#include <string>

#include <opencv2/imgcodecs.hpp>

#include <rcnn/cv/image.hpp>
#include <rcnn/cv/mask.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/mask/omp_paste.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MASK_RCNN_BUNDLE_DIR IMAGE OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    rcnn::OmpRoIAlign roi;
    roi.num_threads = 2;
    auto det = rcnn::load<rcnn::TorchScriptExec, rcnn::OmpRoIAlign, rcnn::WithOmpPaste>(argv[1], {/*intra_op_threads=*/2}, roi);
    if (!det.has_masks()) {
      std::fprintf(stderr, "%s is not a Mask R-CNN bundle (model.json architecture)\n", argv[1]);
      return 1;
    }
    det.set_mask_paste_threads(2);
    cv::Mat image = rcnn::cv_io::read_image(argv[2]);
    cv::Mat storage;
    const rcnn::DetectionResult r = det(rcnn::cv_io::view(image, storage));
    const std::filesystem::path out = argv[3];
    std::filesystem::create_directories(out);
    for (std::size_t i = 0; i < r.detections.size(); ++i) {
      const rcnn::Detection& d = r.detections[i];
      const rcnn::InstanceMask& m = r.masks[i];
      const std::string file = (out / ("mask_" + std::to_string(i) + ".png")).string();
      cv::imwrite(file, rcnn::cv_io::to_mat(m, r.image_size));
      std::printf("%-14s %.3f  box [%.1f, %.1f, %.1f, %.1f]  mask %zu px -> %s\n",
                  det.config().classes[std::size_t(d.class_id)].c_str(), double(d.score),
                  double(d.box.x1), double(d.box.y1), double(d.box.x2), double(d.box.y2),
                  m.area(), file.c_str());
    }
  } catch (const rcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
