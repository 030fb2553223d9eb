#!/usr/bin/python3
"""Evaluate a shapes bundle (tools/demo/train_shapes.py) on held-out generated images, through the
C++ runtime (rcnn-detect) and through torchvision's eager model with the same weights, with
COCO-style box AP written here (Debian has no pycocotools):

* per class and IoU threshold t in 0.50, 0.55, ..., 0.95: detections of all images sorted by
  score (at most 100 per image and class), each matched greedily to the unmatched ground-truth
  box of highest IoU >= t; precision made monotone; AP = mean precision at the 101 recall
  points 0, 0.01, ..., 1 (0 where the recall is not reached), as pycocotools' COCOeval with
  areaRng "all" and no crowd boxes;
* mAP@0.5 = mean over classes at t = 0.5; mAP@[.5:.95] = mean over classes and thresholds.

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

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETS = 100


def log(message: str) -> None:
    print(f"[eval-shapes] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# COCO-style AP
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


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """101-point interpolated AP of one class at one IoU threshold (-1 when num_gt == 0)."""
    if num_gt == 0:
        return -1.0
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order].astype(np.float64)
    tps = np.cumsum(tp)
    fps = np.cumsum(1.0 - tp)
    recall = tps / num_gt
    precision = tps / (tps + fps + np.spacing(1))  # as COCOeval.accumulate
    # monotone (non-increasing) precision envelope
    for i in range(len(precision) - 1, 0, -1):
        if precision[i] > precision[i - 1]:
            precision[i - 1] = precision[i]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros(len(RECALL_POINTS))
    valid = idx < len(precision)
    q[valid] = precision[idx[valid]]
    return float(q.mean())


def coco_map(samples: Sequence[Any], detections: Sequence[Dict[str, np.ndarray]],
             num_classes: int = len(shapes_data.CLASSES)) -> Dict[str, Any]:
    """``samples``: ground truth with ``boxes`` [N, 4] and ``labels`` [N] (1..K);
    ``detections``: per image ``boxes`` [M, 4], ``scores`` [M], ``labels`` [M] (1..K).
    Returns map50, map (over .5:.95), per-class AP@0.5 and AP@[.5:.95] (classes with ground
    truth only)."""
    names = shapes_data.CLASSES
    ap = np.full((num_classes, len(IOU_THRESHOLDS)), -1.0)
    for c in range(1, num_classes + 1):
        tps: List[np.ndarray] = []
        scores: List[np.ndarray] = []
        num_gt = 0
        for gt, det in zip(samples, detections):
            g = np.asarray(gt.boxes)[np.asarray(gt.labels) == c]
            keep = np.asarray(det["labels"]) == c
            d = np.asarray(det["boxes"])[keep]
            s = np.asarray(det["scores"])[keep]
            order = np.argsort(-s, kind="mergesort")[:MAX_DETS]
            d, s = d[order], s[order]
            num_gt += len(g)
            ious = box_iou(d, g)
            tp = np.zeros((len(IOU_THRESHOLDS), len(d)))
            for ti, t in enumerate(IOU_THRESHOLDS):
                matched = np.zeros(len(g), bool)
                for di in range(len(d)):
                    best, best_iou = -1, min(t, 1 - 1e-10)
                    for gi in range(len(g)):
                        if matched[gi] or ious[di, gi] < best_iou:
                            continue
                        best, best_iou = gi, ious[di, gi]
                    if best >= 0:
                        matched[best] = True
                        tp[ti, di] = 1
            tps.append(tp)
            scores.append(s)
        tp_all = np.concatenate(tps, axis=1) if tps else np.zeros((len(IOU_THRESHOLDS), 0))
        s_all = np.concatenate(scores) if scores else np.zeros(0)
        for ti in range(len(IOU_THRESHOLDS)):
            ap[c - 1, ti] = average_precision(tp_all[ti], s_all, num_gt)
    present = ap[:, 0] >= 0
    return {
        "map50": float(ap[present, 0].mean()) if present.any() else 0.0,
        "map": float(ap[present].mean()) if present.any() else 0.0,
        "per_class_ap50": {names[c]: float(ap[c, 0]) for c in range(num_classes) if present[c]},
        "per_class_ap": {names[c]: float(ap[c].mean()) for c in range(num_classes) if present[c]},
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
    p.add_argument("--threads", type=int, default=2, help="rcnn-detect --threads (default 2)")
    p.add_argument("--eager-threads", type=int, default=1, help="torch threads of the eager model (default 1)")
    p.add_argument("--workdir", default=None, help="keep the images and results here (default: a temporary directory)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON")
    args = p.parse_args(argv)

    detect = None if args.detect == "none" else args.detect
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
