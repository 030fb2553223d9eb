// Deployment paths (issue 4): NeuronExec (library loading, placement, static shapes through a
// CPU-compiled bundle of the Inf1 shapes), static shapes in the Detector, the stage profiler,
// and AtenRoIAlign against RoIAlignRef. No Inf1 instance and no GPU here: NeuronExec is run
// with a stand-in library (tests/fake_neuron) that registers neuron:: operators.
#include <dlfcn.h>

#include <cstdlib>
#include <iterator>
#include <random>

#include <opencv2/imgcodecs.hpp>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/cuda_exec.hpp>
#include <rcnn/exec/neuron_exec.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/profiler.hpp>
#include <rcnn/roi_align/aten_roi_align.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>

#include "parity_util.hpp"

namespace {

using namespace parity;
const fs::path kD2 = fs::path(RCNN_TEST_DATA_DIR) / "detectron2";
const fs::path kFixed = kD2 / "narrow_r101_fpn_fixed800";
const fs::path kDynamic = kD2 / "narrow_r101_fpn_shortest_edge";
const std::string kInstall =
    "install torch-neuron (pip install torch-neuron "
    "--extra-index-url=https://pip.repos.neuron.amazonaws.com) on an Inf1 instance or set "
    "RCNN_NEURON_LIBRARY=/path/to/libtorchneuron.so";
const std::string kInstallHint = "libtorchneuron.so not found: " + kInstall;

/// Any executor, recording what it was fed.
template <class E>
struct Recording {
  using Options = typename E::Options;
  Recording(const rcnn::ModelConfig& cfg, Options o) : inner(cfg, o) {}
  void run_backbone_rpn(const rcnn::TensorView& in, rcnn::BackboneOutputs& out) {
    backbone_inputs.push_back(in.shape);
    inner.run_backbone_rpn(in, out);
  }
  void run_box_head(const rcnn::TensorView& in, rcnn::BoxHeadOutputs& out) {
    box_head_rows.push_back(in.shape[0]);
    inner.run_box_head(in, out);
  }
  E inner;
  std::vector<std::array<std::int64_t, 4>> backbone_inputs;
  std::vector<std::int64_t> box_head_rows;
};

struct Photo {
  cv::Mat image, storage;
  rcnn::ImageView view;
  explicit Photo(const fs::path& p) : image(rcnn::cv_io::read_image(p)) {
    view = rcnn::cv_io::view(image, storage);
  }
};

fs::path photo(const char* name) { return kFixed / "cases" / name / "image.jpg"; }

/// Same detections: same count, class and order, boxes within `box_tol` px, scores within
/// `score_tol`. Returns the largest box and score differences.
std::pair<double, double> same_detections(const std::vector<rcnn::Detection>& a,
                                          const std::vector<rcnn::Detection>& b,
                                          double box_tol, double score_tol) {
  REQUIRE(a.size() == b.size());
  double box = 0, score = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(a[i].class_id == b[i].class_id);
    box = std::max({box, double(std::abs(a[i].box.x1 - b[i].box.x1)),
                    double(std::abs(a[i].box.y1 - b[i].box.y1)),
                    double(std::abs(a[i].box.x2 - b[i].box.x2)),
                    double(std::abs(a[i].box.y2 - b[i].box.y2))});
    score = std::max(score, double(std::abs(a[i].score - b[i].score)));
  }
  CHECK(box <= box_tol);
  CHECK(score <= score_tol);
  return {box, score};
}

/// A real shared library that is not in the process yet and is not the Neuron library
/// (full path; "" when every candidate is missing or already loaded).
std::string unloaded_non_neuron_library() {
  for (const char* dir : {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                          "/usr/lib64", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"}) {
    for (const char* name : {"libtinfo.so.6", "libacl.so.1", "libattr.so.1", "libcap.so.2",
                             "libsepol.so.2", "libmagic.so.1", "libyaml-0.so.2",
                             "libjansson.so.4", "libgdbm.so.6", "libbz2.so.1.0", "libz.so.1"}) {
      const fs::path p = fs::path(dir) / name;
      if (!fs::exists(p)) continue;
      if (void* h = ::dlopen(p.c_str(), RTLD_NOW | RTLD_NOLOAD)) {
        ::dlclose(h);
        continue;
      }
      return p.string();
    }
  }
  return "";
}

std::vector<std::int64_t> fake_runtime_log() {
  const auto cls = rcnn::detail::neuron_runtime_class();
  REQUIRE(cls);
  const c10::IValue runtime = rcnn::detail::make_script_object(cls);
  return rcnn::detail::call_script_method(runtime, "get_log").toIntVector();
}

}  // namespace

