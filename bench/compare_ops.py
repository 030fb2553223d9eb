#!/usr/bin/python3
"""rcnn's native stages versus torchvision 0.14's CPU ops and the frameworks' Python mask
pasting, measured in one run.

1. ``rcnn-bench-stages --dump-inputs DIR`` writes the benchmark inputs (and rcnn's pasted
   masks);
2. ``bench/torchvision_ops.py`` times torchvision's roi_align / nms / batched_nms on them;
   ``bench/python_paste.py`` times torchvision 0.14's and Detectron2 v0.6's (a torch
   re-implementation of its CPU path) mask pasting and checks their masks equal rcnn's;
3. ``rcnn-bench-stages`` (Google Benchmark, JSON) times every native stage;
4. tables pair each Python op with the rcnn stage computing the same thing, with
   ``speed-up = Python time / rcnn time``; the RoIAlign floor table adds, for both pooler
   settings (Detectron2's and torchvision's), every implementation's achieved GFLOP/s and
   GB/s against the workload's multiply-adds and bytes, and the machine's peak.

Both sides report the median of ``--repetitions`` repetitions of the mean wall time per call.
The machine (CPU model, load average before and after, BLAS) is printed with the table;
``--markdown`` prints the table as Markdown (for docs/performance.md), ``--json FILE`` keeps
all raw numbers, ``--paste-only`` runs the mask paste comparison alone. Usage:
``make bench-ops`` or ``/usr/bin/python3 bench/compare_ops.py --build build``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from machine import machine_info  # noqa: E402

#: (label, size, threads, rcnn benchmark, torchvision op, rcnn reference benchmark or None)
PAIRS: List[Tuple[str, str, int, str, str, Optional[str]]] = []
for t in (1, 2):
    PAIRS.append(("RoIAlign P2-P5, 256 ch, 7x7", "1000 RoIs", t, f"OmpRoIAlign/1000/{t}",
                  f"tv.roi_align/1000/{t}", "RoIAlignRef/1000/1"))
for t in (1, 2):
    PAIRS.append(("RoIAlign NHWC (SimdRoIAlign)", "1000 RoIs", t, f"SimdRoIAlign/1000/{t}",
                  f"tv.roi_align/1000/{t}", "RoIAlignRef/1000/1"))

#: The RoIAlign floor table: (pooler settings key, label, [(implementation, benchmark with
#: {t} for the thread count, thread counts)]). Settings "d2": Detectron2's ROIAlignV2
#: (adaptive sampling, aligned); "tv": torchvision's MultiScaleRoIAlign (ratio 2, not aligned).
ROI_ALIGN_FLOOR = [
    ("d2", "Detectron2 ROIAlignV2 (adaptive, aligned)", [
        ("torchvision roi_align (NCHW)", "tv.roi_align/1000/{t}", (1, 2)),
        ("rcnn OmpRoIAlign (NCHW)", "OmpRoIAlign/1000/{t}", (1, 2)),
        ("rcnn SimdRoIAlign (NCHW in: transposed first)", "SimdRoIAlign.nchw/1000/{t}", (1, 2)),
        ("rcnn SimdRoIAlign (NHWC)", "SimdRoIAlign/1000/{t}", (1, 2)),
        ("rcnn SimdRoIAlign AVX2 forced (NHWC)", "SimdRoIAlign.avx2/1000/{t}", (1,)),
        ("rcnn SimdRoIAlign baseline SSE2 forced (NHWC)", "SimdRoIAlign.baseline/1000/{t}", (1,)),
    ]),
    ("tv", "torchvision MultiScaleRoIAlign (ratio 2, not aligned)", [
        ("torchvision roi_align (NCHW)", "tv.roi_align.tv/1000/{t}", (1, 2)),
        ("rcnn OmpRoIAlign (NCHW)", "OmpRoIAlign.tv/1000/{t}", (1, 2)),
        ("rcnn SimdRoIAlign (NHWC)", "SimdRoIAlign.tv/1000/{t}", (1, 2)),
    ]),
]
for n in (1000, 2000, 4000, 6000):
    PAIRS.append(("NMS (IoU 0.7)", f"{n} boxes", 1, f"BitmaskNms/{n}", f"tv.nms/{n}/1", f"GreedyNms/{n}"))
for n in (1000, 2000, 4000, 6000):
    PAIRS.append(("batched NMS, 5 levels (0.7)", f"{n} boxes", 1, f"BatchedNms.levels/{n}",
                  f"tv.batched_nms.levels/{n}/1", None))
for n in (1000, 2000, 4000, 6000):
    PAIRS.append(("batched NMS, 80 classes (0.5)", f"{n} boxes", 1, f"BatchedNms.classes/{n}",
                  f"tv.batched_nms.classes/{n}/1", None))

#: Mask pasting, 100 detections of 28 x 28 masks: (label, image, threads, rcnn benchmark,
#: Python op, rcnn reference benchmark).
PASTE_PAIRS: List[Tuple[str, str, int, str, str, str]] = []
for image in ("480x640", "800x1200"):
    for t in (1, 2):
        PASTE_PAIRS.append(("Detectron2 v0.6 (torch re-impl.)", image, t, f"OmpDetectron2Paste/{image}/{t}",
                            f"d2.paste_masks_in_image/{image}/{t}", f"Detectron2PasteRef/{image}/1"))
    for t in (1, 2):
        PASTE_PAIRS.append(("torchvision 0.14", image, t, f"OmpTorchvisionPaste/{image}/{t}",
                            f"tv.paste_masks_in_image/{image}/{t}", f"TorchvisionPasteRef/{image}/1"))

#: Native stages without a torchvision op of their own (timed, no ratio).
STAGES_ONLY = [
    ("proposal selection P2-P6, 800x800", "Proposals/800x800/1"),
    ("level assignment", "AssignLevels/1000/1"),
    ("box inference 1000 x 81", "BoxInference/1000x81/1"),
    ("postprocess (100 detections)", "Postprocess/100/1"),
    ("anchors P2-P6, 800x800 (once per size)", "Anchors/800x800/1"),
    ("Pillow resize 480x640 -> 800x1066", "PilResize/480x640-800x1066/1"),
    ("torch resize 480x640 -> 800x1066", "TorchResize/480x640-800x1066/1"),
    ("Detectron2Preprocess 480x640", "Detectron2Preprocess/480x640/1"),
    ("TorchvisionPreprocess 480x640", "TorchvisionPreprocess/480x640/1"),
]


def run_rcnn(binary: str, repetitions: int, min_time: float, filter_: str,
             cpu: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Median wall time per call (ms) of every rcnn-bench-stages benchmark (and, into `cpu`,
    the median CPU time of its main thread)."""
    cmd = [binary, "--benchmark_format=json", f"--benchmark_repetitions={repetitions}",
           "--benchmark_report_aggregates_only=true", f"--benchmark_min_time={min_time}"]
    if filter_:
        cmd.append(f"--benchmark_filter={filter_}")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    data = json.loads(out)
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    result: Dict[str, float] = {}
    for b in data["benchmarks"]:
        # One repetition: Google Benchmark reports the run itself, no aggregates.
        if b.get("aggregate_name") != "median" and not (repetitions == 1 and b.get("run_type") == "iteration"):
            continue
        name = b["run_name"]
        if name.endswith("/real_time"):
            name = name[: -len("/real_time")]
        result[name] = b["real_time"] * scale[b["time_unit"]]
        if cpu is not None:
            cpu[name] = b["cpu_time"] * scale[b["time_unit"]]
    return result


