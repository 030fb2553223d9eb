// A stand-in for torch-neuron's libtorchneuron.so, for testing NeuronExec without an Inf1
// instance: it registers one `neuron::` TorchScript operator (identity) and a
// `torch.classes.neuron.Runtime` class with the default-NeuronCore methods that the
// placement context uses, recording every call so that tests can read them back.
// It runs nothing on any accelerator.
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace {

struct FakeRuntimeState {
  std::mutex mutex;
  int64_t start_nc = -1, nc_count = -1;
  std::vector<int64_t> log;  // (start_nc, nc_count) of every set call, flattened
};
FakeRuntimeState& state() {
  static FakeRuntimeState s;
  return s;
}

struct FakeRuntime : torch::CustomClassHolder {
  void set_default_neuron_cores(int64_t start_nc, int64_t nc_count) {
    auto& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.start_nc = start_nc;
    s.nc_count = nc_count;
    s.log.push_back(start_nc);
    s.log.push_back(nc_count);
  }
  int64_t get_default_start_nc() { return state().start_nc; }
  int64_t get_default_nc_count() { return state().nc_count; }
  std::vector<int64_t> get_log() {
    std::lock_guard<std::mutex> lock(state().mutex);
    return state().log;
  }
};

at::Tensor fake_forward(const at::Tensor& x) { return x; }

}  // namespace

TORCH_LIBRARY(neuron, m) {
  m.class_<FakeRuntime>("Runtime")
      .def(torch::init<>())
      .def("set_default_neuron_cores", &FakeRuntime::set_default_neuron_cores)
      .def("get_default_start_nc", &FakeRuntime::get_default_start_nc)
      .def("get_default_nc_count", &FakeRuntime::get_default_nc_count)
      .def("get_log", &FakeRuntime::get_log);
  m.def("rcnn_fake_forward(Tensor x) -> Tensor", &fake_forward);
}
