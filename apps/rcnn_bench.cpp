// rcnn-bench: throughput and latency of N detector replicas driven by M worker threads, as
// in the AWS Neuron note "Running R-CNNs on Inf1" (worker thread i uses replica i % N; a
// replica serves one thread at a time). Prints a table (stdout) and optionally JSON.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <dlfcn.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <torch/version.h>

#include <rcnn/cv/image.hpp>
#include <rcnn/exec/host_allocator.hpp>
#include <rcnn/exec/torchscript_exec.hpp>
#include <rcnn/load.hpp>
#include <rcnn/preprocess/omp_preprocess.hpp>
#include <rcnn/proposals/omp_topk_proposal_selector.hpp>
#include <rcnn/roi_align/simd_roi_align.hpp>

namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;
/// StageProfiler (wall time) that also records each stage's CPU time on the calling thread
/// (`cpu`): a stage's own work when the OpenMP stages and LibTorch run 1 thread, without
/// the time the thread waited for a core on a busy machine.
struct CpuStageProfiler : rcnn::StageProfiler {
  rcnn::StageProfiler cpu;
  std::array<double, rcnn::kNumStages> started{};

  static double thread_cpu_ms() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
  }
  void begin(rcnn::Stage s) { started[std::size_t(s)] = thread_cpu_ms(); }
  void record(rcnn::Stage s, double ms, std::size_t calls) {
    rcnn::StageProfiler::record(s, ms, calls);
    cpu.record(s, thread_cpu_ms() - started[std::size_t(s)], calls);
  }
  void end_batch(std::size_t images) {
    rcnn::StageProfiler::end_batch(images);
    cpu.end_batch(images);
  }
  void reset() { *this = CpuStageProfiler{}; }
};

/// The default stages with the CPU-time stage profiler and the OpenMP one-pass preprocessing.
template <class S>
using BenchStages =
    rcnn::WithProfiler<rcnn::WithOmpProposals<rcnn::WithOmpPreprocess<S>>, CpuStageProfiler>;
using Detector = rcnn::AnyDetector<rcnn::TorchScriptExec, rcnn::SimdRoIAlign, BenchStages>;

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  }
  return "unknown";
}

/// The BLAS the process uses: the library that defines sgemm_ (dladdr), and the Debian
/// alternative for libblas.so.3.
nlohmann::ordered_json blas_info() {
  nlohmann::ordered_json j;
  std::string loaded = "not found (no sgemm_ symbol in the process)";
  if (void* sym = ::dlsym(RTLD_DEFAULT, "sgemm_")) {
    Dl_info info{};
    if (::dladdr(sym, &info) && info.dli_fname) {
      std::error_code ec;
      const fs::path real = fs::canonical(info.dli_fname, ec);
      loaded = ec ? std::string(info.dli_fname) : real.string();
    }
  }
  j["sgemm_from"] = loaded;
  std::error_code ec;
  const fs::path alt = fs::read_symlink("/etc/alternatives/libblas.so.3-x86_64-linux-gnu", ec);
  j["libblas_so_3_alternative"] = ec ? std::string("none") : alt.string();
  return j;
}