def roi_align_floor_rows(rc: Dict[str, float], tv_ms: Dict[str, float], manifest: dict,
                         rc_cpu: Dict[str, float], tv_cpu: Dict[str, Optional[float]]) -> List[dict]:
    """ROI_ALIGN_FLOOR with times, speed-up over torchvision (same settings and threads),
    achieved GFLOP/s (2 flops per multiply-add) and GB/s (the floor's bytes / time); at 1
    thread also CPU times and their ratio (robust to other processes on the machine)."""
    rows = []
    for key, label, impls in ROI_ALIGN_FLOOR:
        st = manifest["roi_align"]["settings"][key]
        tv_name = impls[0][1]
        for impl, name, threads in impls:
            for t in threads:
                bench = name.format(t=t)
                ms = rc.get(bench, tv_ms.get(bench))
                theirs = tv_ms.get(tv_name.format(t=t))
                cpu = (rc_cpu.get(bench) or tv_cpu.get(bench)) if t == 1 else None
                their_cpu = tv_cpu.get(tv_name.format(t=t)) if t == 1 else None
                rows.append({"settings": key, "impl": impl, "benchmark": bench, "threads": t, "ms": ms,
                             "speedup": theirs / ms if ms and theirs else None,
                             "gflops": 2 * st["macs"] / (ms * 1e6) if ms else None,
                             "gbs": st["bytes"] / (ms * 1e6) if ms else None,
                             "cpu_ms": cpu, "cpu_speedup": their_cpu / cpu if cpu and their_cpu else None,
                             "cpu_gflops": 2 * st["macs"] / (cpu * 1e6) if cpu else None})
    return rows


