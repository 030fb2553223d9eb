#pragma once
/// \file torchscript_exec.hpp
/// `TorchScriptExec`: runs a bundle's TorchScript modules with LibTorch on the CPU. The code
/// it shares with NeuronExec and CudaExec is in torch_exec_base.hpp. Link rcnn::torch.

#include "torch_exec_base.hpp"

namespace rcnn {

/// Options of TorchScriptExec.
struct TorchScriptOptions {
  /// LibTorch intra-op threads used while this executor runs a module. Applied per call
  /// and restored afterwards; with LibTorch's OpenMP backend this is the calling thread's
  /// setting, so the embedding program's own threads are not changed.
  int intra_op_threads = 1;
};

/// Executor for CPU-compiled TorchScript bundles.
/// Runs under InferenceMode with the graph executor's optimisations off (no profiling
/// re-specialisation on new shapes, same numerics as the exported module).
/// One instance per thread; instances are independent replicas.
class TorchScriptExec : public detail::TorchModulesExec {
 public:
  using Options = TorchScriptOptions;

  TorchScriptExec(const ModelConfig& cfg, Options options = {})
      : TorchModulesExec(torch::kCPU, options.intra_op_threads), options_(options) {
    load_modules(cfg);
  }

  const Options& options() const { return options_; }
  void set_intra_op_threads(int n) {
    options_.intra_op_threads = n;
    set_threads(n);
  }

 private:
  Options options_;
};

}  // namespace rcnn
