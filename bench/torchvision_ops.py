#!/usr/bin/python3
"""Time torchvision 0.14's CPU ops on the inputs of rcnn-bench-stages.

The inputs are the exact values the C++ benchmarks use (``rcnn-bench-stages --dump-inputs
DIR``). Each op is timed like Google Benchmark times the C++ ones: wall-clock per call, the
mean over a batch of calls sized to run at least ``--min-time`` seconds, repeated
``--repetitions`` times; the median repetition is reported.

Ops (names match rcnn-bench-stages' benchmarks, ``<op>/<size>/<threads>``):
  tv.roi_align/1000/T        multi-level RoIAlign as torchvision's MultiScaleRoIAlign does it
                             with the levels given: per level ``roi_align`` on that level's
                             RoIs (7x7, sampling_ratio 0, aligned=True) scattered into one
                             [1000, 256, 7, 7] result (``_multiscale_roi_align``'s loop)
  tv.roi_align.kernel/1000/T the ``roi_align`` calls alone (no level split / scatter)
  tv.roi_align.tv/1000/T     (and .tv.kernel) the same with torchvision's own pooler settings
                             (sampling_ratio 2, aligned=False) instead of Detectron2's
  tv.nms/N/1                 ``torchvision.ops.nms`` (IoU 0.7)
  tv.batched_nms.levels/N/1  ``batched_nms`` with 5 groups (IoU 0.7)
  tv.batched_nms.classes/N/1 ``batched_nms`` with 80 groups (IoU 0.5)

Prints one JSON object: {"ops": {name: {"ms": median, "runs": [...], "cpu_ms": median process
CPU time per call}}, "torch": ..., ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torchvision
from torchvision.ops import batched_nms, nms, roi_align


def time_op(fn: Callable[[], object], min_time: float, repetitions: int,
            cpu_runs: Optional[List[float]] = None) -> List[float]:
    """Per-call wall time in ms of each repetition (mean over a batch of calls); the process's
    CPU time per call of each repetition is appended to ``cpu_runs`` when given (on a loaded
    machine it is the better measure of single-threaded work)."""
    fn()  # warm-up (first-call allocations, lazy initialisation)
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(min_time / one))
    runs = []
    for _ in range(repetitions):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls * 1e3)
        if cpu_runs is not None:
            cpu_runs.append((time.process_time() - cpu_start) / calls * 1e3)
    return runs


def load(dir_: str, name: str, dtype, shape) -> torch.Tensor:
    a = np.fromfile(os.path.join(dir_, name), dtype=dtype).reshape(shape)
    return torch.from_numpy(a.copy())


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", required=True, help="directory written by rcnn-bench-stages --dump-inputs")
    parser.add_argument("--threads", default="1,2", help="thread counts for roi_align (nms is single-threaded)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition (default 0.5)")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--filter", default="", help="only ops whose name contains this")
    args = parser.parse_args(argv)

    with open(os.path.join(args.inputs, "manifest.json")) as f:
        manifest = json.load(f)
    torch.set_grad_enabled(False)
    results: Dict[str, Dict[str, object]] = {}

    def run(name: str, fn: Callable[[], object]) -> None:
        if args.filter and args.filter not in name:
            return
        cpu: List[float] = []
        runs = time_op(fn, args.min_time, args.repetitions, cpu)
        results[name] = {"ms": statistics.median(runs), "runs": runs, "cpu_ms": statistics.median(cpu)}
        print(f"{name:34s} {statistics.median(runs):10.3f} ms", file=sys.stderr)

    # RoIAlign.
    ra = manifest["roi_align"]
    maps = [load(args.inputs, m["file"], np.float32, m["shape"]).unsqueeze(0) for m in ra["maps"]]
    scales = [float(m["scale"]) for m in ra["maps"]]
    R = int(ra["rois"])
    boxes = load(args.inputs, "roi_boxes.f32", np.float32, (R, 4))
    levels = load(args.inputs, "roi_levels.i32", np.int32, (R,)).long()
    rois = torch.cat([torch.zeros(R, 1), boxes], dim=1)  # batch index 0
    C = maps[0].shape[1]
    per_level = []
    for lvl in range(len(maps)):
        idx = torch.where(levels == lvl)[0]
        per_level.append((idx, rois[idx]))
    # Pooler settings: Detectron2's ROIAlignV2 (names without suffix) and torchvision's own
    # MultiScaleRoIAlign (".tv": sampling ratio 2, not aligned).
    settings = ra.get("settings") or {"d2": ra}
    for key, st in settings.items():
        suffix = "" if key == "d2" else "." + key
        P, sr, aligned = int(st["resolution"]), int(st["sampling_ratio"]), bool(st["aligned"])

        def multiscale(P=P, sr=sr, aligned=aligned) -> torch.Tensor:
            # torchvision.ops.poolers._multiscale_roi_align's loop, levels given.
            result = torch.zeros((R, C, P, P), dtype=maps[0].dtype)
            for lvl, (feature, scale) in enumerate(zip(maps, scales)):
                idx_in_level = torch.where(levels == lvl)[0]
                rois_per_level = rois[idx_in_level]
                result_idx_in_level = roi_align(feature, rois_per_level, output_size=(P, P),
                                                spatial_scale=scale, sampling_ratio=sr, aligned=aligned)
                result[idx_in_level] = result_idx_in_level.to(result.dtype)
            return result

        def kernel_only(P=P, sr=sr, aligned=aligned) -> None:
            for (idx, r), feature, scale in zip(per_level, maps, scales):
                roi_align(feature, r, output_size=(P, P), spatial_scale=scale, sampling_ratio=sr, aligned=aligned)

        for threads in [int(t) for t in args.threads.split(",") if t]:
            torch.set_num_threads(threads)
            run(f"tv.roi_align{suffix}/{R}/{threads}", multiscale)
            run(f"tv.roi_align{suffix}.kernel/{R}/{threads}", kernel_only)

    # NMS (torchvision's CPU nms is single-threaded).
    torch.set_num_threads(1)
    for n in manifest["nms"]["sizes"]:
        b = load(args.inputs, f"nms_boxes_{n}.f32", np.float32, (n, 4))
        s = load(args.inputs, f"nms_scores_{n}.f32", np.float32, (n,))
        lv = load(args.inputs, f"nms_levels_{n}.i32", np.int32, (n,)).long()
        cl = load(args.inputs, f"nms_classes_{n}.i32", np.int32, (n,)).long()
        run(f"tv.nms/{n}/1", lambda: nms(b, s, 0.7))
        run(f"tv.batched_nms.levels/{n}/1", lambda: batched_nms(b, s, lv, 0.7))
        run(f"tv.batched_nms.classes/{n}/1", lambda: batched_nms(b, s, cl, 0.5))

    json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__,
               "parallel": torch.__config__.parallel_info().splitlines()[-1].strip(),
               "ops": results}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
