#!/usr/bin/python3
"""Reference outputs of torchvision 0.14's CPU `nms`, `batched_nms`, `roi_align`
(MultiScaleRoIAlign) and of both frameworks' FPN level mappers, for tests/unit/test_nms.cpp
and tests/unit/test_roi_align.cpp.

Usage: gen_ops.py --output DIR

Writes DIR/<case>/*.npy and DIR/manifest.json. Seeded, so the outputs are reproducible;
DIR/stamp holds the hashes of this script and _common.py and the torch / torchvision versions,
and a rerun with the same stamp does nothing.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

from _common import fresh_dir, publish, save_case, script_stamp, stamp_matches

# Imported by import_torch() once the stamp says there is work to do (importing torch takes
# seconds; an up-to-date rerun should not).
torch = torchvision = MultiScaleRoIAlign = batched_nms = nms = roi_align = None


def import_torch():
    global torch, torchvision, MultiScaleRoIAlign, batched_nms, nms, roi_align
    import torch as _torch
    import torchvision as _torchvision
    from torchvision import ops as _ops

    torch, torchvision = _torch, _torchvision
    MultiScaleRoIAlign, batched_nms = _ops.MultiScaleRoIAlign, _ops.batched_nms
    nms, roi_align = _ops.nms, _ops.roi_align
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class Writer:
    def __init__(self, root):
        self.root = root
        self.manifest = {"nms": [], "batched_nms": [], "roi_align": [], "levels": [], "log2": None}

    def save(self, case, name, array):
        save_case(self.root, case, name, array)


# --------------------------------------------------------------------------------------------
# Box generators
# --------------------------------------------------------------------------------------------

def random_boxes(rng, n, width=800.0, height=600.0, min_side=1.0, max_side=300.0):
    cx = rng.uniform(0, width, n)
    cy = rng.uniform(0, height, n)
    w = np.exp(rng.uniform(math.log(min_side), math.log(max_side), n))
    h = np.exp(rng.uniform(math.log(min_side), math.log(max_side), n))
    b = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return b.astype(np.float32)


def clustered_boxes(rng, n, clusters, jitter=0.15):
    centers = random_boxes(rng, clusters, min_side=20.0, max_side=200.0)
    pick = rng.integers(0, clusters, n)
    base = centers[pick]
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    noise = rng.normal(0.0, jitter, (n, 4)) * np.stack([w, h, w, h], axis=1)
    return (base + noise.astype(np.float32)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------

def gen_nms(w, rng):
    cases = []

    def add(name, boxes, scores, thr):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy().astype(np.int64)
        case = f"nms/{name}"
        w.save(case, "boxes", boxes)
        w.save(case, "scores", scores)
        w.save(case, "keep", keep)
        cases.append({"dir": case, "iou_threshold": thr, "n": int(len(boxes)), "kept": int(len(keep))})

    add("empty", np.zeros((0, 4)), np.zeros((0,)), 0.5)
    add("one_box", [[10, 20, 30, 40]], [0.3], 0.5)
    ident = np.tile(np.array([[5, 5, 50, 60]], np.float32), (10, 1))
    add("identical_distinct_scores", ident, rng.permutation(10).astype(np.float32) / 10, 0.5)
    add("identical_equal_scores", ident, np.full(10, 0.5), 0.5)
    # Degenerate: zero-width / zero-height / points, some identical, mixed with normal boxes.
    deg = random_boxes(rng, 60)
    deg[0:10, 2] = deg[0:10, 0]
    deg[10:20, 3] = deg[10:20, 1]
    deg[20:25] = deg[20]
    deg[25:30, 2:4] = deg[25:30, 0:2]
    deg[30:35] = np.array([7, 7, 7, 7], np.float32)
    add("degenerate", deg, rng.uniform(0, 1, 60), 0.5)
    add("degenerate_thr0", deg, rng.uniform(0, 1, 60), 0.0)
    # IoU exactly at the threshold: 100 / 200 = 0.5 is not > 0.5.
    add("iou_at_threshold", [[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 20, 10], [0, 0, 10, 10]],
        [0.9, 0.8, 0.7, 0.6], 0.5)
    for thr in (0.5, 0.7):
        b = clustered_boxes(rng, 400, 25)
        add(f"clusters_{thr}", b, rng.uniform(0, 1, 400), thr)
    for n in (1000, 6000):
        for thr in (0.5, 0.7):
            b = np.concatenate([random_boxes(rng, n // 2), clustered_boxes(rng, n - n // 2, n // 40)])
            add(f"random{n}_{thr}", b, rng.normal(0, 2, n), thr)
    # Tied scores (quantised): stable order decides.
    b = clustered_boxes(rng, 2000, 60)
    add("tied_scores_0.7", b, np.round(rng.uniform(0, 1, 2000) * 8) / 8, 0.7)
    # NaN and infinite scores.
    s = rng.uniform(0, 1, 300).astype(np.float32)
    s[rng.choice(300, 30, replace=False)] = np.nan
    s[rng.choice(300, 5, replace=False)] = np.inf
    s[rng.choice(300, 5, replace=False)] = -np.inf
    add("nan_scores", clustered_boxes(rng, 300, 10), s, 0.5)
    # Non-finite coordinates: the kernel's std::max / std::min NaN semantics decide.
    b = clustered_boxes(rng, 200, 8)
    b[rng.choice(200, 15, replace=False), rng.integers(0, 4, 15)] = np.nan
    b[rng.choice(200, 5, replace=False), rng.integers(0, 4, 5)] = np.inf
    add("nan_coords", b, rng.uniform(0, 1, 200), 0.5)
    add("thr0_random500", random_boxes(rng, 500), rng.uniform(0, 1, 500), 0.0)
    add("thr1_random500", clustered_boxes(rng, 500, 5, 0.0), rng.uniform(0, 1, 500), 1.0)
    w.manifest["nms"] = cases


def batched_nms_stable(boxes, scores, idxs, thr):
    """Per-group nms, union sorted by score with a *stable* sort (ties by index)."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for g in torch.unique(idxs):
        cur = torch.where(idxs == g)[0]
        keep_mask[cur[nms(boxes[cur], scores[cur], thr)]] = True
    kept = torch.where(keep_mask)[0]
    return kept[scores[kept].sort(descending=True, stable=True)[1]]


