"""export_detectron2's model.json for Detectron2's C4 and DC5 models (no FPN; issue 13).

Pure mapping tests over plain-dict configs (no Detectron2 needed); the real export of the model
zoo configs, run against a real Detectron2, is tests/reference/gen_detectron2.py's (C++ parity
tests: tests/parity/test_detectron2_live.cpp).
"""
import copy
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import torch  # noqa: E402

from rcnn_export import core  # noqa: E402
from rcnn_export import detectron2 as ed2  # noqa: E402


def c4_cfg(mask=False):
    """COCO-Detection/faster_rcnn_R_50_C4_3x.yaml (or the Mask R-CNN C4) as Detectron2 v0.6
    resolves it: defaults (RPN and ROI_HEADS on res4, ROI_BOX_HEAD 14x14 ROIAlignV2) +
    Base-RCNN-C4.yaml (Res5ROIHeads, PRE/POST_NMS_TOPK_TEST 6000 / 1000)."""
    cfg = {
        "INPUT": {"FORMAT": "BGR", "MIN_SIZE_TEST": 800, "MAX_SIZE_TEST": 1333},
        "DATASETS": {"TEST": ("coco_2017_val",)},
        "TEST": {"DETECTIONS_PER_IMAGE": 100},
        "MODEL": {
            "META_ARCHITECTURE": "GeneralizedRCNN", "MASK_ON": mask, "KEYPOINT_ON": False,
            "PIXEL_MEAN": [103.530, 116.280, 123.675], "PIXEL_STD": [1.0, 1.0, 1.0],
            "BACKBONE": {"NAME": "build_resnet_backbone"},
            "RESNETS": {"DEPTH": 50, "OUT_FEATURES": ["res4"], "RES2_OUT_CHANNELS": 256, "RES5_DILATION": 1},
            "FPN": {"IN_FEATURES": [], "OUT_CHANNELS": 256},
            "ANCHOR_GENERATOR": {"NAME": "DefaultAnchorGenerator", "SIZES": [[32, 64, 128, 256, 512]],
                                 "ASPECT_RATIOS": [[0.5, 1.0, 2.0]], "OFFSET": 0.0},
            "PROPOSAL_GENERATOR": {"NAME": "RPN", "MIN_SIZE": 0},
            "RPN": {"HEAD_NAME": "StandardRPNHead", "IN_FEATURES": ["res4"], "PRE_NMS_TOPK_TEST": 6000,
                    "POST_NMS_TOPK_TEST": 1000, "NMS_THRESH": 0.7, "BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0)},
            "ROI_HEADS": {"NAME": "Res5ROIHeads", "IN_FEATURES": ["res4"], "NUM_CLASSES": 80,
                          "SCORE_THRESH_TEST": 0.05, "NMS_THRESH_TEST": 0.5},
            "ROI_BOX_HEAD": {"NAME": "", "POOLER_RESOLUTION": 14, "POOLER_SAMPLING_RATIO": 0,
                             "POOLER_TYPE": "ROIAlignV2", "BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),
                             "CLS_AGNOSTIC_BBOX_REG": False},
            # Unused by Res5ROIHeads' pooling (it pools masks with the box pooler): a 7 here
            # must not reach model.json.
            "ROI_MASK_HEAD": {"NAME": "MaskRCNNConvUpsampleHead", "POOLER_RESOLUTION": 7,
                              "POOLER_SAMPLING_RATIO": 2, "POOLER_TYPE": "ROIAlign", "NUM_CONV": 0,
                              "CONV_DIM": 256, "CLS_AGNOSTIC_MASK": False},
        },
    }
    return cfg


def dc5_cfg():
    """COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml: Base-RCNN-DilatedC5.yaml (res5 with
    RES5_DILATION 2, RPN and StandardROIHeads on res5, 2FC head 7x7)."""
    cfg = c4_cfg()
    m = cfg["MODEL"]
    m["RESNETS"].update(OUT_FEATURES=["res5"], RES5_DILATION=2)
    m["RPN"]["IN_FEATURES"] = ["res5"]
    m["ROI_HEADS"].update(NAME="StandardROIHeads", IN_FEATURES=["res5"])
    m["ROI_BOX_HEAD"].update(NAME="FastRCNNConvFCHead", NUM_FC=2, POOLER_RESOLUTION=7)
    return cfg


def classes():
    return [f"c{i}" for i in range(80)]


class C4Dc5ModelJsonTest(unittest.TestCase):
    def test_c4_one_feature_map(self):
        got = ed2.model_json_from_cfg(c4_cfg(), config="x", classes=classes())
        self.assertEqual(got["backbone"], {"rpn_levels": ["res4"], "roi_levels": ["res4"], "strides": {"res4": 16},
                                           "channels": 1024})
        self.assertEqual(got["input"]["size_divisibility"], 0)  # a plain ResNet pads nothing
        self.assertEqual(core.anchors_per_level(got), [15])
        self.assertEqual((got["rpn"]["pre_nms_topk"], got["rpn"]["post_nms_topk"]), (6000, 1000))
        heads = got["roi_heads"]
        self.assertEqual((heads["pooler_resolution"], heads["sampling_ratio"], heads["aligned"]), (14, 0, True))
        self.assertNotIn("mask_head", got)

    def test_c4_mask_head_uses_the_box_pooler(self):
        got = ed2.model_json_from_cfg(c4_cfg(mask=True), config="x", classes=classes())
        mask = got["mask_head"]
        self.assertEqual((mask["pooler_resolution"], mask["sampling_ratio"], mask["aligned"]), (14, 0, True))
        self.assertEqual(mask["mask_size"], 14)  # res5 halves 14 to 7, the deconvolution doubles it
        self.assertEqual(core.mask_size(mask), 14)
        self.assertEqual(ed2.res5_mask_size(7), 8)
        logits = torch.zeros(3, 80, 14, 14)
        core.validate_mask_head([("mask_logits", logits)], got, 3)
        with self.assertRaisesRegex(core.ExportError, "mask_size"):
            core.validate_mask_head([("mask_logits", torch.zeros(3, 80, 28, 28))], got, 3)

    def test_dc5_res5_at_stride_16(self):
        got = ed2.model_json_from_cfg(dc5_cfg(), config="x", classes=classes())
        self.assertEqual(got["backbone"], {"rpn_levels": ["res5"], "roi_levels": ["res5"], "strides": {"res5": 16},
                                           "channels": 2048})
        self.assertEqual(got["roi_heads"]["pooler_resolution"], 7)
        # The backbone's output_shape wins over the config (what main() passes).
        got = ed2.model_json_from_cfg(dc5_cfg(), config="x", classes=classes(), output_shape={"res5": (512, 16)},
                                      size_divisibility=0)
        self.assertEqual((got["backbone"]["channels"], got["backbone"]["strides"]), (512, {"res5": 16}))

    def test_check_shapes_without_divisibility(self):
        got = ed2.model_json_from_cfg(c4_cfg(), config="x", classes=classes())
        first, second = core.default_check_shapes(got)
        self.assertNotEqual(first, second)

    def test_unsupported(self):
        for edit, pattern in (
                (lambda m: m["ROI_HEADS"].update(IN_FEATURES=["res4", "res5"]), "pools one feature map"),
                (lambda m: m.update(KEYPOINT_ON=True), "KEYPOINT_ON with Res5ROIHeads"),
                (lambda m: m["ROI_HEADS"].update(NAME="MyROIHeads"), "ROI_HEADS.NAME"),
                (lambda m: m["ROI_BOX_HEAD"].update(POOLER_TYPE="ROIPool"), "POOLER_TYPE")):
            cfg = copy.deepcopy(c4_cfg())
            edit(cfg["MODEL"])
            with self.assertRaisesRegex(core.ExportError, pattern):
                ed2.model_json_from_cfg(cfg, config="x", classes=classes())
        # C4's mask pooling is the box pooler's: ROI_MASK_HEAD.POOLER_TYPE does not matter.
        cfg = c4_cfg(mask=True)
        cfg["MODEL"]["ROI_MASK_HEAD"]["POOLER_TYPE"] = "ROIPool"
        ed2.model_json_from_cfg(cfg, config="x", classes=classes())


if __name__ == "__main__":
    unittest.main()