// ---------------------------------------------------------------------------------------
// NeuronExec: placement strings, library resolution and errors.

TEST_CASE("neuron placement: NEURON_RT_VISIBLE_CORES values") {
  CHECK(rcnn::neuron_core_range(0, 1) == "0");
  CHECK(rcnn::neuron_core_range(0, 2) == "0-1");
  CHECK(rcnn::neuron_core_range(3, 4) == "3-6");
  CHECK(rcnn::neuron_visible_cores({0, 1}) == "0");
  CHECK(rcnn::neuron_visible_cores({3, 1}) == "3");
  CHECK(rcnn::neuron_visible_cores({1, 2}) == "2-3");
  CHECK(rcnn::neuron_visible_cores({2, 4}) == "8-11");
  CHECK(rcnn::neuron_visible_cores({1, 2, 4}) == "6-7");
  CHECK(rcnn::neuron_process_cores(4, 1) == "0-3");
  CHECK(rcnn::neuron_process_cores(1, 1) == "0");
  CHECK(rcnn::neuron_process_cores(2, 2, 4) == "4-7");
  CHECK_THROWS_WITH_AS(rcnn::neuron_core_range(-1, 1), doctest::Contains("first >= 0"), rcnn::Error);
  CHECK_THROWS_WITH_AS(rcnn::neuron_core_range(0, 0), doctest::Contains("count >= 1"), rcnn::Error);
  CHECK_THROWS_AS(rcnn::neuron_visible_cores({-1, 1}), rcnn::Error);
  CHECK_THROWS_AS(rcnn::neuron_visible_cores({0, 0}), rcnn::Error);
  CHECK_THROWS_AS(rcnn::neuron_process_cores(0, 1), rcnn::Error);
}

TEST_CASE("neuron: model.json modules.neuron_library") {
  const std::string json = [] {
    std::ifstream f(kFixed / "model.json");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }();
  auto j = nlohmann::json::parse(json);
  CHECK_FALSE(rcnn::parse_model_json(json).modules.neuron_library);
  j["modules"]["neuron_library"] = "lib/libtorchneuron.so";
  rcnn::ModelConfig cfg = rcnn::parse_model_json(j.dump());
  REQUIRE(cfg.modules.neuron_library);
  CHECK(*cfg.modules.neuron_library == "lib/libtorchneuron.so");
  j["modules"]["neuron_library"] = "";
  CHECK_THROWS_WITH_AS(rcnn::parse_model_json(j.dump()),
                       doctest::Contains("modules.neuron_library"), rcnn::Error);
  j["modules"]["neuron_library"] = nullptr;
  CHECK_FALSE(rcnn::parse_model_json(j.dump()).modules.neuron_library);

  // Resolution order: option, RCNN_NEURON_LIBRARY, model.json (relative to the bundle), name.
  cfg.bundle_dir = "/bundles/b";
  rcnn::NeuronOptions o;
  ::unsetenv("RCNN_NEURON_LIBRARY");
  auto c = rcnn::detail::choose_neuron_library(o, cfg);
  CHECK(c.path == "/bundles/b/lib/libtorchneuron.so");
  CHECK(c.source.find("modules.neuron_library") != std::string::npos);
  ::setenv("RCNN_NEURON_LIBRARY", "/env/libtorchneuron.so", 1);
  CHECK(rcnn::detail::choose_neuron_library(o, cfg).path == "/env/libtorchneuron.so");
  o.library = "/opt/libtorchneuron.so";
  CHECK(rcnn::detail::choose_neuron_library(o, cfg).path == "/opt/libtorchneuron.so");
  ::unsetenv("RCNN_NEURON_LIBRARY");
  cfg.modules.neuron_library = "libtorchneuron.so";  // bare name: loader search path
  CHECK(rcnn::detail::choose_neuron_library({}, cfg).path == "libtorchneuron.so");
  cfg.modules.neuron_library.reset();
  CHECK(rcnn::detail::choose_neuron_library({}, cfg).path == "libtorchneuron.so");
}