def gen_batched(w, rng):
    cases = []

    def add(name, boxes, scores, groups, thr):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        groups = np.asarray(groups, np.int32).reshape(-1)
        tb, ts, tg = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups).long()
        keep = batched_nms_stable(tb, ts, tg, thr).numpy().astype(np.int64)
        keep_tv = batched_nms(tb, ts, tg, thr).numpy().astype(np.int64)
        case = f"batched_nms/{name}"
        w.save(case, "boxes", boxes)
        w.save(case, "scores", scores)
        w.save(case, "groups", groups)
        w.save(case, "keep", keep)
        w.save(case, "keep_torchvision", keep_tv)
        cases.append({
            "dir": case, "iou_threshold": thr, "n": int(len(boxes)), "kept": int(len(keep)),
            "torchvision_path": "vanilla" if boxes.size > 4000 else "coordinate_trick",
            "same_as_torchvision": bool(np.array_equal(keep, keep_tv)),
            "same_set_as_torchvision": bool(np.array_equal(np.sort(keep), np.sort(keep_tv))),
        })

    add("empty", np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,)), 0.5)
    b = clustered_boxes(rng, 1000, 40)
    add("n1000_g10", b, rng.uniform(0, 1, 1000), rng.integers(0, 10, 1000), 0.5)
    b = clustered_boxes(rng, 5000, 100)
    add("n5000_g80", b, rng.uniform(0, 1, 5000), rng.integers(0, 80, 5000), 0.5)
    b = clustered_boxes(rng, 3000, 50)
    add("n3000_g3_0.7", b, rng.normal(0, 1, 3000), rng.integers(0, 3, 3000), 0.7)
    b = clustered_boxes(rng, 600, 20)
    add("sparse_ids", b, rng.uniform(0, 1, 600),
        rng.choice(np.array([-5, 3, 1000000, -2000000000, 2000000000]), 600), 0.5)
    b = clustered_boxes(rng, 2000, 30)
    add("tied_scores", b, np.round(rng.uniform(0, 1, 2000) * 10) / 10, rng.integers(0, 5, 2000), 0.5)
    b = clustered_boxes(rng, 400, 10)
    add("one_group", b, rng.uniform(0, 1, 400), np.full(400, 7), 0.6)
    w.manifest["batched_nms"] = cases


# --------------------------------------------------------------------------------------------
# Level mappers
# --------------------------------------------------------------------------------------------

