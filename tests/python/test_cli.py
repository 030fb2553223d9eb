"""rcnn-detect end to end: the printed JSON equals the Detectron2 reference detections of the
fixture bundles (tests/data/detectron2), the Mask R-CNN bundle's COCO RLE masks equal
Detectron2's, and errors are one line with a non-zero exit.

Needs the built binary: RCNN_BUILD_DIR (default: build) / bin / rcnn-detect."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
from _common import rle_string_counts  # noqa: E402  (tests/reference/_common.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RCNN_BUILD_DIR", os.path.join(ROOT, "build"))
DETECT = os.path.join(BUILD, "bin", "rcnn-detect")
D2 = os.path.join(ROOT, "tests", "data", "detectron2")


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matches(ref, got, min_iou=0.99, max_score_diff=1e-3):
    """For each reference detection, the index of its own match in `got` (same class, box IoU,
    score), or None."""
    used = [False] * len(got)
    found = []
    for r in ref:
        best, best_iou = -1, -1.0
        for j, g in enumerate(got):
            if used[j] or g["class_id"] != r["class_id"] or abs(g["score"] - r["score"]) > max_score_diff:
                continue
            v = iou(r["box"], g["box"])
            if v > best_iou:
                best, best_iou = j, v
        if best >= 0 and best_iou >= min_iou:
            used[best] = True
            found.append(best)
        else:
            found.append(None)
    return found


def unmatched(ref, got, min_iou=0.99, max_score_diff=1e-3):
    """Reference detections without their own match (same class, IoU, score)."""
    return [r for r, m in zip(ref, matches(ref, got, min_iou, max_score_diff)) if m is None]


def rle_decode(segmentation):
    """A COCO compressed RLE ({"size": [h, w], "counts": str}) as a bool [h, w] mask, written
    from pycocotools' format (rleFrString: 5 bits per character + 48, 0x20 = more characters
    follow, 0x10 of the last = sign, counts from the third on relative to the one two before;
    runs of 0s and 1s alternate, 0s first, over the column-major pixels)."""
    h, w = segmentation["size"]
    counts = rle_string_counts(segmentation["counts"])
    assert sum(counts) == h * w, (sum(counts), h, w)
    flat = np.zeros(h * w, bool)
    pos = 0
    for i, c in enumerate(counts):
        if i % 2 == 1:
            flat[pos:pos + c] = True
        pos += c
    return flat.reshape(w, h).T  # column-major


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


@unittest.skipUnless(os.path.exists(DETECT), f"{DETECT} not built")
class CliTest(unittest.TestCase):
    def run_cli(self, *args):
        return subprocess.run([DETECT, *args], capture_output=True, text=True, timeout=300)

    def test_prints_reference_detections(self):
        for bundle in ("narrow_r101_fpn_shortest_edge", "narrow_r101_fpn_fixed800"):
            cases = os.path.join(D2, bundle, "cases")
            images = [os.path.join(cases, c, "image.jpg") for c in sorted(os.listdir(cases))]
            p = self.run_cli("--model", os.path.join(D2, bundle), "--threads", "2", *images)
            self.assertEqual(p.returncode, 0, p.stderr)
            results = json.loads(p.stdout)
            self.assertEqual(len(results), len(images))
            for image, res in zip(images, results):
                with open(os.path.join(os.path.dirname(image), "detections.json")) as f:
                    ref = json.load(f)
                with self.subTest(bundle=bundle, image=image):
                    self.assertEqual(res["image"], image)
                    self.assertEqual(len(res["detections"]), len(ref))
                    self.assertEqual(unmatched(ref, res["detections"]), [])
                    self.assertEqual({d["class_name"] for d in res["detections"]},
                                     {d["class_name"] for d in ref})
                    self.assertIn("backbone_rpn", res["timing_ms"])

    def test_mask_rcnn_segmentation_is_detectron2s(self):
        bundle = os.path.join(D2, "narrow_mask_rcnn_r101_fpn_shortest_edge")
        cases = os.path.join(bundle, "cases")
        names = sorted(os.listdir(cases))
        # The images are those of the Faster R-CNN bundle of the same weights (where the mask
        # bundle's cases do not hold their own copy).
        images = [os.path.join(cases, c, "image.jpg") for c in names]
        images = [i if os.path.exists(i) else
                  os.path.join(D2, "narrow_r101_fpn_shortest_edge", "cases", c, "image.jpg")
                  for i, c in zip(images, names)]
        with tempfile.TemporaryDirectory() as tmp:
            p = self.run_cli("--model", bundle, "--threads", "2", "--draw", tmp, *images)
            self.assertEqual(p.returncode, 0, p.stderr)
            # Absolute paths are drawn as <folder>/<file>: the cases' image.jpg stay apart.
            for image in images:
                drawn = os.path.join(tmp, os.path.basename(os.path.dirname(image)), os.path.basename(image))
                self.assertTrue(os.path.getsize(drawn) > 0, drawn)
        results = json.loads(p.stdout)
        self.assertEqual(len(results), len(images))
        for name, res in zip(names, results):
            with open(os.path.join(cases, name, "detections.json")) as f:
                ref = json.load(f)
            z = np.load(os.path.join(cases, name, "masks.npz"))
            ref_masks = np.unpackbits(z["packed"], axis=-1, count=int(z["shape"][2])).astype(bool)
            dets = res["detections"]
            with self.subTest(case=name):
                self.assertEqual(len(dets), len(ref))
                found = matches(ref, dets)
                self.assertNotIn(None, found)
                for i, j in enumerate(found):
                    seg = dets[j]["segmentation"]
                    self.assertEqual(seg["size"], [res["height"], res["width"]])
                    mask = rle_decode(seg)
                    self.assertEqual(dets[j]["mask_pixels"], int(mask.sum()))
                    self.assertGreaterEqual(mask_iou(mask, ref_masks[i]), 0.99, f"detection {i}")
                self.assertIn("mask_paste", res["timing_ms"])

    def test_faster_rcnn_has_no_segmentation(self):
        bundle = os.path.join(D2, "narrow_r101_fpn_shortest_edge")
        p = self.run_cli("--model", bundle, os.path.join(bundle, "cases", "messi5", "image.jpg"))
        self.assertEqual(p.returncode, 0, p.stderr)
        for d in json.loads(p.stdout)[0]["detections"]:
            self.assertNotIn("segmentation", d)
            self.assertNotIn("mask_pixels", d)

    def test_writes_output_and_drawings(self):
        bundle = os.path.join(D2, "narrow_r101_fpn_shortest_edge")
        image = os.path.join(bundle, "cases", "fruits", "image.jpg")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            p = self.run_cli("--model", bundle, "--output", out, "--draw", tmp, image)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(out) as f:
                self.assertEqual(len(json.load(f)), 1)
            self.assertTrue(os.path.getsize(os.path.join(tmp, "fruits", "image.jpg")) > 0)

    def test_errors_are_one_line(self):
        bundle = os.path.join(D2, "narrow_r101_fpn_shortest_edge")
        for args, needle in (
            (["--model", "/nonexistent/bundle", "x.jpg"], "/nonexistent/bundle"),
            (["--model", bundle, "/nonexistent/photo.jpg"], "/nonexistent/photo.jpg"),
            (["--model", bundle, "--score-threshold", "2", "x.jpg"], "score-threshold"),
        ):
            with self.subTest(args=args):
                p = self.run_cli(*args)
                self.assertNotEqual(p.returncode, 0)
                lines = [l for l in p.stderr.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, p.stderr)
                self.assertIn(needle, lines[0])

    def test_help(self):
        p = self.run_cli("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("--model", p.stdout)


if __name__ == "__main__":
    unittest.main()
