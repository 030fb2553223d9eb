#pragma once
/// \file rcnn.hpp
/// Umbrella header of the core (no LibTorch, no OpenCV). Executors: rcnn/exec/*.hpp;
/// OpenCV helpers: rcnn/cv/*.hpp; OpenMP policies: rcnn/roi_align/omp_roi_align.hpp,
/// rcnn/mask/omp_paste.hpp.

#include "concepts.hpp"
#include "config.hpp"
#include "detector.hpp"
#include "error.hpp"
#include "eval/coco_eval.hpp"
#include "io/bundle.hpp"
#include "load.hpp"
#include "mask/detectron2_paste.hpp"
#include "mask/mask_inference.hpp"
#include "mask/mask_types.hpp"
#include "mask/rle.hpp"
#include "mask/torchvision_paste.hpp"
#include "stages.hpp"
#include "types.hpp"
#include "version.hpp"
