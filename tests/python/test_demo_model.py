"""The shipped demo model (models/shapes, trained by tools/demo/train_shapes.py) on a held-out
generated set: mAP@0.5 >= 0.9, and the C++ runtime's mAPs equal torchvision's eager model's
(within 1e-5; tools/demo/eval_shapes.py computes COCO-style AP). About 12 s.

Needs the built binary: RCNN_BUILD_DIR (default: build) / bin / rcnn-detect."""
import os
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "demo"))
BUILD = os.environ.get("RCNN_BUILD_DIR", os.path.join(ROOT, "build"))
DETECT = os.path.join(BUILD, "bin", "rcnn-detect")
BUNDLE = os.path.join(ROOT, "models", "shapes")
#: Held-out set: seed 1000 (training uses seed 0), as `make eval-demo` and models/shapes/README.md.
SEED, COUNT = 1000, 100


@unittest.skipUnless(os.path.exists(DETECT), f"{DETECT} not built")
class DemoModelTest(unittest.TestCase):
    def test_map_and_parity(self):
        import eval_shapes

        with tempfile.TemporaryDirectory() as tmp:
            r = eval_shapes.evaluate(BUNDLE, DETECT, SEED, COUNT, photo=False, threads=2, workdir=tmp)
        eval_shapes.print_report(r)
        tv, cpp = r["torchvision"], r["cpp"]
        self.assertGreaterEqual(cpp["map50"], 0.9)
        self.assertGreaterEqual(tv["map50"], 0.9)
        # equal up to a detection whose IoU sits on a threshold (measured: exactly equal)
        self.assertAlmostEqual(cpp["map50"], tv["map50"], delta=1e-5)
        self.assertAlmostEqual(cpp["map"], tv["map"], delta=1e-5)
        self.assertEqual(r["agreement"]["unmatched"], 0, r["agreement"])

    def test_coco_ap(self):
        """The AP code on hand-made cases."""
        import numpy as np

        import eval_shapes

        class GT:
            def __init__(self, boxes, labels):
                self.boxes, self.labels = np.array(boxes, np.float32).reshape(-1, 4), np.array(labels)

        gt = [GT([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 1])]
        perfect = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40]]), "scores": np.array([0.9, 0.8]),
                    "labels": np.array([1, 1])}]
        self.assertAlmostEqual(eval_shapes.coco_map(gt, perfect, 1)["map"], 1.0)
        # one of two found, plus a false positive ranked first: precision 1/2 up to recall 1/2
        half = [{"boxes": np.array([[50, 50, 60, 60], [0, 0, 10, 10]]), "scores": np.array([0.9, 0.8]),
                 "labels": np.array([1, 1])}]
        self.assertAlmostEqual(eval_shapes.coco_map(gt, half, 1)["map50"], 51 * 0.5 / 101)
        # IoU 90/110 = 0.818 (box shifted by 1 px in x): a match for t <= 0.8 only
        shifted = [{"boxes": np.array([[1, 0, 11, 10], [20, 20, 40, 40]]), "scores": np.array([0.9, 0.8]),
                    "labels": np.array([1, 1])}]
        m = eval_shapes.coco_map(gt, shifted, 1)
        self.assertAlmostEqual(m["map50"], 1.0)
        iou = 90 / 110
        expected = np.mean([1.0 if t <= iou + 1e-12 else 51 * 0.5 / 101 for t in np.linspace(0.5, 0.95, 10)])
        self.assertAlmostEqual(m["map"], expected)
        # IoU exactly 0.5 (50 / 100) is a match at t = 0.5 (>=, as COCOeval), at no other t
        edge = [{"boxes": np.array([[0, 0, 10, 5]]), "scores": np.array([0.9]), "labels": np.array([1])}]
        m = eval_shapes.coco_map([GT([[0, 0, 10, 10]], [1])], edge, 1)
        self.assertAlmostEqual(m["map50"], 1.0)
        self.assertAlmostEqual(m["map"], 0.1)

    def test_coco_ap_matches_cocoeval(self):
        """Random cases (jittered, duplicate and wrong-class boxes, tied scores) against a
        line-by-line port of pycocotools' COCOeval.evaluateImg + accumulate (bbox, no crowd,
        area "all", maxDets 100)."""
        import numpy as np

        import eval_shapes

        class GT:
            def __init__(self, boxes, labels):
                self.boxes, self.labels = boxes, labels

        T, R = np.linspace(0.5, 0.95, 10), np.linspace(0.0, 1.0, 101)

        def cocoeval(gts, dets, K):
            precision = -np.ones((len(T), len(R), K))
            for k in range(K):
                E = []
                for g, d in zip(gts, dets):
                    gb, m = g.boxes[g.labels == k + 1], d["labels"] == k + 1
                    if len(gb) == 0 and not m.any():
                        continue
                    inds = np.argsort(-d["scores"][m], kind="mergesort")[:100]
                    db, ds = d["boxes"][m][inds], d["scores"][m][inds]
                    ious = eval_shapes.box_iou(db, gb)
                    dtm, gtm = np.zeros((len(T), len(db))), np.zeros((len(T), len(gb)))
                    for tind, t in enumerate(T):
                        for dind in range(len(db)):
                            iou, mm = min([t, 1 - 1e-10]), -1
                            for gind in range(len(gb)):
                                if gtm[tind, gind] > 0 or ious[dind, gind] < iou:
                                    continue
                                iou, mm = ious[dind, gind], gind
                            if mm >= 0:
                                dtm[tind, dind], gtm[tind, mm] = 1, 1
                    E.append((ds, dtm, len(gb)))
                npig = sum(e[2] for e in E)
                if npig == 0:
                    continue
                inds = np.argsort(-np.concatenate([e[0] for e in E]), kind="mergesort")
                dtm = np.concatenate([e[1] for e in E], axis=1)[:, inds]
                for t, (tp, fp) in enumerate(zip(np.cumsum(dtm, axis=1), np.cumsum(1 - dtm, axis=1))):
                    rc, pr, q = tp / npig, (tp / (fp + tp + np.spacing(1))).tolist(), [0.0] * len(R)
                    for i in range(len(tp) - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    try:
                        for ri, pi in enumerate(np.searchsorted(rc, R, side="left")):
                            q[ri] = pr[pi]
                    except IndexError:
                        pass
                    precision[t, :, k] = q
            s, s50 = precision, precision[0]
            return float(np.mean(s[s > -1])), float(np.mean(s50[s50 > -1]))

        rng = np.random.default_rng(0)
        K = 3
        for _ in range(20):
            gts, dets = [], []
            for _ in range(int(rng.integers(1, 8))):
                n = int(rng.integers(0, 6))
                xy = rng.uniform(0, 100, (n, 2))
                gb, gl = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1), rng.integers(1, K + 1, n)
                found = rng.random(n) < 0.8
                m = int(rng.integers(0, 6))
                xy2 = rng.uniform(0, 100, (m, 2))
                db = np.concatenate([gb[found] + rng.normal(0, 3, (found.sum(), 4)),
                                     np.concatenate([xy2, xy2 + rng.uniform(5, 40, (m, 2))], 1),
                                     gb[:1] + rng.normal(0, 2, (min(n, 1), 4))])
                dl = np.concatenate([np.where(rng.random(found.sum()) < 0.85, gl[found],
                                              rng.integers(1, K + 1, found.sum())),
                                     rng.integers(1, K + 1, m), gl[:1]])
                # Jitter can invert a box: COCOeval ignores an unmatched box of negative area
                # (outside area "all"), which the port above leaves out.
                db[:, 2:] = np.maximum(db[:, 2:], db[:, :2])
                gts.append(GT(gb, gl))
                dets.append({"boxes": db, "scores": np.round(rng.random(len(db)), 1), "labels": dl})
            if not any(len(g.labels) for g in gts):
                continue  # COCOeval's mean of nothing is nan; coco_map says 0
            ours = eval_shapes.coco_map(gts, dets, K)
            ref_map, ref_map50 = cocoeval(gts, dets, K)
            self.assertAlmostEqual(ours["map"], ref_map, places=12)
            self.assertAlmostEqual(ours["map50"], ref_map50, places=12)


if __name__ == "__main__":
    unittest.main()
