"""Channels-last feature maps end to end: a fixture bundle re-exported with its RoI feature
maps channels-last (``rcnn_export.core.ChannelsLastFeatures``, what ``--features-layout nhwc``
bakes into backbone_rpn; ``backbone.features_layout: "nhwc"`` in model.json) gives exactly the
detections and masks of the original bundle through rcnn-detect: the executor hands the NHWC
maps over without a copy and RoIAlign reads them (bit-identical pooling either way).

Needs the built binary: RCNN_BUILD_DIR (default: build) / bin / rcnn-detect."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import torch  # noqa: E402

from rcnn_export import core  # noqa: E402

BUILD = os.environ.get("RCNN_BUILD_DIR", os.path.join(ROOT, "build"))
DETECT = os.path.join(BUILD, "bin", "rcnn-detect")
BUNDLE = os.path.join(ROOT, "tests", "data", "detectron2", "narrow_mask_rcnn_r101_fpn_shortest_edge")


def channels_last_copy(src: str, dst: str) -> None:
    """`src` with backbone_rpn wrapped so that its feature maps come out channels-last."""
    shutil.copytree(src, dst)
    with open(os.path.join(src, "model.json")) as f:
        model_json = json.load(f)
    entry = model_json["modules"]["backbone_rpn"]
    inner = torch.jit.load(os.path.join(src, entry["file"]))
    example = torch.zeros(1, 3, 320, 448)
    with torch.no_grad():
        traced = torch.jit.trace(core.ChannelsLastFeatures(inner), example, strict=False, check_trace=False)
        for f in traced(example)[2]:
            assert f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous()
    path = os.path.join(dst, entry["file"])
    torch.jit.save(traced, path)
    with open(path, "rb") as f:
        entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
    model_json["backbone"]["features_layout"] = "nhwc"
    with open(os.path.join(dst, "model.json"), "w") as f:
        json.dump(model_json, f, indent=1)


@unittest.skipUnless(os.path.exists(DETECT), f"{DETECT} not built")
class FeaturesLayoutTest(unittest.TestCase):
    def test_nhwc_bundle_gives_the_same_detections_and_masks(self):
        # The photos of the Faster R-CNN fixture of the same weights (the mask bundle's cases
        # hold no copy).
        cases = os.path.join(os.path.dirname(BUNDLE), "narrow_r101_fpn_shortest_edge", "cases")
        images = [os.path.join(cases, c, "image.jpg") for c in sorted(os.listdir(cases))]
        with tempfile.TemporaryDirectory() as tmp:
            nhwc = os.path.join(tmp, "nhwc")
            channels_last_copy(BUNDLE, nhwc)
            outputs = []
            for bundle in (BUNDLE, nhwc):
                p = subprocess.run([DETECT, "--model", bundle, "--threads", "2", *images],
                                   capture_output=True, text=True, timeout=600)
                self.assertEqual(p.returncode, 0, p.stderr)
                outputs.append(json.loads(p.stdout))
        nchw_results, nhwc_results = outputs
        self.assertEqual(len(nchw_results), len(images))
        self.assertTrue(any(r["detections"] for r in nchw_results), "no detections: nothing compared")
        for a, b in zip(nchw_results, nhwc_results):
            with self.subTest(image=a["image"]):
                self.assertEqual(a["detections"], b["detections"])  # boxes, scores, classes, RLE masks


if __name__ == "__main__":
    unittest.main()
