#!/usr/bin/env python3
"""Reference outputs of torchvision's own code for the stage unit tests (box coder, anchor
generator, softmax box inference), written as .npy under --output.

Run by the test build before the C++ tests; skips work when its stamp matches."""
import argparse
import json
import os
import sys

import numpy as np
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection import _utils as det_utils

from _common import script_stamp, stamp_matches


def box_coder_cases(out: str) -> None:
    g = torch.Generator().manual_seed(7)
    n = 4000
    x1 = torch.rand(n, generator=g) * 500
    y1 = torch.rand(n, generator=g) * 500
    w = torch.rand(n, generator=g) * 300
    h = torch.rand(n, generator=g) * 300
    w[:50] = 0  # degenerate references
    h[50:100] = 0
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], 1)
    deltas = torch.randn(n, 4, generator=g) * 2
    deltas[100:200, 2:] = torch.rand(100, 2, generator=g) * 20 + 5  # beyond the clamp
    deltas[200:300] *= 0
    for name, weights in (("rpn", (1.0, 1.0, 1.0, 1.0)), ("roi", (10.0, 10.0, 5.0, 5.0))):
        coder = det_utils.BoxCoder(weights)
        dec = coder.decode_single(deltas, boxes)
        np.save(os.path.join(out, f"coder_{name}_decoded.npy"), dec.numpy())
    np.save(os.path.join(out, "coder_boxes.npy"), boxes.numpy())
    np.save(os.path.join(out, "coder_deltas.npy"), deltas.numpy())


def anchor_cases(out: str) -> dict:
    cases = {
        # resnet50-fpn: one size per level, 3 ratios
        "r50": (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5,
                [(80, 88), (40, 44), (20, 22), (10, 11), (5, 6)], (320, 352)),
        # mobilenet-v3 fpn: 5 sizes x 3 ratios on every level (order matters)
        "mobilenet": (((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3,
                      [(20, 25), (20, 25), (10, 13)], (320, 416)),
        # odd sizes and ratios that do not round evenly
        "odd": (((24, 40), (77,)), ((0.3, 1.0, 3.7), (0.5, 2.0)), [(13, 7), (7, 4)], (100, 60)),
    }
    manifest = {}
    for name, (sizes, ratios, grids, image_size) in cases.items():
        gen = AnchorGenerator(sizes, ratios)
        feats = [torch.zeros(1, 1, gh, gw) for gh, gw in grids]
        images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
        anchors = gen(images, feats)[0]
        counts = [gh * gw * gen.num_anchors_per_location()[i] for i, (gh, gw) in enumerate(grids)]
        np.save(os.path.join(out, f"anchors_{name}.npy"), anchors.numpy())
        manifest[name] = {"sizes": [list(s) for s in sizes], "aspect_ratios": [list(r) for r in ratios],
                          "grids": [list(g) for g in grids], "image_size": list(image_size),
                          "counts": counts}
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", required=True, help="directory for the .npy files")
    args = ap.parse_args()
    os.makedirs(args.output, exist_ok=True)
    stamp_path = os.path.join(args.output, "stamp")
    stamp = script_stamp(__file__, ("torch",))
    if stamp_matches(stamp_path, stamp):
        print("gen_stages: up to date")
        return 0
    torch.set_num_threads(1)
    box_coder_cases(args.output)
    manifest = {"anchors": anchor_cases(args.output)}
    with open(os.path.join(args.output, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(stamp_path, "w") as f:
        f.write(stamp)
    print("gen_stages: wrote", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