def peak_note(machine: Dict[str, str]) -> str:
    """The machine's arithmetic peak for RoIAlign's instruction mix, from its flags and clock."""
    flags = machine["simd_flags"].split()
    lanes, isa = (16, "AVX-512") if "avx512f" in flags else (8, "AVX2") if "avx2" in flags else (4, "SSE2")
    mhz = float(machine.get("mhz") or 0)
    if not mhz:
        return f"{isa}: {lanes} lanes (clock unknown)"
    per_core = 2 * lanes * mhz / 1e3  # one vector multiply + one vector add per cycle
    return (f"{isa}, {lanes} float lanes x (1 mul + 1 add) per cycle x {mhz / 1e3:.2f} GHz (nominal) = "
            f"{per_core:.0f} GFLOP/s per core, {per_core * int(machine['cores']):.0f} on {machine['cores']} cores "
            f"(cores that issue 2 multiplies and 2 adds per cycle, as AMD Zen 4/5 and recent Intel ones do, "
            f"double it, and a turbo clock raises it further; the measured figure: "
            f"rcnn-bench-stages --benchmark_filter=PeakMulAdd)")


def fmt(ms: Optional[float]) -> str:
    if ms is None:
        return "-"
    if ms < 0.1:
        return f"{ms:.2g}"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build", help="CMake build directory (default: build)")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition")
    parser.add_argument("--filter", default="", help="regex passed to --benchmark_filter (rcnn side)")
    parser.add_argument("--paste-only", action="store_true",
                        help="only the mask paste table (rcnn filter 'Paste', no torchvision_ops.py)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE")
    args = parser.parse_args(argv)

    binary = os.path.join(args.build, "bin", "rcnn-bench-stages")
    if not os.path.exists(binary):
        print(f"{binary} not found: build it (cmake --build {args.build} --target rcnn-bench-stages)", file=sys.stderr)
        return 2
    before = machine_info()
    with tempfile.TemporaryDirectory(prefix="rcnn-bench-") as inputs:
        subprocess.run([binary, "--dump-inputs", inputs], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(inputs, "manifest.json")) as f:
            manifest = json.load(f)
        if args.paste_only:
            args.filter = args.filter or "Paste"
        else:
            print("timing torchvision ops ...", file=sys.stderr)
            tv_out = subprocess.run([sys.executable, os.path.join(HERE, "torchvision_ops.py"), "--inputs", inputs,
                                     "--repetitions", str(args.repetitions), "--min-time", str(args.min_time)],
                                    check=True, stdout=subprocess.PIPE, text=True).stdout
            tv = json.loads(tv_out)
        print("timing the frameworks' mask pasting ...", file=sys.stderr)
        pp = subprocess.run([sys.executable, os.path.join(HERE, "python_paste.py"), "--inputs", inputs,
                             "--repetitions", str(args.repetitions), "--min-time", str(args.min_time)],
                            stdout=subprocess.PIPE, text=True)
        if pp.returncode not in (0, 1):  # 1: a mask check failed (reported in the table)
            raise subprocess.CalledProcessError(pp.returncode, pp.args)
        py = json.loads(pp.stdout)
        print("timing rcnn stages ...", file=sys.stderr)
        rc_cpu: Dict[str, float] = {}
        rc = run_rcnn(binary, args.repetitions, args.min_time, args.filter, rc_cpu)
    after = machine_info()

    if args.paste_only:
        tv = {k: py[k] for k in ("torch", "torchvision", "parallel")} | {"ops": {}}
    tv_ms = {k: v["ms"] for k, v in tv["ops"].items()}
    rows = []
    for label, size, threads, ours, theirs, ref in PAIRS:
        a, b = rc.get(ours), tv_ms.get(theirs)
        rows.append({"op": label, "size": size, "threads": threads, "rcnn": ours, "rcnn_ms": a,
                     "torchvision": theirs, "torchvision_ms": b, "reference": ref,
                     "reference_ms": rc.get(ref) if ref else None,
                     "speedup": (b / a) if a and b else None})
    py_ms = {k: v["ms"] for k, v in py["ops"].items()}
    paste_rows = []
    for label, image, threads, ours, theirs, ref in PASTE_PAIRS:
        a, b = rc.get(ours), py_ms.get(theirs)
        check = py["checks"].get(theirs.rsplit("/", 1)[0], {})
        paste_rows.append({"paste": label, "image": image, "threads": threads, "rcnn": ours, "rcnn_ms": a,
                           "python": theirs, "python_ms": b, "reference": ref, "reference_ms": rc.get(ref),
                           "speedup": (b / a) if a and b else None, "check": check})
    stages = [{"stage": label, "benchmark": name, "ms": rc.get(name)} for label, name in STAGES_ONLY]
    tv_cpu = {k: v.get("cpu_ms") for k, v in tv["ops"].items()}
    floor_rows = roi_align_floor_rows(rc, tv_ms, manifest, rc_cpu, tv_cpu) if not args.paste_only else []

    header = ["op", "size", "threads", "rcnn ms", "torchvision ms", "speed-up", "rcnn reference ms"]
    table = [[r["op"], r["size"], str(r["threads"]), fmt(r["rcnn_ms"]), fmt(r["torchvision_ms"]),
              f"{r['speedup']:.2f}x" if r["speedup"] else "-", fmt(r["reference_ms"])] for r in rows]
    paste_header = ["mask paste, 100 x 28x28", "image", "threads", "rcnn Omp ms", "Python ms", "speed-up",
                    "rcnn reference ms", "masks equal"]
    paste_table = [[r["paste"], r["image"], str(r["threads"]), fmt(r["rcnn_ms"]), fmt(r["python_ms"]),
                    f"{r['speedup']:.2f}x" if r["speedup"] else "-", fmt(r["reference_ms"]),
                    ("yes" if r["check"]["equal"] else f"NO ({r['check']['differ']} px differ)")
                    + f", {r['check']['pixels']} px" if r["check"] else "-"] for r in paste_rows]
    stage_header = ["stage (no torchvision op)", "rcnn ms"]
    stage_table = [[s["stage"], fmt(s["ms"])] for s in stages]

    def show(h: List[str], t: List[List[str]]) -> None:
        if args.markdown:
            print("| " + " | ".join(h) + " |")
            print("|" + "|".join("---" for _ in h) + "|")
            for row in t:
                print("| " + " | ".join(row) + " |")
        else:
            widths = [max(len(h[i]), *(len(row[i]) for row in t)) for i in range(len(h))]
            print("  ".join(h[i].ljust(widths[i]) for i in range(len(h))))
            for row in t:
                print("  ".join(row[i].ljust(widths[i]) for i in range(len(h))))
        print()

    print(f"machine: {before['cpu']}, {before['cores']} cores; BLAS: {before['blas']}")
    print(f"CPU SIMD flags: {before['simd_flags']}")
    print(f"load average before: {before['load']}, after: {after['load']}")
    print(f"torch {tv['torch']}, torchvision {tv['torchvision']} ({tv['parallel']}); "
          f"{platform.python_implementation()} {platform.python_version()}")
    print(f"times: median of {args.repetitions} repetitions of the mean wall time per call\n")
    if not args.paste_only:
        show(header, table)
    show(paste_header, paste_table)
    if not args.paste_only:
        show(stage_header, stage_table)
        for key, label, _ in ROI_ALIGN_FLOOR:
            st = manifest["roi_align"]["settings"][key]
            print(f"RoIAlign floor, {label}: 1000 RoIs, 256 ch, 7x7: {st['macs'] / 1e6:.0f} M multiply-adds "
                  f"({2 * st['macs'] / 1e9:.2f} GFLOP), {st['bytes'] / 1e6:.0f} MB (output + each RoI's "
                  f"window of its map, read once)")
        print(f"peak (no FMA: a multiply and an add per lane): {peak_note(before)}\n")
        floor_header = ["pooler", "RoIAlign implementation", "threads", "ms", "vs torchvision", "GFLOP/s", "GB/s",
                        "CPU ms (1 thread)", "vs torchvision (CPU time)", "GFLOP/s (CPU time)"]
        show(floor_header, [[r["settings"], r["impl"], str(r["threads"]), fmt(r["ms"]),
                             f"{r['speedup']:.1f}x" if r["speedup"] else "-",
                             f"{r['gflops']:.1f}" if r["gflops"] else "-",
                             f"{r['gbs']:.1f}" if r["gbs"] else "-",
                             fmt(r["cpu_ms"]), f"{r['cpu_speedup']:.1f}x" if r["cpu_speedup"] else "-",
                             f"{r['cpu_gflops']:.1f}" if r["cpu_gflops"] else "-"]
                            for r in floor_rows])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine_before": before, "machine_after": after, "pairs": rows, "paste": paste_rows,
                       "roi_align_floor": floor_rows,
                       "stages": stages, "rcnn": rc, "torchvision": tv, "python_paste": py}, f, indent=1)
    if not all(c["equal"] for c in py["checks"].values()):
        print("rcnn's masks differ from the frameworks' (see the masks equal column)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