TEST_CASE("neuron: a missing library says what to install") {
  const rcnn::ModelConfig cfg = rcnn::read_bundle(kFixed);
  rcnn::NeuronOptions o;
  o.library = "/nonexistent/rcnn-test/libtorchneuron.so";
  CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, o), doctest::Contains(kInstallHint.c_str()), rcnn::Error);
  CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, o),
                       doctest::Contains("/nonexistent/rcnn-test/libtorchneuron.so"), rcnn::Error);
  // Through the environment variable, and through rcnn::load.
  ::setenv("RCNN_NEURON_LIBRARY", "/nonexistent/rcnn-env/libtorchneuron.so", 1);
  CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, {}), doctest::Contains("RCNN_NEURON_LIBRARY"),
                       rcnn::Error);
  CHECK_THROWS_WITH_AS(rcnn::load<rcnn::NeuronExec>(kFixed), doctest::Contains(kInstallHint.c_str()),
                       rcnn::Error);
  ::unsetenv("RCNN_NEURON_LIBRARY");
  // A file that exists but is not a shared library.
  o.library = (kFixed / "model.json").string();
  CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, o),
                       doctest::Contains("could not be loaded as the Neuron runtime library"),
                       rcnn::Error);
  // This machine has no torch-neuron: the default name is not found either.
  if (void* h = ::dlopen("libtorchneuron.so", RTLD_NOW | RTLD_NOLOAD)) {
    ::dlclose(h);
  } else {
    CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, {}), doctest::Contains(kInstallHint.c_str()), rcnn::Error);
  }
}

TEST_CASE("neuron: a library that is not the Neuron library is refused") {
  const rcnn::ModelConfig cfg = rcnn::read_bundle(kFixed);
  // A real shared library, loaded by this call, that registers no neuron:: operators.
  const std::string lib = unloaded_non_neuron_library();
  if (lib.empty()) {
    MESSAGE("every candidate library is already loaded: case skipped");
  } else {
    MESSAGE("non-Neuron library loaded for the test: " << lib);
    rcnn::NeuronOptions o;
    o.library = lib;
    CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, o),
                         doctest::Contains("registers no neuron:: TorchScript operators"),
                         rcnn::Error);
    CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, o), doctest::Contains(kInstall.c_str()),
                         rcnn::Error);
  }
  // libm is already in the process: accepted only if neuron:: operators exist.
  if (rcnn::detail::count_neuron_operators() == 0) {
    rcnn::NeuronOptions o;
    o.library = "libm.so.6";
    CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, o),
                         doctest::Contains("libm.so.6\" (from NeuronOptions::library) was loaded "
                                           "but registers no neuron:: TorchScript operators"),
                         rcnn::Error);
  }
}

TEST_CASE("neuron: bundles without static shapes are refused") {
  rcnn::NeuronOptions o;
  o.library = RCNN_FAKE_NEURON_LIBRARY;
  const rcnn::ModelConfig dyn = rcnn::read_bundle(kDynamic);
  CHECK_THROWS_WITH_AS(rcnn::NeuronExec(dyn, o),
                       doctest::Contains("modules.backbone_rpn.static_shape and "
                                         "modules.box_head.static_rois"),
                       rcnn::Error);
  rcnn::ModelConfig half = rcnn::read_bundle(kFixed);
  half.modules.box_head.static_rois.reset();
  CHECK_THROWS_WITH_AS(rcnn::NeuronExec(half, o),
                       doctest::Contains("has no modules.box_head.static_rois"), rcnn::Error);
}

