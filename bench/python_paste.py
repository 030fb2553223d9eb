#!/usr/bin/python3
"""Time the frameworks' own Python mask pasting on the inputs of rcnn-bench-stages, and check
that rcnn's masks equal theirs.

The inputs are the exact values the C++ benchmarks use (``rcnn-bench-stages --dump-inputs
DIR``: 100 detections, 28 x 28 probability masks, boxes of 20-400 px, in a 480 x 640 and an
800 x 1200 image), and DIR also holds the masks rcnn's OpenMP paste policies produced (each
detection's window and bits). Timing as in torchvision_ops.py: wall-clock per call, the mean
over a batch of calls sized to run at least ``--min-time`` seconds, ``--repetitions`` times;
the median repetition is reported.

Ops (``<op>/<HxW>/<threads>``; every call pastes all 100 masks and thresholds them):
  tv.paste_masks_in_image/HxW/T  torchvision 0.14's
                                 ``torchvision.models.detection.roi_heads.paste_masks_in_image``
                                 (padding 1, as ``GeneralizedRCNNTransform.postprocess`` calls
                                 it; soft [N, 1, H, W] masks), then ``>= 0.5``
  d2.paste_masks_in_image/HxW/T  Detectron2 v0.6's ``paste_masks_in_image`` (threshold 0.5),
                                 CPU path: a torch RE-IMPLEMENTATION written here from
                                 detectron2/layers/mask_ops.py (Detectron2 is not installed);
                                 same torch calls in the same order: one chunk per detection,
                                 ``_do_paste_mask`` with skip_empty (window
                                 [floor(x0) - 1, ceil(x1) + 1) clipped, float32 grid from pixel
                                 centres, ``F.grid_sample`` bilinear, zero padding,
                                 align_corners=False), ``>= threshold`` into a bool [N, H, W]

Check: each op's masks against rcnn's (OmpDetectron2Paste / OmpTorchvisionPaste): pixels that
differ over the whole image (pixel-exact is expected; docs/explanation/masks.md).

Prints one JSON object: {"ops": {name: {"ms": median, "runs": [...]}},
"checks": {name: {"pixels": set pixels, "differ": differing pixels, "equal": bool}}, ...}.
Exit status 1 if a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchvision_ops import time_op  # noqa: E402


# ---- Detectron2 v0.6, detectron2/layers/mask_ops.py (CPU path), re-implemented -------------

def d2_do_paste_mask(masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int,
                     skip_empty: bool = True):
    """Detectron2 v0.6 ``_do_paste_mask`` (eager, not scripting)."""
    device = masks.device
    if skip_empty:
        x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
        x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
        y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
    else:
        x0_int, y0_int = 0, 0
        x1_int, y1_int = img_w, img_h
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)  # each is Nx1

    N = masks.shape[0]

    img_y = torch.arange(y0_int, y1_int, device=device, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, device=device, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    # img_x, img_y have shapes (N, w), (N, h)

    gx = img_x[:, None, :].expand(N, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(N, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)

    if not masks.dtype.is_floating_point:
        masks = masks.float()
    img_masks = F.grid_sample(masks, grid.to(masks.dtype), align_corners=False)

    if skip_empty:
        return img_masks[:, 0], (slice(y0_int, y1_int), slice(x0_int, x1_int))
    return img_masks[:, 0], ()


def d2_paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Tuple[int, int],
                            threshold: float = 0.5) -> torch.Tensor:
    """Detectron2 v0.6 ``paste_masks_in_image`` on CPU: one detection per chunk."""
    assert masks.shape[-1] == masks.shape[-2], "Only square mask predictions are supported"
    N = len(masks)
    if N == 0:
        return masks.new_empty((0,) + image_shape, dtype=torch.uint8)
    device = boxes.device
    assert len(boxes) == N, boxes.shape
    img_h, img_w = image_shape
    # CPU is most efficient when they are pasted one by one with skip_empty=True.
    num_chunks = N
    chunks = torch.chunk(torch.arange(N, device=device), num_chunks)
    img_masks = torch.zeros(N, img_h, img_w, device=device, dtype=torch.bool if threshold >= 0 else torch.uint8)
    for inds in chunks:
        masks_chunk, spatial_inds = d2_do_paste_mask(masks[inds, None, :, :], boxes[inds], img_h, img_w,
                                                     skip_empty=device.type == "cpu")
        if threshold >= 0:
            masks_chunk = (masks_chunk >= threshold).to(dtype=torch.bool)
        else:
            masks_chunk = (masks_chunk * 255).to(dtype=torch.uint8)
        img_masks[(inds,) + spatial_inds] = masks_chunk
    return img_masks


# ---- torchvision 0.14 ----------------------------------------------------------------------

def tv_paste(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Tuple[int, int],
             threshold: float = 0.5) -> torch.Tensor:
    """torchvision's paste (as its postprocess calls it), then the documented threshold."""
    return tv_paste_masks_in_image(masks[:, None], boxes, image_shape)[:, 0] >= threshold


