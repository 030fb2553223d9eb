// rcnn-bench-stages: Google Benchmark microbenchmarks of every native stage at the sizes of an
// 800 x 800 Faster R-CNN input, and of Mask R-CNN's mask pasting (bench/workloads.hpp).
// bench/compare_ops.py runs it next to bench/torchvision_ops.py (torchvision's CPU ops on the
// same inputs) and bench/python_paste.py (the frameworks' Python mask pasting) and prints the
// ratios.
//
//   rcnn-bench-stages [google benchmark flags]        run (e.g. --benchmark_filter=RoIAlign)
//   rcnn-bench-stages --dump-inputs DIR               write the inputs for torchvision_ops.py
//                                                     and python_paste.py (and rcnn's pasted
//                                                     masks, for python_paste.py's check)
//
// Benchmark names: <Stage>/<size>/<threads>; times are wall-clock (UseRealTime) per call.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include <rcnn/anchors/grid_anchor_generator.hpp>
#include <rcnn/box/softmax_box_inference.hpp>
#include <rcnn/concepts.hpp>
#include <rcnn/mask/detectron2_paste.hpp>
#include <rcnn/mask/omp_paste.hpp>
#include <rcnn/mask/torchvision_paste.hpp>
#include <rcnn/nms/batched_nms.hpp>
#include <rcnn/nms/bitmask_nms.hpp>
#include <rcnn/nms/greedy_nms.hpp>
#include <rcnn/postprocess/rescale_postprocess.hpp>
#include <rcnn/preprocess/fused_preprocess.hpp>
#include <rcnn/preprocess/omp_preprocess.hpp>
#include <rcnn/preprocess/pil_resize.hpp>
#include <rcnn/preprocess/preprocess.hpp>
#include <rcnn/preprocess/torch_resize.hpp>
#include <rcnn/proposals/omp_topk_proposal_selector.hpp>
#include <rcnn/proposals/topk_proposal_selector.hpp>
#include <rcnn/roi_align/level_mapper.hpp>
#include <rcnn/roi_align/omp_roi_align.hpp>
#include <rcnn/roi_align/roi_align_ref.hpp>
#include <rcnn/roi_align/simd_roi_align.hpp>

#include "workloads.hpp"