def detectron2_levels(boxes, min_level, max_level, canonical_box_size=224, canonical_level=4):
    """Detectron2's assign_boxes_to_levels, written with the same torch ops."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    box_sizes = torch.sqrt(area)
    lvl = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + 1e-8))
    lvl = torch.clamp(lvl, min=min_level, max=max_level)
    return lvl.to(torch.int64) - min_level


def torchvision_levels(boxes, k_min, k_max):
    mapper = torchvision.ops.poolers.LevelMapper(k_min, k_max, canonical_scale=224, canonical_level=4)
    return mapper([boxes])


def boundary_boxes(rng, n):
    """Square-ish boxes whose sqrt(area) / 224 lies within a few ulps of a power of two."""
    k = rng.integers(-6, 4, n).astype(np.float64)
    side = 224.0 * np.power(2.0, k)
    side = side.astype(np.float32)
    ulps = rng.integers(-4, 5, n)
    side = np.array([np.float32(s) for s in side], dtype=np.float32)
    for i in range(n):
        for _ in range(abs(int(ulps[i]))):
            side[i] = np.nextafter(side[i], np.float32(np.inf if ulps[i] > 0 else -np.inf))
    # Also perturb one side only, so the area crosses the boundary by less than one side ulp.
    h = side.copy()
    flip = rng.uniform(0, 1, n) < 0.5
    h[flip] = np.nextafter(h[flip], np.float32(0))
    # torchvision's eps (1e-6) is added after the log: its boundaries sit at
    # log2(sqrt(area) / 224) = k - 1e-6; sweep finely across them.
    m = n // 2
    t = rng.uniform(-3e-6, 1e-6, m)
    side[:m] = (224.0 * np.power(2.0, rng.integers(-6, 4, m) + t)).astype(np.float32)
    h[:m] = side[:m]
    x1 = np.zeros(n, np.float32)  # x1 = y1 = 0: the corner differences are exact
    y1 = np.zeros(n, np.float32)
    return np.stack([x1, y1, x1 + side, y1 + h], axis=1).astype(np.float32)


def gen_levels(w, rng):
    cases = []
    n = 200000
    boxes = np.concatenate([random_boxes(rng, n // 2, 1333, 800, 0.25, 1333),
                            boundary_boxes(rng, n // 2)]).astype(np.float32)
    boxes[:50, 2] = boxes[:50, 0]  # zero area
    tb = torch.from_numpy(boxes)
    w.save("levels/big", "boxes", boxes)
    lt = torchvision_levels(tb, 2, 5).numpy().astype(np.int64)
    ld = detectron2_levels(tb, 2, 5).numpy().astype(np.int64)
    w.save("levels/big", "levels_torchvision", lt)
    w.save("levels/big", "levels_detectron2", ld)
    cases.append({"dir": "levels/big", "min_level": 2, "max_level": 5, "n": n})
    w.manifest["levels"] = cases

    # log2 of float32 tensors (the SLEEF question): inputs near powers of two and random.
    x = np.concatenate([
        np.exp2(rng.uniform(-12, 6, 150000)).astype(np.float32),
        np.array([np.nextafter(np.float32(2.0 ** k), np.float32(d)) for k in range(-12, 7)
                  for d in (0, np.inf)], np.float32),
        np.exp2(np.arange(-12, 7)).astype(np.float32),
    ]).astype(np.float32)
    y = torch.log2(torch.from_numpy(x)).numpy()
    w.save("log2", "x", x)
    w.save("log2", "torch_log2", y)
    a = np.abs(rng.standard_normal(50000).astype(np.float32)) * np.float32(1e5)
    w.save("log2", "sqrt_x", a)
    w.save("log2", "torch_sqrt", torch.sqrt(torch.from_numpy(a)).numpy())
    w.manifest["log2"] = {"dir": "log2", "n": int(len(x))}


# --------------------------------------------------------------------------------------------
# RoIAlign
# --------------------------------------------------------------------------------------------

def roi_set(rng, n, img_h, img_w):
    """RoIs in the image frame: random sizes, out-of-image, tiny, degenerate, whole image."""
    parts = []
    k = n - n // 5
    parts.append(random_boxes(rng, k, img_w, img_h, 2.0, max(img_h, img_w)))
    m = n - k
    q = m // 5
    # partly / fully outside the image
    out = random_boxes(rng, q, img_w, img_h, 10.0, 300.0)
    shift = rng.choice(np.array([-1.0, 1.0]), (q, 2)) * rng.uniform(0.3, 1.2, (q, 2)) * np.array([img_w, img_h])
    out += np.concatenate([shift, shift], axis=1).astype(np.float32)
    parts.append(out)
    # tiny (< 1 px)
    tiny = random_boxes(rng, q, img_w, img_h, 0.05, 1.0)
    parts.append(tiny)
    # degenerate: zero width or height, points
    deg = random_boxes(rng, q, img_w, img_h, 2.0, 100.0)
    deg[: q // 3, 2] = deg[: q // 3, 0]
    deg[q // 3: 2 * q // 3, 3] = deg[q // 3: 2 * q // 3, 1]
    deg[2 * q // 3:, 2:4] = deg[2 * q // 3:, 0:2]
    parts.append(deg)
    # borders and the whole image
    rest = m - 3 * q
    border = random_boxes(rng, rest, img_w, img_h, 5.0, 200.0)
    border[: rest // 4] = np.array([0, 0, img_w, img_h], np.float32)
    border[rest // 4: rest // 2, 0] = 0.0
    border[rest // 4: rest // 2, 2] = np.minimum(border[rest // 4: rest // 2, 2], img_w)
    border[rest // 2:, 2] = img_w
    border[rest // 2:, 3] = img_h
    border[rest // 2:, 0] = np.minimum(border[rest // 2:, 0], img_w - 1)
    border[rest // 2:, 1] = np.minimum(border[rest // 2:, 1], img_h - 1)
    parts.append(border)
    b = np.concatenate(parts).astype(np.float32)
    return b[rng.permutation(len(b))]


def gen_roi_align(w, rng):
    cases = []
    img_h, img_w = 570, 760
    strides = [4, 8, 16, 32]
    channels = 8
    sizes = [(math.ceil(img_h / s), math.ceil(img_w / s)) for s in strides]
    feats = [rng.standard_normal((1, channels, h, ww)).astype(np.float32) for h, ww in sizes]
    for l, f in enumerate(feats):
        w.save("roi_align/maps", f"p{l}", f[0])
    maps_meta = {"dir": "roi_align/maps", "strides": strides, "channels": channels,
                 "sizes": [list(s) for s in sizes], "image": [img_h, img_w]}
    tfeats = [torch.from_numpy(f) for f in feats]

    # torchvision convention: MultiScaleRoIAlign (aligned=False, sampling_ratio=2, P=7).
    boxes = roi_set(rng, 1000, img_h, img_w)
    tb = torch.from_numpy(boxes)
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
    out = pooler({f"p{l + 2}": t for l, t in enumerate(tfeats)}, [tb], [(img_h, img_w)])
    levels = pooler.map_levels([tb])
    case = "roi_align/torchvision"
    w.save(case, "rois", boxes)
    w.save(case, "levels", levels.numpy().astype(np.int64))
    w.save(case, "out", out.numpy())
    cases.append({"dir": case, "conventions": "torchvision", "resolution": 7, "sampling_ratio": 2,
                  "aligned": False, "level_eps": 1e-6, "level_eps_inside_log": False,
                  "scales": [float(s) for s in pooler.scales], "min_level": 2, "max_level": 5,
                  "n": int(len(boxes))})

    # Detectron2 convention: ROIPooler (aligned=True, sampling_ratio=0), box (7) and mask (14).
    for name, res, n in (("detectron2_box", 7, 1000), ("detectron2_mask", 14, 300)):
        boxes = roi_set(rng, n, img_h, img_w)
        tb = torch.from_numpy(boxes)
        levels = detectron2_levels(tb, 2, 5)
        out = torch.zeros((n, channels, res, res), dtype=torch.float32)
        rois = torch.cat([torch.zeros((n, 1)), tb], dim=1)
        for l, stride in enumerate(strides):
            idx = torch.where(levels == l)[0]
            out[idx] = roi_align(tfeats[l], rois[idx], (res, res), spatial_scale=1.0 / stride,
                                 sampling_ratio=0, aligned=True)
        case = f"roi_align/{name}"
        w.save(case, "rois", boxes)
        w.save(case, "levels", levels.numpy().astype(np.int64))
        w.save(case, "out", out.numpy())
        cases.append({"dir": case, "conventions": "detectron2", "resolution": res,
                      "sampling_ratio": 0, "aligned": True, "level_eps": 1e-8,
                      "level_eps_inside_log": True, "scales": [1.0 / s for s in strides],
                      "min_level": 2, "max_level": 5, "n": n})
    w.manifest["roi_align"] = cases
    w.manifest["roi_align_maps"] = maps_meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    out = os.path.abspath(args.output)
    stamp = script_stamp(__file__)
    if stamp_matches(os.path.join(out, "stamp"), stamp):
        print(f"gen_ops: {out} is up to date")
        return 0
    t0 = time.time()
    import_torch()
    tmp = fresh_dir(out)
    w = Writer(tmp)
    rng = np.random.default_rng(20240514)
    torch.manual_seed(0)
    gen_nms(w, rng)
    gen_batched(w, rng)
    gen_levels(w, rng)
    gen_roi_align(w, rng)
    w.manifest["torch"] = torch.__version__
    w.manifest["torchvision"] = torchvision.__version__
    publish(tmp, out, w.manifest, stamp)
    print(f"gen_ops: wrote {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
