#pragma once
/// \file cuda_exec.hpp
/// `CudaExec`: runs a bundle's TorchScript modules on a CUDA GPU. Compiled only when the
/// LibTorch build has CUDA: CMake sets RCNN_WITH_CUDA=1 on rcnn::torch when it finds a CUDA
/// LibTorch (option RCNN_WITH_CUDA); without it this header declares nothing, so CPU builds
/// are unaffected. Link rcnn::torch. See docs/how-to/deploy-cuda.md.
///
/// Data flow: the Detector hands host views; CudaExec copies the input batch to the GPU, runs
/// the module there and copies the outputs back (the native stages run on the host). The
/// last call's feature maps stay on the GPU as well (`device_features()`), for pooling them
/// there with AtenRoIAlign::pool when a custom pipeline wants to.

#include "torch_exec_base.hpp"

#if defined(RCNN_WITH_CUDA) && RCNN_WITH_CUDA

#include <torch/cuda.h>

namespace rcnn {

/// Options of CudaExec.
struct CudaOptions {
  int device_index = 0;      ///< which GPU (cuda:N)
  int intra_op_threads = 1;  ///< LibTorch CPU threads for host-side work during a call
};

/// Executor running the modules on `cuda:device_index`; satisfies rcnn::Executor. The
/// modules are loaded with that device as map location (export them on the CPU or the GPU;
/// traced modules that create tensors with a hard-coded device must be exported for CUDA).
/// One instance per thread; instances are independent replicas (one or more per GPU).
/// Errors: rcnn::Error when no CUDA device is visible or the index is out of range.
class CudaExec : public detail::TorchModulesExec {
 public:
  using Options = CudaOptions;

  CudaExec(const ModelConfig& cfg, Options options = {})
      : TorchModulesExec(checked_device(options.device_index), options.intra_op_threads),
        options_(options) {
    load_modules(cfg);
  }

  const Options& options() const { return options_; }
  void set_intra_op_threads(int n) {
    options_.intra_op_threads = n;
    set_threads(n);
  }

 private:
  static c10::Device checked_device(int index) {
    if (!torch::cuda::is_available())
      detail::fail("CudaExec: no CUDA device is visible (torch::cuda::is_available() is false): "
                   "check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use TorchScriptExec");
    const int count = int(torch::cuda::device_count());
    if (index < 0 || index >= count)
      detail::fail("CudaExec: device_index " + std::to_string(index) + ", but " +
                   std::to_string(count) + " CUDA device(s) are visible (0.." +
                   std::to_string(count - 1) + ")");
    return c10::Device(c10::kCUDA, c10::DeviceIndex(index));
  }

  Options options_;
};

}  // namespace rcnn

#endif  // RCNN_WITH_CUDA
