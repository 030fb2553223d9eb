"""Keypoint R-CNN in the exporters (issue 13): the ``keypoint_rcnn`` architecture, the
``keypoint_head`` object of model.json and the ``keypoint_head`` module, for torchvision's
keypointrcnn_resnet50_fpn and Detectron2's KRCNNConvDeconvUpsampleHead configs. The real
exports, run against the frameworks on photos, are the reference generators
tests/reference/gen_keypoints.py (Detectron2) and gen_tv_keypoints.py (torchvision)."""
import copy
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from rcnn_export import core  # noqa: E402
from rcnn_export import detectron2 as ed2  # noqa: E402
from rcnn_export import torchvision as etv  # noqa: E402
from test_exporters import r101_fpn_cfg  # noqa: E402


def keypoint_cfg():
    """COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml's keys that model.json reads (as the
    R-101 box config, one class, KEYPOINT_ON and ROI_KEYPOINT_HEAD's defaults)."""
    cfg = copy.deepcopy(r101_fpn_cfg(320, 533))
    cfg["MODEL"]["KEYPOINT_ON"] = True
    cfg["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] = 1
    cfg["DATASETS"]["TEST"] = ("keypoints_coco_2017_val",)
    cfg["MODEL"]["ROI_KEYPOINT_HEAD"] = {"NAME": "KRCNNConvDeconvUpsampleHead", "POOLER_RESOLUTION": 14,
                                         "POOLER_SAMPLING_RATIO": 0, "POOLER_TYPE": "ROIAlignV2",
                                         "NUM_KEYPOINTS": 17}
    return cfg


class Detectron2KeypointJsonTest(unittest.TestCase):
    def test_keypoint_rcnn(self):
        names = etv.COCO_PERSON_KEYPOINTS
        mj = ed2.model_json_from_cfg(keypoint_cfg(), config="x", classes=["person"], static_rois=1000,
                                     keypoint_names=names, keypoint_skeleton=[[0, 1], [1, 3]], category_ids=[1])
        self.assertEqual(mj["architecture"], "keypoint_rcnn")
        self.assertEqual(list(mj)[-4:], ["keypoint_head", "postprocess", "classes", "category_ids"])
        kp = mj["keypoint_head"]
        self.assertEqual((kp["pooler_resolution"], kp["sampling_ratio"], kp["aligned"]), (14, 0, True))
        self.assertEqual((kp["num_keypoints"], kp["heatmap_size"], kp["decode"]), (17, 56, "detectron2"))
        self.assertEqual(kp["keypoint_names"], names)
        self.assertEqual(kp["skeleton"], [[0, 1], [1, 3]])
        self.assertEqual(mj["modules"]["keypoint_head"], {"file": "keypoint_head.pt", "static_rois": 100})
        self.assertNotIn("mask_head", mj)
        core.format_json(mj)  # serialisable

    def test_boxes_only_and_unsupported(self):
        cfg = keypoint_cfg()
        self.assertEqual(ed2.model_json_from_cfg(cfg, config="x", classes=["person"], boxes_only=True)["architecture"],
                         "faster_rcnn")
        default = ed2.model_json_from_cfg(cfg, config="x", classes=["person"])["keypoint_head"]
        self.assertEqual(default["keypoint_names"][16], "keypoint_16")
        with self.assertRaisesRegex(core.ExportError, "NUM_KEYPOINTS"):
            ed2.model_json_from_cfg(cfg, config="x", classes=["person"], keypoint_names=["nose"])
        both = keypoint_cfg()
        both["MODEL"]["MASK_ON"] = True
        with self.assertRaisesRegex(core.ExportError, "MASK_ON and MODEL.KEYPOINT_ON"):
            ed2.model_json_from_cfg(both, config="x", classes=["person"])
        bad = keypoint_cfg()
        bad["MODEL"]["ROI_KEYPOINT_HEAD"]["NAME"] = "MyHead"
        with self.assertRaisesRegex(core.ExportError, "ROI_KEYPOINT_HEAD.NAME"):
            ed2.model_json_from_cfg(bad, config="x", classes=["person"])


class TorchvisionKeypointTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = etv.build_model("keypointrcnn_resnet50_fpn", num_classes=2, min_size=160, max_size=224)
        etv.apply_seed_recipe(cls.model, 0, name="keypointrcnn_resnet50_fpn")

    def test_model_json(self):
        mj = etv.model_json_for(self.model, "keypointrcnn_resnet50_fpn", ["person"], category_ids=[1])
        self.assertEqual(mj["architecture"], "keypoint_rcnn")
        kp = mj["keypoint_head"]
        self.assertEqual((kp["pooler_resolution"], kp["sampling_ratio"], kp["aligned"]), (14, 2, False))
        self.assertEqual((kp["num_keypoints"], kp["heatmap_size"], kp["decode"]), (17, 56, "torchvision"))
        self.assertEqual(len(kp["skeleton"]), 19)
        self.assertTrue(all(0 <= i < 17 for pair in kp["skeleton"] for i in pair))
        self.assertEqual(mj["modules"]["keypoint_head"]["file"], "keypoint_head.pt")
        self.assertEqual(mj["category_ids"], [1])

    def test_keypoint_head_module_is_torchvisions_keypoint_branch(self):
        """KeypointHead on pooled boxes = roi_heads' keypoint_head + keypoint_predictor, and the
        seed recipe gives heatmaps whose peaks differ between keypoints and boxes."""
        heads = self.model.roi_heads
        image = torch.rand(1, 3, 160, 224)
        boxes = torch.tensor([[10.0, 12.0, 90.0, 100.0], [50.0, 20.0, 200.0, 150.0], [100.0, 60.0, 140.0, 80.0]])
        with torch.no_grad():
            features = self.model.backbone(image)
            pooled = heads.keypoint_roi_pool(features, [boxes], [(160, 224)])
            got = etv.KeypointHead(self.model)(pooled)
            want = heads.keypoint_predictor(heads.keypoint_head(pooled))
        self.assertEqual(list(got.shape), [3, 17, 56, 56])
        self.assertTrue(torch.equal(got, want))
        peaks = got.flatten(2).argmax(dim=2)
        self.assertGreater(len(set(peaks.flatten().tolist())), 40)  # of 51: not one place for all
        specs = core.standard_specs(etv.model_json_for(self.model, "keypointrcnn_resnet50_fpn", ["person"]),
                                    etv.BackboneRPN(self.model, ["0", "1", "2", "3"]), etv.BoxHead(self.model),
                                    device=torch.device("cpu"), keypoint_head=etv.KeypointHead(self.model))
        self.assertEqual([s.key for s in specs], ["backbone_rpn", "box_head", "keypoint_head"])
        self.assertEqual([list(x.shape) for x in specs[2].inputs], [[29, 256, 14, 14], [6, 256, 14, 14]])


if __name__ == "__main__":
    unittest.main()
