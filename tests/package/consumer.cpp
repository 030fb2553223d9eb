// A user's program built against rcnn (tests/package/CMakeLists.txt): loads a bundle with
// rcnn::load, detects on the images, and checks that every detection equals rcnn-detect's
// (its JSON output, EXPECTED): same count, classes, and float-identical boxes and scores.
//   consumer BUNDLE EXPECTED.json IMAGE...
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/version.hpp>

int main(int argc, char** argv) try {
  if (argc < 4) {
    std::fprintf(stderr, "usage: consumer BUNDLE EXPECTED.json IMAGE...\n");
    return 2;
  }
  std::printf("rcnn %s\n", rcnn::version_string);
  std::ifstream f(argv[2]);
  const nlohmann::json expected = nlohmann::json::parse(f);
  if (!expected.is_array() || expected.size() != std::size_t(argc - 3)) {
    std::fprintf(stderr, "%s: expected one entry per image\n", argv[2]);
    return 1;
  }
  auto det = rcnn::load<rcnn::TorchScriptExec>(argv[1], {/*intra_op_threads=*/1});
  int failures = 0, compared = 0;
  for (int i = 3; i < argc; ++i) {
    const cv::Mat image = rcnn::cv_io::read_image(argv[i]);
    cv::Mat storage;
    const rcnn::DetectionResult r = det(rcnn::cv_io::view(image, storage));
    const nlohmann::json& want = expected[std::size_t(i - 3)]["detections"];
    if (want.size() != r.detections.size()) {
      std::fprintf(stderr, "%s: %zu detections, rcnn-detect %zu\n", argv[i], r.detections.size(),
                   want.size());
      ++failures;
      continue;
    }
    for (std::size_t k = 0; k < want.size(); ++k) {
      const rcnn::Detection& d = r.detections[k];
      const auto& w = want[k];
      const float box[4] = {d.box.x1, d.box.y1, d.box.x2, d.box.y2};
      bool same = w["class_id"].get<int>() == d.class_id && w["score"].get<float>() == d.score;
      for (int c = 0; c < 4; ++c) same = same && w["box"][std::size_t(c)].get<float>() == box[c];
      if (!same) {
        std::fprintf(stderr, "%s: detection %zu differs: class %d score %.9g box [%.9g %.9g %.9g %.9g]"
                             " vs rcnn-detect %s\n", argv[i], k, d.class_id, double(d.score),
                     double(box[0]), double(box[1]), double(box[2]), double(box[3]), w.dump().c_str());
        ++failures;
      }
      ++compared;
    }
  }
  std::printf("%d detections compared with rcnn-detect's, %d differ\n", compared, failures);
  return failures == 0 && compared > 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer: error: %s\n", e.what());
  return 1;
}
