#pragma once
/// \file version.hpp
/// rcnn's version (semantic versioning; CHANGELOG.md). The single source of the number:
/// CMakeLists.txt reads it from here for project(VERSION), rcnnConfigVersion.cmake and rcnn.pc.

#define RCNN_VERSION_MAJOR 0
#define RCNN_VERSION_MINOR 2
#define RCNN_VERSION_PATCH 0
#define RCNN_VERSION_STRING "0.2.0"

namespace rcnn {
/// The version as a string, e.g. "0.2.0" (RCNN_VERSION_STRING).
inline constexpr const char* version_string = RCNN_VERSION_STRING;
/// MAJOR * 10000 + MINOR * 100 + PATCH, for comparisons.
inline constexpr int version_number =
    RCNN_VERSION_MAJOR * 10000 + RCNN_VERSION_MINOR * 100 + RCNN_VERSION_PATCH;
}  // namespace rcnn
