#pragma once
/// \file torch_exec_base.hpp
/// What every LibTorch executor shares (TorchScriptExec, NeuronExec, CudaExec, user
/// executors): loading a bundle's two TorchScript modules onto a device, running them under
/// InferenceMode with the graph executor's optimisations off, and turning their outputs into
/// checked, host-side float32 views. Link rcnn::torch.

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

/// The line of a LibTorch error that says what went wrong. A TorchScript interpreter error
/// starts with "The following operation failed in the TorchScript interpreter." and a
/// traceback, and ends with the error itself ("RuntimeError: ..."): its last non-empty line
/// is returned. Other errors (c10::Error) have the message first, a C++ backtrace after it.
inline std::string torch_error_summary(const std::string& what) {
  const std::string line = first_line(what);
  if (line.find("TorchScript interpreter") == std::string::npos) return line;
  std::size_t end = what.size();
  while (end > 0) {
    const std::size_t nl = what.rfind('\n', end - 1);
    const std::size_t start = nl == std::string::npos ? 0 : nl + 1;
    const std::string candidate = what.substr(start, end - start);
    const std::size_t first = candidate.find_first_not_of(" \t\r");
    if (first != std::string::npos) return candidate.substr(first);
    if (nl == std::string::npos) break;
    end = nl;
  }
  return line;
}

/// Runs `f`, turning any exception other than rcnn::Error (c10::Error and the like) into an
/// rcnn::Error naming `file`: LibTorch's exceptions never escape an executor.
template <class F>
decltype(auto) torch_guarded(const std::string& file, F&& f) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(file + ": " + torch_error_summary(e.what()));
  }
}

/// Loads a TorchScript module, turning LibTorch's errors into one-line rcnn::Errors.
inline torch::jit::Module load_module(const std::filesystem::path& path,
                                      const c10::Device& device) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(path.string() + ": module file not found");
  torch::jit::Module m;
  try {
    m = torch::jit::load(path.string(), device);
    m.eval();
  } catch (const std::exception& e) {
    fail(path.string() + ": not a loadable TorchScript module (" + torch_error_summary(e.what()) +
         ")");
  }
  if (!torch_guarded(path.string(), [&] { return m.find_method("forward").has_value(); }))
    fail(path.string() +
         ": the TorchScript module has no forward() method (not an exported rcnn module?)");
  return m;
}

/// View of a host float32 tensor, contiguous or (4-D) channels-last (up to 4 dimensions;
/// missing ones are 1). `shape` is the logical NCHW shape either way.
inline TensorView view_of(const at::Tensor& t) {
  TensorView v;
  v.data = t.data_ptr<float>();
  for (int64_t i = 0; i < 4; ++i) v.shape[std::size_t(i)] = i < t.dim() ? t.size(i) : 1;
  if (!t.is_contiguous() && t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast))
    v.layout = Layout::nhwc;
  return v;
}

