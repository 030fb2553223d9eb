// Replacement allocation functions of the rcnn-alloc-tests executable (see alloc_counter.hpp).
// glibc only: malloc and friends forward to __libc_malloc & co.

#include "alloc_counter.hpp"

#include <execinfo.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace rcnn_alloc {
namespace {

std::atomic<bool> g_armed{false};
std::atomic<int> g_paused{0};
std::atomic<std::size_t> g_news{0}, g_mallocs{0};

constexpr int kMaxTraces = 4;
constexpr int kMaxFrames = 24;
void* g_frames[kMaxTraces][kMaxFrames];
int g_depth[kMaxTraces];
std::atomic<int> g_traces{0};
thread_local bool t_in_hook = false;

bool counting() {
  return g_armed.load(std::memory_order_relaxed) && g_paused.load(std::memory_order_relaxed) == 0;
}

void record(std::atomic<std::size_t>& counter) {
  if (!counting() || t_in_hook) return;
  counter.fetch_add(1, std::memory_order_relaxed);
  const int slot = g_traces.fetch_add(1, std::memory_order_relaxed);
  if (slot < kMaxTraces) {
    t_in_hook = true;
    g_depth[slot] = backtrace(g_frames[slot], kMaxFrames);
    t_in_hook = false;
  }
}

// backtrace() loads libgcc_s (allocating) on first use: do that before anything is counted.
struct Preload {
  Preload() {
    void* frames[2];
    backtrace(frames, 2);
  }
} g_preload;

}  // namespace

Counts counts() { return {g_news.load(), g_mallocs.load()}; }
void reset() {
  g_news = 0;
  g_mallocs = 0;
  g_traces = 0;
}
void arm(bool on) { g_armed = on; }
void pause(bool on) { g_paused += on ? 1 : -1; }

void print_traces() {
  const int n = g_traces.load() < kMaxTraces ? g_traces.load() : kMaxTraces;
  for (int i = 0; i < n; ++i) {
    std::fprintf(stderr, "--- counted allocation %d:\n", i + 1);
    std::fflush(stderr);
    backtrace_symbols_fd(g_frames[i], g_depth[i], STDERR_FILENO);
  }
}

}  // namespace rcnn_alloc

// ---- C allocation functions -------------------------------------------------------------

extern "C" {

void* malloc(std::size_t n) {
  rcnn_alloc::record(rcnn_alloc::g_mallocs);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t m) {
  rcnn_alloc::record(rcnn_alloc::g_mallocs);
  return __libc_calloc(n, m);
}
void* realloc(void* p, std::size_t n) {
  rcnn_alloc::record(rcnn_alloc::g_mallocs);
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  rcnn_alloc::record(rcnn_alloc::g_mallocs);
  void* p = __libc_memalign(alignment, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  rcnn_alloc::record(rcnn_alloc::g_mallocs);
  return __libc_memalign(alignment, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
  rcnn_alloc::record(rcnn_alloc::g_mallocs);
  return __libc_memalign(alignment, n);
}
void* valloc(std::size_t n) {
  rcnn_alloc::record(rcnn_alloc::g_mallocs);
  return __libc_memalign(std::size_t(sysconf(_SC_PAGESIZE)), n);
}

}  // extern "C"

// ---- C++ allocation functions -----------------------------------------------------------

namespace {
void* new_impl(std::size_t n, std::size_t alignment = 0) {
  rcnn_alloc::record(rcnn_alloc::g_news);
  if (n == 0) n = 1;
  void* p = alignment > alignof(std::max_align_t) ? __libc_memalign(alignment, n) : __libc_malloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return new_impl(n); }
void* operator new[](std::size_t n) { return new_impl(n); }
void* operator new(std::size_t n, std::align_val_t a) { return new_impl(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return new_impl(n, std::size_t(a)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return new_impl(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return new_impl(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return new_impl(n, std::size_t(a));
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return new_impl(n, std::size_t(a));
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { __libc_free(p); }