namespace {

using namespace rcnn_bench;

const std::vector<int> kNmsSizes = {1000, 2000, 4000, 6000};

const RoIAlignWorkload& roi_workload() {
  static const RoIAlignWorkload w;
  return w;
}

const NmsWorkload& nms_workload(std::size_t n) {
  static std::vector<NmsWorkload> all = [] {
    std::vector<NmsWorkload> v;
    for (int s : kNmsSizes) v.emplace_back(std::size_t(s));
    return v;
  }();
  for (std::size_t i = 0; i < kNmsSizes.size(); ++i)
    if (std::size_t(kNmsSizes[i]) == n) return all[i];
  std::fprintf(stderr, "no NMS workload of %zu boxes\n", n);
  std::abort();
}

// ---- RoIAlign: 1000 RoIs, P2..P5, 256 channels, 7 x 7, adaptive sampling, aligned --------

void BM_RoIAlignRef(benchmark::State& state) {
  const RoIAlignWorkload& w = roi_workload();
  std::vector<float> out(w.out_size());
  const rcnn::RoIAlignRef pool;
  for (auto _ : state) {
    pool(w.views, w.scales, w.rois, w.levels, w.cfg, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["rois"] = double(w.rois.size());
}
BENCHMARK(BM_RoIAlignRef)->Name("RoIAlignRef/1000/1")->Unit(benchmark::kMillisecond)->UseRealTime();

// Settings ".tv": torchvision's pooler (sampling ratio 2, not aligned) instead of Detectron2's.
void BM_OmpRoIAlign(benchmark::State& state, bool tv) {
  const RoIAlignWorkload& w = roi_workload();
  std::vector<float> out(w.out_size());
  rcnn::OmpRoIAlign pool;
  pool.num_threads = int(state.range(0));
  for (auto _ : state) {
    pool(w.views, w.scales, w.rois, w.levels, tv ? w.tv_cfg : w.cfg, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK_CAPTURE(BM_OmpRoIAlign, d2, false)->Name("OmpRoIAlign/1000")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_OmpRoIAlign, tv, true)->Name("OmpRoIAlign.tv/1000")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// SimdRoIAlign on channels-last maps (what a `--features-layout nhwc` bundle hands over), on
// NCHW maps (".nchw": transposed by the policy first), per instruction set (".avx2",
// ".baseline"; the unsuffixed ones run the widest the CPU has), both pooler settings.
void BM_SimdRoIAlign(benchmark::State& state, rcnn::SimdIsa isa, bool nhwc, bool tv) {
  const RoIAlignWorkload& w = roi_workload();
  if (!rcnn::simd_isa_supported(isa)) {
    state.SkipWithError("instruction set not supported by this CPU");
    return;
  }
  std::vector<float> out(w.out_size());
  rcnn::SimdRoIAlign pool{int(state.range(0)), isa};
  const auto& maps = nhwc ? w.views_nhwc : w.views;
  const rcnn::PoolerConfig& cfg = tv ? w.tv_cfg : w.cfg;
  pool(maps, w.scales, w.rois, w.levels, cfg, out);  // warm-up: workspace allocation
  for (auto _ : state) {
    pool(maps, w.scales, w.rois, w.levels, cfg, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(rcnn::simd_isa_name(pool.kernel_isa()));
}
#define RCNN_BENCH_SIMD(name, isa, nhwc, tv, args)                                       \
  BENCHMARK_CAPTURE(BM_SimdRoIAlign, name, rcnn::SimdIsa::isa, nhwc, tv)                 \
      ->Name(name)->args->Unit(benchmark::kMillisecond)->UseRealTime()
RCNN_BENCH_SIMD("SimdRoIAlign/1000", automatic, true, false, Arg(1)->Arg(2));
RCNN_BENCH_SIMD("SimdRoIAlign.tv/1000", automatic, true, true, Arg(1)->Arg(2));
RCNN_BENCH_SIMD("SimdRoIAlign.nchw/1000", automatic, false, false, Arg(1)->Arg(2));
RCNN_BENCH_SIMD("SimdRoIAlign.avx2/1000", avx2, true, false, Arg(1));
RCNN_BENCH_SIMD("SimdRoIAlign.baseline/1000", baseline, true, false, Arg(1));
#undef RCNN_BENCH_SIMD

// The machine's measured arithmetic peak for RoIAlign's instruction mix (no FMA: a vector
// multiply and a dependent vector add): `Chains` independent chains a = a * m + b per
// vector register, so the ports, not the latencies, bound it. Counter GFLOP/s (2 per lane
// and chain step); "PeakMulAdd/<isa>/2" runs one copy per thread. The nominal clock in
// /proc/cpuinfo understates a turbo clock: this is the figure docs/performance.md's
// fractions of peak use.
template <class V, int Chains>
[[gnu::always_inline]] inline float peak_mul_add(long steps, float m, float b) {
  V a[Chains];
  for (int i = 0; i < Chains; ++i) a[i] = V{} + float(i + 1);
  const V vm = V{} + m, vb = V{} + b;
  for (long s = 0; s < steps; ++s)
    for (int i = 0; i < Chains; ++i) a[i] = a[i] * vm + vb;
  float sum = 0.f;
  for (int i = 0; i < Chains; ++i) sum += a[i][0];
  return sum;
}
typedef float PeakF32x8 __attribute__((vector_size(32)));
typedef float PeakF32x16 __attribute__((vector_size(64)));
__attribute__((target("avx512f"), optimize("fp-contract=off"))) float peak_avx512(long steps,
                                                                                  float m, float b) {
  return peak_mul_add<PeakF32x16, 16>(steps, m, b);
}
__attribute__((target("avx2"), optimize("fp-contract=off"))) float peak_avx2(long steps, float m,
                                                                              float b) {
  return peak_mul_add<PeakF32x8, 12>(steps, m, b);
}
void BM_PeakMulAdd(benchmark::State& state, rcnn::SimdIsa isa) {
  if (!rcnn::simd_isa_supported(isa)) {
    state.SkipWithError("instruction set not supported by this CPU");
    return;
  }
  const bool wide = isa == rcnn::SimdIsa::avx512;
  const int threads = int(state.range(0));
  constexpr long kSteps = 1 << 20;
  const double flops = 2.0 * kSteps * (wide ? 16 * 16 : 12 * 8) * threads;
  float sink = 0.f;
  for (auto _ : state) {
#pragma omp parallel for num_threads(threads) reduction(+ : sink)
    for (int t = 0; t < threads; ++t)
      sink += wide ? peak_avx512(kSteps, 0.9999999f, 1e-7f) : peak_avx2(kSteps, 0.9999999f, 1e-7f);
  }
  benchmark::DoNotOptimize(sink);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_PeakMulAdd, avx512, rcnn::SimdIsa::avx512)
    ->Name("PeakMulAdd/avx512")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_PeakMulAdd, avx2, rcnn::SimdIsa::avx2)
    ->Name("PeakMulAdd/avx2")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// Level assignment of the same 1000 RoIs (part of the pooling stage in the frameworks).
void BM_AssignLevels(benchmark::State& state) {
  const RoIAlignWorkload& w = roi_workload();
  std::vector<int> levels(w.rois.size());
  for (auto _ : state) {
    rcnn::assign_levels(w.rois, w.cfg, 2, 5, levels);
    benchmark::DoNotOptimize(levels.data());
  }
}
BENCHMARK(BM_AssignLevels)->Name("AssignLevels/1000/1")->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- NMS over 1000-6000 boxes (IoU 0.7) -----------------------------------------------------

template <class Nms>
void BM_Nms(benchmark::State& state) {
  const NmsWorkload& w = nms_workload(std::size_t(state.range(0)));
  Nms nms;
  std::vector<int> keep;
  for (auto _ : state) {
    nms(w.boxes, w.scores, 0.7, keep);
    benchmark::DoNotOptimize(keep.data());
  }
  state.counters["kept"] = double(keep.size());
}
void nms_sizes(benchmark::internal::Benchmark* b) {
  for (int n : kNmsSizes) b->Arg(n);
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}
BENCHMARK_TEMPLATE(BM_Nms, rcnn::GreedyNms)->Name("GreedyNms")->Apply(nms_sizes);
BENCHMARK_TEMPLATE(BM_Nms, rcnn::BitmaskNms)->Name("BitmaskNms")->Apply(nms_sizes);

// Batched NMS: per RPN level (5 groups, IoU 0.7) and per class (80 groups, IoU 0.5).
template <bool kPerClass>
void BM_BatchedNms(benchmark::State& state) {
  const NmsWorkload& w = nms_workload(std::size_t(state.range(0)));
  rcnn::BitmaskNms nms;
  rcnn::BatchedNmsWorkspace ws;
  std::vector<int> keep;
  const std::vector<int>& groups = kPerClass ? w.classes : w.levels;
  const double iou = kPerClass ? 0.5 : 0.7;
  for (auto _ : state) {
    rcnn::batched_nms(nms, w.boxes, w.scores, groups, iou, keep, ws);
    benchmark::DoNotOptimize(keep.data());
  }
  state.counters["kept"] = double(keep.size());
}
BENCHMARK_TEMPLATE(BM_BatchedNms, false)->Name("BatchedNms.levels")->Apply(nms_sizes);
BENCHMARK_TEMPLATE(BM_BatchedNms, true)->Name("BatchedNms.classes")->Apply(nms_sizes);

// ---- Proposal selection over P2..P6 at 800 x 800 (Detectron2 RPN settings) -----------------

// Selector: TopKProposalSelector, or OmpTopKProposalSelector with the ranking and the
// per-level NMS on state.range(0) OpenMP threads (same proposals).
template <class Selector>
void BM_Proposals(benchmark::State& state) {
  static const ProposalWorkload w;
  Selector select;
  if constexpr (rcnn::ThreadedStage<Selector>) select.num_threads = int(state.range(0));
  rcnn::BitmaskNms nms;
  rcnn::ScoredBoxes out;
  for (auto _ : state) {
    select(w.inputs, w.image, w.rpn, nms, out);
    benchmark::DoNotOptimize(out.boxes.data());
  }
  state.counters["proposals"] = double(out.size());
}
BENCHMARK_TEMPLATE(BM_Proposals, rcnn::TopKProposalSelector)
    ->Name("Proposals/800x800/1")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Proposals, rcnn::OmpTopKProposalSelector)
    ->Name("OmpProposals/800x800")->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- Anchors of P2..P6 at 800 x 800 (computed once per input size in a Detector) ----------

void BM_Anchors(benchmark::State& state) {
  static const ProposalWorkload w;
  const rcnn::GridAnchorGenerator gen;
  std::vector<rcnn::Box> out;
  const int strides[] = {4, 8, 16, 32, 64};
  for (auto _ : state) {
    for (std::size_t l = 0; l < 5; ++l) {
      const int side = (kImage + strides[l] - 1) / strides[l];
      gen(w.anchor_cfg, rcnn::Conventions::detectron2, l, strides[l], {side, side}, w.image, out);
      benchmark::DoNotOptimize(out.data());
    }
  }
}
BENCHMARK(BM_Anchors)->Name("Anchors/800x800/1")->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- Box inference on 1000 x 81 logits, then postprocess ----------------------------------

void BM_BoxInference(benchmark::State& state) {
  static const BoxInferenceWorkload w;
  rcnn::SoftmaxBoxInference infer;
  rcnn::BitmaskNms nms;
  std::vector<rcnn::Detection> dets;
  const int K = w.cfg.num_classes;
  const rcnn::BoxHeadView head{w.logits.data(), w.deltas.data(), 1000, K + 1, 4 * K};
  for (auto _ : state) {
    infer(w.proposals, head, {kImage, kImage}, w.cfg, nms, dets);
    benchmark::DoNotOptimize(dets.data());
  }
  state.counters["candidates"] = double(infer.ws.candidates.size());
  state.counters["detections"] = double(dets.size());
}
BENCHMARK(BM_BoxInference)->Name("BoxInference/1000x81/1")->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_Postprocess(benchmark::State& state) {
  static const BoxInferenceWorkload w;
  rcnn::SoftmaxBoxInference infer;
  rcnn::BitmaskNms nms;
  std::vector<rcnn::Detection> dets, work;
  std::vector<int> kept;
  const int K = w.cfg.num_classes;
  infer(w.proposals, {w.logits.data(), w.deltas.data(), 1000, K + 1, 4 * K}, {kImage, kImage},
        w.cfg, nms, dets);
  const rcnn::RescalePostprocess post;
  work.reserve(dets.size());
  for (auto _ : state) {
    work = dets;
    post({kImage, kImage}, {480, 640}, rcnn::Conventions::detectron2, {}, work, kept);
    benchmark::DoNotOptimize(work.data());
  }
}
BENCHMARK(BM_Postprocess)->Name("Postprocess/100/1")->Unit(benchmark::kMicrosecond)->UseRealTime();

// ---- Resize: 480 x 640 BGR photo to 800 x 1066 ----------------------------------------------

void BM_PilResize(benchmark::State& state) {
  static const std::vector<std::uint8_t> img = photo();
  const rcnn::Size in{480, 640}, out{800, 1066};
  std::vector<std::uint8_t> dst(std::size_t(out.height) * out.width * 3);
  rcnn::PilResizeWorkspace ws;
  for (auto _ : state) {
    rcnn::pil_resize_bilinear(img.data(), in, 640 * 3, 3, 3, dst.data(), out, 1066 * 3, ws);
    benchmark::DoNotOptimize(dst.data());
  }
}
BENCHMARK(BM_PilResize)->Name("PilResize/480x640-800x1066/1")->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_TorchResize(benchmark::State& state) {
  static const std::vector<std::uint8_t> img = photo();
  const rcnn::Size in{480, 640}, out{800, 1066};
  std::vector<float> src(3 * std::size_t(in.height) * in.width);
  for (int c = 0; c < 3; ++c)
    for (std::size_t p = 0; p < std::size_t(in.height) * in.width; ++p)
      src[std::size_t(c) * in.height * in.width + p] = float(img[p * 3 + std::size_t(c)]) / 255.f;
  std::vector<float> dst(3 * std::size_t(out.height) * out.width);
  rcnn::TorchResizeWorkspace ws;
  for (auto _ : state) {
    rcnn::torch_resize_bilinear(src.data(), 3, in, dst.data(), out, ws);
    benchmark::DoNotOptimize(dst.data());
  }
}
BENCHMARK(BM_TorchResize)->Name("TorchResize/480x640-800x1066/1")->Unit(benchmark::kMicrosecond)->UseRealTime();

// Whole preprocessing policies (resize + normalise + pad), as the Detector runs them: the
// reference policies, the one-pass ones and the OpenMP one-pass ones (Arg = threads), on the
// 480 x 640 photo (shortest edge 800: 800 x 1066) and on a 342 x 548 one (bench-e2e's
// messi5.jpg: 800 x 1282 torchvision, fixed 800 x 800 for the Detectron2 fixture bundle).
template <class Pre>
void set_threads(Pre& pre, int threads) {
  if constexpr (requires { pre.num_threads; }) pre.num_threads = threads;
}
template <class Pre, rcnn::Conventions kConv>
void BM_Preprocess(benchmark::State& state, int height, int width, bool fixed800) {
  const std::vector<std::uint8_t> img = photo(height, width);
  const rcnn::ImageView view{img.data(), height, width, 3, 0, true};
  rcnn::InputConfig cfg;
  if (kConv == rcnn::Conventions::torchvision) {
    cfg.bgr = false;
    cfg.pixel_scale = 1.f / 255.f;
    cfg.pixel_mean = {0.485f, 0.456f, 0.406f};
    cfg.pixel_std = {0.229f, 0.224f, 0.225f};
  }
  if (fixed800) {
    cfg.resize.mode = rcnn::ResizeConfig::Mode::fixed;
    cfg.resize.height = cfg.resize.width = 800;
  }
  Pre pre;
  set_threads(pre, int(state.range(0)));
  std::vector<float> out;
  for (auto _ : state) {
    const rcnn::PreprocessResult r = pre(view, cfg, out);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(out.data());
  }
  // Bytes: the image read once, the float tensor written once.
  const double bytes = double(img.size()) + double(out.size()) * sizeof(float);
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
}
template <class Pre, rcnn::Conventions kConv>
benchmark::internal::Benchmark* register_preprocess(const std::string& name, int h, int w, bool fixed800) {
  return benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) {
           BM_Preprocess<Pre, kConv>(st, h, w, fixed800);
         })
      ->Arg(1)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
}
const bool preprocess_registered = [] {
  using rcnn::Conventions;
  for (const auto& [label, h, w] : {std::tuple<const char*, int, int>{"480x640", 480, 640},
                                    std::tuple<const char*, int, int>{"342x548", 342, 548}}) {
    const std::string l = label;
    const bool fixed = h == 342;  // the Detectron2 fixed800 fixture's resize
    const std::string d2 = fixed ? l + "-800x800" : l;
    register_preprocess<rcnn::Detectron2Preprocess, Conventions::detectron2>("Detectron2Preprocess/" + d2, h, w, fixed);
    register_preprocess<rcnn::FusedDetectron2Preprocess, Conventions::detectron2>("FusedDetectron2Preprocess/" + d2, h, w, fixed);
    register_preprocess<rcnn::OmpDetectron2Preprocess, Conventions::detectron2>("OmpDetectron2Preprocess/" + d2, h, w, fixed)->Arg(2);
    register_preprocess<rcnn::TorchvisionPreprocess, Conventions::torchvision>("TorchvisionPreprocess/" + l, h, w, false);
    register_preprocess<rcnn::FusedTorchvisionPreprocess, Conventions::torchvision>("FusedTorchvisionPreprocess/" + l, h, w, false);
    register_preprocess<rcnn::OmpTorchvisionPreprocess, Conventions::torchvision>("OmpTorchvisionPreprocess/" + l, h, w, false)->Arg(2);
  }
  return true;
}();

// ---- Mask pasting: 100 detections, 28 x 28 masks, into 480 x 640 and 800 x 1200 ----------

const rcnn::Size kPasteImages[] = {{480, 640}, {800, 1200}};

const MaskPasteWorkload& paste_workload(rcnn::Size image) {
  static const MaskPasteWorkload small(kPasteImages[0]), large(kPasteImages[1]);
  return image == kPasteImages[0] ? small : large;
}

constexpr float kMaskThreshold = 0.5f;

/// One paste policy on one image size; `state.range(0)` threads for the OpenMP policies.
/// The output masks are reused across calls (the policies' steady state: no allocation).
template <class Paste, int H, int W>
void BM_Paste(benchmark::State& state) {
  const MaskPasteWorkload& w = paste_workload({H, W});
  Paste paste;
  if constexpr (requires { paste.num_threads; }) paste.num_threads = int(state.range(0));
  std::vector<rcnn::InstanceMask> masks;
  std::size_t pixels = 0;
  for (auto _ : state) {
    paste(w.view(), w.boxes, w.image, kMaskThreshold, masks);
    benchmark::DoNotOptimize(masks.data());
  }
  for (const rcnn::InstanceMask& m : masks) pixels += std::size_t(m.width) * std::size_t(m.height);
  state.counters["detections"] = double(masks.size());
  state.counters["window_pixels"] = double(pixels);
}
#define RCNN_BENCH_PASTE(Policy, H, W, ...)                                        \
  BENCHMARK_TEMPLATE(BM_Paste, rcnn::Policy, H, W)                                 \
      ->Name(#Policy "/" #H "x" #W)->__VA_ARGS__->Unit(benchmark::kMillisecond)    \
      ->UseRealTime()
RCNN_BENCH_PASTE(Detectron2PasteRef, 480, 640, Arg(1));
RCNN_BENCH_PASTE(OmpDetectron2Paste, 480, 640, Arg(1)->Arg(2));
RCNN_BENCH_PASTE(TorchvisionPasteRef, 480, 640, Arg(1));
RCNN_BENCH_PASTE(OmpTorchvisionPaste, 480, 640, Arg(1)->Arg(2));
RCNN_BENCH_PASTE(Detectron2PasteRef, 800, 1200, Arg(1));
RCNN_BENCH_PASTE(OmpDetectron2Paste, 800, 1200, Arg(1)->Arg(2));
RCNN_BENCH_PASTE(TorchvisionPasteRef, 800, 1200, Arg(1));
RCNN_BENCH_PASTE(OmpTorchvisionPaste, 800, 1200, Arg(1)->Arg(2));
#undef RCNN_BENCH_PASTE

// ---- Inputs for bench/torchvision_ops.py and bench/python_paste.py ------------------------

template <class T>
void write_raw(const std::filesystem::path& path, const T* data, std::size_t count) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(count * sizeof(T)));
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

void dump_inputs(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  nlohmann::json manifest;
  const RoIAlignWorkload& w = roi_workload();
  nlohmann::json ra;
  for (std::size_t l = 0; l < w.maps.size(); ++l) {
    const std::string name = "roi_map" + std::to_string(l) + ".f32";
    write_raw(dir / name, w.maps[l].data(), w.maps[l].size());
    ra["maps"].push_back({{"file", name},
                          {"shape", {w.views[l].channels, w.views[l].height, w.views[l].width}},
                          {"scale", w.scales[l]}});
  }
  write_raw(dir / "roi_boxes.f32", &w.rois[0].x1, w.rois.size() * 4);
  write_raw(dir / "roi_levels.i32", w.levels.data(), w.levels.size());
  ra["rois"] = w.rois.size();
  ra["resolution"] = w.cfg.resolution;
  ra["sampling_ratio"] = w.cfg.sampling_ratio;
  ra["aligned"] = w.cfg.aligned;
  // Both pooler settings with their floor (bench/compare_ops.py prints GFLOP/s and GB/s).
  for (const auto& [key, cfg] : {std::pair{"d2", w.cfg}, std::pair{"tv", w.tv_cfg}}) {
    const RoIAlignCost cost = roi_align_cost(w, cfg);
    ra["settings"][key] = {{"resolution", cfg.resolution}, {"sampling_ratio", cfg.sampling_ratio},
                           {"aligned", cfg.aligned}, {"macs", cost.macs}, {"bytes", cost.bytes}};
  }
  manifest["roi_align"] = ra;
  for (int n : kNmsSizes) {
    const NmsWorkload& nw = nms_workload(std::size_t(n));
    const std::string s = std::to_string(n);
    write_raw(dir / ("nms_boxes_" + s + ".f32"), &nw.boxes[0].x1, nw.boxes.size() * 4);
    write_raw(dir / ("nms_scores_" + s + ".f32"), nw.scores.data(), nw.scores.size());
    write_raw(dir / ("nms_levels_" + s + ".i32"), nw.levels.data(), nw.levels.size());
    write_raw(dir / ("nms_classes_" + s + ".i32"), nw.classes.data(), nw.classes.size());
    manifest["nms"]["sizes"].push_back(n);
  }
  // Mask pasting: inputs, and the masks rcnn's OpenMP policies (the benchmarked ones) paste,
  // windows [x0, y0, width, height] per detection and their bits concatenated, after checking
  // them against the reference policies; python_paste.py compares them with the frameworks'.
  manifest["paste"]["threshold"] = kMaskThreshold;
  for (const rcnn::Size size : kPasteImages) {
    const MaskPasteWorkload& pw = paste_workload(size);
    const std::string s = pw.label();
    write_raw(dir / ("paste_probs_" + s + ".f32"), pw.probs.data(), pw.probs.size());
    write_raw(dir / ("paste_boxes_" + s + ".f32"), &pw.boxes[0].x1, pw.boxes.size() * 4);
    nlohmann::json entry = {{"label", s},
                            {"height", size.height},
                            {"width", size.width},
                            {"count", pw.boxes.size()},
                            {"mask_size", pw.mask_size},
                            {"probs", "paste_probs_" + s + ".f32"},
                            {"boxes", "paste_boxes_" + s + ".f32"}};
    const auto dump_masks = [&](const char* convention, auto&& paste, auto&& reference) {
      std::vector<rcnn::InstanceMask> masks, ref;
      paste.num_threads = 2;
      paste(pw.view(), pw.boxes, pw.image, kMaskThreshold, masks);
      reference(pw.view(), pw.boxes, pw.image, kMaskThreshold, ref);
      std::vector<std::int32_t> windows;
      std::vector<std::uint8_t> bits;
      for (std::size_t i = 0; i < masks.size(); ++i) {
        const rcnn::InstanceMask& m = masks[i];
        if (m.x0 != ref[i].x0 || m.y0 != ref[i].y0 || m.width != ref[i].width ||
            m.height != ref[i].height || m.bits != ref[i].bits) {
          std::fprintf(stderr, "%s paste, %s: detection %zu differs from the reference\n",
                       convention, s.c_str(), i);
          std::exit(1);
        }
        windows.insert(windows.end(), {m.x0, m.y0, m.width, m.height});
        bits.insert(bits.end(), m.bits.begin(), m.bits.end());
      }
      const std::string base = std::string("paste_") + convention + "_" + s;
      write_raw(dir / (base + "_windows.i32"), windows.data(), windows.size());
      write_raw(dir / (base + "_bits.u8"), bits.data(), bits.size());
      entry["masks"][convention] = {{"windows", base + "_windows.i32"},
                                    {"bits", base + "_bits.u8"}};
    };
    dump_masks("detectron2", rcnn::OmpDetectron2Paste{}, rcnn::Detectron2PasteRef{});
    dump_masks("torchvision", rcnn::OmpTorchvisionPaste{}, rcnn::TorchvisionPasteRef{});
    manifest["paste"]["images"].push_back(entry);
  }
  std::ofstream(dir / "manifest.json") << manifest.dump(2) << "\n";
  std::printf("wrote %s\n", (dir / "manifest.json").c_str());
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--dump-inputs") == 0 && i + 1 < argc) {
      dump_inputs(argv[i + 1]);
      return 0;
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
