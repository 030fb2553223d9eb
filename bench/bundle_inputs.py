"""Inputs of a bundle's networks for the Python benchmarks: a photo preprocessed the way the
bundle's framework does it (model.json `input`), and RoI features for the box head."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Tuple

import numpy as np
import torch
from PIL import Image


def read_model_json(bundle: str) -> Dict[str, Any]:
    with open(os.path.join(bundle, "model.json")) as f:
        return json.load(f)


def resized_size(h: int, w: int, model_json: Dict[str, Any]) -> Tuple[int, int]:
    """The resized image size under model.json's resize rule and conventions."""
    r = model_json["input"]["resize"]
    if r["mode"] == "fixed":
        return int(r["height"]), int(r["width"])
    lo, hi = float(r["min_size"]), float(r["max_size"])
    if model_json["conventions"] == "torchvision":
        # GeneralizedRCNNTransform: scale factor in float32, output floor(size * scale).
        scale = min(lo / min(h, w), hi / max(h, w))
        scale32 = float(np.float32(scale))
        return int(math.floor(h * scale32)), int(math.floor(w * scale32))
    # Detectron2 ResizeShortestEdge.get_output_shape.
    scale = lo / min(h, w)
    newh, neww = (lo, scale * w) if h < w else (scale * h, lo)
    if max(newh, neww) > hi:
        s = hi / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def photo_tensor(model_json: Dict[str, Any], path: str) -> torch.Tensor:
    """[1, 3, H, W] normalised, zero-padded input of the photo at `path` (Pillow bilinear
    resize of the uint8 image; close to, not bit-equal with, each framework's resize: this
    is a timing input)."""
    img = Image.open(path).convert("RGB")
    w0, h0 = img.size
    h, w = resized_size(h0, w0, model_json)
    arr = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32)
    inp = model_json["input"]
    if inp["channel_order"] == "BGR":
        arr = arr[:, :, ::-1]
    arr = arr * float(inp.get("pixel_scale", 1.0))
    arr = (arr - np.asarray(inp["pixel_mean"], np.float32)) / np.asarray(inp["pixel_std"], np.float32)
    static = model_json["modules"]["backbone_rpn"].get("static_shape")
    if static:
        H, W = int(static[2]), int(static[3])
    else:
        d = max(1, int(inp.get("size_divisibility", 0) or 1))
        H, W = (h + d - 1) // d * d, (w + d - 1) // d * d
    out = np.zeros((3, H, W), np.float32)
    out[:, :h, :w] = arr.transpose(2, 0, 1)
    return torch.from_numpy(out).unsqueeze(0)


def box_features(model_json: Dict[str, Any], features: torch.Tensor, image_hw: Tuple[int, int],
                 rows: int, seed: int = 0) -> torch.Tensor:
    """[rows, C, P, P] RoIAlign-pooled features of random proposal-like boxes on the first
    RoI level's map (a realistic box-head input)."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    size = torch.exp(torch.empty(rows).uniform_(math.log(16), math.log(400), generator=g))
    cx = torch.rand(rows, generator=g) * w
    cy = torch.rand(rows, generator=g) * h
    boxes = torch.stack([(cx - size / 2).clamp(0, w), (cy - size / 2).clamp(0, h),
                         (cx + size / 2).clamp(0, w), (cy + size / 2).clamp(0, h)], dim=1)
    rois = torch.cat([torch.zeros(rows, 1), boxes], dim=1)
    heads = model_json["roi_heads"]
    stride = model_json["backbone"]["strides"][model_json["backbone"]["roi_levels"][0]]
    P = int(heads["pooler_resolution"])
    return roi_align(features, rois, (P, P), 1.0 / stride, int(heads["sampling_ratio"]), bool(heads["aligned"]))
