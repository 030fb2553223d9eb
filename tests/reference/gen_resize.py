#!/usr/bin/python3
"""Reference data for tests/unit/test_resize.cpp (resize and preprocessing stages).

Writes into --output (run by CTest as reference.gen_resize, before the unit tests):

* img_<name>.npy       uint8 [H, W, C] RGB (or [H, W, 1] grey) inputs, decoded with PIL
* pil_<i>.npy          Pillow 9.4 ``Image.resize((w, h), Image.BILINEAR)`` of an input
* tin_<name>.npy       float32 [3, H, W] torchvision-normalised input ``(p / 255 - mean) / std``
* torch_<i>.npy        torch ``F.interpolate(x[None], size, mode="bilinear",
                       align_corners=False)[0]`` of a tin_ array
* tv_<i>.npy           ``GeneralizedRCNNTransform(min, max, mean, std)(images=[x]).tensors``
                       ([1, 3, Hp, Wp]) for ``x = to_tensor(img)``
* d2_<i>.npy           Detectron2 preprocessing ([1, 3, Hp, Wp]): PIL resize of the uint8
                       image, ``(x - pixel_mean) / pixel_std`` with float32 tensors, zero pad
                       to a multiple of 32 (``ImageList.from_tensors``)
* fixture_<case>.npy   the Detectron2 fixture's image.jpg decoded with PIL (RGB)
* manifest.json        what each file is, plus output-size expectations of both frameworks

Idempotent: skipped when --output holds a stamp with this script's (and _common.py's) hash.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks

from _common import script_stamp, stamp_matches

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PHOTOS = "/usr/share/doc/opencv-doc/examples/data"
FIXTURES = os.path.join(ROOT, "tests", "data", "detectron2", "narrow_r101_fpn_shortest_edge", "cases")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
D2_MEAN = [103.53, 116.28, 123.675]


def d2_output_shape(h, w, short_edge, max_size):
    """Detectron2 0.6 ResizeShortestEdge.get_transform, written out (Detectron2 is not installed)."""
    size = short_edge * 1.0
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    neww = int(neww + 0.5)
    newh = int(newh + 0.5)
    return newh, neww


def tv_output_shape(h, w, min_size, max_size):
    """torchvision's own _resize_image_and_masks on a 1-channel (broadcast) zero image (None:
    it fails because a side would be 0)."""
    try:
        image = torch.zeros(1, 1, 1).expand(1, h, w)
        out, _ = _resize_image_and_masks(image, float(min_size), float(max_size))
    except RuntimeError:
        return None
    return int(out.shape[-2]), int(out.shape[-1])


def to_tensor(a):
    """torchvision.transforms.functional.to_tensor on an HWC uint8 array: CHW float p / 255."""
    return torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1).contiguous().float().div(255)


def save(out_dir, name, array):
    np.save(os.path.join(out_dir, name), np.ascontiguousarray(array))
    return name


def load_photo(name, mode="RGB"):
    with Image.open(os.path.join(PHOTOS, name)) as im:
        return np.asarray(im.convert(mode))


def pil_resize(a, h, w):
    """Pillow BILINEAR resize of an HWC (C = 1 or 3) uint8 array, as Detectron2's ResizeTransform."""
    im = Image.fromarray(a[:, :, 0], mode="L") if a.shape[2] == 1 else Image.fromarray(a)
    r = np.asarray(im.resize((w, h), Image.BILINEAR))
    return r[:, :, None] if r.ndim == 2 else r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    out_dir = args.output
    digest = script_stamp(os.path.abspath(__file__), ())
    stamp = os.path.join(out_dir, "stamp.sha256")
    if stamp_matches(stamp, digest):
        print(f"gen_resize: up to date ({out_dir})")
        return 0
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(20240601)

    images = {
        "fruits": load_photo("fruits.jpg"),
        "messi5": load_photo("messi5.jpg"),
        "baboon": load_photo("baboon.jpg"),
        "random": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        "grey": load_photo("fruits.jpg", "L")[:, :, None],
        "grey_random": rng.integers(0, 256, (23, 41, 1), dtype=np.uint8),
        "row": rng.integers(0, 256, (1, 97, 3), dtype=np.uint8),
        "column": rng.integers(0, 256, (89, 1, 3), dtype=np.uint8),
        "pixel": rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
    }
    manifest = {"images": {}, "pil": [], "torch": [], "torchvision": [], "detectron2": [],
                "shapes": [], "fixtures": []}
    for name, a in images.items():
        manifest["images"][name] = {"file": save(out_dir, f"img_{name}.npy", a), "shape": list(a.shape)}

    # --- Pillow resize ------------------------------------------------------------------
    pil_sizes = {
        "fruits": [(320, 341), (800, 853), (800, 800), (100, 77), (480, 300), (250, 512),
                   (480, 512), (13, 1000), (1, 1), (7, 3), (161, 171), (960, 1023)],
        "messi5": [d2_output_shape(342, 548, 320, 533), d2_output_shape(342, 548, 800, 1333),
                   (123, 456), (1000, 100), (171, 274), (341, 549)],
        "baboon": [(200, 200), (511, 513), (1024, 1024), (64, 37), (3, 512), (512, 5)],
        "random": [(100, 100), (5, 7), (111, 106), (37, 20), (12, 53), (1, 1)],
        "grey": [(320, 341), (77, 99), (800, 853)],
        "grey_random": [(46, 82), (10, 10), (23, 100)],
        "row": [(1, 50), (1, 300), (3, 97), (10, 20), (1, 1)],
        "column": [(40, 1), (200, 1), (89, 4), (20, 10)],
        "pixel": [(5, 7), (1, 3)],
    }
    for name, sizes in pil_sizes.items():
        for h, w in sizes:
            r = pil_resize(images[name], h, w)
            assert r.shape == (h, w, images[name].shape[2])
            i = len(manifest["pil"])
            manifest["pil"].append({"image": name, "size": [h, w], "file": save(out_dir, f"pil_{i}.npy", r)})

    # --- torch bilinear interpolate on the normalised float image ----------------------------
    # ATen 1.13 has two CPU kernels with different rounding: the generic one for contiguous
    # NCHW tensors and the channels-last one (also taken by NCHW-contiguous tensors that are
    # channels-last contiguous too: one channel, or a 1x1 image). Both are recorded.
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    torch_sizes = {
        "fruits": [(800, 853), (177, 189), (416, 470), (240, 256), (432, 460), (480, 512),
                   (480, 1000), (13, 512), (1, 1)],
        "messi5": [(800, 1281), (126, 202), (581, 931), (342, 548), (1333, 5)],
        "baboon": [(800, 800), (189, 189), (460, 460), (256, 1024)],
        "random": [(800, 1145), (10, 11), (74, 106)],
        "grey": [(600, 640), (123, 77)],
        "row": [(13, 1333), (1, 40), (5, 97)],
        "column": [(1333, 14), (40, 1), (89, 3)],
        "pixel": [(80, 80), (3, 1)],
    }
    for name, sizes in torch_sizes.items():
        a = images[name]
        c = a.shape[2]
        x = (to_tensor(a) - mean[:c]) / std[:c]
        assert x.is_contiguous()
        manifest["images"][name]["normalized"] = save(out_dir, f"tin_{name}.npy", x.numpy())
        for k, (h, w) in enumerate(sizes):
            for fmt in ("contiguous", "channels_last") if k < 2 else ("contiguous",):
                xi = x[None] if fmt == "contiguous" else x[None].contiguous(memory_format=torch.channels_last)
                y = F.interpolate(xi, size=(h, w), mode="bilinear", align_corners=False)[0]
                i = len(manifest["torch"])
                manifest["torch"].append({"image": name, "size": [h, w], "format": fmt,
                                          "file": save(out_dir, f"torch_{i}.npy", y.contiguous().numpy())})

    # --- torchvision GeneralizedRCNNTransform (batch of one, eval) -------------------------
    tv_cases = [
        ("fruits", 800, 1333, IMAGENET_MEAN, IMAGENET_STD, None),
        ("messi5", 800, 1333, IMAGENET_MEAN, IMAGENET_STD, None),
        ("baboon", 320, 533, IMAGENET_MEAN, IMAGENET_STD, None),
        ("random", 800, 1333, [0.5, 0.25, 0.125], [0.3, 0.2, 0.1], None),
        ("grey", 600, 1000, IMAGENET_MEAN, IMAGENET_STD, None),
        ("row", 800, 1333, IMAGENET_MEAN, IMAGENET_STD, None),
        ("fruits", 800, 1333, IMAGENET_MEAN, IMAGENET_STD, (640, 448)),  # fixed (w, h)
    ]
    for name, mn, mx, m, s, fixed in tv_cases:
        a = images[name]
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        t = GeneralizedRCNNTransform(mn, mx, m, s, fixed_size=fixed).eval()
        with torch.no_grad():
            il, _ = t([to_tensor(a)])
        i = len(manifest["torchvision"])
        manifest["torchvision"].append({
            "image": name, "min_size": mn, "max_size": mx, "mean": m, "std": s,
            "fixed": None if fixed is None else [fixed[1], fixed[0]],
            "resized": list(il.image_sizes[0]), "file": save(out_dir, f"tv_{i}.npy", il.tensors.numpy())})

    # --- Detectron2 preprocessing, written out with its own operations ----------------------
    d2_cases = [
        ("fruits", 320, 533, D2_MEAN, [1.0, 1.0, 1.0], None),
        ("messi5", 800, 1333, D2_MEAN, [57.375, 57.12, 58.395], None),
        ("baboon", 800, 1333, D2_MEAN, [1.0, 1.0, 1.0], (800, 800)),
        ("grey", 320, 533, D2_MEAN, [57.375, 57.12, 58.395], None),
        ("column", 800, 1333, D2_MEAN, [1.0, 1.0, 1.0], None),
    ]
    for name, mn, mx, m, s, fixed in d2_cases:
        a = images[name]
        bgr = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[:, :, ::-1]  # model input is BGR
        h, w = fixed if fixed else d2_output_shape(a.shape[0], a.shape[1], mn, mx)
        r = pil_resize(np.ascontiguousarray(bgr), h, w)
        x = torch.as_tensor(np.ascontiguousarray(r.transpose(2, 0, 1))).float()
        x = (x - torch.tensor(m).view(-1, 1, 1)) / torch.tensor(s).view(-1, 1, 1)
        hp, wp = (h + 31) // 32 * 32, (w + 31) // 32 * 32
        y = x.new_zeros(1, 3, hp, wp)
        y[0, :, :h, :w].copy_(x)
        i = len(manifest["detectron2"])
        manifest["detectron2"].append({
            "image": name, "min_size": mn, "max_size": mx, "mean": m, "std": s,
            "fixed": list(fixed) if fixed else None, "resized": [h, w],
            "file": save(out_dir, f"d2_{i}.npy", y.numpy())})

    # --- output-size rules ------------------------------------------------------------------
    sizes = [(h, w) for h in (1, 2, 3, 7, 100, 333, 342, 375, 427, 480, 500, 512, 599, 640, 800,
                              801, 1000, 1080, 1333, 2000, 4000)
             for w in (1, 5, 97, 333, 375, 480, 500, 548, 640, 799, 853, 1066, 1920, 3000)]
    sizes += [(int(h), int(w)) for h, w in rng.integers(1, 4000, (300, 2))]
    for h, w in sizes:
        for mn, mx in ((800, 1333), (320, 533), (600, 1000), (1024, 1024)):
            manifest["shapes"].append({"size": [h, w], "min_size": mn, "max_size": mx,
                                       "torchvision": tv_output_shape(h, w, mn, mx),
                                       "detectron2": list(d2_output_shape(h, w, mn, mx))})

    # --- Detectron2 fixture photos, decoded with PIL -----------------------------------------
    for case in ("fruits", "messi5"):
        path = os.path.join(FIXTURES, case, "image.jpg")
        if not os.path.exists(path):
            continue
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        manifest["fixtures"].append({"case": case, "file": save(out_dir, f"fixture_{case}.npy", a),
                                     "pil_pixel_sum": int(a.astype(np.int64).sum())})

    # --- sanity checks of the conventions the C++ side relies on ------------------------------
    p = torch.arange(256, dtype=torch.uint8).float()
    assert torch.equal(p.div(255), torch.from_numpy(np.arange(256, dtype=np.float32) / np.float32(255)))

    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(stamp, "w") as f:
        f.write(digest)
    print(f"gen_resize: wrote {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
