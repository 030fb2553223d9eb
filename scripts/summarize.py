#!/usr/bin/env python3
"""Print a short table of rcnn-detect's JSON results: detections and per-stage timing."""
import argparse
import json
import sys
from collections import Counter


def main() -> int:
    p = argparse.ArgumentParser(prog="summarize.py", description=__doc__)
    p.add_argument("results", metavar="RESULTS.json", help="the --output file of rcnn-detect")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="detections listed per image, highest score first (default 10)")
    args = p.parse_args()
    with open(args.results) as f:
        results = json.load(f)
    for r in results:
        dets = r["detections"]
        counts = Counter(d["class_name"] for d in dets)
        per_class = ", ".join(f"{n} {name}" for name, n in counts.most_common())
        print(f"\n{r['image']}  ({r['width']}x{r['height']}): {len(dets)} detections"
              + (f" ({per_class})" if per_class else ""))
        if dets and args.top > 0:
            print(f"  {'class':<16} {'score':>6}  box [x1, y1, x2, y2]")
        for d in dets[:args.top]:
            box = ", ".join(f"{v:7.1f}" for v in d["box"])
            print(f"  {d['class_name']:<16} {d['score']:6.3f}  [{box}]")
        if len(dets) > args.top:
            print(f"  ... {len(dets) - args.top} more")
        # the mask / keypoint stages of a model without that head are always 0: leave them out
        heads = {"mask_": any("segmentation" in d for d in dets), "keypoint_": any("keypoints" in d for d in dets)}
        t = {k: v for k, v in r["timing_ms"].items()
             if all(on or not k.startswith(prefix) for prefix, on in heads.items())}
        print("  timing (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
