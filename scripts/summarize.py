#!/usr/bin/env python3
"""Print a short table of rcnn-detect's JSON results: detections and per-stage timing."""
import json
import sys


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: summarize.py RESULTS.json  (the --output file of rcnn-detect)")
        return 0 if len(sys.argv) == 2 else 2
    with open(sys.argv[1]) as f:
        results = json.load(f)
    for r in results:
        dets = r["detections"]
        print(f"\n{r['image']}  ({r['width']}x{r['height']}): {len(dets)} detections")
        print(f"  {'class':<16} {'score':>6}  box [x1, y1, x2, y2]")
        for d in dets[:10]:
            box = ", ".join(f"{v:7.1f}" for v in d["box"])
            print(f"  {d['class_name']:<16} {d['score']:6.3f}  [{box}]")
        if len(dets) > 10:
            print(f"  ... {len(dets) - 10} more")
        t = r["timing_ms"]
        print("  timing (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
