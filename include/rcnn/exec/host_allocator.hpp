#pragma once
/// \file host_allocator.hpp
/// A caching, huge-page host allocator for LibTorch's CPU tensors (`CachingHostAllocator`)
/// and `install_caching_host_allocator()`, which makes it LibTorch's CPU allocator for the
/// process. Link rcnn::torch.
///
/// Why: LibTorch's default CPU allocator hands every tensor to `posix_memalign`, and glibc
/// serves each one above its mmap threshold (at most 32 MiB) with a fresh `mmap` that `free`
/// unmaps again. A ResNet-FPN backbone at 800 x 1282 allocates ~3 GB of such activations
/// per image, so every image first-touches (page-faults and zeroes) them all again, 4 KiB
/// at a time: ~750,000 page faults per image on the development VM, about half of the
/// backbone's time. The churn also slows the pages it does not touch: on the development VM
/// (paravirtualised paging) the glue's long-lived buffers were slow to write after a
/// backbone, the preprocessing's output taking 6-16 ms against 1.4 ms in a loop
/// (docs/performance.md; TLB shoot-downs on bare metal are the same effect, smaller). This allocator keeps blocks of 1 MiB and more after
/// their tensor is freed and gives them to the next request of the same size class (the
/// next image asks for the same shapes), on transparent huge pages (`madvise(MADV_HUGEPAGE)`,
/// 2 MiB aligned) so that the pages that are touched cost 1/512 of the TLB entries. Small
/// blocks go to `posix_memalign` / `free` as before.
///
/// Contract: the same as LibTorch's CPU allocator (64-byte aligned, uninitialised memory,
/// thread-safe). Blocks are never returned to the system while cached; the cache holds at
/// most `max_cached_bytes()` (default: 4 GiB or a quarter of the physical memory, whichever
/// is less; `RCNN_HOST_CACHE_MB` in the environment at the first use overrides it): a
/// freed block that would exceed it is freed instead. A request takes the smallest cached
/// block of its size class or up to a quarter larger, so images of varying sizes (the
/// shortest-edge resize) share blocks; the resident memory is at most the peak of live
/// tensors plus the limit.
/// Installing is process-wide and cannot be undone (tensors made by it may outlive any
/// scope), so the library never does it on its own: applications call it once, before
/// loading models (rcnn-detect and rcnn-bench do, unless `--no-host-cache`).

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace rcnn {

/// Counters of a `CachingHostAllocator` (a snapshot).
struct HostAllocatorStats {
  std::size_t cached_hits = 0;     ///< large requests served from the cache
  std::size_t cached_misses = 0;   ///< large requests that allocated a new block
  std::size_t small = 0;           ///< requests below the large-block threshold
  std::size_t cached_bytes = 0;    ///< bytes held in the cache now (free blocks)
  std::size_t live_large_bytes = 0;  ///< bytes of large blocks in use now
};

/// LibTorch CPU allocator that caches large blocks (>= `kLargeBytes`) by size class and
/// advises the kernel to back them with transparent huge pages. Every block carries a
/// 64-byte header (its size class), so one deleter serves both kinds. Use through
/// `install_caching_host_allocator()`; an instance must outlive every tensor it allocated
/// (the installed one is never destroyed).
class CachingHostAllocator final : public c10::Allocator {
 public:
  /// Requests of this many bytes or more are cached.
  static constexpr std::size_t kLargeBytes = std::size_t(1) << 20;
  /// Large blocks are rounded up to (and aligned at) this: the x86-64 huge-page size.
  static constexpr std::size_t kHugePage = std::size_t(2) << 20;
  /// Bytes in front of the data holding the block's size class (keeps 64-byte alignment).
  static constexpr std::size_t kHeader = 64;

  explicit CachingHostAllocator(std::size_t max_cached_bytes) : max_cached_(max_cached_bytes) {}
  CachingHostAllocator(const CachingHostAllocator&) = delete;
  CachingHostAllocator& operator=(const CachingHostAllocator&) = delete;
  ~CachingHostAllocator() override { trim(); }

  c10::DataPtr allocate(std::size_t n) const override {
    if (n == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};
    void* p = n + kHeader >= kLargeBytes ? take_large(n) : take_small(n);
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  HostAllocatorStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    HostAllocatorStats s = stats_;
    s.small = small_.load(std::memory_order_relaxed);
    s.cached_bytes = cached_bytes_;
    return s;
  }
  std::size_t max_cached_bytes() const { return max_cached_; }

  /// Frees every cached (free) block.
  void trim() const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, block] : free_) std::free(block);
    free_.clear();
    cached_bytes_ = 0;
  }

 private:
  struct Header {
    std::size_t size;                    // whole block (header included); 0: small block
    const CachingHostAllocator* owner;   // large blocks: the cache they return to
  };
  static_assert(sizeof(Header) <= kHeader);

  static void* data_of(void* block) { return static_cast<char*>(block) + kHeader; }
  static void* block_of(void* data) { return static_cast<char*>(data) - kHeader; }

  void* take_small(std::size_t n) const {
    void* block = nullptr;
    if (posix_memalign(&block, kHeader, n + kHeader) != 0) throw_oom(n);
    *static_cast<Header*>(block) = {0, nullptr};
    small_.fetch_add(1, std::memory_order_relaxed);  // no lock on the small-tensor path
    return data_of(block);
  }

  void* take_large(std::size_t n) const {
    const std::size_t size = (n + kHeader + kHugePage - 1) / kHugePage * kHugePage;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The smallest cached block of at least `size` bytes, if it wastes at most a quarter.
      const auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 4) {
        void* block = it->second;
        cached_bytes_ -= it->first;
        free_.erase(it);
        ++stats_.cached_hits;
        stats_.live_large_bytes += static_cast<Header*>(block)->size;
        return data_of(block);
      }
      ++stats_.cached_misses;
      stats_.live_large_bytes += size;
    }
    void* block = std::aligned_alloc(kHugePage, size);
    if (block == nullptr) {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.live_large_bytes -= size;
      throw_oom(n);
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    (void)madvise(block, size, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
#endif
    *static_cast<Header*>(block) = {size, this};
    return data_of(block);
  }

  void give_back(void* block, std::size_t size) const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.live_large_bytes -= size;
      if (cached_bytes_ + size <= max_cached_) {
        free_.emplace(size, block);
        cached_bytes_ += size;
        return;
      }
    }
    std::free(block);
  }

  static void release(void* data) {
    if (data == nullptr) return;
    void* block = block_of(data);
    const Header h = *static_cast<Header*>(block);
    if (h.size == 0) {
      std::free(block);
      return;
    }
    h.owner->give_back(block, h.size);
  }

  [[noreturn]] static void throw_oom(std::size_t) { throw std::bad_alloc(); }

  std::size_t max_cached_;
  mutable std::mutex mutex_;
  mutable std::multimap<std::size_t, void*> free_;
  mutable std::size_t cached_bytes_ = 0;
  mutable HostAllocatorStats stats_{};   // all but `small`, under mutex_
  mutable std::atomic<std::size_t> small_{0};
};

