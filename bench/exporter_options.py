#!/usr/bin/python3
"""Exporter options that speed up the CPU networks, measured on existing bundles.

For each bundle the two modules are rewritten with the exporters' options
(``rcnn_export.core.optimize_module``: --freeze, --channels-last, both) into variant
bundles, and ``torch.jit.optimize_for_inference`` is tried in memory (in torch 1.13 its
modules cannot be saved and reloaded, so it cannot be a bundle option). Each variant is

* checked: max |variant - traced| of every module output, relative to max |traced|, on the
  photo (backbone) and on RoIAlign-pooled features of 1000 proposal-like boxes (box head);
  and the C++ runtime's detections on the photo against the traced bundle's;
* timed in Python (``module(x)`` under no_grad, median of --repeat after a warm-up) and in
  C++ (``rcnn-detect --threads T``: TorchScriptExec, graph optimisation off, InferenceMode;
  the per-stage times ``backbone_rpn`` and ``box_head`` of its JSON, median over --repeat
  images after a warm-up image), at each thread count.

Usage:
  /usr/bin/python3 bench/exporter_options.py --build build \\
      --bundle tests/data/detectron2/narrow_r101_fpn_fixed800 --bundle /tmp/tv_r50 \\
      --image tests/data/detectron2/narrow_r101_fpn_fixed800/cases/messi5/image.jpg [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import torch  # noqa: E402

from bundle_inputs import box_features, photo_tensor, read_model_json  # noqa: E402
from machine import machine_info  # noqa: E402
from rcnn_export import core  # noqa: E402

VARIANTS: List[Tuple[str, Dict[str, bool]]] = [
    ("traced (default)", {}),
    ("--freeze", {"freeze": True}),
    ("--channels-last", {"channels_last": True}),
    ("--freeze --channels-last", {"freeze": True, "channels_last": True}),
]
OFI = "optimize_for_inference (in memory only)"


def flatten(out: Any) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flatten(o)]


def max_rel_diff(ref: Any, got: Any) -> float:
    worst = 0.0
    for a, b in zip(flatten(ref), flatten(got)):
        scale = max(1e-12, float(a.abs().max())) if a.numel() else 1.0
        worst = max(worst, float((a - b).abs().max()) / scale if a.numel() else 0.0)
    return worst


def py_time(module: Any, x: torch.Tensor, repeat: int) -> float:
    with torch.no_grad():
        module(x)
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            module(x)
            runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def write_variant(bundle: str, out_dir: str, modules: Dict[str, Any]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    model_json = read_model_json(bundle)
    for key, module in modules.items():
        entry = model_json["modules"][key]
        path = os.path.join(out_dir, entry["file"])
        torch.jit.save(module, path)
        if "sha256" in entry:
            entry["sha256"] = core.sha256_file(path)
    core.write_model_json(os.path.join(out_dir, "model.json"), model_json)


def cpp_run(detect: str, bundle: str, image: str, threads: int, repeat: int) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        subprocess.run([detect, "--model", bundle, "--threads", str(threads), "--quiet", "--output", out]
                       + [image] * (repeat + 1), check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            results = json.load(f)
    later = results[1:]
    return {"backbone_rpn": statistics.median(r["timing_ms"]["backbone_rpn"] for r in later),
            "box_head": statistics.median(r["timing_ms"]["box_head"] for r in later),
            "total": statistics.median(r["timing_ms"]["total"] for r in later),
            "detections": results[-1]["detections"]}


def detections_diff(a: List[Dict[str, Any]], b: List[Dict[str, Any]]) -> str:
    if len(a) != len(b):
        return f"{len(b)} vs {len(a)} detections"
    if not a:
        return "0 detections"
    box = max(abs(x - y) for da, db in zip(a, b) for x, y in zip(da["box"], db["box"]))
    score = max(abs(da["score"] - db["score"]) for da, db in zip(a, b))
    same = all(da["class_id"] == db["class_id"] for da, db in zip(a, b))
    return f"{len(a)} same{'' if same else ' (classes differ!)'}, max |box| {box:.2g} px, |score| {score:.2g}"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", action="append", required=True, help="bundle directory (repeatable)")
    parser.add_argument("--image", required=True, help="photo to run")
    parser.add_argument("--build", default="build", help="build directory with bin/rcnn-detect")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1000, help="box-head rows (static_rois wins)")
    parser.add_argument("--keep", metavar="DIR", help="keep the variant bundles here")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    detect = os.path.join(args.build, "bin", "rcnn-detect")
    threads_list = [int(t) for t in args.threads.split(",") if t]
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load']}; BLAS: {info['blas']}")
    print(f"torch {torch.__version__}; C++: {detect} (TorchScriptExec)\n")
    work = args.keep or tempfile.mkdtemp(prefix="rcnn-variants-")
    rows_out: List[List[str]] = []
    for bundle in args.bundle:
        name = os.path.basename(os.path.normpath(bundle))
        mj = read_model_json(bundle)
        x = photo_tensor(mj, args.image)
        base_bb = torch.jit.load(os.path.join(bundle, mj["modules"]["backbone_rpn"]["file"])).eval()
        base_bh = torch.jit.load(os.path.join(bundle, mj["modules"]["box_head"]["file"])).eval()
        with torch.no_grad():
            ref_bb = base_bb(x)
            rows = mj["modules"]["box_head"].get("static_rois") or args.rows
            feats = box_features(mj, ref_bb[2][0], tuple(x.shape[-2:]), rows)
            ref_bh = base_bh(feats)
        variants: List[Tuple[str, Any, Any, Optional[str]]] = []
        for label, opts in VARIANTS:
            bb = core.optimize_module(torch.jit.load(os.path.join(bundle, mj["modules"]["backbone_rpn"]["file"])).eval(), **opts)
            bh = core.optimize_module(torch.jit.load(os.path.join(bundle, mj["modules"]["box_head"]["file"])).eval(), **opts)
            out_dir = os.path.join(work, f"{name}-{'-'.join(sorted(opts)) or 'traced'}")
            write_variant(bundle, out_dir, {"backbone_rpn": bb, "box_head": bh})
            # Measure the reloaded modules, as the runtime loads them.
            bb = torch.jit.load(os.path.join(out_dir, mj["modules"]["backbone_rpn"]["file"])).eval()
            bh = torch.jit.load(os.path.join(out_dir, mj["modules"]["box_head"]["file"])).eval()
            variants.append((label, bb, bh, out_dir))
        ofi_bb = torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.load(os.path.join(bundle, mj["modules"]["backbone_rpn"]["file"])).eval()))
        ofi_bh = torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.load(os.path.join(bundle, mj["modules"]["box_head"]["file"])).eval()))
        variants.append((OFI, ofi_bb, ofi_bh, None))
        cpp_ref: Dict[int, Dict[str, Any]] = {}
        for label, bb, bh, out_dir in variants:
            with torch.no_grad():
                diff = max(max_rel_diff(ref_bb, bb(x)), max_rel_diff(ref_bh, bh(feats)))
            for threads in threads_list:
                torch.set_num_threads(threads)
                py_bb, py_bh = py_time(bb, x, args.repeat), py_time(bh, feats, args.repeat)
                cpp = cpp_run(detect, out_dir, args.image, threads, args.repeat) if out_dir else None
                if cpp and label == VARIANTS[0][0]:
                    cpp_ref[threads] = cpp
                det = detections_diff(cpp_ref[threads]["detections"], cpp["detections"]) if cpp and threads in cpp_ref else "-"
                row = [name, label, str(threads), f"{py_bb:.0f}", f"{py_bh:.1f}",
                       f"{cpp['backbone_rpn']:.0f}" if cpp else "-", f"{cpp['box_head']:.1f}" if cpp else "-",
                       f"{diff:.1e}", det]
                rows_out.append(row)
                print("  ".join(row), file=sys.stderr, flush=True)
    header = ["bundle", "variant", "threads", "py backbone ms", "py box head ms", "C++ backbone ms",
              "C++ box head ms", "max rel diff", "C++ detections vs traced"]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows_out:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(header[i]), *(len(r[i]) for r in rows_out)) for i in range(len(header))]
        print("  ".join(header[i].ljust(widths[i]) for i in range(len(header))))
        for r in rows_out:
            print("  ".join(r[i].ljust(widths[i]) for i in range(len(header))))
    print(f"\nload average after: {machine_info()['load']}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