# ---- Check against rcnn's masks ------------------------------------------------------------

def differing_pixels(full: np.ndarray, windows: np.ndarray, bits: np.ndarray) -> int:
    """Pixels where the [N, H, W] masks `full` differ from rcnn's windowed masks."""
    differ, offset = 0, 0
    for i, (x0, y0, w, h) in enumerate(windows.tolist()):
        mine = bits[offset:offset + w * h].reshape(h, w).astype(bool)
        offset += w * h
        region = full[i, y0:y0 + h, x0:x0 + w]
        differ += int(np.count_nonzero(region != mine))
        differ += int(full[i].sum()) - int(region.sum())  # theirs set outside rcnn's window
    assert offset == bits.size, "rcnn's mask bits do not match its windows"
    return differ


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", required=True, help="directory written by rcnn-bench-stages --dump-inputs")
    parser.add_argument("--threads", default="1,2", help="torch thread counts (default 1,2)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition (default 0.5)")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--filter", default="", help="only ops whose name contains this")
    args = parser.parse_args(argv)

    with open(os.path.join(args.inputs, "manifest.json")) as f:
        manifest = json.load(f)
    torch.set_grad_enabled(False)
    results: Dict[str, Dict[str, object]] = {}
    checks: Dict[str, Dict[str, object]] = {}
    paste = manifest.get("paste", {"threshold": 0.5, "images": []})  # older binaries: none
    threshold = float(paste["threshold"])
    ops: Dict[str, Callable] = {"tv": tv_paste, "d2": d2_paste_masks_in_image}
    conventions = {"tv": "torchvision", "d2": "detectron2"}

    for image in paste["images"]:
        label, H, W = image["label"], int(image["height"]), int(image["width"])
        N, M = int(image["count"]), int(image["mask_size"])
        probs = torch.from_numpy(np.fromfile(os.path.join(args.inputs, image["probs"]), np.float32)
                                 .reshape(N, M, M).copy())
        boxes = torch.from_numpy(np.fromfile(os.path.join(args.inputs, image["boxes"]), np.float32)
                                 .reshape(N, 4).copy())
        for prefix, fn in ops.items():
            name = f"{prefix}.paste_masks_in_image/{label}"
            if args.filter and args.filter not in name:
                continue
            torch.set_num_threads(1)
            full = fn(probs, boxes, (H, W), threshold).numpy()
            out = image["masks"][conventions[prefix]]
            windows = np.fromfile(os.path.join(args.inputs, out["windows"]), np.int32).reshape(N, 4)
            bits = np.fromfile(os.path.join(args.inputs, out["bits"]), np.uint8)
            differ = differing_pixels(full, windows, bits)
            checks[name] = {"pixels": int(full.sum()), "differ": differ, "equal": differ == 0}
            print(f"{name:34s} {int(full.sum()):9d} mask pixels, {differ} differ from rcnn's", file=sys.stderr)
            for threads in [int(t) for t in args.threads.split(",") if t]:
                torch.set_num_threads(threads)
                runs = time_op(lambda: fn(probs, boxes, (H, W), threshold), args.min_time, args.repetitions)
                results[f"{name}/{threads}"] = {"ms": statistics.median(runs), "runs": runs}
                print(f"{name + '/' + str(threads):34s} {statistics.median(runs):10.3f} ms", file=sys.stderr)

    json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__,
               "parallel": torch.__config__.parallel_info().splitlines()[-1].strip(),
               "ops": results, "checks": checks}, sys.stdout, indent=1)
    print()
    return 0 if all(c["equal"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