inline at::MemoryFormat memory_format_of(Layout layout) {
  return layout == Layout::nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

/// Turns the graph executor's optimisations off for a scope (a thread-local switch in
/// LibTorch): no profiling runs, no re-specialisation per input shape.
struct NoGraphOptimize {
  NoGraphOptimize() : saved(torch::jit::getGraphExecutorOptimize()) {
    torch::jit::setGraphExecutorOptimize(false);
  }
  ~NoGraphOptimize() { torch::jit::setGraphExecutorOptimize(saved); }
  NoGraphOptimize(const NoGraphOptimize&) = delete;
  NoGraphOptimize& operator=(const NoGraphOptimize&) = delete;
  bool saved;
};

/// Everything a module call runs under: intra-op threads, no graph optimisation, inference mode.
struct TorchRunScope {
  explicit TorchRunScope(int threads) : threads_guard(threads) {}
  IntraOpThreadsGuard threads_guard;
  NoGraphOptimize no_opt;
  c10::InferenceMode inference;
};

/// The common base of the LibTorch executors: holds the two modules of a bundle on one
/// device and implements `rcnn::Executor` for them. Inputs are host views (copied to the
/// device when it is not the CPU); outputs are checked (tuple layout, float32, rank) and
/// copied back to the host, contiguous (feature maps: contiguous or channels-last, handed
/// over without a copy on the CPU; `TensorView::layout` says which). Derived executors decide how the modules are
/// loaded (`load_modules` after their own set-up) and on which device.
class TorchModulesExec {
 public:
  void run_backbone_rpn(const TensorView& images, BackboneOutputs& out) {
    TorchRunScope scope(intra_op_threads_);
    const c10::IValue result = forward(backbone_, backbone_file_, images);
    if (!result.isTuple() || result.toTupleRef().elements().size() != 3)
      fail(backbone_file_ +
           ": expected forward() to return a tuple of 3 lists (objectness, deltas, "
           "features), got " + result.tagKind());
    const auto& elems = result.toTupleRef().elements();
    held_backbone_.clear();
    device_features_.clear();
    torch_guarded(backbone_file_, [&] {
      collect(elems[0], "objectness", out.objectness, false);
      collect(elems[1], "anchor deltas", out.deltas, false);
      collect(elems[2], "features", out.features, true);
    });
  }

  void run_box_head(const TensorView& rois, BoxHeadOutputs& out) {
    run_box_module(box_head_, box_head_file_, rois, out);
  }

  /// Runs the box head of Cascade R-CNN stage `stage` (>= 1; stage 0 is run_box_head) on
  /// pooled features [R, C, P, P]; outputs as run_box_head's. Errors: rcnn::Error when the
  /// bundle has no such stage or the module fails.
  void run_cascade_box_head(std::size_t stage, const TensorView& rois, BoxHeadOutputs& out) {
    if (stage == 0) return run_box_head(rois, out);
    if (stage > cascade_heads_.size())
      fail("run_cascade_box_head: the bundle has " + std::to_string(cascade_heads_.size() + 1) +
           " box head stages (model.json roi_heads.cascade), asked for stage " +
           std::to_string(stage));
    run_box_module(cascade_heads_[stage - 1], cascade_files_[stage - 1], rois, out);
  }

  /// Runs the mask head (Mask R-CNN bundles) on pooled features [R, C, P, P]; `out.logits`
  /// is [R, Km, 2P, 2P] on the host. Errors: rcnn::Error when the bundle has no mask head, the
  /// module fails, or it returns anything but one float32 4-D tensor.
  void run_mask_head(const TensorView& rois, MaskHeadOutputs& out) {
    out.logits = run_detection_head(mask_head_, mask_head_file_, has_mask_head_, "run_mask_head",
                                    "mask", "mask_rcnn", "mask logits", rois, held_mask_);
  }

  /// Runs the keypoint head (Keypoint R-CNN bundles) on pooled features [R, C, P, P];
  /// `out.heatmaps` is [R, K, S, S] on the host. Errors as run_mask_head's.
  void run_keypoint_head(const TensorView& rois, KeypointHeadOutputs& out) {
    out.heatmaps = run_detection_head(keypoint_head_, keypoint_head_file_, has_keypoint_head_,
                                      "run_keypoint_head", "keypoint", "keypoint_rcnn",
                                      "keypoint heatmaps", rois, held_keypoints_);
  }

  const c10::Device& device() const { return device_; }
  int intra_op_threads() const { return intra_op_threads_; }
  /// The loaded modules (e.g. to inspect them, or to run them another way).
  torch::jit::Module& backbone_module() { return backbone_; }
  torch::jit::Module& box_head_module() { return box_head_; }
  /// The mask head module (Mask R-CNN bundles; an empty module otherwise).
  torch::jit::Module& mask_head_module() { return mask_head_; }
  /// The keypoint head module (Keypoint R-CNN bundles; an empty module otherwise).
  torch::jit::Module& keypoint_head_module() { return keypoint_head_; }
  /// The last backbone call's feature maps as the module returned them, on `device()`
  /// (valid until the next call): for pooling on the device (AtenRoIAlign's tensor entry).
  const std::vector<at::Tensor>& device_features() const { return device_features_; }

 protected:
  TorchModulesExec(c10::Device device, int intra_op_threads)
      : device_(device), intra_op_threads_(intra_op_threads) {}

  /// Loads the bundle's backbone_rpn and box_head modules onto `device()`.
  void load_modules(const ModelConfig& cfg) {
    const std::filesystem::path dir = cfg.bundle_dir;
    // Messages name the module by its path in the bundle.
    backbone_file_ = (dir / cfg.modules.backbone_rpn.file).string();
    box_head_file_ = (dir / cfg.modules.box_head.file).string();
    features_layout_ = cfg.backbone.features_layout;
    backbone_ = load_module(backbone_file_, device_);
    box_head_ = load_module(box_head_file_, device_);
    cascade_files_.clear();
    cascade_heads_.clear();
    for (const ModuleConfig& m : cfg.modules.cascade_box_heads) {
      cascade_files_.push_back((dir / m.file).string());
      cascade_heads_.push_back(load_module(cascade_files_.back(), device_));
    }
    if (cfg.modules.mask_head) {
      mask_head_file_ = (dir / cfg.modules.mask_head->file).string();
      mask_head_ = load_module(mask_head_file_, device_);
      has_mask_head_ = true;
    }
    if (cfg.modules.keypoint_head) {
      keypoint_head_file_ = (dir / cfg.modules.keypoint_head->file).string();
      keypoint_head_ = load_module(keypoint_head_file_, device_);
      has_keypoint_head_ = true;
    }
  }

  void set_threads(int n) { intra_op_threads_ = n; }

  /// `module.forward(input)` on `device()`; a LibTorch failure becomes one rcnn::Error naming
  /// `file` and the input shape. Call inside a TorchRunScope.
  c10::IValue forward(torch::jit::Module& module, const std::string& file, const TensorView& in) {
    at::Tensor input = torch_guarded(file, [&] { return to_device(from_view(in)); });
    try {
      return module.forward({input});
    } catch (const std::exception& e) {
      fail(file + ": forward failed on input " + shape_string(input) + ": " +
           torch_error_summary(e.what()));
    }
  }

  /// A per-detection head (mask, keypoint): `module` on `rois`, whose one output (`what`, a
  /// float32 4-D tensor) is kept in `held` on the host and returned as a view. rcnn::Error
  /// naming `method` when the bundle (`architecture`) has no such head.
  TensorView run_detection_head(torch::jit::Module& module, const std::string& file, bool present,
                                const char* method, const char* head, const char* architecture,
                                const char* what, const TensorView& rois, at::Tensor& held) {
    if (!present)
      fail(std::string(method) + ": the bundle has no " + head +
           " head (model.json architecture is not \"" + architecture + "\")");
    TorchRunScope scope(intra_op_threads_);
    const c10::IValue result = forward(module, file, rois);
    torch_guarded(file, [&] { held = checked(result, what, file, 4); });
    return view_of(held);
  }

  /// One box head module (the box head, or a cascade stage's): (class_logits, box_deltas).
  void run_box_module(torch::jit::Module& module, const std::string& file, const TensorView& rois,
                      BoxHeadOutputs& out) {
    TorchRunScope scope(intra_op_threads_);
    const c10::IValue result = forward(module, file, rois);
    if (!result.isTuple() || result.toTupleRef().elements().size() != 2)
      fail(file + ": expected forward() to return a tuple (class_logits, box_deltas), got " +
           result.tagKind());
    const auto& elems = result.toTupleRef().elements();
    torch_guarded(file, [&] {
      held_head_[0] = checked(elems[0], "class_logits", file, 2);
      held_head_[1] = checked(elems[1], "box_deltas", file, 2);
    });
    out.class_logits = view_of(held_head_[0]);
    out.box_deltas = view_of(held_head_[1]);
  }

  at::Tensor from_view(const TensorView& v) const {
    // The executor never writes into its input; from_blob needs a non-const pointer.
    return torch::from_blob(const_cast<float*>(v.data),
                            {v.shape[0], v.shape[1], v.shape[2], v.shape[3]},
                            torch::TensorOptions().dtype(torch::kFloat32));
  }
  at::Tensor to_device(const at::Tensor& t) const {
    return device_.is_cpu() ? t : t.to(device_);
  }

  /// Checks one output tensor (float32, `dims` dimensions) and returns it as it is.
  static at::Tensor checked_tensor(const c10::IValue& v, const std::string& what,
                                   const std::string& module, int64_t dims) {
    if (!v.isTensor()) fail(module + ": " + what + " is not a tensor (" + v.tagKind() + ")");
    at::Tensor t = v.toTensor();
    if (t.scalar_type() != at::kFloat)
      fail(module + ": " + what + " has dtype " + std::string(c10::toString(t.scalar_type())) +
           ", expected float32");
    if (t.dim() != dims)
      fail(module + ": " + what + " has shape " + shape_string(t) + ", expected " +
           std::to_string(dims) + " dimensions");
    return t;
  }

  /// Checks one output tensor and returns it on the host, contiguous.
  static at::Tensor checked(const c10::IValue& v, const std::string& what,
                            const std::string& module, int64_t dims) {
    return checked_tensor(v, what, module, dims).to(torch::kCPU).contiguous();
  }

  /// A feature map on the host without a copy when it already is contiguous NCHW or
  /// channels-last (a bundle exported with `--features-layout nhwc` returns the latter);
  /// anything else is made contiguous in the bundle's `backbone.features_layout`, on the
  /// device (before the copy to the host).
  at::Tensor host_features(const c10::IValue& v, const std::string& what) const {
    at::Tensor t = checked_tensor(v, what, backbone_file_, 4);
    const auto dense = [](const at::Tensor& x) {
      return x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast);
    };
    if (!dense(t)) t = t.contiguous(memory_format_of(features_layout_));
    t = t.to(torch::kCPU);  // keeps the strides of a dense tensor
    return dense(t) ? t : t.contiguous(memory_format_of(features_layout_));
  }

  void collect(const c10::IValue& list, const std::string& what, std::vector<TensorView>& out,
               bool keep_device) {
    if (!list.isList() && !list.isTensorList())
      fail(backbone_file_ + ": " + what + " output is not a list of tensors");
    auto items = list.toListRef();
    out.clear();
    for (std::size_t i = 0; i < items.size(); ++i) {
      const std::string name = what + "[" + std::to_string(i) + "]";
      held_backbone_.push_back(keep_device ? host_features(items[i], name)
                                           : checked(items[i], name, backbone_file_, 4));
      out.push_back(view_of(held_backbone_.back()));
      if (keep_device) device_features_.push_back(items[i].toTensor());
    }
  }

  c10::Device device_;
  int intra_op_threads_;
  std::string backbone_file_, box_head_file_, mask_head_file_, keypoint_head_file_;
  torch::jit::Module backbone_, box_head_, mask_head_, keypoint_head_;
  std::vector<std::string> cascade_files_;      ///< cascade stages 1, 2, ...
  std::vector<torch::jit::Module> cascade_heads_;
  bool has_mask_head_ = false, has_keypoint_head_ = false;
  Layout features_layout_ = Layout::nchw;
  at::Tensor held_mask_, held_keypoints_;
  std::vector<at::Tensor> held_backbone_, device_features_;
  at::Tensor held_head_[2];
};

}  // namespace detail

}  // namespace rcnn
