"""rcnn-eval (rcnn/eval/coco_eval.hpp) against pycocotools' COCOeval, run here on the same
files: the 12 summary numbers and every category's AP equal to 1e-12, box and mask IoU, on
synthetic sets generated with a seeded RNG: crowd regions, images without annotations, images
without detections, more than 100 detections on an image, tied scores, detections of unknown
categories, many categories, masks as polygons, uncompressed and compressed RLE.

Needs the built binary (RCNN_BUILD_DIR, default build / bin / rcnn-eval) and pycocotools
(tests/reference/_peers.py finds it; skips with one line when it is absent, fails under
RCNN_REQUIRE_PEERS=1)."""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import _peers  # noqa: E402  (tests/reference/_peers.py)

BUILD = os.environ.get("RCNN_BUILD_DIR", os.path.join(ROOT, "build"))
EVAL = os.path.join(BUILD, "bin", "rcnn-eval")
STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def uncompressed_rle(mask):
    """COCO's uncompressed RLE of a bool [h, w] mask: column-major runs, 0s first."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def random_box(rng, w, h, scale):
    bw = float(rng.uniform(0.3, 1.0) * scale)
    bh = float(rng.uniform(0.3, 1.0) * scale)
    x = float(rng.uniform(0, max(1.0, w - bw)))
    y = float(rng.uniform(0, max(1.0, h - bh)))
    return [round(x, 2), round(y, 2), round(min(bw, w - x), 2), round(min(bh, h - y), 2)]


def polygon_in(rng, box, n):
    """A star-shaped polygon with n vertices inside [x, y, w, h]."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(0.4, 1.0, n)
    pts = []
    for a, r in zip(angles, radius):
        pts += [round(float(cx + np.cos(a) * r * w / 2), 2), round(float(cy + np.sin(a) * r * h / 2), 2)]
    return pts


