#pragma once
/// \file rcnn.hpp
/// Umbrella header of the core (no LibTorch, no OpenCV). Executors: rcnn/exec/*.hpp;
/// OpenCV helpers: rcnn/cv/*.hpp; OpenMP policies: rcnn/roi_align/omp_roi_align.hpp.

#include "concepts.hpp"
#include "config.hpp"
#include "detector.hpp"
#include "error.hpp"
#include "io/bundle.hpp"
#include "load.hpp"
#include "stages.hpp"
#include "types.hpp"
