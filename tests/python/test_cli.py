"""rcnn-detect end to end: the printed JSON equals the Detectron2 reference detections of the
fixture bundles (tests/data/detectron2), and errors are one line with a non-zero exit.

Needs the built binary: RCNN_BUILD_DIR (default: build) / bin / rcnn-detect."""
import json
import os
import subprocess
import tempfile
import unittest

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


def unmatched(ref, got, min_iou=0.99, max_score_diff=1e-3):
    """Reference detections without their own match (same class, IoU, score)."""
    used = [False] * len(got)
    missing = []
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
        else:
            missing.append(r)
    return missing


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

    def test_writes_output_and_drawings(self):
        bundle = os.path.join(D2, "narrow_r101_fpn_shortest_edge")
        image = os.path.join(bundle, "cases", "fruits", "image.jpg")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            p = self.run_cli("--model", bundle, "--output", out, "--draw", tmp, image)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(out) as f:
                self.assertEqual(len(json.load(f)), 1)
            self.assertTrue(os.path.getsize(os.path.join(tmp, "image.jpg")) > 0)

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
