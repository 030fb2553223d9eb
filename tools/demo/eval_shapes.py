#!/usr/bin/python3
"""Evaluate a shapes bundle (tools/demo/train_shapes.py) on held-out generated images, through the
C++ runtime (rcnn-detect) and through torchvision's eager model with the same weights, with
COCO box AP computed by rcnn's own evaluator, rcnn-eval (equal to pycocotools' COCOeval,
which Debian does not package; --eval, default: beside --detect):

* mAP@[.5:.95] = COCOeval's AP (mean over classes, IoU thresholds 0.50:0.05:0.95 and the 101
  recall points; area "all", at most 100 detections per image and class, no crowd boxes);
* mAP@0.5 = COCOeval's AP50; per class: rcnn-eval --per-category.

    /usr/bin/python3 tools/demo/eval_shapes.py --bundle models/shapes --detect build/bin/rcnn-detect

The images are written as PNG (lossless) into --workdir (a temporary directory by default);
both paths read those files. Exit status 0 also when a target is missed: the numbers are
the output (tests/python/test_demo_model.py asserts on them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Passive OpenMP waits (before torch loads libgomp): spinning threads are many times slower
# on a machine whose cores are busy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import shapes_data  # noqa: E402
from shapes_model import run_eager  # noqa: E402



def log(message: str) -> None:
    print(f"[eval-shapes] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# COCO box AP, by rcnn-eval (rcnn/eval/coco_eval.hpp)
# --------------------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x1 y1 x2 y2 boxes (areas w * h, as COCO)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a = a.astype(np.float64)[:, None, :]
    b = b.astype(np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def find_evaluator() -> str:
    """rcnn-eval: $RCNN_EVAL, else <build>/bin/rcnn-eval ($RCNN_BUILD_DIR, default build/ of the
    checkout this script is in)."""
    if os.environ.get("RCNN_EVAL"):
        return os.environ["RCNN_EVAL"]
    root = os.path.dirname(os.path.abspath(__file__))
    while root != os.path.dirname(root) and not os.path.isdir(os.path.join(root, "include", "rcnn")):
        root = os.path.dirname(root)
    return os.path.join(os.environ.get("RCNN_BUILD_DIR", os.path.join(root, "build")), "bin", "rcnn-eval")


EVALUATOR: Optional[str] = None  # set by --eval; find_evaluator() when None


def coco_map(samples: Sequence[Any], detections: Sequence[Dict[str, np.ndarray]],
             num_classes: int = len(shapes_data.CLASSES)) -> Dict[str, Any]:
    """``samples``: ground truth with ``boxes`` [N, 4] and ``labels`` [N] (1..K);
    ``detections``: per image ``boxes`` [M, 4], ``scores`` [M], ``labels`` [M] (1..K).
    Returns map50, map (over .5:.95), per-class AP@0.5 and AP@[.5:.95] (classes with ground
    truth only), from rcnn-eval on a COCO annotation file and results file written here."""
    names = shapes_data.CLASSES
    evaluator = EVALUATOR or find_evaluator()
    if not os.path.exists(evaluator):
        raise RuntimeError(f"{evaluator} not found (build it: cmake --build build --target rcnn-eval)")

    def xywh(b):
        x1, y1, x2, y2 = (float(v) for v in b)
        return [x1, y1, x2 - x1, y2 - y1]

    gt: Dict[str, Any] = {"images": [], "annotations": [],
                          "categories": [{"id": c, "name": names[c - 1] if c - 1 < len(names) else str(c)}
                                         for c in range(1, num_classes + 1)]}
    results = []
    for i, (s, det) in enumerate(zip(samples, detections)):
        h, w = np.asarray(s.image).shape[:2] if hasattr(s, "image") else (0, 0)
        gt["images"].append({"id": i + 1, "height": int(h), "width": int(w)})
        for b, label in zip(np.asarray(s.boxes).reshape(-1, 4), np.asarray(s.labels).reshape(-1)):
            box = xywh(b)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(label),
                                      "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for b, score, label in zip(np.asarray(det["boxes"]).reshape(-1, 4), det["scores"], det["labels"]):
            results.append({"image_id": i + 1, "category_id": int(label), "bbox": xywh(b), "score": float(score)})
    with tempfile.TemporaryDirectory(prefix="eval-shapes-") as tmp:
        paths = {n: os.path.join(tmp, n + ".json") for n in ("gt", "results", "eval")}
        for n, doc in (("gt", gt), ("results", results)):
            with open(paths[n], "w") as f:
                json.dump(doc, f)
        p = subprocess.run([evaluator, "-a", paths["gt"], "-r", paths["results"], "-t", "bbox",
                            "--per-category", "--json", paths["eval"]], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"rcnn-eval failed ({p.returncode}): {p.stderr.strip()}")
        with open(paths["eval"]) as f:
            e = json.load(f)["bbox"]
    ap, ap50 = e["per_category_AP"], e["per_category_AP50"]
    present = [c for c in range(1, num_classes + 1) if ap[str(c)] >= 0]
    return {
        "map50": max(0.0, e["AP50"]),
        "map": max(0.0, e["AP"]),
        "per_class_ap50": {names[c - 1]: ap50[str(c)] for c in present},
        "per_class_ap": {names[c - 1]: ap[str(c)] for c in present},
    }


# --------------------------------------------------------------------------------------------
# Running the model
# --------------------------------------------------------------------------------------------

def run_cpp(detect: str, bundle: str, paths: Sequence[str], threads: int, workdir: str) -> List[Dict[str, np.ndarray]]:
    """rcnn-detect on all images in one process; labels = class_id + 1 (torchvision labels)."""
    out_json = os.path.join(workdir, "cpp_results.json")
    cmd = [detect, "--model", bundle, "--threads", str(threads), "--quiet", "--output", out_json, *paths]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"rcnn-detect failed ({p.returncode}): {p.stderr.strip()}")
    with open(out_json) as f:
        results = json.load(f)
    out = []
    for r in results:
        d = r["detections"]
        out.append({"boxes": np.array([x["box"] for x in d], np.float64).reshape(-1, 4),
                    "scores": np.array([x["score"] for x in d], np.float64),
                    "labels": np.array([x["class_id"] + 1 for x in d], np.int64)})
    return out


def compare_detections(a: Sequence[Dict[str, np.ndarray]], b: Sequence[Dict[str, np.ndarray]]) -> Dict[str, Any]:
    """One-to-one agreement of two runs: greedy same-class best-IoU matching per image."""
    unmatched, total, max_score, min_iou = 0, 0, 0.0, 1.0
    for da, db in zip(a, b):
        total += len(da["scores"])
        used = np.zeros(len(db["scores"]), bool)
        ious = box_iou(np.asarray(da["boxes"]), np.asarray(db["boxes"]))
        for i in range(len(da["scores"])):
            cand = [j for j in range(len(db["scores"])) if not used[j] and db["labels"][j] == da["labels"][i]]
            if not cand:
                unmatched += 1
                continue
            j = max(cand, key=lambda j: ious[i, j])
            if ious[i, j] < 0.99:
                unmatched += 1
                continue
            used[j] = True
            max_score = max(max_score, abs(float(da["scores"][i]) - float(db["scores"][j])))
            min_iou = min(min_iou, float(ious[i, j]))
        unmatched += int((~used).sum())
    return {"detections": total, "unmatched": unmatched, "max_score_diff": max_score, "min_iou": min_iou}


def evaluate(bundle: str, detect: Optional[str], seed: int, count: int, photo: bool, threads: int,
             workdir: str, eager_threads: int = 1) -> Dict[str, Any]:
    """Generate the set, run both paths (rcnn-detect with ``threads``, torchvision with
    ``eager_threads``: 1 by default, as torch's OpenMP threads may spin when the process
    imported torch before OMP_WAIT_POLICY could be set), return the metrics of each."""
    from PIL import Image
    import torch

    from shapes_model import load_eager_from_bundle

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(eager_threads)
    t0 = time.time()
    samples = [shapes_data.make_sample(seed, i, photo=photo) for i in range(count)]
    paths = []
    for i, s in enumerate(samples):
        path = os.path.join(workdir, f"{'photo' if photo else 'synthetic'}_{seed}_{i:04d}.png")
        Image.fromarray(s.image).save(path, compress_level=1)
        paths.append(path)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    result: Dict[str, Any] = {"set": "photo backgrounds" if photo else "synthetic backgrounds", "seed": seed,
                              "count": count, "objects": int(sum(len(s.labels) for s in samples)),
                              "generate_s": round(time.time() - t0, 1)}
    t0 = time.time()
    eager = run_eager(load_eager_from_bundle(bundle), images)
    torch.set_num_threads(previous_threads)
    result["torchvision"] = coco_map(samples, eager)
    result["torchvision_s"] = round(time.time() - t0, 1)
    if detect:
        t0 = time.time()
        cpp = run_cpp(detect, bundle, paths, threads, workdir)
        result["cpp"] = coco_map(samples, cpp)
        result["cpp_s"] = round(time.time() - t0, 1)
        result["agreement"] = compare_detections(cpp, eager)
    return result


def print_report(r: Dict[str, Any]) -> None:
    times = f"generated in {r['generate_s']} s, torchvision {r['torchvision_s']} s" + (
        f", C++ {r['cpp_s']} s" if "cpp_s" in r else "")
    print(f"\n{r['set']}: {r['count']} images (seed {r['seed']}), {r['objects']} objects ({times})")
    runs = [("torchvision", r["torchvision"])] + ([("C++ rcnn-detect", r["cpp"])] if "cpp" in r else [])
    names = list(r["torchvision"]["per_class_ap50"].keys())
    print(f"  {'':<16} {'mAP@0.5':>8} {'mAP@[.5:.95]':>13}   AP@0.5 per class: " + " ".join(f"{n:>8}" for n in names))
    for label, m in runs:
        print(f"  {label:<16} {m['map50']:8.4f} {m['map']:13.4f}   {'':17}" +
              " ".join(f"{m['per_class_ap50'].get(n, float('nan')):8.4f}" for n in names))
    if "cpp" in r:
        tv, cpp = r["torchvision"], r["cpp"]
        print(f"  C++ - torchvision: mAP@0.5 {cpp['map50'] - tv['map50']:+.1e}, "
              f"mAP@[.5:.95] {cpp['map'] - tv['map']:+.1e}")
    if "agreement" in r:
        a = r["agreement"]
        print(f"  C++ vs torchvision: {a['detections']} detections, {a['unmatched']} without a match "
              f"(same class, IoU >= 0.99), max |score diff| {a['max_score_diff']:.2g}, min IoU {a['min_iou']:.6f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="eval_shapes.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="models/shapes", help="bundle written by train_shapes.py")
    p.add_argument("--detect", default="build/bin/rcnn-detect",
                   help="rcnn-detect binary; 'none' evaluates torchvision only")
    p.add_argument("--seed", type=int, default=1000, help="seed of the held-out set (training uses 0)")
    p.add_argument("--count", type=int, default=200, help="synthetic-background images (default 200)")
    p.add_argument("--photo-count", type=int, default=100,
                   help="images on OpenCV sample-photo backgrounds (never seen in training; default 100, 0 = none)")
    p.add_argument("--eval", default=None,
                   help="rcnn-eval binary (default: beside --detect, else $RCNN_EVAL or build/bin/rcnn-eval)")
    p.add_argument("--threads", type=int, default=2, help="rcnn-detect --threads (default 2)")
    p.add_argument("--eager-threads", type=int, default=1, help="torch threads of the eager model (default 1)")
    p.add_argument("--workdir", default=None, help="keep the images and results here (default: a temporary directory)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    args = p.parse_args(argv)

    detect = None if args.detect == "none" else args.detect
    global EVALUATOR
    EVALUATOR = args.eval or (os.path.join(os.path.dirname(detect), "rcnn-eval") if detect else None)
    if detect and not os.path.exists(detect):
        print(f"error: {detect} not found (build it: cmake --build build --target rcnn-detect, or --detect none)",
              file=sys.stderr)
        return 2
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        sets = [(args.seed, args.count, False)]
        if args.photo_count > 0:
            sets.append((args.seed + 1, args.photo_count, True))
        for seed, count, photo in sets:
            log(f"evaluating {count} {'photo' if photo else 'synthetic'}-background images (seed {seed})")
            r = evaluate(args.bundle, detect, seed, count, photo, args.threads, workdir, args.eager_threads)
            print_report(r)
            reports.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