def make_set(seed, num_images, num_categories, masks, crowd_fraction=0.15):
    """A ground-truth dict and a results list. Images 0 mod 7 have no annotations, images
    3 mod 8 no detections; one image gets 130 detections (maxDets 100); scores are rounded to
    two decimals (ties); some results name a category the annotation file does not have."""
    from pycocotools import mask as mask_utils
    rng = np.random.RandomState(seed)
    cat_ids = sorted(rng.choice(np.arange(1, 3 * num_categories + 1), num_categories, replace=False).tolist())
    gt = {"images": [], "categories": [{"id": int(c), "name": f"c{c}"} for c in cat_ids], "annotations": []}
    results = []
    ann_id = 1
    for i in range(num_images):
        img_id = int(1000 + 3 * i)  # not contiguous, not from 1
        w, h = int(rng.randint(80, 400)), int(rng.randint(80, 400))
        gt["images"].append({"id": img_id, "width": w, "height": h, "file_name": f"img{i}.jpg"})
        objects = [] if i % 7 == 0 else range(int(rng.randint(1, 9)))
        for _ in objects:
            cat = int(rng.choice(cat_ids))
            scale = float(rng.choice([20, 60, 150]))  # small, medium, large
            box = random_box(rng, w, h, scale)
            crowd = int(rng.uniform() < crowd_fraction)
            ann = {"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": box, "iscrowd": crowd}
            ann_id += 1
            if masks:
                if crowd:
                    m = np.zeros((h, w), bool)
                    x0, y0 = int(box[0]), int(box[1])
                    x1, y1 = min(w, x0 + max(1, int(box[2]))), min(h, y0 + max(1, int(box[3])))
                    m[y0:y1, x0:x1] = rng.uniform(size=(y1 - y0, x1 - x0)) < 0.8
                    ann["segmentation"] = uncompressed_rle(m)
                    ann["area"] = float(m.sum())
                else:
                    parts = [polygon_in(rng, box, int(rng.randint(3, 12)))]
                    if rng.uniform() < 0.2:  # an object in two parts
                        parts.append(polygon_in(rng, random_box(rng, w, h, 30), 5))
                    ann["segmentation"] = parts
                    rles = mask_utils.frPyObjects(parts, h, w)
                    ann["area"] = float(mask_utils.area(mask_utils.merge(rles)))
            else:
                ann["area"] = float(box[2] * box[3]) * float(rng.uniform(0.6, 1.0))
            gt["annotations"].append(ann)
        if i % 8 == 3:
            continue
        img_anns = [a for a in gt["annotations"] if a["image_id"] == img_id]
        dets = []
        for a in img_anns:  # jittered copies of the ground truth, some twice
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                b = a["bbox"]
                j = [b[0] + rng.normal(0, b[2] * 0.08), b[1] + rng.normal(0, b[3] * 0.08),
                     b[2] * rng.uniform(0.8, 1.2), b[3] * rng.uniform(0.8, 1.2)]
                cat = a["category_id"] if rng.uniform() < 0.85 else int(rng.choice(cat_ids))
                dets.append((cat, [float(v) for v in j], a))
        n_fp = 130 if i == 5 else int(rng.randint(0, 6))
        for _ in range(n_fp):
            dets.append((int(rng.choice(cat_ids + [max(cat_ids) + 1])), random_box(rng, w, h, float(rng.choice([15, 50, 120]))), None))
        for cat, b, source in dets:
            r = {"image_id": img_id, "category_id": cat, "bbox": [round(v, 3) for v in b],
                 "score": round(float(rng.uniform(0.05, 1.0)), 2)}
            if masks:
                if source is not None:  # the ground truth's mask, shifted, with a few pixels flipped
                    seg = source["segmentation"]
                    rle = mask_utils.frPyObjects(seg, h, w)
                    g = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle)
                    m = np.roll(g, (int(rng.randint(-2, 3)), int(rng.randint(-2, 3))), axis=(0, 1))
                    bx = [int(v) for v in source["bbox"]]
                    flip = np.zeros(m.shape, bool)  # noise inside the object's box only
                    flip[bx[1]:bx[1] + bx[3] + 1, bx[0]:bx[0] + bx[2] + 1] = True
                    flip &= rng.uniform(size=m.shape) < 0.05
                    m = np.where(flip, 1 - m, m).astype(np.uint8)
                else:
                    m = np.zeros((h, w), np.uint8)
                    x0, y0 = max(0, int(b[0])), max(0, int(b[1]))
                    x1, y1 = min(w, int(b[0] + b[2]) + 1), min(h, int(b[1] + b[3]) + 1)
                    if x1 > x0 and y1 > y0:
                        m[y0:y1, x0:x1] = rng.uniform(size=(y1 - y0, x1 - x0)) < 0.85
                rle = mask_utils.encode(np.asfortranarray(m))
                r["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
            results.append(r)
    return gt, results


@unittest.skipUnless(os.path.exists(EVAL), f"{EVAL} not built")
class CocoEvalTest(unittest.TestCase):
    def setUp(self):
        _peers.require_or_skip("pycocotools", self.skipTest)
        self.tmp = tempfile.TemporaryDirectory(prefix="rcnn-coco-eval-")

    def tearDown(self):
        self.tmp.cleanup()

    def pycocotools(self, gt_path, res_path, iou_type):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(gt_path)
            dt = gt.loadRes(res_path)
            e = COCOeval(gt, dt, iou_type)
            e.evaluate()
            e.accumulate()
            e.summarize()
        per_cat = {}
        for k, cat in enumerate(e.params.catIds):
            p = e.eval["precision"][:, :, k, 0, -1]
            per_cat[str(cat)] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        return [float(s) for s in e.stats], per_cat

    def check(self, name, gt, results, iou_types):
        gt_path = os.path.join(self.tmp.name, f"{name}_gt.json")
        res_path = os.path.join(self.tmp.name, f"{name}_res.json")
        out_path = os.path.join(self.tmp.name, f"{name}_eval.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(res_path, "w") as f:
            json.dump(results, f)
        p = subprocess.run([EVAL, "-a", gt_path, "-r", res_path, "-t", "both" if len(iou_types) == 2 else iou_types[0],
                            "--per-category", "--json", out_path], capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out_path) as f:
            ours = json.load(f)
        for iou_type in iou_types:
            ref_stats, ref_cat = self.pycocotools(gt_path, res_path, iou_type)
            got = ours[iou_type]
            with self.subTest(set=name, iou_type=iou_type):
                for s, ref in zip(STATS, ref_stats):
                    self.assertAlmostEqual(got[s], ref, delta=1e-12, msg=f"{name} {iou_type} {s}")
                self.assertEqual(set(got["per_category_AP"]), set(ref_cat))
                for cat, ref in ref_cat.items():
                    self.assertAlmostEqual(got["per_category_AP"][cat], ref, delta=1e-12,
                                           msg=f"{name} {iou_type} category {cat}")
                # The sets exercise what they claim: some settings are valid, some -1.
                self.assertTrue(any(v > 0 for v in ref_stats), ref_stats)
            print(f"[coco-eval] {name} {iou_type}: AP {got['AP']:.6f} AP50 {got['AP50']:.6f} "
                  f"AR100 {got['AR100']:.6f} (pycocotools {ref_stats[0]:.6f} {ref_stats[1]:.6f} {ref_stats[8]:.6f})",
                  file=sys.stderr)
        return p.stdout

    def test_boxes_with_crowds_and_empty_images(self):
        gt, results = make_set(seed=1, num_images=60, num_categories=6, masks=False)
        self.assertTrue(any(a["iscrowd"] for a in gt["annotations"]))
        out = self.check("boxes", gt, results, ["bbox"])
        self.assertIn("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]", out)

    def test_many_categories(self):
        gt, results = make_set(seed=2, num_images=40, num_categories=80, masks=False, crowd_fraction=0.05)
        self.check("many_categories", gt, results, ["bbox"])

    def test_masks_polygons_and_rle(self):
        gt, results = make_set(seed=3, num_images=30, num_categories=5, masks=True)
        self.assertTrue(any(isinstance(a["segmentation"], dict) for a in gt["annotations"]))
        self.check("masks", gt, results, ["bbox", "segm"])

    def test_mask_results_without_boxes(self):
        # Areas from the masks (COCO.loadRes when the first result has no bbox).
        gt, results = make_set(seed=4, num_images=20, num_categories=3, masks=True)
        for r in results:
            del r["bbox"]
        self.check("masks_only", gt, results, ["segm"])

    def test_errors(self):
        gt, results = make_set(seed=5, num_images=3, num_categories=2, masks=False)
        results.append({"image_id": 99999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5})
        gt_path = os.path.join(self.tmp.name, "gt.json")
        res_path = os.path.join(self.tmp.name, "res.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(res_path, "w") as f:
            json.dump(results, f)
        p = subprocess.run([EVAL, "-a", gt_path, "-r", res_path], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("image_id 99999 is not an image of the annotation file", p.stderr)
        p = subprocess.run([EVAL, "-a", os.path.join(self.tmp.name, "nope.json"), "-r", res_path],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nope.json: cannot open the COCO annotation file", p.stderr)


if __name__ == "__main__":
    unittest.main()
