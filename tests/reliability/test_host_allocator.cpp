// rcnn::CachingHostAllocator (rcnn/exec/host_allocator.hpp) and the huge-page buffers of the
// glue (rcnn/detail/huge_pages.hpp): alignment, reuse by size class, the cache limit, small
// blocks, LibTorch's raw_allocate path, threads; then installed as LibTorch's CPU allocator,
// the real pipeline gives bit-identical detections to the default allocator's.
// (This file sorts first in rcnn-reliability-tests: the tests after it run with the
// allocator installed, as rcnn-detect and rcnn-bench do.)
#include <rcnn/cv/image.hpp>
#include <rcnn/detail/huge_pages.hpp>
#include <rcnn/exec/host_allocator.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "reliability_util.hpp"

using namespace reliability;

namespace {

bool aligned(const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; }

constexpr std::size_t kMiB = std::size_t(1) << 20;

}  // namespace

TEST_CASE("host allocator: large blocks are cached by size class and reused") {
  rcnn::CachingHostAllocator alloc(64 * kMiB);
  void* first = nullptr;
  {
    c10::DataPtr a = alloc.allocate(10 * kMiB);
    REQUIRE(a.get() != nullptr);
    CHECK(aligned(a.get(), 64));
    CHECK(a.get() == a.get_context());
    std::memset(a.get(), 0x5a, 10 * kMiB);  // all of it is writable
    first = a.get();
    CHECK(alloc.stats().cached_misses == 1);
    CHECK(alloc.stats().live_large_bytes >= 10 * kMiB);
  }
  CHECK(alloc.stats().live_large_bytes == 0);
  CHECK(alloc.stats().cached_bytes >= 10 * kMiB);
  {
    // The same size class again: the cached block, no new allocation.
    c10::DataPtr b = alloc.allocate(10 * kMiB - 100);
    CHECK(b.get() == first);
    CHECK(alloc.stats().cached_hits == 1);
    CHECK(alloc.stats().cached_bytes == 0);
    // A much smaller large request does not take a block that would waste most of it.
    c10::DataPtr c = alloc.allocate(2 * kMiB);
    CHECK(c.get() != first);
    CHECK(alloc.stats().cached_misses == 2);
  }
  CHECK(alloc.stats().cached_bytes >= 12 * kMiB);
  alloc.trim();
  CHECK(alloc.stats().cached_bytes == 0);
}

TEST_CASE("host allocator: small blocks, zero bytes, the cache limit, raw allocations") {
  rcnn::CachingHostAllocator alloc(16 * kMiB);
  {
    c10::DataPtr s = alloc.allocate(1000);
    CHECK(aligned(s.get(), 64));
    std::memset(s.get(), 1, 1000);
    CHECK(alloc.stats().small == 1);
    c10::DataPtr z = alloc.allocate(0);
    CHECK(z.get() == nullptr);
  }
  CHECK(alloc.stats().cached_bytes == 0);  // small blocks go back to the system
  {
    // Two 10 MiB blocks freed: the second would exceed the 16 MiB limit and is unmapped.
    c10::DataPtr a = alloc.allocate(10 * kMiB);
    c10::DataPtr b = alloc.allocate(10 * kMiB);
  }
  CHECK(alloc.stats().cached_bytes <= 16 * kMiB);
  CHECK(alloc.stats().cached_bytes >= 10 * kMiB);
  // LibTorch's raw_allocate / raw_deallocate path (one deleter for both kinds).
  void* raw_small = alloc.raw_allocate(256);
  void* raw_large = alloc.raw_allocate(3 * kMiB);
  CHECK(aligned(raw_small, 64));
  CHECK(aligned(raw_large, 64));
  alloc.raw_deallocate(raw_small);
  alloc.raw_deallocate(raw_large);
  alloc.trim();
}

TEST_CASE("host allocator: threads allocating, writing and freeing concurrently") {
  rcnn::CachingHostAllocator alloc(256 * kMiB);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::size_t n = (std::size_t(1 + (i + t) % 5)) * kMiB + std::size_t(i) * 64;
        c10::DataPtr p = alloc.allocate(n);
        auto* bytes = static_cast<unsigned char*>(p.get());
        std::memset(bytes, t + 1, n);
        for (std::size_t k = 0; k < n; k += 4093)
          if (bytes[k] != t + 1) ++bad[std::size_t(t)];
      }
    });
  for (auto& th : threads) th.join();
  for (int b : bad) CHECK(b == 0);
  const rcnn::HostAllocatorStats s = alloc.stats();
  CHECK(s.live_large_bytes == 0);
  CHECK(s.cached_hits + s.cached_misses == 200);
  CHECK(s.cached_hits > 0);
  alloc.trim();
}

TEST_CASE("huge pages: HostVector and reserve_on_huge_pages") {
  rcnn::detail::HostVector<float> big(3 * kMiB);  // 12 MiB: 2 MiB aligned
  CHECK(aligned(big.data(), rcnn::detail::kHugePageBytes));
  for (std::size_t i = 0; i < big.size(); i += 1000) big[i] = float(i);
  CHECK(big[3000] == 3000.f);
  rcnn::detail::HostVector<float> small(10);
  small[9] = 1.f;
  CHECK(small[9] == 1.f);
  std::vector<float> v(5, 1.f);
  rcnn::detail::reserve_on_huge_pages(v, 4 * kMiB);
  CHECK(v.capacity() >= 4 * kMiB);
  CHECK(v.empty());  // grown: contents dropped, as documented
  const float* before = v.data();
  rcnn::detail::reserve_on_huge_pages(v, kMiB);  // enough capacity: untouched
  CHECK(v.data() == before);
}

TEST_CASE("host allocator: installed as LibTorch's CPU allocator, the pipeline's results are identical") {
  const cv::Mat image = rcnn::cv_io::read_image(kBundle / "cases" / "fruits" / "image.jpg");
  cv::Mat storage;
  const rcnn::ImageView view = rcnn::cv_io::view(image, storage);
  const auto run_twice = [&] {
    auto det = rcnn::load<rcnn::TorchScriptExec>(kBundle, {1});
    rcnn::DetectionResult first = det(view);
    rcnn::DetectionResult second = det(view);  // the second reuses the first's blocks
    CHECK(first.detections.size() == second.detections.size());
    return second;
  };
  const bool was_installed = rcnn::caching_host_allocator_installed();
  const rcnn::DetectionResult reference = run_twice();
  rcnn::install_caching_host_allocator();
  rcnn::install_caching_host_allocator();  // idempotent
  REQUIRE(rcnn::caching_host_allocator_installed());
  const std::size_t hits_before = rcnn::caching_host_allocator().stats().cached_hits;
  const rcnn::DetectionResult cached = run_twice();
  CHECK(rcnn::caching_host_allocator().stats().cached_hits > hits_before);
  REQUIRE(!reference.detections.empty());
  REQUIRE(cached.detections.size() == reference.detections.size());
  CHECK(std::memcmp(cached.detections.data(), reference.detections.data(),
                    reference.detections.size() * sizeof(rcnn::Detection)) == 0);
  // A LibTorch tensor now comes from the cache.
  const at::Tensor t = at::ones({1024, 1024});
  CHECK(t.sum().item<float>() == 1024.f * 1024.f);
  INFO("installed before this test: " << was_installed);
}
