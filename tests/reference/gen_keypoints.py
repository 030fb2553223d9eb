#!/usr/bin/python3
"""Keypoint R-CNN references, made by a real Detectron2 v0.6 during the test run (issue 13).

Run by the test build before the C++ tests (cwd = repository root, PYTHONPATH=tools):

    /usr/bin/python3 tests/reference/gen_keypoints.py --output build/reference/gen_keypoints

The Detectron2 model zoo's ``COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x`` at narrow widths (the
fixtures' plus 8 x 64-channel keypoint convolutions), with seeded weights, exported by
``tools/export_detectron2.py``'s real code path (a ``keypoint_rcnn`` bundle: ``keypoint_head.pt``
and the ``keypoint_head`` object of model.json, docs/reference/bundle-format.md), and run by
``DefaultPredictor`` and stage by stage on real photos, exactly as gen_detectron2.py does (same
stamps, skip marker, case files), plus, per case:

    keypoint_features.npy   [D, C, P, P] roi_heads.keypoint_pooler on the detection boxes
    keypoint_level.npy      int64 [D] their RoI level (index into backbone.roi_levels)
    keypoint_heatmaps.npy   [D, K, S, S] keypoint_head.layers: the heatmap logits (the module's output)
    keypoints_resized.npy   [D, K, 3] keypoint_rcnn_inference (heatmaps_to_keypoints): x, y, score
                            in the resized frame
    detections.json         each detection's "keypoints": [[x, y, score] * K] in the original image
                            (detector_postprocess scales x and y)
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_detectron2 as d2  # noqa: E402

GENERATOR = "tests/reference/gen_keypoints.py"

#: Narrow keypoint head: CONV_DIMS 8 x 64 (512 in the config).
KEYPOINT_NARROW = ["MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "(64, 64, 64, 64, 64, 64, 64, 64)"]

#: One class (person): a lower background bias than the 80-class recipe's 7.5 keeps tens of
#: detections on these photos.
BUNDLES = [
    dict(name="keypoint_rcnn_R_50_FPN_shortest_edge", config="COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml",
         opts=d2.NARROW + KEYPOINT_NARROW + d2.SHORT, export=[], photos=["fruits", "messi5"],
         background_bias=4.0, keypoint_logits_std=1.0, min_detections=10),
]


def log(message: str) -> None:
    print(f"[gen_keypoints] {message}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return d2.run(argv, doc=__doc__, generator=GENERATOR, bundles=BUNDLES, log=log,
                  scripts=[os.path.abspath(__file__)])


if __name__ == "__main__":
    sys.exit(main())