TEST_CASE("neuron: NeuronExec with a stand-in libtorchneuron.so runs the fixed800 bundle") {
  const rcnn::ModelConfig cfg = rcnn::read_bundle(kFixed);
  rcnn::NeuronOptions o;
  o.library = RCNN_FAKE_NEURON_LIBRARY;

  // visible_cores is applied before the first NeuronExec of the process starts the runtime.
  o.visible_cores = rcnn::neuron_visible_cores({1, 2});
  rcnn::NeuronExec first(cfg, o);
  CHECK(std::string(std::getenv("NEURON_RT_VISIBLE_CORES")) == "2-3");
  CHECK(first.library() == RCNN_FAKE_NEURON_LIBRARY);
  CHECK(rcnn::detail::count_neuron_operators() > 0);
  rcnn::NeuronExec same(cfg, o);  // same value: fine
  o.visible_cores = "0";
  CHECK_THROWS_WITH_AS(rcnn::NeuronExec(cfg, o), doctest::Contains("read once per process"),
                       rcnn::Error);
  o.visible_cores.clear();

  // In-process placement (neuron_cores_context equivalent): the runtime's default cores are
  // the replica's while its modules load, then restored.
  const std::size_t log_before = fake_runtime_log().size();
  o.placement = rcnn::NeuronPlacement{1, 2};
  rcnn::NeuronExec placed(cfg, o);
  const auto log = fake_runtime_log();
  REQUIRE(log.size() == log_before + 4);
  CHECK(log[log_before + 0] == 2);  // start_nc = replica_index * cores_per_replica
  CHECK(log[log_before + 1] == 2);  // nc_count
  CHECK(log[log_before + 2] == -1);  // restored
  CHECK(log[log_before + 3] == -1);
  o.placement.reset();

  // Same detections as TorchScriptExec on the same (CPU-compiled) modules; static shapes.
  Photo img(photo("messi5"));
  rcnn::Detector<Recording<rcnn::NeuronExec>, rcnn::RoIAlignRef, rcnn::Detectron2Stages> neuron(
      cfg, Recording<rcnn::NeuronExec>(cfg, o));
  rcnn::Detector<rcnn::TorchScriptExec, rcnn::RoIAlignRef, rcnn::Detectron2Stages> ts(
      cfg, rcnn::TorchScriptExec(cfg, {1}));
  const auto a = neuron(img.view);
  const auto b = ts(img.view);
  same_detections(a.detections, b.detections, 0.0, 0.0);
  CHECK(a.detections.size() == 54);
  const auto& e = neuron.executor();
  REQUIRE(e.backbone_inputs.size() == 1);
  CHECK(e.backbone_inputs[0] == std::array<std::int64_t, 4>{1, 3, 800, 800});
  CHECK(e.box_head_rows == std::vector<std::int64_t>{1000});

  // rcnn::load works with NeuronExec too.
  auto loaded = rcnn::load<rcnn::NeuronExec>(kFixed, o);
  CHECK(loaded(img.view).detections.size() == 54);
}

// ---------------------------------------------------------------------------------------
// Static shapes in the Detector (any executor).

TEST_CASE("static shapes: the fixed800 bundle gives the same detections as the dynamic path") {
  const rcnn::ModelConfig fixed = rcnn::read_bundle(kFixed);
  rcnn::ModelConfig dynamic = fixed;
  dynamic.modules.backbone_rpn.static_shape.reset();
  dynamic.modules.box_head.static_rois.reset();
  rcnn::ModelConfig chunked = fixed;  // box head run in static chunks of 300 rows
  chunked.modules.box_head.static_rois = 300;
  using Exec = Recording<rcnn::TorchScriptExec>;
  using Det = rcnn::Detector<Exec, rcnn::RoIAlignRef, rcnn::Detectron2Stages>;
  Det s(fixed, Exec(fixed, {1})), d(dynamic, Exec(dynamic, {1})), c(chunked, Exec(chunked, {1}));
  for (const char* name : {"fruits", "messi5"}) {
    CAPTURE(name);
    Photo img(photo(name));
    rcnn::Trace trace;
    const auto rs = s(img.view, &trace);
    const auto rd = d(img.view);
    const auto rc = c(img.view);
    const std::size_t proposals = trace.proposals.size();
    CHECK(proposals < 1000);  // so the static path pads
    // The box head saw exactly static_rois rows (static), the proposals (dynamic), or
    // ceil(proposals / 300) chunks of exactly 300 rows.
    CHECK(s.executor().box_head_rows.back() == 1000);
    CHECK(d.executor().box_head_rows.back() == std::int64_t(proposals));
    const std::size_t chunks = (proposals + 299) / 300;
    REQUIRE(c.executor().box_head_rows.size() >= chunks);
    for (std::size_t k = c.executor().box_head_rows.size() - chunks;
         k < c.executor().box_head_rows.size(); ++k)
      CHECK(c.executor().box_head_rows[k] == 300);
    CHECK(s.executor().backbone_inputs.back() == std::array<std::int64_t, 4>{1, 3, 800, 800});
    CHECK(d.executor().backbone_inputs.back() == std::array<std::int64_t, 4>{1, 3, 800, 800});
    const auto [box_sd, score_sd] = same_detections(rs.detections, rd.detections, 1e-3, 1e-5);
    const auto [box_sc, score_sc] = same_detections(rs.detections, rc.detections, 1e-3, 1e-5);
    MESSAGE(std::string(name) << ": " << proposals << " proposals, " << rs.detections.size()
                 << " detections; static vs dynamic max |box diff| " << box_sd
                 << " px, |score diff| " << score_sd << "; static vs 300-row chunks " << box_sc
                 << " px, " << score_sc);
    // And the fixture's reference detections.
    const auto ref = detections_json(kFixed / "cases" / name / "detections.json");
    CHECK(match_detections(ref, rd.detections, 0.9999, 1e-5).matched == ref.size());
  }
}

