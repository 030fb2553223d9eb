// Bad and unusual images through rcnn::cv_io::read_image and rcnn::cv_io::view (issue 6).
// Every test image is generated here (cv::imwrite into a temp directory); nothing is committed.
// What happens to each (docs/reference/errors.md "Images"):
//   missing / empty / directory / text named .jpg / truncated JPEG or PNG / side > 16384:
//     rcnn::Error naming the file (a truncated JPEG is refused, not decoded half grey);
//   1x1, grayscale (replicated), RGBA (alpha dropped), 16-bit (scaled to 8-bit): decoded.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <rcnn/cv/draw.hpp>
#include <rcnn/cv/image.hpp>
#include <rcnn/cv/mask.hpp>

#include <cstring>
#include <vector>

#include "reliability_util.hpp"

using namespace reliability;

namespace {

cv::Mat pattern(int h, int w, int type = CV_8UC3) {
  cv::Mat m(h, w, type);
  cv::randu(m, 0, type == CV_16UC3 || type == CV_16UC1 ? 65535 : 255);
  return m;
}

std::string bytes_of(const fs::path& p) { return read_text(p); }

bool identical(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

}  // namespace

TEST_CASE("images: missing, empty, directory, not an image") {
  TempDir tmp;
  const fs::path missing = tmp.path / "missing.jpg";
  CHECK(error_of([&] { rcnn::cv_io::read_image(missing); }) ==
        missing.string() + ": image file not found");
  write_bytes(tmp.path / "empty.jpg", "");
  CHECK(error_of([&] { rcnn::cv_io::read_image(tmp.path / "empty.jpg"); }) ==
        (tmp.path / "empty.jpg").string() + ": image file is empty");
  fs::create_directories(tmp.path / "dir.jpg");
  CHECK(error_of([&] { rcnn::cv_io::read_image(tmp.path / "dir.jpg"); }) ==
        (tmp.path / "dir.jpg").string() + ": not a regular file");
  write_bytes(tmp.path / "text.jpg", "this is a text file, not a JPEG\n");
  CHECK(error_of([&] { rcnn::cv_io::read_image(tmp.path / "text.jpg"); }) ==
        (tmp.path / "text.jpg").string() +
            ": not a decodable image (unknown format or corrupt data)");
  // A JPEG signature followed by garbage: complete by structure? No: refused as truncated.
  write_bytes(tmp.path / "garbage.jpg", std::string("\xFF\xD8\xFF\xE0garbage", 11));
  CHECK(contains(error_of([&] { rcnn::cv_io::read_image(tmp.path / "garbage.jpg"); }),
                 "truncated JPEG file"));
}

TEST_CASE("images: truncated JPEG and PNG are refused (OpenCV alone would decode half a JPEG)") {
  TempDir tmp;
  const cv::Mat img = pattern(120, 160);
  const fs::path jpg = tmp.path / "full.jpg", png = tmp.path / "full.png";
  REQUIRE(cv::imwrite(jpg.string(), img));
  REQUIRE(cv::imwrite(png.string(), img));
  CHECK(rcnn::cv_io::read_image(jpg).size() == img.size());
  CHECK(identical(rcnn::cv_io::read_image(png), img));
  for (const fs::path& full : {jpg, png}) {
    const std::string bytes = bytes_of(full);
    const bool is_jpeg = full.extension() == ".jpg";
    // Cuts through the headers, the compressed data and the last bytes.
    // (A PNG cut before the end of its 8-byte signature is not recognised as a PNG: it is
    // "not a decodable image".)
    std::vector<std::size_t> cuts{is_jpeg ? 3u : 8u, 20, 100, bytes.size() / 2,
                                  bytes.size() - 2, bytes.size() - 1};
    for (std::size_t n = 200; n < bytes.size(); n += bytes.size() / 7) cuts.push_back(n);
    for (std::size_t n : cuts) {
      const fs::path cut = tmp.path / ("cut" + full.extension().string());
      write_bytes(cut, bytes.substr(0, n));
      const std::string e = error_of([&] { rcnn::cv_io::read_image(cut); });
      INFO(full.filename().string() << " cut at " << n << ": " << e);
      CHECK(e.rfind(cut.string() + (is_jpeg ? ": truncated JPEG file" : ": truncated PNG file"),
                    0) == 0);
      CHECK(!contains(e, "\n"));
    }
  }
  // What the check prevents: OpenCV decodes a truncated JPEG into a full-size image.
  const std::string bytes = bytes_of(jpg);
  write_bytes(tmp.path / "half.jpg", bytes.substr(0, bytes.size() / 2));
  CHECK(cv::imread((tmp.path / "half.jpg").string()).size() == img.size());
}

TEST_CASE("images: 1x1, grayscale, RGBA and 16-bit files decode like cv::imread") {
  TempDir tmp;
  const auto roundtrip = [&](const std::string& name, const cv::Mat& m) {
    const fs::path p = tmp.path / name;
    REQUIRE(cv::imwrite(p.string(), m));
    const cv::Mat got = rcnn::cv_io::read_image(p);
    CHECK(got.type() == CV_8UC3);
    CHECK(identical(got, cv::imread(p.string(), cv::IMREAD_COLOR)));
    return got;
  };
  CHECK(roundtrip("one.png", pattern(1, 1)).size() == cv::Size(1, 1));
  CHECK(roundtrip("one.jpg", pattern(1, 1)).size() == cv::Size(1, 1));
  const cv::Mat gray = roundtrip("gray.png", pattern(20, 30, CV_8UC1));
  std::vector<cv::Mat> planes;
  cv::split(gray, planes);
  CHECK(identical(planes[0], planes[1]));
  CHECK(identical(planes[0], planes[2]));
  const cv::Mat rgba = pattern(20, 30, CV_8UC4);
  const cv::Mat no_alpha = roundtrip("rgba.png", rgba);
  cv::Mat bgr;
  cv::cvtColor(rgba, bgr, cv::COLOR_BGRA2BGR);
  CHECK(identical(no_alpha, bgr));
  cv::Mat deep(4, 5, CV_16UC3, cv::Scalar(65535, 257 * 10, 256));
  const cv::Mat eight = roundtrip("deep.png", deep);
  CHECK(eight.at<cv::Vec3b>(0, 0) == cv::Vec3b(255, 10, 1));
}

TEST_CASE("images: the fixture photos and EXIF orientation decode exactly as cv::imread") {
  for (const char* name : {"fruits", "messi5"}) {
    const fs::path p = kBundle / "cases" / name / "image.jpg";
    CHECK(identical(rcnn::cv_io::read_image(p), cv::imread(p.string(), cv::IMREAD_COLOR)));
  }
  // A JPEG with an EXIF orientation of 6 (rotate 90 degrees clockwise).
  std::vector<uchar> buf;
  REQUIRE(cv::imencode(".jpg", pattern(20, 40), buf));
  const std::vector<uchar> exif = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0,
                                   0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};
  std::vector<uchar> segment = {0xFF, 0xE1, 0, uchar(exif.size() + 2)};
  segment.insert(segment.end(), exif.begin(), exif.end());
  buf.insert(buf.begin() + 2, segment.begin(), segment.end());
  TempDir tmp;
  const fs::path p = tmp.path / "exif.jpg";
  write_bytes(p, std::string(buf.begin(), buf.end()));
  const cv::Mat got = rcnn::cv_io::read_image(p);
  CHECK(got.size() == cv::Size(20, 40));  // rotated: 40 rows, 20 columns
  CHECK(identical(got, cv::imread(p.string(), cv::IMREAD_COLOR)));
}

