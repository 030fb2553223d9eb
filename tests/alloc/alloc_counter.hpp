#pragma once
// Heap allocation counting for tests/alloc: this executable replaces the global operator
// new / delete and interposes malloc, calloc, realloc, posix_memalign, aligned_alloc,
// memalign and valloc (forwarding to glibc's __libc_* entry points), so allocations made
// by any code in the process — the C++ standard library, OpenMP's runtime, LibTorch — are
// seen. Counting is global (every thread: the OpenMP stages allocate on worker threads) and
// switched on by `CountScope`; `PauseCounting` switches it off for a region (the executor's
// networks, whose LibTorch allocations are not the glue's).
//
// The first kMaxTraces counted allocations record a backtrace, printed by
// `print_traces()`, so a failing test names the allocating call.

#include <atomic>
#include <cstddef>

namespace rcnn_alloc {

struct Counts {
  std::size_t news = 0;     ///< operator new / new[] (all overloads)
  std::size_t mallocs = 0;  ///< malloc / calloc / realloc / aligned allocations
  std::size_t total() const { return news + mallocs; }
};

/// Counts made while armed (and not paused).
Counts counts();
void reset();
void arm(bool on);
void pause(bool on);
/// Writes the recorded backtraces of the first counted allocations to stderr.
void print_traces();

/// Counts the allocations of its lifetime.
class CountScope {
 public:
  CountScope() {
    reset();
    arm(true);
  }
  ~CountScope() { arm(false); }
  Counts counts() const { return rcnn_alloc::counts(); }
  CountScope(const CountScope&) = delete;
  CountScope& operator=(const CountScope&) = delete;
};

/// Not counted during its lifetime (nesting: the outermost pause wins).
class PauseCounting {
 public:
  PauseCounting() { pause(true); }
  ~PauseCounting() { pause(false); }
  PauseCounting(const PauseCounting&) = delete;
  PauseCounting& operator=(const PauseCounting&) = delete;
};

}  // namespace rcnn_alloc
