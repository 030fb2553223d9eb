// libFuzzer target: rcnn::probe_encoded_image (the structure check read_image runs before
// decoding) on arbitrary bytes. Contract: returns, or throws rcnn::Error with a one-line
// message naming the file; a JPEG / PNG it accepts declares a size within kMaxImageSide.
#include <rcnn/io/image_probe.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const rcnn::EncodedImageInfo info =
        rcnn::probe_encoded_image(std::span<const std::uint8_t>(data, size), "img");
    if (info.width < 0 || info.height < 0 || info.width > rcnn::kMaxImageSide ||
        info.height > rcnn::kMaxImageSide) {
      std::fprintf(stderr, "accepted size %dx%d\n", info.height, info.width);
      std::abort();
    }
  } catch (const rcnn::Error& e) {
    if (std::strchr(e.what(), '\n') != nullptr || std::strncmp(e.what(), "img: ", 5) != 0)
      std::abort();
  }
  return 0;
}