namespace detail {

/// The cache limit from `RCNN_HOST_CACHE_MB` (MiB), else 4 GiB or a quarter of the
/// physical memory, whichever is less.
inline std::size_t host_cache_limit_from_env() {
  std::size_t limit = std::size_t(4) << 30;
#if defined(__linux__)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) limit = std::min(limit, std::size_t(pages) * std::size_t(page) / 4);
#endif
  if (const char* env = std::getenv("RCNN_HOST_CACHE_MB")) {
    char* end = nullptr;
    const unsigned long long mb = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0') limit = std::size_t(mb) << 20;
  }
  return limit;
}

}  // namespace detail

/// The process's `CachingHostAllocator` (created on first use, never destroyed).
inline CachingHostAllocator& caching_host_allocator() {
  static CachingHostAllocator* instance =
      new CachingHostAllocator(detail::host_cache_limit_from_env());
  return *instance;
}

/// Makes `caching_host_allocator()` LibTorch's CPU allocator for every tensor allocated from
/// now on (tensors that exist keep their own deleters). Idempotent; call it before loading
/// models so that their weights and every activation use it.
inline void install_caching_host_allocator() {
  c10::SetCPUAllocator(&caching_host_allocator(), /*priority=*/1);
}

/// Whether LibTorch's CPU allocator is now `caching_host_allocator()`.
inline bool caching_host_allocator_installed() {
  return c10::GetCPUAllocator() == &caching_host_allocator();
}

}  // namespace rcnn
