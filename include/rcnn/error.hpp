#pragma once
/// \file error.hpp
/// The one error type rcnn reports through.

#include <stdexcept>
#include <string>
#include <type_traits>

namespace rcnn {

/// Every failure rcnn detects (bad bundle, bad image, shape mismatch, executor failure) is
/// thrown as `rcnn::Error`. `what()` is one line that names the file, key or tensor at fault
/// and the expected versus the actual value.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] inline void fail(const std::string& message) { throw Error(message); }
inline void require(bool ok, const std::string& message) {
  if (!ok) fail(message);
}
/// A string literal is turned into a std::string only on failure (no allocation when ok).
inline void require(bool ok, const char* message) {
  if (!ok) fail(message);
}
/// The message is built only on failure: `require(ok, [&] { return "..." + std::to_string(x); })`.
/// Stages use this form on their per-image paths, which must not allocate.
template <class F>
  requires std::is_invocable_r_v<std::string, F&>
inline void require(bool ok, F&& message) {
  if (!ok) fail(message());
}
}  // namespace detail

}  // namespace rcnn
