#pragma once
/// \file error.hpp
/// The one error type rcnn reports through.

#include <stdexcept>
#include <string>

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
}  // namespace detail

}  // namespace rcnn