TEST_CASE("static shapes: an image larger than static_shape is a clear error") {
  rcnn::ModelConfig cfg = rcnn::read_bundle(kFixed);
  cfg.input.resize.mode = rcnn::ResizeConfig::Mode::shortest_edge;  // 342x548 -> 800x1282
  cfg.input.resize.min_size = 800;
  cfg.input.resize.max_size = 1333;
  rcnn::Detector<rcnn::TorchScriptExec> det(cfg, rcnn::TorchScriptExec(cfg, {1}));
  Photo img(photo("messi5"));
  CHECK_THROWS_WITH_AS(det(img.view),
                       doctest::Contains("image 342x548 resizes to 800x1282, larger than the "
                                         "static input shape [1, 3, 800, 800] "
                                         "(modules.backbone_rpn.static_shape) that "
                                         "backbone_rpn.pt was compiled for"),
                       rcnn::Error);
  // Batch size must equal static_shape's N.
  const rcnn::ImageView two[] = {img.view, img.view};
  CHECK_THROWS_WITH_AS(det(std::span<const rcnn::ImageView>(two)),
                       doctest::Contains("compiled for batch 1 (static_shape), got 2 images"),
                       rcnn::Error);
}

namespace {
/// A preprocessing policy that ignores pad_to (pads to multiples of 32 only).
struct IgnoresPadTo {
  rcnn::Detectron2Preprocess inner;
  void reserve(const rcnn::StageSizing& s) { inner.reserve(s); }
  rcnn::PreprocessResult operator()(const rcnn::ImageView& img, const rcnn::InputConfig& cfg,
                                    std::vector<float>& out, std::optional<rcnn::Size>) {
    return inner(img, cfg, out, std::nullopt);
  }
};
struct IgnoringStages : rcnn::Detectron2Stages {
  using preprocess = IgnoresPadTo;
};
}  // namespace

TEST_CASE("static shapes: a preprocess policy must honour the static shape") {
  rcnn::ModelConfig cfg = rcnn::read_bundle(kFixed);
  cfg.modules.backbone_rpn.static_shape = std::array<std::int64_t, 4>{1, 3, 832, 832};
  rcnn::Detector<rcnn::TorchScriptExec, rcnn::RoIAlignRef, IgnoringStages> det(
      cfg, rcnn::TorchScriptExec(cfg, {1}));
  Photo img(photo("fruits"));
  CHECK_THROWS_WITH_AS(det(img.view),
                       doctest::Contains("padded to 800x800, but backbone_rpn.pt needs exactly "
                                         "the static input shape [1, 3, 832, 832]"),
                       rcnn::Error);
}

// ---------------------------------------------------------------------------------------
// Profiler.

static_assert(std::is_same_v<rcnn::Detector<rcnn::TorchScriptExec>::profiler_type, rcnn::NoProfiler>);
static_assert(std::is_empty_v<rcnn::NoProfiler>);
static_assert(std::is_same_v<rcnn::Detector<rcnn::TorchScriptExec, rcnn::RoIAlignRef,
                                            rcnn::WithProfiler<rcnn::Detectron2Stages>>::profiler_type,
                             rcnn::StageProfiler>);
static_assert(rcnn::ProfilerPolicy<rcnn::NoProfiler> && rcnn::ProfilerPolicy<rcnn::StageProfiler>);

