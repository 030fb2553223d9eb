#pragma once
/// \file neuron_exec.hpp
/// `NeuronExec`: runs a bundle whose modules were compiled for AWS Inferentia (Inf1) with
/// torch-neuron, as in the AWS Neuron note "Running R-CNNs on Inf1". Before loading the
/// modules it loads the Neuron runtime's TorchScript operator library, libtorchneuron.so
/// (dlopen, RTLD_NOW | RTLD_GLOBAL), which registers the `neuron::` operators the compiled
/// modules call; then it runs them like TorchScriptExec (host tensors in and out: the
/// operators move data to and from the NeuronCores). Link rcnn::torch.
///
/// Which library: NeuronOptions::library, else the environment variable RCNN_NEURON_LIBRARY,
/// else the bundle's optional `modules.neuron_library`, else "libtorchneuron.so" through the
/// dynamic loader's search path (LD_LIBRARY_PATH; pip installs it in
/// site-packages/torch_neuron/lib/).
///
/// Placement (docs/how-to/deploy-inf1.md):
///  - one replica per process: `visible_cores` (e.g. neuron_visible_cores({r, k})) is put in
///    NEURON_RT_VISIBLE_CORES before the first NeuronExec of the process loads the library.
///    The runtime reads it once per process, so it is process-wide: a later NeuronExec asking
///    for a different value is an error.
///  - several replicas in one process: the note uses torch.neuron.DataParallel or the
///    `neuron_cores_context(start_nc, nc_count)` placement context at load time. `placement`
///    is the equivalent here: while this replica's modules load, the runtime's default
///    NeuronCores are set to the replica's cores (cores_per_replica cores starting at
///    replica_index * cores_per_replica, relative to the process's visible cores) through the
///    `torch.classes.neuron.Runtime` class that context uses, and restored afterwards. A
///    library without that class gives an error saying to use one process per replica.

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <torch/custom_class.h>

#include "torch_exec_base.hpp"

