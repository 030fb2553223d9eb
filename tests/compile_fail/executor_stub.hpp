#pragma once
// A type that satisfies rcnn::Executor for the compile-fail tests (never run).
#include <rcnn/exec/outputs.hpp>

struct StubExec {
  void run_backbone_rpn(const rcnn::TensorView&, rcnn::BackboneOutputs&) {}
  void run_box_head(const rcnn::TensorView&, rcnn::BoxHeadOutputs&) {}
};
