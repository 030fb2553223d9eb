#pragma once
/// \file torchscript_exec.hpp
/// `TorchScriptExec`: runs a bundle's TorchScript modules with LibTorch (CPU, or CUDA when
/// the LibTorch build has it). Link rcnn::torch.

#include <torch/script.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../types.hpp"
#include "outputs.hpp"

namespace rcnn {

/// Options of TorchScriptExec.
struct TorchScriptOptions {
  /// LibTorch intra-op threads used while this executor runs a module. Applied per call
  /// and restored afterwards; with LibTorch's OpenMP backend this is the calling thread's
  /// setting, so the embedding program's own threads are not changed.
  int intra_op_threads = 1;
};

namespace detail {

/// Sets the calling thread's intra-op thread count for a scope.
class IntraOpThreadsGuard {
 public:
  explicit IntraOpThreadsGuard(int n) : saved_(at::get_num_threads()) {
    if (n > 0 && n != saved_) at::set_num_threads(n);
  }
  ~IntraOpThreadsGuard() {
    if (at::get_num_threads() != saved_) at::set_num_threads(saved_);
  }
  IntraOpThreadsGuard(const IntraOpThreadsGuard&) = delete;
  IntraOpThreadsGuard& operator=(const IntraOpThreadsGuard&) = delete;

 private:
  int saved_;
};

inline std::string shape_string(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

/// First line of a (possibly multi-line) LibTorch error.
inline std::string first_line(const std::string& what) {
  const auto pos = what.find('\n');
  return pos == std::string::npos ? what : what.substr(0, pos);
}

/// Loads a TorchScript module, turning LibTorch's errors into one-line rcnn::Errors.
inline torch::jit::Module load_module(const std::filesystem::path& path,
                                      const c10::Device& device) {
  if (!std::filesystem::is_regular_file(path))
    fail(path.string() + ": module file not found");
  try {
    auto m = torch::jit::load(path.string(), device);
    m.eval();
    return m;
  } catch (const std::exception& e) {
    fail(path.string() + ": not a loadable TorchScript module (" + first_line(e.what()) + ")");
  }
}

inline TensorView view_of(const at::Tensor& t) {
  TensorView v;
  v.data = t.data_ptr<float>();
  for (int64_t i = 0; i < 4; ++i) v.shape[std::size_t(i)] = i < t.dim() ? t.size(i) : 1;
  return v;
}

}  // namespace detail

/// Executor for CPU-compiled TorchScript bundles (and CUDA ones on a CUDA LibTorch).
/// Runs under InferenceMode with the graph executor's optimisations off (no profiling
/// re-specialisation on new shapes, same numerics as the exported module).
/// One instance per thread; instances are independent replicas.
class TorchScriptExec {
 public:
  using Options = TorchScriptOptions;

  TorchScriptExec(const ModelConfig& cfg, Options options = {})
      : options_(options), device_(torch::kCPU) {
    const std::filesystem::path dir = cfg.bundle_dir;
    backbone_file_ = cfg.modules.backbone_rpn.file;
    box_head_file_ = cfg.modules.box_head.file;
    backbone_ = detail::load_module(dir / backbone_file_, device_);
    box_head_ = detail::load_module(dir / box_head_file_, device_);
    if (cfg.modules.mask_head) mask_head_file_ = cfg.modules.mask_head->file;
  }

  const Options& options() const { return options_; }
  void set_intra_op_threads(int n) { options_.intra_op_threads = n; }

  void run_backbone_rpn(const TensorView& images, BackboneOutputs& out) {
    Scope scope(options_.intra_op_threads);
    at::Tensor input = from_view(images);
    c10::IValue result;
    try {
      result = backbone_.forward({input});
    } catch (const std::exception& e) {
      detail::fail(backbone_file_ + ": forward failed on input " + detail::shape_string(input) +
                   ": " + detail::first_line(e.what()));
    }
    if (!result.isTuple() || result.toTupleRef().elements().size() != 3)
      detail::fail(backbone_file_ +
                   ": expected forward() to return a tuple of 3 lists (objectness, deltas, "
                   "features), got " + result.tagKind());
    const auto& elems = result.toTupleRef().elements();
    held_backbone_.clear();
    collect(elems[0], "objectness", out.objectness);
    collect(elems[1], "anchor deltas", out.deltas);
    collect(elems[2], "features", out.features);
  }