TEST_CASE("profiler: StageProfiler records every stage, calls and shares") {
  rcnn::ModelConfig cfg = rcnn::read_bundle(kFixed);
  cfg.modules.box_head.static_rois = 300;
  using Stages = rcnn::WithProfiler<rcnn::Detectron2Stages>;
  rcnn::Detector<rcnn::TorchScriptExec, rcnn::RoIAlignRef, Stages> det(
      cfg, rcnn::TorchScriptExec(cfg, {1}));
  double total = 0;
  std::size_t head_calls = 0;
  for (const char* name : {"fruits", "messi5"}) {
    Photo img(photo(name));
    rcnn::Trace trace;
    const auto r = det(img.view, &trace);
    total += r.timing.total();
    head_calls += (trace.proposals.size() + 299) / 300;
  }
  const rcnn::StageProfiler& p = det.profiler();
  CHECK(p.images() == 2);
  CHECK(p.batches() == 2);
  CHECK(p[rcnn::Stage::preprocess].calls == 2);
  CHECK(p[rcnn::Stage::backbone_rpn].calls == 2);
  CHECK(p[rcnn::Stage::anchors].calls == 2);
  CHECK(p[rcnn::Stage::proposals].calls == 2);
  CHECK(p[rcnn::Stage::roi_align].calls == 2);
  CHECK(p[rcnn::Stage::box_head].calls == head_calls);
  CHECK(head_calls == 6);  // 604 and 731 proposals: 3 chunks of 300 each
  CHECK(p[rcnn::Stage::box_inference].calls == 2);
  CHECK(p[rcnn::Stage::postprocess].calls == 2);
  CHECK(p.total_ms() == doctest::Approx(total).epsilon(1e-9));
  double shares = 0;
  for (std::size_t i = 0; i < rcnn::kNumStages; ++i) {
    const auto s = rcnn::Stage(int(i));
    CHECK(p[s].total_ms >= 0);
    shares += p.share_percent(s);
  }
  CHECK(shares == doctest::Approx(100.0));
  CHECK(p.mean_ms(rcnn::Stage::box_head) ==
        doctest::Approx(p[rcnn::Stage::box_head].total_ms / 6));
  const std::string table = p.table();
  for (const char* h : {"stage", "calls", "total ms", "mean ms", "ms/image", "share"})
    CHECK(table.find(h) != std::string::npos);
  for (std::size_t i = 0; i < rcnn::kNumBoxStages; ++i)
    CHECK(table.find(rcnn::stage_name(rcnn::Stage(int(i)))) != std::string::npos);
  CHECK(table.find("mask_head") == std::string::npos);  // a Faster R-CNN: no mask rows
  MESSAGE("profile of 2 images:\n" << table);

  rcnn::StageProfiler both = p;
  both.merge(p);
  CHECK(both.images() == 4);
  CHECK(both[rcnn::Stage::box_head].calls == 12);
  both.reset();
  CHECK(both.images() == 0);
  CHECK(both.total_ms() == 0);

  // Through rcnn::load (AnyDetector) as rcnn-detect and rcnn-bench use it.
  auto any = rcnn::load<rcnn::TorchScriptExec, rcnn::RoIAlignRef, rcnn::WithProfiler>(kFixed);
  Photo img(photo("fruits"));
  any(img.view);
  CHECK(any.profiler().images() == 1);
  CHECK(any.profiler()[rcnn::Stage::box_head].calls == 1);
}

// ---------------------------------------------------------------------------------------
// AtenRoIAlign against RoIAlignRef.

namespace {
double pooled_diff(const rcnn::AtenRoIAlign& aten, std::span<const rcnn::FeatureMap> maps,
                   std::span<const float> scales, std::span<const rcnn::Box> boxes,
                   std::span<const int> levels, const rcnn::PoolerConfig& pc, double* scale_out) {
  const std::size_t per = std::size_t(maps[0].channels) * pc.resolution * pc.resolution;
  std::vector<float> ref(boxes.size() * per), got(boxes.size() * per, -7.f);
  rcnn::RoIAlignRef{}(maps, scales, boxes, levels, pc, ref);
  aten(maps, scales, boxes, levels, pc, got);
  double scale = 1;
  for (const auto& m : maps)
    for (std::size_t i = 0; i < m.size(); ++i) scale = std::max(scale, double(std::abs(m.data[i])));
  if (scale_out) *scale_out = scale;
  return max_abs_diff(ref, got, ref.size());
}
}  // namespace

