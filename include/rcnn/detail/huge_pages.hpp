#pragma once
/// \file huge_pages.hpp
/// Transparent-huge-page backing for the glue's long-lived multi-megabyte buffers (the
/// backbone's input, the pooled RoI features): `HugePageAllocator`, `HostVector`,
/// `reserve_on_huge_pages`. No LibTorch.
///
/// Why: these buffers are rewritten once per image, after the backbone has streamed
/// gigabytes through the caches and (with LibTorch's default allocator) mapped and unmapped
/// its activations. Every 4 KiB page of them then needs its TLB entry (and, under shadow or
/// paravirtualised paging, the host's mapping) rebuilt: the 12 MB preprocessing output took
/// 6-16 ms after a backbone against 1.4 ms in a loop on the development VM. On 2 MiB pages
/// the same buffer needs 6 entries instead of 3,000. Linux only (`madvise(MADV_HUGEPAGE)`,
/// which works with transparent_hugepage set to `always` or `madvise`); elsewhere, and for
/// buffers below 2 MiB, plain allocations.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace rcnn::detail {

/// The x86-64 (and most aarch64 kernels') transparent huge page size.
inline constexpr std::size_t kHugePageBytes = std::size_t(2) << 20;

/// Advises the kernel to back the whole 2 MiB pages inside [p, p + bytes) with huge pages
/// (pages not touched yet get them on first touch). Advice only: errors are ignored.
inline void advise_huge_pages([[maybe_unused]] void* p, [[maybe_unused]] std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t first = (begin + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  const std::uintptr_t last = (begin + bytes) / kHugePageBytes * kHugePageBytes;
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

/// std allocator whose allocations of 2 MiB and more are 2 MiB aligned and advised onto
/// transparent huge pages; smaller ones are plain `operator new`. Stateless.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() noexcept = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHugePageBytes) return static_cast<T*>(::operator new(bytes));
    const std::size_t rounded = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    void* p = std::aligned_alloc(kHugePageBytes, rounded);
    if (p == nullptr) throw std::bad_alloc();
    advise_huge_pages(p, rounded);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < kHugePageBytes)
      ::operator delete(p);
    else
      std::free(p);
  }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept { return true; }
};

/// A vector for the glue's large per-image buffers.
template <class T>
using HostVector = std::vector<T, HugePageAllocator<T>>;

/// Makes `v`'s capacity at least `n` floats. When it has to grow, the old contents are
/// dropped (the caller rewrites the buffer) and the new storage is advised onto huge pages
/// before anything touches it: all of it but the part before its first 2 MiB boundary (a
/// std::vector<float> cannot choose its alignment; buffers whose type is fixed by an
/// interface, e.g. the preprocessing policies' output, use this).
inline void reserve_on_huge_pages(std::vector<float>& v, std::size_t n) {
  if (v.capacity() >= n) return;
  std::vector<float> fresh;
  fresh.reserve(n);
  advise_huge_pages(fresh.data(), fresh.capacity() * sizeof(float));
  v.swap(fresh);
}

}  // namespace rcnn::detail