  void run_box_head(const TensorView& rois, BoxHeadOutputs& out) {
    Scope scope(options_.intra_op_threads);
    at::Tensor input = from_view(rois);
    c10::IValue result;
    try {
      result = box_head_.forward({input});
    } catch (const std::exception& e) {
      detail::fail(box_head_file_ + ": forward failed on input " + detail::shape_string(input) +
                   ": " + detail::first_line(e.what()));
    }
    if (!result.isTuple() || result.toTupleRef().elements().size() != 2)
      detail::fail(box_head_file_ +
                   ": expected forward() to return a tuple (class_logits, box_deltas), got " +
                   result.tagKind());
    const auto& elems = result.toTupleRef().elements();
    held_head_[0] = as_2d(elems[0], "class_logits");
    held_head_[1] = as_2d(elems[1], "box_deltas");
    out.class_logits = detail::view_of(held_head_[0]);
    out.box_deltas = detail::view_of(held_head_[1]);
  }

 private:
  /// Turns the graph executor's optimisations off for a scope (a thread-local switch in
  /// LibTorch): no profiling runs, no re-specialisation per input shape.
  struct NoGraphOptimize {
    NoGraphOptimize() : saved(torch::jit::getGraphExecutorOptimize()) {
      torch::jit::setGraphExecutorOptimize(false);
    }
    ~NoGraphOptimize() { torch::jit::setGraphExecutorOptimize(saved); }
    bool saved;
  };
  struct Scope {
    explicit Scope(int threads) : threads_guard(threads) {}
    detail::IntraOpThreadsGuard threads_guard;
    NoGraphOptimize no_opt;
    c10::InferenceMode inference;
  };

  at::Tensor from_view(const TensorView& v) const {
    // The executor never writes into its input; from_blob needs a non-const pointer.
    return torch::from_blob(const_cast<float*>(v.data),
                            {v.shape[0], v.shape[1], v.shape[2], v.shape[3]},
                            torch::TensorOptions().dtype(torch::kFloat32));
  }

  at::Tensor checked(const c10::IValue& v, const std::string& what, const std::string& module,
                     int64_t dims) {
    if (!v.isTensor()) detail::fail(module + ": " + what + " is not a tensor (" + v.tagKind() + ")");
    at::Tensor t = v.toTensor();
    if (t.scalar_type() != at::kFloat)
      detail::fail(module + ": " + what + " has dtype " + std::string(c10::toString(t.scalar_type())) +
                   ", expected float32");
    if (t.dim() != dims)
      detail::fail(module + ": " + what + " has shape " + detail::shape_string(t) +
                   ", expected " + std::to_string(dims) + " dimensions");
    return t.to(torch::kCPU).contiguous();
  }

  void collect(const c10::IValue& list, const std::string& what, std::vector<TensorView>& out) {
    if (!list.isList() && !list.isTensorList())
      detail::fail(backbone_file_ + ": " + what + " output is not a list of tensors");
    auto items = list.toListRef();
    out.clear();
    for (std::size_t i = 0; i < items.size(); ++i) {
      held_backbone_.push_back(
          checked(items[i], what + "[" + std::to_string(i) + "]", backbone_file_, 4));
      out.push_back(detail::view_of(held_backbone_.back()));
    }
  }

  at::Tensor as_2d(const c10::IValue& v, const std::string& what) {
    return checked(v, what, box_head_file_, 2);
  }

  Options options_;
  c10::Device device_;
  std::string backbone_file_, box_head_file_, mask_head_file_;
  torch::jit::Module backbone_, box_head_;
  std::vector<at::Tensor> held_backbone_;
  at::Tensor held_head_[2];
};

}  // namespace rcnn