double percentile(std::vector<double> sorted, double p) {  // nearest rank; sorted ascending
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * double(sorted.size()));
  const std::size_t i = std::size_t(std::clamp(rank, 1.0, double(sorted.size()))) - 1;
  return sorted[i];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "rcnn-bench: throughput and latency of N independent detector replicas (LibTorch CPU)\n"
      "driven by M worker threads. Worker i uses replica i % N (a replica serves one worker at\n"
      "a time); the workers take the K calls round-robin from a shared counter. Each call runs\n"
      "B copies of IMAGE as one batch. Latency is the time of one call (not the wait for a\n"
      "busy replica); throughput is images / wall time of the measured phase."};
  std::string model, image_path, json_out;
  int models = 1, threads = 1, iterations = 20, warmup = 2, batch = 1;
  int intra_op = 1, omp_threads = 1;
  bool profile = false, no_host_cache = false;
  app.add_option("--model,-m", model, "model bundle directory (contains model.json)")->required();
  app.add_option("--models", models, "N: detector replicas (default 1)")->check(CLI::Range(1, 256));
  app.add_option("--threads", threads, "M: worker threads (default 1)")->check(CLI::Range(1, 256));
  app.add_option("--iterations", iterations, "K: measured calls, over all workers (default 20)")
      ->check(CLI::Range(1, 10000000));
  app.add_option("--warmup", warmup, "W: unmeasured calls per replica first (default 2)")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--batch", batch, "B: images per call (default 1)")->check(CLI::Range(1, 1024));
  app.add_option("--intra-op-threads", intra_op,
                 "LibTorch intra-op threads per call (default 1)")
      ->check(CLI::Range(1, 256));
  app.add_option("--omp-threads", omp_threads,
                 "OpenMP threads of the native stages (preprocess, RoIAlign) per call (default 1)")
      ->check(CLI::Range(1, 256));
  app.add_option("--json", json_out, "also write the results as JSON to this file ('-': stdout)");
  app.add_flag("--profile", profile, "also print the per-stage profile of all replicas");
  app.add_flag("--no-host-cache", no_host_cache,
               "keep LibTorch's default CPU allocator instead of rcnn's caching huge-page one "
               "(rcnn/exec/host_allocator.hpp; docs/performance.md)");
  app.add_option("image", image_path, "the image every call runs on")->required();
  CLI11_PARSE(app, argc, argv);

  if (!no_host_cache) rcnn::install_caching_host_allocator();
  try {
    cv::Mat img = rcnn::cv_io::read_image(image_path);
    cv::Mat storage;
    const rcnn::ImageView view = rcnn::cv_io::view(img, storage);
    const std::vector<rcnn::ImageView> batch_views(std::size_t(batch), view);

    // Replicas.
    std::vector<std::unique_ptr<Detector>> replicas;
    for (int r = 0; r < models; ++r) {
      std::fprintf(stderr, "rcnn-bench: loading replica %d/%d\n", r + 1, models);
      rcnn::SimdRoIAlign roi;
      roi.num_threads = omp_threads;
      replicas.push_back(std::make_unique<Detector>(
          rcnn::load<rcnn::TorchScriptExec, rcnn::SimdRoIAlign, BenchStages>(
              model, rcnn::TorchScriptOptions{intra_op}, roi)));
      replicas.back()->set_threads(omp_threads);
    }
    std::vector<std::mutex> locks(static_cast<std::size_t>(models));

    // Warm-up: W calls per replica (sizes every workspace, first-run costs).
    std::vector<rcnn::DetectionResult> results;
    for (int r = 0; r < models; ++r) {
      for (int w = 0; w < warmup; ++w) {
        std::fprintf(stderr, "rcnn-bench: warm-up replica %d/%d, call %d/%d\n", r + 1, models,
                     w + 1, warmup);
        replicas[std::size_t(r)]->run(batch_views, results);
      }
      replicas[std::size_t(r)]->profiler().reset();
    }
    const std::size_t detections = results.empty() ? 0 : results.front().detections.size();

    // Measured phase.
    std::atomic<int> next{0}, done{0};
    std::vector<std::vector<double>> latencies(static_cast<std::size_t>(threads));
    std::mutex error_mutex;
    std::string error;
    const int progress_every = std::max(1, iterations / 10);
    const auto start = clock_type::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        const std::size_t r = std::size_t(t % models);
        std::vector<rcnn::DetectionResult> out;
        try {
          for (int k = next++; k < iterations; k = next++) {
            std::lock_guard<std::mutex> lock(locks[r]);
            const auto t0 = clock_type::now();
            replicas[r]->run(batch_views, out);
            latencies[std::size_t(t)].push_back(
                std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
            const int d = ++done;
            if (d % progress_every == 0 || d == iterations)
              std::fprintf(stderr, "rcnn-bench: %d/%d calls\n", d, iterations);
          }
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (error.empty()) error = e.what();
          next = iterations;
        }
      });
    }
    for (auto& w : workers) w.join();
    const double duration = std::chrono::duration<double>(clock_type::now() - start).count();
    if (!error.empty()) rcnn::detail::fail(error);

    std::vector<double> all;
    for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    double sum = 0;
    for (double v : all) sum += v;
    const std::size_t samples = all.size() * std::size_t(batch);
    const double throughput = duration > 0 ? double(samples) / duration : 0;
    const double p50 = percentile(all, 50), p95 = percentile(all, 95), p99 = percentile(all, 99);
    const double mean = all.empty() ? 0 : sum / double(all.size());

    rcnn::StageProfiler merged, merged_cpu;
    for (auto& r : replicas) {
      merged.merge(r->profiler());
      merged_cpu.merge(r->profiler().cpu);
    }

    const nlohmann::ordered_json blas = blas_info();
    const std::string cpu = cpu_model();
    std::printf("rcnn-bench: %s on %s (%dx%d), batch %d, %d warm-up call(s) per replica\n",
                model.c_str(), image_path.c_str(), img.rows, img.cols, batch, warmup);
    std::printf("CPU: %s (%u hardware threads); LibTorch %s; BLAS: %s (libblas.so.3 -> %s)\n",
                cpu.c_str(), std::thread::hardware_concurrency(), TORCH_VERSION,
                blas["sgemm_from"].get<std::string>().c_str(),
                blas["libblas_so_3_alternative"].get<std::string>().c_str());
    std::printf("%6s %7s %8s %4s %7s %10s %10s %8s %8s %8s %8s\n", "models", "threads",
                "intra-op", "omp", "samples", "duration s", "images/s", "mean ms", "p50 ms",
                "p95 ms", "p99 ms");
    std::printf("%6d %7d %8d %4d %7zu %10.2f %10.3f %8.1f %8.1f %8.1f %8.1f\n", models, threads,
                intra_op, omp_threads, samples, duration, throughput, mean, p50, p95, p99);
    std::printf("(latency: one call of %d image%s; %zu detections per image)\n", batch,
                batch == 1 ? "" : "s", detections);
    if (profile) {
      std::printf("per-stage profile, all replicas:\n");
      std::fputs(merged.table().c_str(), stdout);
      std::printf("per-stage CPU time of the calling threads (a stage's whole cost when "
                  "--intra-op-threads and --omp-threads are 1):\n");
      std::fputs(merged_cpu.table().c_str(), stdout);
    }

    if (!json_out.empty()) {
      nlohmann::ordered_json j;
      j["model"] = model;
      j["image"] = image_path;
      j["image_height"] = img.rows;
      j["image_width"] = img.cols;
      j["models"] = models;
      j["threads"] = threads;
      j["batch"] = batch;
      j["iterations"] = iterations;
      j["warmup_per_replica"] = warmup;
      j["intra_op_threads"] = intra_op;
      j["omp_threads"] = omp_threads;
      j["samples"] = samples;
      j["duration_s"] = duration;
      j["throughput_images_per_s"] = throughput;
      j["latency_ms"] = {{"mean", mean}, {"p50", p50}, {"p95", p95}, {"p99", p99},
                         {"min", all.empty() ? 0 : all.front()},
                         {"max", all.empty() ? 0 : all.back()}};
      j["detections_per_image"] = detections;
      j["cpu"] = {{"model", cpu}, {"hardware_threads", std::thread::hardware_concurrency()}};
      j["libtorch"] = TORCH_VERSION;
      j["blas"] = blas;
      nlohmann::ordered_json stages = nlohmann::ordered_json::object();
      for (std::size_t i = 0; i < rcnn::kNumStages; ++i) {
        const auto s = rcnn::Stage(int(i));
        stages[rcnn::stage_name(s)] = {{"calls", merged[s].calls},
                                       {"total_ms", merged[s].total_ms},
                                       {"mean_ms", merged.mean_ms(s)},
                                       {"share_percent", merged.share_percent(s)},
                                       {"cpu_total_ms", merged_cpu[s].total_ms}};
      }
      j["stages"] = stages;
      if (json_out == "-") {
        std::cout << j.dump(2) << "\n";
      } else {
        std::ofstream f(json_out);
        if (!f) rcnn::detail::fail(json_out + ": cannot open for writing");
        f << j.dump(2) << "\n";
        if (!f) rcnn::detail::fail(json_out + ": write failed");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rcnn-bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