TEST_CASE("AtenRoIAlign matches RoIAlignRef on the Detectron2 fixture") {
  const rcnn::ModelConfig cfg = rcnn::read_bundle(kDynamic);
  for (const char* name : {"fruits", "messi5"}) {
    CAPTURE(name);
    const fs::path dir = kDynamic / "cases" / name;
    std::vector<xt::xarray<float>> feats;
    std::vector<rcnn::FeatureMap> maps;
    std::vector<float> scales;
    for (std::size_t l = 0; l < cfg.backbone.roi_levels.size(); ++l) {
      feats.push_back(npy(dir / ("features_" + cfg.backbone.roi_levels[l] + ".npy")));
      scales.push_back(float(1.0 / cfg.backbone.roi_strides[l]));
    }
    for (auto& f : feats)
      maps.push_back({f.data(), int(f.shape()[1]), int(f.shape()[2]), int(f.shape()[3])});
    const auto boxes = boxes_of(npy(dir / "proposals.npy"));
    const auto lv = npy<std::int64_t>(dir / "box_level.npy");
    std::vector<int> levels(lv.begin(), lv.end());
    double scale = 1;
    const double diff = pooled_diff(rcnn::AtenRoIAlign{}, maps, scales, boxes, levels,
                                    cfg.roi_heads.pooler, &scale);
    rcnn::AtenRoIAlign small;  // many tiny chunks: same result
    small.max_chunk_elements = 1;
    small.num_threads = 2;
    const double diff_small =
        pooled_diff(small, maps, scales, boxes, levels, cfg.roi_heads.pooler, nullptr);
    MESSAGE(std::string(name) << ": AtenRoIAlign vs RoIAlignRef on " << boxes.size()
                 << " proposals: max |diff| " << diff << " (features up to " << scale
                 << ", relative " << diff / scale << "); one-RoI chunks: " << diff_small);
    CHECK(diff <= 1e-5 * scale);
    CHECK(diff_small <= 1e-5 * scale);
  }
}

TEST_CASE("AtenRoIAlign matches RoIAlignRef on random maps and awkward boxes") {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> val(-3.f, 3.f), coord(-40.f, 240.f), size(0.f, 150.f);
  const int C = 5;
  const rcnn::Size dims[] = {{50, 61}, {25, 31}, {13, 16}};
  std::vector<std::vector<float>> data;
  std::vector<rcnn::FeatureMap> maps;
  for (const auto& d : dims) {
    data.emplace_back(std::size_t(C) * d.height * d.width);
    for (float& v : data.back()) v = val(rng);
  }
  for (std::size_t l = 0; l < data.size(); ++l)
    maps.push_back({data[l].data(), C, dims[l].height, dims[l].width});
  const std::vector<float> scales = {0.25f, 0.125f, 0.0625f};
  std::vector<rcnn::Box> boxes;
  std::vector<int> levels;
  for (int i = 0; i < 300; ++i) {
    const float x = coord(rng), y = coord(rng);
    boxes.push_back({x, y, x + size(rng), y + size(rng)});
    levels.push_back(i % 3);
  }
  // Inverted, empty, one-pixel, far outside, whole map.
  for (const rcnn::Box& b : {rcnn::Box{50, 50, 40, 45}, rcnn::Box{10, 10, 10, 10},
                             rcnn::Box{3, 3, 4, 4}, rcnn::Box{900, 900, 950, 990},
                             rcnn::Box{-500, -500, -400, -450}, rcnn::Box{0, 0, 244, 200}}) {
    for (int l = 0; l < 3; ++l) {
      boxes.push_back(b);
      levels.push_back(l);
    }
  }
  for (bool aligned : {true, false}) {
    for (int sampling : {0, 2}) {
      CAPTURE(aligned);
      CAPTURE(sampling);
      rcnn::PoolerConfig pc;
      pc.resolution = 7;
      pc.sampling_ratio = sampling;
      pc.aligned = aligned;
      double scale = 1;
      const double diff = pooled_diff(rcnn::AtenRoIAlign{}, maps, scales, boxes, levels, pc, &scale);
      MESSAGE("random maps, aligned " << aligned << ", sampling_ratio " << sampling
                                      << ": max |diff| " << diff << " (values up to " << scale << ")");
      CHECK(diff <= 1e-5 * scale);
    }
  }
  // Errors like the reference's.
  std::vector<float> out(boxes.size() * C * 49);
  std::vector<int> bad = levels;
  bad[0] = 3;
  rcnn::PoolerConfig pc;
  CHECK_THROWS_WITH_AS(rcnn::AtenRoIAlign{}(maps, scales, boxes, bad, pc, out),
                       doctest::Contains("AtenRoIAlign: RoI 0 has level 3"), rcnn::Error);
}