TEST_CASE("images: a side above kMaxImageSide is refused before or after decoding") {
  TempDir tmp;
  const int over = rcnn::kMaxImageSide + 1;
  const cv::Mat wide(4, over, CV_8UC1, cv::Scalar(7));
  const std::string expected = " (height x width); the largest side rcnn accepts is 16384 "
                               "(rcnn::kMaxImageSide): downscale it first";
  for (const char* ext : {".png", ".jpg", ".bmp"}) {  // PNG, JPEG: header; BMP: after decoding
    const fs::path p = tmp.path / (std::string("wide") + ext);
    REQUIRE(cv::imwrite(p.string(), wide));
    CHECK(error_of([&] { rcnn::cv_io::read_image(p); }) ==
          p.string() + ": image is 4x16385" + expected);
  }
  const fs::path ok = tmp.path / "limit.png";
  REQUIRE(cv::imwrite(ok.string(), cv::Mat(2, rcnn::kMaxImageSide, CV_8UC1, cv::Scalar(1))));
  CHECK(rcnn::cv_io::read_image(ok).cols == rcnn::kMaxImageSide);
}

TEST_CASE("images: view() of ROIs, depths and channel counts") {
  cv::Mat storage;
  const cv::Mat big = pattern(50, 60);
  const cv::Mat roi = big(cv::Rect(5, 10, 20, 30));
  REQUIRE(!roi.isContinuous());
  const rcnn::ImageView v = rcnn::cv_io::view(roi, storage);
  CHECK(v.data == roi.data);  // no copy
  CHECK(v.step == big.step[0]);
  CHECK(v.height == 30);
  CHECK(v.width == 20);
  CHECK(storage.empty());

  const cv::Mat deep(3, 4, CV_16UC3, cv::Scalar(65535, 257 * 9, 300));
  const rcnn::ImageView d = rcnn::cv_io::view(deep, storage);
  CHECK(d.channels == 3);
  CHECK(d.data[0] == 255);
  CHECK(d.data[1] == 9);
  CHECK(d.data[2] == 1);
  const cv::Mat floats(2, 2, CV_32FC1, cv::Scalar(300.7));
  CHECK(rcnn::cv_io::view(floats, storage).data[0] == 255);  // saturated
  const cv::Mat negative(2, 2, CV_64FC4, cv::Scalar(-5, 12.4, 0, 1));
  const rcnn::ImageView n = rcnn::cv_io::view(negative, storage);
  CHECK(n.channels == 4);
  CHECK(n.data[0] == 0);
  CHECK(n.data[1] == 12);

  CHECK(error_of([&] { rcnn::cv_io::view(cv::Mat(), storage); }) == "image: empty cv::Mat");
  CHECK(error_of([&] { rcnn::cv_io::view(cv::Mat(4, 4, CV_8UC2), storage); }) ==
        "image: cv::Mat has 2 channels, expected 1, 3 or 4");
  const int dims[3] = {2, 3, 4};
  CHECK(error_of([&] { rcnn::cv_io::view(cv::Mat(3, dims, CV_8UC1), storage); }) ==
        "image: cv::Mat has 3 dimensions, expected 2");
}