namespace rcnn {

/// Where one replica's modules go: cores_per_replica NeuronCores starting at
/// first_core + replica_index * cores_per_replica.
struct NeuronPlacement {
  int replica_index = 0;
  int cores_per_replica = 1;
  int first_core = 0;  ///< the first core of the first replica
};

/// "a" for one core, "a-b" for the inclusive range [a, b]: the NEURON_RT_VISIBLE_CORES
/// syntax. Throws rcnn::Error for first < 0 or count < 1.
inline std::string neuron_core_range(int first, int count) {
  detail::require(first >= 0 && count >= 1,
                  "NeuronCore range: first core " + std::to_string(first) + " and count " +
                      std::to_string(count) + " (expected first >= 0, count >= 1)");
  if (count == 1) return std::to_string(first);
  return std::to_string(first) + "-" + std::to_string(first + count - 1);
}

/// The NeuronCores of one replica, as NEURON_RT_VISIBLE_CORES wants them: replica 1 with 2
/// cores per replica is "2-3"; replica 3 with 1 core is "3".
inline std::string neuron_visible_cores(const NeuronPlacement& p) {
  detail::require(p.replica_index >= 0 && p.cores_per_replica >= 1 && p.first_core >= 0,
                  "NeuronPlacement: replica_index " + std::to_string(p.replica_index) +
                      ", cores_per_replica " + std::to_string(p.cores_per_replica) +
                      ", first_core " + std::to_string(p.first_core) +
                      " (expected >= 0, >= 1, >= 0)");
  return neuron_core_range(p.first_core + p.replica_index * p.cores_per_replica,
                           p.cores_per_replica);
}

/// The cores a process hosting `replicas` replicas needs (the union of their ranges).
inline std::string neuron_process_cores(int replicas, int cores_per_replica, int first_core = 0) {
  detail::require(replicas >= 1, "NeuronCore placement: " + std::to_string(replicas) +
                                     " replicas (expected >= 1)");
  return neuron_core_range(first_core, replicas * cores_per_replica);
}

/// Options of NeuronExec.
struct NeuronOptions {
  /// LibTorch intra-op threads for the host-side operators of the modules (as TorchScriptOptions).
  int intra_op_threads = 1;
  /// Path (or bare name) of libtorchneuron.so; empty: RCNN_NEURON_LIBRARY, the bundle's
  /// modules.neuron_library, then "libtorchneuron.so".
  std::string library;
  /// NEURON_RT_VISIBLE_CORES for this process ("0", "0-1", ...); empty leaves the
  /// environment as it is. Process-wide: see the file comment.
  std::string visible_cores;
  /// In-process placement of this replica's modules (neuron_cores_context equivalent).
  std::optional<NeuronPlacement> placement;
  /// Refuse bundles without modules.backbone_rpn.static_shape and modules.box_head.static_rois
  /// (Neuron-compiled modules run on exactly the shapes they were compiled for).
  bool require_static_shapes = true;
};

namespace detail {

inline const char* neuron_install_hint() {
  return "install torch-neuron (pip install torch-neuron "
         "--extra-index-url=https://pip.repos.neuron.amazonaws.com) on an Inf1 instance or set "
         "RCNN_NEURON_LIBRARY=/path/to/libtorchneuron.so";
}

/// Number of TorchScript operators in the `neuron::` namespace registered in this process.
inline std::size_t count_neuron_operators() {
  std::size_t n = 0;
  for (const auto& op : torch::jit::getAllOperators())
    if (op->schema().name().rfind("neuron::", 0) == 0) ++n;
  return n;
}

/// Process-wide state of the Neuron runtime set-up (libraries verified, cores requested).
struct NeuronProcessState {
  std::mutex mutex;
  std::set<void*> verified;                  ///< dlopen handles known to provide neuron ops
  std::set<void*> refused;                   ///< loaded by NeuronExec, registered none
  std::optional<std::string> visible_cores;  ///< what NEURON_RT_VISIBLE_CORES was set to
  bool runtime_started = false;              ///< a NeuronExec has loaded its modules
};
inline NeuronProcessState& neuron_process_state() {
  static NeuronProcessState state;
  return state;
}

/// The library NeuronExec loads and where that choice came from.
struct NeuronLibraryChoice {
  std::string path;
  std::string source;
};

inline NeuronLibraryChoice choose_neuron_library(const NeuronOptions& o, const ModelConfig& cfg) {
  if (!o.library.empty()) return {o.library, "NeuronOptions::library"};
  if (const char* env = std::getenv("RCNN_NEURON_LIBRARY"); env && *env)
    return {env, "RCNN_NEURON_LIBRARY"};
  if (cfg.modules.neuron_library) {
    std::string p = *cfg.modules.neuron_library;
    const std::filesystem::path fp(p);
    if (p.find('/') != std::string::npos && fp.is_relative() && !cfg.bundle_dir.empty())
      p = (std::filesystem::path(cfg.bundle_dir) / fp).string();
    return {p, "modules.neuron_library in model.json"};
  }
  return {"libtorchneuron.so", "the default name, through the dynamic loader search path"};
}

/// dlopens the library (RTLD_NOW | RTLD_GLOBAL) and checks that it provides `neuron::`
/// TorchScript operators: a library newly loaded by this call must register some; one that
/// was already in the process (linked, or loaded by someone else) is accepted when neuron
/// operators are registered. Never dlclosed: the operators stay registered.
inline void load_neuron_library(const NeuronLibraryChoice& lib) {
  NeuronProcessState& st = neuron_process_state();
  std::lock_guard<std::mutex> lock(st.mutex);
  void* already = ::dlopen(lib.path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  const std::size_t before = count_neuron_operators();
  ::dlerror();
  void* handle = ::dlopen(lib.path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (already) ::dlclose(already);  // drop the reference RTLD_NOLOAD took
  if (!handle) {
    const char* err = ::dlerror();
    const std::string why = err ? err : "unknown dlopen error";
    // dlerror names the file it could not open: the library itself, or a dependency.
    const bool missing = why.rfind(lib.path + ":", 0) == 0 &&
                         why.find("cannot open shared object file") != std::string::npos;
    if (missing)
      fail(std::string("libtorchneuron.so not found: ") + neuron_install_hint() + " (tried \"" +
           lib.path + "\" from " + lib.source + ": " + why + ")");
    fail("\"" + lib.path + "\" (from " + lib.source +
         ") could not be loaded as the Neuron runtime library: " + why +
         "; it must be torch-neuron's libtorchneuron.so built for this LibTorch version and C++ "
         "ABI, with the libraries beside it (torch_neuron/lib) on LD_LIBRARY_PATH");
  }
  if (st.verified.count(handle)) return;
  const std::size_t after = count_neuron_operators();
  // A refused library stays loaded (unloading one that registered other operators would
  // leave dangling registrations) and stays refused.
  const bool ok = !st.refused.count(handle) && (already ? after > 0 : after > before);
  if (!ok) {
    st.refused.insert(handle);
    fail("\"" + lib.path + "\" (from " + lib.source +
         ") was loaded but registers no neuron:: TorchScript operators: it is not "
         "torch-neuron's libtorchneuron.so; " + neuron_install_hint());
  }
  st.verified.insert(handle);
}

/// Sets NEURON_RT_VISIBLE_CORES for the process, before the runtime starts.
inline void apply_visible_cores(const std::string& cores) {
  if (cores.empty()) return;
  NeuronProcessState& st = neuron_process_state();
  std::lock_guard<std::mutex> lock(st.mutex);
  const char* current = std::getenv("NEURON_RT_VISIBLE_CORES");
  if (st.runtime_started) {
    if (current && cores == current) return;
    fail("NeuronExec: visible_cores \"" + cores +
         "\": NEURON_RT_VISIBLE_CORES is read once per process when the Neuron runtime starts "
         "and is already \"" + std::string(current ? current : "") +
         "\"; run one process per core range, or load several replicas in one process with "
         "NeuronOptions::placement");
  }
  if (::setenv("NEURON_RT_VISIBLE_CORES", cores.c_str(), 1) != 0)
    fail("NeuronExec: could not set NEURON_RT_VISIBLE_CORES=" + cores);
  st.visible_cores = cores;
}

/// A new instance of a registered TorchScript custom class (constructor without arguments).
inline c10::IValue make_script_object(const c10::ClassTypePtr& cls) {
  c10::IValue self(c10::ivalue::Object::create(c10::StrongTypePtr(nullptr, cls), 1));
  cls->getMethod("__init__")({self});
  return self;
}

/// Calls method `name` of a custom-class object; throws rcnn::Error when it has none.
inline c10::IValue call_script_method(const c10::IValue& self, const std::string& name,
                                      std::vector<c10::IValue> args = {}) {
  const c10::ClassTypePtr cls = self.toObjectRef().type();
  torch::jit::Function* f = cls->findMethod(name);
  if (!f) fail(cls->name()->qualifiedName() + " has no method " + name);
  args.insert(args.begin(), self);
  return (*f)(std::move(args));
}

/// The Neuron runtime's TorchScript class, as the Python placement context uses it
/// (`torch.classes.neuron.Runtime`); null when the loaded library does not register it.
inline c10::ClassTypePtr neuron_runtime_class() {
  return torch::getCustomClass("__torch__.torch.classes.neuron.Runtime");
}

/// The runtime's default NeuronCores for modules loaded from now on (what the Python
/// `neuron_cores_context(start_nc, nc_count)` sets), through `torch.classes.neuron.Runtime`.
/// Returns the previous (start_nc, nc_count).
inline std::pair<int64_t, int64_t> set_default_neuron_cores(int64_t start_nc, int64_t nc_count) {
  const c10::ClassTypePtr cls = neuron_runtime_class();
  if (!cls)
    fail("NeuronExec: placement needs the Neuron runtime class torch.classes.neuron.Runtime "
         "(set_default_neuron_cores, as neuron_cores_context uses), which the loaded Neuron "
         "library does not register; run one process per replica with "
         "NeuronOptions::visible_cores = neuron_visible_cores(placement) instead");
  try {
    const c10::IValue runtime = make_script_object(cls);
    const int64_t old_start = call_script_method(runtime, "get_default_start_nc").toInt();
    const int64_t old_count = call_script_method(runtime, "get_default_nc_count").toInt();
    call_script_method(runtime, "set_default_neuron_cores", {start_nc, nc_count});
    return {old_start, old_count};
  } catch (const std::exception& e) {
    fail("NeuronExec: setting the default NeuronCores to start " + std::to_string(start_nc) +
         ", count " + std::to_string(nc_count) + " failed: " + first_line(e.what()));
  }
}

}  // namespace detail

/// Executor for Neuron-compiled (Inf1) bundles; satisfies rcnn::Executor. Same run-time
/// behaviour as TorchScriptExec (shared base, torch_exec_base.hpp). One instance per
/// thread; instances are independent replicas.
///
/// Errors (rcnn::Error): the library is missing ("libtorchneuron.so not found: install
/// torch-neuron ..."), is not the Neuron library (loaded, but no neuron:: operators: refused
/// before any module is loaded), a module needs neuron:: operators that are not registered,
/// the bundle has no static shapes (unless require_static_shapes is false), or the cores
/// cannot be applied.
class NeuronExec : public detail::TorchModulesExec {
 public:
  using Options = NeuronOptions;

  NeuronExec(const ModelConfig& cfg, Options options = {})
      : TorchModulesExec(torch::kCPU, options.intra_op_threads), options_(std::move(options)) {
    if (options_.require_static_shapes) check_static_shapes(cfg);
    library_ = detail::choose_neuron_library(options_, cfg);
    detail::apply_visible_cores(options_.visible_cores);
    detail::load_neuron_library(library_);
    {
      std::lock_guard<std::mutex> lock(detail::neuron_process_state().mutex);
      detail::neuron_process_state().runtime_started = true;
    }
    if (options_.placement) {
      (void)neuron_visible_cores(*options_.placement);  // validates the numbers
      const NeuronPlacement& p = *options_.placement;
      const auto old = detail::set_default_neuron_cores(
          int64_t(p.replica_index) * p.cores_per_replica, p.cores_per_replica);
      try {
        load(cfg);
      } catch (...) {
        detail::set_default_neuron_cores(old.first, old.second);
        throw;
      }
      detail::set_default_neuron_cores(old.first, old.second);
    } else {
      load(cfg);
    }
  }

  const Options& options() const { return options_; }
  /// The library that was loaded (path or name as given to dlopen).
  const std::string& library() const { return library_.path; }
  void set_intra_op_threads(int n) {
    options_.intra_op_threads = n;
    set_threads(n);
  }

 private:
  static void check_static_shapes(const ModelConfig& cfg) {
    const bool shape = cfg.modules.backbone_rpn.static_shape.has_value();
    const bool rois = cfg.modules.box_head.static_rois.has_value();
    if (shape && rois) return;
    detail::fail(
        std::string("NeuronExec: ") + (cfg.bundle_dir.empty() ? "" : cfg.bundle_dir + "/") +
        "model.json has no " +
        (shape ? "modules.box_head.static_rois"
               : rois ? "modules.backbone_rpn.static_shape"
                      : "modules.backbone_rpn.static_shape and modules.box_head.static_rois") +
        ": Neuron-compiled modules run on the fixed shapes they were compiled for; export with "
        "tools/export_detectron2.py --target neuron --fixed-size H W --static-rois R (or set "
        "NeuronOptions::require_static_shapes = false)");
  }

  void load(const ModelConfig& cfg) {
    try {
      load_modules(cfg);
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find("neuron::") != std::string::npos)
        detail::fail(what + "; the module needs the Neuron operators: is \"" + library_.path +
                     "\" the libtorchneuron.so of the torch-neuron that compiled it?");
      throw;
    }
  }

  Options options_;
  detail::NeuronLibraryChoice library_;
};

}  // namespace rcnn