TEST_CASE("channels-last feature maps: view_of keeps the memory, AtenRoIAlign reads it") {
  // A channels-last tensor (what a --features-layout nhwc bundle returns) is viewed in place,
  // tagged NHWC; a contiguous one NCHW; and AtenRoIAlign pools either as RoIAlignRef does.
  const at::Tensor nchw = at::randn({1, 6, 9, 11});
  const at::Tensor nhwc = nchw.contiguous(at::MemoryFormat::ChannelsLast);
  const rcnn::TensorView a = rcnn::detail::view_of(nchw), b = rcnn::detail::view_of(nhwc);
  CHECK(a.layout == rcnn::Layout::nchw);
  CHECK(b.layout == rcnn::Layout::nhwc);
  CHECK(b.data == nhwc.data_ptr<float>());
  CHECK(b.shape == a.shape);
  const std::vector<rcnn::FeatureMap> ma{a.image(0)}, mb{b.image(0)};
  const std::vector<float> scales{0.5f};
  const std::vector<rcnn::Box> boxes{{1, 2, 15, 13}, {-4, -4, 30, 30}, {8, 8, 9, 9}};
  const std::vector<int> levels(boxes.size(), 0);
  rcnn::PoolerConfig pc;
  std::vector<float> ref(boxes.size() * 6 * 49), ref_nhwc(ref.size(), 1.f), aten(ref.size());
  rcnn::RoIAlignRef{}(ma, scales, boxes, levels, pc, ref);
  rcnn::RoIAlignRef{}(mb, scales, boxes, levels, pc, ref_nhwc);
  CHECK(max_abs_diff(ref, ref_nhwc, ref.size()) == 0);
  rcnn::AtenRoIAlign{}(mb, scales, boxes, levels, pc, aten);
  CHECK(max_abs_diff(ref, aten, ref.size()) <= 1e-5);
}

TEST_CASE("AtenRoIAlign in the Detector: same detections as RoIAlignRef") {
  const rcnn::ModelConfig cfg = rcnn::read_bundle(kDynamic);
  rcnn::Detector<rcnn::TorchScriptExec, rcnn::AtenRoIAlign> aten(cfg, rcnn::TorchScriptExec(cfg, {1}));
  const fs::path dir = kDynamic / "cases" / "fruits";
  Photo img(dir / "image.jpg");
  const auto r = aten(img.view);
  const auto ref = detections_json(dir / "detections.json");
  const auto rep = match_detections(ref, r.detections, 0.9999, 1e-5);
  MESSAGE("AtenRoIAlign end to end: " << rep.matched << "/" << ref.size() << " matched, min IoU "
                                      << rep.min_iou << ", max |score diff| " << rep.max_score_diff);
  CHECK(rep.matched == ref.size());
  CHECK(r.detections.size() == ref.size());
}

#if defined(RCNN_WITH_CUDA) && RCNN_WITH_CUDA
TEST_CASE("CudaExec: same detections as TorchScriptExec (needs a GPU)") {
  if (!torch::cuda::is_available()) {
    MESSAGE("no CUDA device: skipped");
    return;
  }
  const rcnn::ModelConfig cfg = rcnn::read_bundle(kDynamic);
  rcnn::Detector<rcnn::CudaExec> gpu(cfg, rcnn::CudaExec(cfg, {}));
  rcnn::Detector<rcnn::TorchScriptExec> cpu(cfg, rcnn::TorchScriptExec(cfg, {1}));
  Photo img(kDynamic / "cases" / "fruits" / "image.jpg");
  const auto a = gpu(img.view), b = cpu(img.view);
  const auto ref = detections_json(kDynamic / "cases" / "fruits" / "detections.json");
  CHECK(match_detections(ref, a.detections, 0.99, 1e-2).matched == ref.size());
  CHECK(a.detections.size() == b.detections.size());
  // The feature maps also stay on the GPU, for AtenRoIAlign::pool there.
  const auto& dev = gpu.executor().device_features();
  REQUIRE(dev.size() == cfg.backbone.roi_levels.size());
  CHECK(dev[0].is_cuda());
}
#endif
