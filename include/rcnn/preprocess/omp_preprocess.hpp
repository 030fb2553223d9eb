#pragma once
/// \file omp_preprocess.hpp
/// OpenMP one-pass preprocessing (needs rcnn::omp / -fopenmp): the fused policies of
/// fused_preprocess.hpp with their blocks of output rows on `num_threads` threads.
/// Bit-identical to `TorchvisionPreprocess` / `Detectron2Preprocess` for any thread count
/// (each block owns its rows and its scratch; tests/unit/test_fused_preprocess.cpp).

#ifndef _OPENMP
#error "rcnn/preprocess/omp_preprocess.hpp needs OpenMP: link rcnn::omp (or compile with -fopenmp)"
#endif

#include <omp.h>

#include <optional>
#include <type_traits>
#include <vector>

#include "rcnn/config.hpp"
#include "rcnn/preprocess/fused_preprocess.hpp"
#include "rcnn/stage_io.hpp"
#include "rcnn/types.hpp"

namespace rcnn {

namespace detail {

/// Runs `body(b)` for the blocks on `threads` threads, handed out one at a time (a thread
/// that starts late, or is preempted, leaves its blocks to the others).
struct OmpBlocks {
  int threads = 1;
  template <class Body>
  void operator()(int blocks, Body&& body) const {
    if (threads <= 1 || blocks <= 1) {
      for (int b = 0; b < blocks; ++b) body(b);
      return;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int b = 0; b < blocks; ++b) body(b);
  }
};

/// Blocks of output rows per thread: enough that the threads even out (each block costs a
/// few rows of recomputed input at its edges).
inline constexpr int kOmpBlocksPerThread = 4;

/// A fused policy run on `num_threads` threads (values < 1 mean 1): 1 block per call on one
/// thread, else `kOmpBlocksPerThread` blocks per thread.
template <class Fused>
struct OmpPreprocess : Fused {
  int num_threads = 1;

  PreprocessResult operator()(const ImageView& img, const InputConfig& cfg,
                              std::vector<float>& chw_out,
                              std::optional<Size> pad_to = std::nullopt) {
    const int t = num_threads < 1 ? 1 : num_threads;
    return this->run(img, cfg, chw_out, pad_to, t == 1 ? 1 : t * kOmpBlocksPerThread,
                     OmpBlocks{t});
  }
};

}  // namespace detail

/// `FusedTorchvisionPreprocess` on `num_threads` threads (= TorchvisionPreprocess).
struct OmpTorchvisionPreprocess : detail::OmpPreprocess<FusedTorchvisionPreprocess> {};
/// `FusedDetectron2Preprocess` on `num_threads` threads (= Detectron2Preprocess).
struct OmpDetectron2Preprocess : detail::OmpPreprocess<FusedDetectron2Preprocess> {};

/// `Stages` with the OpenMP one-pass preprocessing of its conventions as `preprocess`:
/// `rcnn::Detector<Exec, RoIAlign, rcnn::WithOmpPreprocess<rcnn::Detectron2Stages>>`.
template <class Stages>
struct WithOmpPreprocess : Stages {
  using preprocess = std::conditional_t<Stages::conventions == Conventions::torchvision,
                                        OmpTorchvisionPreprocess, OmpDetectron2Preprocess>;
};

}  // namespace rcnn
