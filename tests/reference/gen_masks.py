#!/usr/bin/python3
"""Reference outputs for tests/unit/test_masks.cpp: instance-mask pasting and COCO RLE.

Usage: gen_masks.py --output DIR

- torchvision cases: torchvision 0.14's own `roi_heads.paste_masks_in_image` on random
  probability masks and boxes (inside, partly outside, tiny, degenerate, huge, fractional).
- detectron2 cases: Detectron2 v0.6's `_do_paste_mask` algorithm (window, float32 grid,
  `F.grid_sample`) written here with torch ops from its description (Detectron2 itself is not
  installed; the committed Detectron2 fixture checks the real thing).
- rle cases: masks with their COCO RLE (uncompressed counts and pycocotools' compressed
  string), from an implementation of the format written here (pycocotools is not installed).

Writes DIR/<case>/*.npy and DIR/manifest.json. Seeded and reproducible; DIR/stamp holds the
hashes of this script and _common.py and the torch / torchvision versions, and a rerun with
the same stamp does nothing.
"""

import argparse
import os
import sys
import time

import numpy as np

from _common import (fresh_dir, package_version, publish, rle_string_counts, save_case as save,
                     script_stamp, stamp_matches)

torch = F = tv_paste = None  # imported once the stamp says there is work to do


