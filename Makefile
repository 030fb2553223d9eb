# rcnn: the README's two commands are `make demo` and `make test`. Each installs what is
# missing (scripts/install-deps.sh, apt), configures and builds into build/, then runs.
JOBS ?= 2
BUILD ?= build
PYTHON ?= /usr/bin/python3
# The demo model: a small Faster R-CNN trained on synthetic shapes (models/shapes/README.md),
# run on its held-out demo images and on one real photo (OpenCV's sample data).
DEMO_MODEL ?= models/shapes
DEMO_IMAGES ?= $(sort $(wildcard models/shapes/images/*.jpg)) /usr/share/doc/opencv-doc/examples/data/smarties.png
DEMO_SCORE ?= 0.5
# One thread: the model is tiny (about 15 ms an image on one core), and OpenMP threads that
# spin-wait become many times slower when another process keeps a core busy.
DEMO_THREADS ?= 1
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-python demo eval-demo clean sanitize

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 1
	$(MAKE) --no-print-directory test-python

test-python: deps
	PYTHONPATH=tools $(PYTHON) -m unittest discover -s tests/python -v

# Builds only what the demo runs (rcnn-detect), not the tests.
demo: configure
	@cmake --build $(BUILD) -j $(JOBS) --target rcnn-detect
	@mkdir -p $(BUILD)/demo
	$(BUILD)/bin/rcnn-detect --model $(DEMO_MODEL) --score-threshold $(DEMO_SCORE) --threads $(DEMO_THREADS) --profile \
	  --draw $(BUILD)/demo --output $(BUILD)/demo/results.json $(DEMO_IMAGES)
	@$(PYTHON) scripts/summarize.py --top 5 $(BUILD)/demo/results.json
	@echo "annotated images: $(BUILD)/demo/"

# mAP of the demo model on held-out generated images, C++ runtime vs torchvision (tools/demo/eval_shapes.py).
eval-demo: build
	$(PYTHON) tools/demo/eval_shapes.py --bundle $(DEMO_MODEL) --detect $(BUILD)/bin/rcnn-detect --threads $(JOBS)

clean:
	rm -rf $(BUILD)

# Reliability tooling (docs/how-to/sanitizers-and-fuzzing.md); .ci/run runs all three.
#   test-sanitize  AddressSanitizer + UndefinedBehaviorSanitizer over rcnn-unit-tests
#                  (no LibTorch), in $(ASAN_BUILD); reuses $(BUILD)'s reference outputs
#   test-tsan      ThreadSanitizer over rcnn-concurrency-tests (core stages and Detector
#                  replicas on threads; no LibTorch, no OpenMP), in $(TSAN_BUILD)
#   fuzz-smoke     each libFuzzer target in fuzz/ for FUZZ_SECONDS, in $(FUZZ_BUILD) (clang)
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 30
SAN_CMAKE_FLAGS = -G Ninja -DRCNN_BUILD_TOOLS=OFF -DRCNN_BUILD_EXAMPLES=OFF -DRCNN_BUILD_BENCH=OFF

.PHONY: reference test-sanitize test-tsan fuzz-smoke

reference: configure
	@for s in tests/reference/gen_*.py; do \
	  [ -d $(BUILD)/reference/$$(basename $$s .py) ] || { cd $(BUILD) && ctest -R '^reference\.' --output-on-failure; exit $$?; }; \
	done

test-sanitize: reference
	@cmake -S . -B $(ASAN_BUILD) $(SAN_CMAKE_FLAGS) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DRCNN_SANITIZE=ON \
	  -DRCNN_REFERENCE_DIR=$(abspath $(BUILD))/reference >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target rcnn-unit-tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(ASAN_BUILD)/bin/rcnn-unit-tests

test-tsan: deps
	@cmake -S . -B $(TSAN_BUILD) $(SAN_CMAKE_FLAGS) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
	  -DCMAKE_CXX_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread >/dev/null
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target rcnn-concurrency-tests
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 $(TSAN_BUILD)/bin/rcnn-concurrency-tests

fuzz-smoke: deps
	@cmake -S . -B $(FUZZ_BUILD) $(SAN_CMAKE_FLAGS) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_CXX_COMPILER=clang++ -DRCNN_BUILD_FUZZERS=ON -DRCNN_BUILD_TESTS=OFF >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Benchmarks (bench/README.md; latest numbers in docs/performance.md). Not part of `make test`.
BENCH_IMAGE ?= tests/data/detectron2/narrow_r101_fpn_fixed800/cases/messi5/image.jpg
BENCH_TV_BUNDLE ?= $(BUILD)/tv_r50
BENCH_TV_FROZEN ?= $(BUILD)/tv_r50_frozen
.PHONY: bench-ops bench-e2e

# rcnn's stages vs torchvision's CPU ops (roi_align, nms, batched_nms, mask pasting) on the same inputs.
bench-ops: configure
	@cmake --build $(BUILD) -j $(JOBS) --target rcnn-bench-stages
	$(PYTHON) bench/compare_ops.py --build $(BUILD)

# Channels-last feature maps (--features-layout nhwc): SimdRoIAlign reads them without a copy.
# (A bundle exported before this flag is not re-exported: delete it to refresh.)
$(BENCH_TV_BUNDLE)/model.json:
	$(PYTHON) tools/export_torchvision.py --model fasterrcnn_resnet50_fpn --seed 0 --features-layout nhwc --output $(BENCH_TV_BUNDLE)

$(BENCH_TV_FROZEN)/model.json:
	$(PYTHON) tools/export_torchvision.py --model fasterrcnn_resnet50_fpn --seed 0 --freeze --features-layout nhwc --output $(BENCH_TV_FROZEN)

# torchvision eager vs the partitioned Python pipeline vs rcnn-detect, 1 and $(JOBS) threads:
# the exact-parity traced bundle, then the same weights exported with --freeze.
bench-e2e: build $(BENCH_TV_BUNDLE)/model.json $(BENCH_TV_FROZEN)/model.json
	$(PYTHON) bench/end_to_end.py --bundle $(BENCH_TV_BUNDLE) --seed 0 --build $(BUILD) \
	  --image $(BENCH_IMAGE) --threads 1,$(JOBS)
	$(PYTHON) bench/end_to_end.py --bundle $(BENCH_TV_FROZEN) --seed 0 --build $(BUILD) \
	  --image $(BENCH_IMAGE) --threads 1,$(JOBS)
