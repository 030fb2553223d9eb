# rcnn: the README's two commands are `make demo` and `make test`. Each installs what is
# missing (scripts/install-deps.sh, apt), configures and builds into build/, then runs.
JOBS ?= 2
BUILD ?= build
PYTHON ?= /usr/bin/python3
DEMO_MODEL ?= tests/data/detectron2/narrow_r101_fpn_shortest_edge
DEMO_IMAGES ?= /usr/share/doc/opencv-doc/examples/data/messi5.jpg /usr/share/doc/opencv-doc/examples/data/fruits.jpg
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-python demo clean sanitize

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
	PYTHONPATH=tools $(PYTHON) -m unittest discover -s tests/python -t . -v

demo: build
	@mkdir -p $(BUILD)/demo
	$(BUILD)/bin/rcnn-detect --model $(DEMO_MODEL) --draw $(BUILD)/demo --output $(BUILD)/demo/results.json $(DEMO_IMAGES)
	@$(PYTHON) scripts/summarize.py $(BUILD)/demo/results.json
	@echo "annotated images: $(BUILD)/demo/"

clean:
	rm -rf $(BUILD)