def import_torch():
    global torch, F, tv_paste
    import torch as _torch
    import torch.nn.functional as _F
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    torch, F, tv_paste = _torch, _F, paste_masks_in_image
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def random_probs(rng, n, m):
    """Half smooth blobs (sigmoid of upsampled noise: realistic masks, many values near 0.5
    after interpolation), half white noise; a few constant masks (all 0, all 1, all 0.5)."""
    probs = np.empty((n, m, m), np.float32)
    for i in range(n):
        if i % 2 == 0:
            k = max(2, m // 4)
            coarse = rng.normal(0, 3, (k, k))
            idx = np.linspace(0, k - 1, m)
            fine = np.array([[np.interp(x, np.arange(k), coarse[int(round(y))]) for x in idx]
                             for y in idx])
            probs[i] = 1 / (1 + np.exp(-fine))
        else:
            probs[i] = rng.random((m, m))
    if n > 6:
        probs[1] = 0.0
        probs[3] = 1.0
        probs[5] = 0.5
    return probs.astype(np.float32)


def random_boxes(rng, n, height, width):
    """Boxes of every kind the paste has to handle, float32 x1, y1, x2, y2."""
    boxes = []
    for i in range(n):
        kind = i % 8
        if kind == 0:  # inside, fractional
            w, h = rng.uniform(5, width * 0.6), rng.uniform(5, height * 0.6)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        elif kind == 1:  # partly outside on the left / top
            w, h = rng.uniform(10, width * 0.5), rng.uniform(10, height * 0.5)
            x, y = rng.uniform(-w * 0.7, 0), rng.uniform(-h * 0.7, 0)
        elif kind == 2:  # partly outside on the right / bottom
            w, h = rng.uniform(10, width * 0.5), rng.uniform(10, height * 0.5)
            x, y = rng.uniform(width - w * 0.5, width), rng.uniform(height - h * 0.5, height)
        elif kind == 3:  # tiny (below a pixel up to a few pixels)
            w, h = rng.uniform(0.05, 4), rng.uniform(0.05, 4)
            x, y = rng.uniform(0, width - 4), rng.uniform(0, height - 4)
        elif kind == 4:  # huge: larger than the image
            w, h = rng.uniform(width, 3 * width), rng.uniform(height, 3 * height)
            x, y = rng.uniform(-w + width * 0.5, 0), rng.uniform(-h + height * 0.5, 0)
        elif kind == 5:  # integer corners
            w, h = float(rng.integers(1, width // 2)), float(rng.integers(1, height // 2))
            x, y = float(rng.integers(0, width - w)), float(rng.integers(0, height - h))
        elif kind == 6:  # half-integer corners, exactly on pixel centres / edges
            w, h = rng.integers(2, 60) / 2, rng.integers(2, 60) / 2
            x, y = rng.integers(0, 2 * (width - 31)) / 2, rng.integers(0, 2 * (height - 31)) / 2
        else:  # thin in one direction
            if rng.random() < 0.5:
                w, h = rng.uniform(0.2, 1.5), rng.uniform(10, height * 0.7)
            else:
                w, h = rng.uniform(10, width * 0.7), rng.uniform(0.2, 1.5)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        boxes.append([x, y, x + w, y + h])
    return np.array(boxes, np.float32)


# --------------------------------------------------------------------------------------------
# Paste references
# --------------------------------------------------------------------------------------------

def torchvision_soft(probs, boxes, height, width):
    """torchvision's own paste: [N, H, W] soft masks."""
    out = tv_paste(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (height, width))
    return out[:, 0].numpy()


def detectron2_soft(probs, boxes, height, width):
    """Detectron2 v0.6 `_do_paste_mask` (CPU: one box per chunk, skip_empty), per box:
    window [max(floor(x0) - 1, 0), min(ceil(x1) + 1, W)), float32 grid
    ((x + 0.5) - x0) / (x1 - x0) * 2 - 1, grid_sample bilinear, zero padding,
    align_corners=False; 0 outside the window."""
    n = probs.shape[0]
    out = np.zeros((n, height, width), np.float32)
    for i in range(n):
        b = torch.from_numpy(boxes[i:i + 1])
        x0_int, y0_int = torch.clamp(b.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32)
        x1_int = torch.clamp(b[:, 2].max().ceil() + 1, max=width).to(torch.int32)
        y1_int = torch.clamp(b[:, 3].max().ceil() + 1, max=height).to(torch.int32)
        x0, y0, x1, y1 = torch.split(b, 1, dim=1)
        img_y = torch.arange(int(y0_int), int(y1_int), dtype=torch.float32) + 0.5
        img_x = torch.arange(int(x0_int), int(x1_int), dtype=torch.float32) + 0.5
        if img_y.numel() == 0 or img_x.numel() == 0:
            continue
        img_y = (img_y - y0) / (y1 - y0) * 2 - 1
        img_x = (img_x - x0) / (x1 - x0) * 2 - 1
        gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
        gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
        grid = torch.stack([gx, gy], dim=3)
        m = torch.from_numpy(probs[i:i + 1])[:, None]
        s = F.grid_sample(m, grid, align_corners=False)[0, 0].numpy()
        out[i, int(y0_int):int(y1_int), int(x0_int):int(x1_int)] = s
    return out


def gen_paste(root, rng, manifest):
    # (name, convention, M, count, height, width)
    cases = [
        ("tv_m28", "torchvision", 28, 48, 97, 131),
        ("tv_m28_wide", "torchvision", 28, 32, 60, 240),
        ("tv_m14", "torchvision", 14, 32, 80, 64),
        ("tv_m7", "torchvision", 7, 24, 50, 50),
        ("d2_m28", "detectron2", 28, 48, 97, 131),
        ("d2_m28_wide", "detectron2", 28, 32, 60, 240),
        ("d2_m14", "detectron2", 14, 32, 80, 64),
        ("d2_m7", "detectron2", 7, 24, 50, 50),
    ]
    for name, conv, m, n, h, w in cases:
        probs = random_probs(rng, n, m)
        boxes = random_boxes(rng, n, h, w)
        if conv == "torchvision":
            # Degenerate boxes torchvision still pastes (its integer box is at least 1 x 1):
            # zero width, zero height, a point, inverted corners, a point on the border.
            cx, cy = np.float32(w / 2 + 0.3), np.float32(h / 2 + 0.6)
            boxes[-5:] = [[cx, cy, cx, cy + 9], [cx, cy, cx + 9, cy], [cx, cy, cx, cy],
                          [cx + 4, cy + 3, cx, cy], [0, 0, 0, 0]]
            soft = torchvision_soft(probs, boxes, h, w)
        else:
            # Degenerate boxes are dropped by Detectron2 before pasting: keep them positive.
            boxes[:, 2] = np.maximum(boxes[:, 2], boxes[:, 0] + np.float32(0.05))
            boxes[:, 3] = np.maximum(boxes[:, 3], boxes[:, 1] + np.float32(0.05))
            soft = detectron2_soft(probs, boxes, h, w)
        save(root, name, "probs", probs)
        save(root, name, "boxes", boxes)
        save(root, name, "soft", soft)
        save(root, name, "masks", (soft >= 0.5).astype(np.uint8))
        manifest["paste"].append({"dir": name, "convention": conv, "mask_size": m, "count": n,
                                  "height": h, "width": w,
                                  "pixels": int((soft >= 0.5).sum())})


# --------------------------------------------------------------------------------------------
# COCO RLE (pycocotools' format, written from its description)
# --------------------------------------------------------------------------------------------

def rle_counts(mask):
    """Uncompressed COCO RLE counts of a [H, W] 0/1 mask: column-major runs, zeros first."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    counts, prev, run = [], 0, 0
    for p in flat.tolist():
        if p != prev:
            counts.append(run)
            run, prev = 0, p
        run += 1
    counts.append(run)
    return counts


def rle_string(counts):
    """pycocotools' compressed form: delta to the count two before (from the third on),
    signed, 5 bits per character (0x20: more follow, 0x10 of the last: sign), + 48."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def gen_rle(root, rng, manifest):
    masks = []
    for h, w in [(1, 1), (1, 7), (5, 1), (3, 4), (17, 23), (64, 48), (97, 131)]:
        masks.append(np.zeros((h, w), np.uint8))
        masks.append(np.ones((h, w), np.uint8))
        masks.append((rng.random((h, w)) < 0.5).astype(np.uint8))
        m = np.zeros((h, w), np.uint8)
        m[h // 3:(2 * h) // 3 + 1, w // 4:(3 * w) // 4 + 1] = 1
        masks.append(m)
        m = (rng.random((h, w)) < 0.05).astype(np.uint8)
        m[0, 0] = 1
        masks.append(m)
    # Long runs: counts with large deltas (multi-character numbers, both signs).
    big = np.zeros((700, 900), np.uint8)
    big[10:690, 100:101] = 1
    big[:, 300:800] = 1
    big[350, 850] = 1
    masks.append(big)
    for i, m in enumerate(masks):
        counts = rle_counts(m)
        s = rle_string(counts)
        assert rle_string_counts(s) == counts
        assert sum(counts) == m.size
        case = f"rle_{i:02d}"
        save(root, case, "mask", m)
        save(root, case, "counts", np.array(counts, np.int64))
        manifest["rle"].append({"dir": case, "height": m.shape[0], "width": m.shape[1],
                                "string": s, "area": int(m.sum())})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    out = os.path.abspath(args.output)
    stamp = script_stamp(__file__)
    if stamp_matches(os.path.join(out, "stamp"), stamp):
        print(f"gen_masks: {out} is up to date")
        return 0
    t0 = time.time()
    import_torch()
    tmp = fresh_dir(out)
    manifest = {"paste": [], "rle": [], "torch": torch.__version__,
                "torchvision": package_version("torchvision")}
    rng = np.random.default_rng(20240807)
    gen_paste(tmp, rng, manifest)
    gen_rle(tmp, rng, manifest)
    publish(tmp, out, manifest, stamp)
    print(f"gen_masks: wrote {out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