TEST_CASE("images: drawing reports OpenCV failures as rcnn::Error") {
  const std::vector<rcnn::Detection> dets{{{1, 1, 5, 5}, 0.9f, 0}};
  cv::Mat ok(20, 20, CV_8UC3, cv::Scalar(0, 0, 0));
  rcnn::cv_io::draw_detections(ok, dets, {"thing"});
  CHECK(cv::norm(ok, cv::NORM_INF) > 0);
  cv::Mat five(20, 20, CV_8UC(5));  // OpenCV draws on at most 4 channels
  CHECK(error_of([&] { rcnn::cv_io::draw_detections(five, dets, {"thing"}); })
            .rfind("draw_detections: OpenCV could not draw on the 20x20 image (", 0) == 0);
}

TEST_CASE("images: to_mat and draw_masks") {
  rcnn::InstanceMask m;
  m.reset(2, 1, 3, 2);
  m.bits = {1, 0, 1, 0, 1, 1};
  const cv::Mat full = rcnn::cv_io::to_mat(m, {4, 6});
  REQUIRE(full.type() == CV_8UC1);
  CHECK(full.rows == 4);
  CHECK(full.cols == 6);
  const std::vector<std::uint8_t> expanded = m.expand({4, 6});
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x)
      CHECK(full.at<uchar>(y, x) == (expanded[std::size_t(y) * 6 + std::size_t(x)] ? 255 : 0));
  CHECK(cv::countNonZero(rcnn::cv_io::to_mat(m, {4, 6}, 1)) == 4);
  CHECK(cv::countNonZero(rcnn::cv_io::to_mat(rcnn::InstanceMask{}, {3, 3})) == 0);
  CHECK(error_of([&] { rcnn::cv_io::to_mat(m, {2, 6}); }).rfind("to_mat: mask window", 0) == 0);

  // Overlay: set pixels blend with the class colour, the others are untouched.
  const std::vector<rcnn::Detection> dets{{{2, 1, 5, 3}, 0.9f, 3}};
  cv::Mat img(4, 6, CV_8UC3, cv::Scalar(10, 20, 30));
  rcnn::cv_io::draw_masks(img, dets, {m}, 0.5);
  const cv::Scalar c = rcnn::cv_io::class_colour(3);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x) {
      const cv::Vec3b px = img.at<cv::Vec3b>(y, x);
      const bool set = m.at(x, y) != 0;
      for (int k = 0; k < 3; ++k) {
        const double base = 10.0 * (k + 1);
        CHECK(int(px[k]) == (set ? int(std::lround(0.5 * base + 0.5 * c[k])) : int(base)));
      }
    }
  CHECK(error_of([&] { rcnn::cv_io::draw_masks(img, dets, {}); }) ==
        "draw_masks: 0 masks for 1 detections");
  cv::Mat gray(4, 6, CV_8UC1);
  CHECK(error_of([&] { rcnn::cv_io::draw_masks(gray, dets, {m}); }).rfind("draw_masks: expected", 0) == 0);
  cv::Mat small(2, 6, CV_8UC3);
  CHECK(error_of([&] { rcnn::cv_io::draw_masks(small, dets, {m}); }).rfind("draw_masks: mask window", 0) == 0);
}
