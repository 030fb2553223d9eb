#!/usr/bin/python3
"""Reference data for tests/unit/test_keypoint_decode.cpp: torch's bicubic upsampling (the
first step of both frameworks' heatmaps_to_keypoints) on seeded heatmap-like planes.

Writes into --output (run by CTest as reference.gen_upsample, before the unit tests):

* case_<i>/input.npy    float32 [H, W] a seeded plane (normal, std 3: heatmap logits' range)
* case_<i>/output.npy   float32 [h, w] ``F.interpolate(input[None, None], size=(h, w),
                        mode="bicubic", align_corners=False)[0, 0]``
* weights_<w>/output.npy float32 [56, w]: ``F.interpolate`` of the 56 one-hot rows of length
                        56 to width w: torch's bicubic weights, exactly
* manifest.json         the cases' sizes, torch's version and CPU capability

Sizes: the keypoint heads' 56 x 56 heatmaps down to 13 x 29 and up to 200 x 97 (boxes
narrower and wider than the heatmap), square and non-square, plus small odd planes.
Idempotent: skipped when --output holds a stamp with this script's (and _common.py's) hash.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from _common import fresh_dir, publish, save_case, script_stamp, stamp_matches

#: (input H, input W, output h, output w)
SIZES = [(56, 56, 13, 29), (56, 56, 200, 97), (56, 56, 56, 56), (56, 56, 57, 131), (56, 56, 1, 3),
         (7, 9, 30, 31), (9, 7, 4, 50), (56, 56, 312, 145)]
#: Output widths of the one-hot weight cases (56 input samples).
WEIGHT_WIDTHS = [13, 29, 97, 200]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True)
    args = ap.parse_args(argv)
    digest = script_stamp(os.path.abspath(__file__), ("torch",))
    if stamp_matches(os.path.join(args.output, "stamp"), digest):
        print(f"[gen_upsample] {args.output} is up to date")
        return 0
    tmp = fresh_dir(args.output)
    gen = torch.Generator().manual_seed(13)
    cases = []
    for i, (H, W, h, w) in enumerate(SIZES):
        x = torch.randn(H, W, generator=gen) * 3
        y = F.interpolate(x[None, None], size=(h, w), mode="bicubic", align_corners=False)[0, 0]
        save_case(tmp, f"case_{i}", "input", x.numpy())
        save_case(tmp, f"case_{i}", "output", y.numpy())
        cases.append({"case": f"case_{i}", "input": [H, W], "output": [h, w]})
    # The weights: one-hot rows [56, 1, 1, 56] resampled to 1 x w; row k, column i is the
    # weight of input k in output i (summed where clamping repeats an index).
    for w in WEIGHT_WIDTHS:
        y = F.interpolate(torch.eye(56).reshape(56, 1, 1, 56), size=(1, w), mode="bicubic", align_corners=False)
        save_case(tmp, f"weights_{w}", "output", y[:, 0, 0, :].numpy())
    capability = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown"
    publish(tmp, args.output, {"torch": torch.__version__, "cpu_capability": capability, "cases": cases,
                               "weight_widths": WEIGHT_WIDTHS}, digest)
    print(f"[gen_upsample] {len(cases)} cases into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
