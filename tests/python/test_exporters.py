"""The Python exporters (tools/): Detectron2 cfg -> model.json against the fixture bundles,
the traced-vs-eager check, the target errors, --help.

    /usr/bin/python3 -m unittest discover -s tests/python
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
D2_DATA = os.path.join(ROOT, "tests", "data", "detectron2")
sys.path.insert(0, TOOLS)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from rcnn_export import detectron2 as ed2  # noqa: E402
from rcnn_export import torchvision as etv  # noqa: E402
from rcnn_export import core  # noqa: E402

NARROW_OPTS = ("MODEL.RESNETS.STEM_OUT_CHANNELS=16, MODEL.RESNETS.RES2_OUT_CHANNELS=64, "
               "MODEL.RESNETS.WIDTH_PER_GROUP=16, MODEL.FPN.OUT_CHANNELS=32, MODEL.ROI_BOX_HEAD.FC_DIM=128")


def fixture_text(bundle):
    with open(os.path.join(D2_DATA, bundle, "model.json"), encoding="utf-8") as f:
        return f.read()


def r101_fpn_cfg(min_size, max_size):
    """COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml as Detectron2 v0.6 resolves it (defaults +
    Base-RCNN-FPN.yaml + the zoo file), with the fixtures' narrowing and test sizes."""
    return {
        "INPUT": {"FORMAT": "BGR", "MIN_SIZE_TEST": min_size, "MAX_SIZE_TEST": max_size},
        "DATASETS": {"TEST": ("coco_2017_val",)},
        "TEST": {"DETECTIONS_PER_IMAGE": 100},
        "MODEL": {
            "META_ARCHITECTURE": "GeneralizedRCNN",
            "MASK_ON": False,
            "KEYPOINT_ON": False,
            "PIXEL_MEAN": [103.530, 116.280, 123.675],
            "PIXEL_STD": [1.0, 1.0, 1.0],
            "BACKBONE": {"NAME": "build_resnet_fpn_backbone"},
            "RESNETS": {"DEPTH": 101, "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
                        "STEM_OUT_CHANNELS": 16, "RES2_OUT_CHANNELS": 64, "WIDTH_PER_GROUP": 16},
            "FPN": {"IN_FEATURES": ["res2", "res3", "res4", "res5"], "OUT_CHANNELS": 32},
            "ANCHOR_GENERATOR": {"NAME": "DefaultAnchorGenerator", "SIZES": [[32], [64], [128], [256], [512]],
                                 "ASPECT_RATIOS": [[0.5, 1.0, 2.0]], "OFFSET": 0.0},
            "PROPOSAL_GENERATOR": {"NAME": "RPN", "MIN_SIZE": 0},
            "RPN": {"HEAD_NAME": "StandardRPNHead", "IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
                    "PRE_NMS_TOPK_TEST": 1000, "POST_NMS_TOPK_TEST": 1000, "NMS_THRESH": 0.7,
                    "BBOX_REG_WEIGHTS": (1.0, 1.0, 1.0, 1.0)},
            "ROI_HEADS": {"NAME": "StandardROIHeads", "IN_FEATURES": ["p2", "p3", "p4", "p5"],
                          "NUM_CLASSES": 80, "SCORE_THRESH_TEST": 0.05, "NMS_THRESH_TEST": 0.5},
            "ROI_BOX_HEAD": {"NAME": "FastRCNNConvFCHead", "NUM_FC": 2, "FC_DIM": 128, "POOLER_RESOLUTION": 7,
                             "POOLER_SAMPLING_RATIO": 0, "POOLER_TYPE": "ROIAlignV2",
                             "BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0), "CLS_AGNOSTIC_BBOX_REG": False},
        },
    }


def mask_r101_fpn_cfg(min_size, max_size):
    """COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml as Detectron2 v0.6 resolves it, with
    the mask fixture's narrowing (tests/data/detectron2/FIXTURES.md: ROI_MASK_HEAD.CONV_DIM 32)."""
    cfg = r101_fpn_cfg(min_size, max_size)
    cfg["MODEL"]["MASK_ON"] = True
    cfg["MODEL"]["ROI_MASK_HEAD"] = {"NAME": "MaskRCNNConvUpsampleHead", "POOLER_RESOLUTION": 14,
                                     "POOLER_SAMPLING_RATIO": 0, "POOLER_TYPE": "ROIAlignV2", "NUM_CONV": 4,
                                     "CONV_DIM": 32, "NORM": "", "CLS_AGNOSTIC_MASK": False}
    return cfg


SHARED_FIXTURES = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "detectron2")


def coco80():
    """Detectron2's 80 COCO names = torchvision's 91 minus background and the "N/A" gaps."""
    return [c for c in etv.coco_categories()[1:] if c != "N/A"]


class Detectron2MappingTest(unittest.TestCase):
    def check_bundle(self, bundle, cfg, **kwargs):
        text = fixture_text(bundle)
        fixture = json.loads(text)
        self.assertEqual(fixture["classes"], coco80())
        got = ed2.model_json_from_cfg(cfg, config=fixture["source"]["config"], classes=coco80(),
                                      note=fixture["source"]["note"], **kwargs)
        self.assertEqual(got, fixture)
        self.assertEqual(core.format_json(got) + "\n", text)  # byte for byte, key order included

    def test_shortest_edge_fixture(self):
        self.check_bundle("narrow_r101_fpn_shortest_edge", r101_fpn_cfg(320, 533))

    def test_fixed800_fixture(self):
        self.check_bundle("narrow_r101_fpn_fixed800", r101_fpn_cfg(800, 1333), fixed_size=(800, 800),
                          static_rois=1000)

    def test_backbone_output_shape_overrides_names(self):
        shapes = {f"p{k}": (32, 2 ** k) for k in range(2, 7)}
        got = ed2.model_json_from_cfg(r101_fpn_cfg(320, 533), config="x", classes=coco80(),
                                      output_shape=shapes, size_divisibility=32)
        self.assertEqual(got["backbone"]["strides"], {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64})
        shapes["p3"] = (64, 8)
        with self.assertRaises(core.ExportError):
            ed2.model_json_from_cfg(r101_fpn_cfg(320, 533), config="x", classes=coco80(), output_shape=shapes)

    def test_mapping_options(self):
        cfg = r101_fpn_cfg(320, 533)
        cfg["INPUT"]["FORMAT"] = "RGB"
        cfg["MODEL"]["ROI_BOX_HEAD"]["POOLER_TYPE"] = "ROIAlign"
        cfg["MODEL"]["ROI_BOX_HEAD"]["CLS_AGNOSTIC_BBOX_REG"] = True
        cfg["MODEL"]["ROI_HEADS"]["SCORE_THRESH_TEST"] = 0.5
        got = ed2.model_json_from_cfg(cfg, config="x", classes=coco80(), fixed_size=(600, 1000))
        self.assertEqual(got["input"]["channel_order"], "RGB")
        self.assertFalse(got["roi_heads"]["aligned"])
        self.assertTrue(got["roi_heads"]["class_agnostic_box_regression"])
        self.assertEqual(got["roi_heads"]["score_threshold"], 0.5)
        self.assertEqual(got["input"]["resize"], {"mode": "fixed", "height": 600, "width": 1000})
        self.assertEqual(got["modules"]["backbone_rpn"]["static_shape"], [1, 3, 608, 1024])

    def test_unsupported_configs(self):
        for path, value in (("MODEL.ROI_HEADS.NAME", "CascadeROIHeads"), ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIPool"),
                            ("MODEL.KEYPOINT_ON", True), ("INPUT.FORMAT", "YUV-BT.601")):
            cfg = r101_fpn_cfg(320, 533)
            node = cfg
            *parents, last = path.split(".")
            for key in parents:
                node = node[key]
            node[last] = value
            with self.assertRaises(core.ExportError, msg=path):
                ed2.model_json_from_cfg(cfg, config="x", classes=coco80())
        with self.assertRaises(core.ExportError):
            ed2.model_json_from_cfg(r101_fpn_cfg(320, 533), config="x", classes=coco80()[:79])

    def test_mask_rcnn_fixture(self):
        bundle = "narrow_mask_rcnn_r101_fpn_shortest_edge"
        self.check_bundle(bundle, mask_r101_fpn_cfg(320, 533))
        shared = os.path.join(SHARED_FIXTURES, bundle, "model.json")
        if os.path.exists(shared):  # the committed copy is the shared fixture's, byte for byte
            with open(shared, encoding="utf-8") as f:
                self.assertEqual(f.read(), fixture_text(bundle))

    def test_mask_rcnn_boxes_only(self):
        """--boxes-only: the Faster R-CNN bundle of the same detector (the box fixture's model.json)."""
        fixture = json.loads(fixture_text("narrow_r101_fpn_shortest_edge"))
        got = ed2.model_json_from_cfg(mask_r101_fpn_cfg(320, 533), config=fixture["source"]["config"],
                                      classes=coco80(), note=fixture["source"]["note"], boxes_only=True)
        self.assertEqual(got, fixture)
        self.assertNotIn("mask_head", got["modules"])

    def test_mask_mapping_options(self):
        cfg = mask_r101_fpn_cfg(320, 533)
        cfg["MODEL"]["ROI_MASK_HEAD"].update(POOLER_TYPE="ROIAlign", POOLER_SAMPLING_RATIO=2, POOLER_RESOLUTION=7,
                                             CLS_AGNOSTIC_MASK=True)
        cfg["TEST"]["DETECTIONS_PER_IMAGE"] = 50
        got = ed2.model_json_from_cfg(cfg, config="x", classes=coco80(), fixed_size=(800, 800), static_rois=1000)
        self.assertEqual(got["architecture"], "mask_rcnn")
        self.assertEqual(list(got)[-3:], ["mask_head", "postprocess", "classes"])
        mask = got["mask_head"]
        self.assertFalse(mask["aligned"])
        self.assertEqual((mask["sampling_ratio"], mask["pooler_resolution"]), (2, 7))
        self.assertTrue(mask["class_agnostic"])
        self.assertEqual((mask["paste"], mask["mask_threshold"]), ("detectron2", 0.5))
        self.assertEqual(got["modules"]["box_head"]["static_rois"], 1000)
        self.assertEqual(got["modules"]["mask_head"], {"file": "mask_head.pt", "static_rois": 50})
        self.assertEqual(core.mask_channels(got), 1)
        for key, value in (("NAME", "MaskRCNNPointRendHead"), ("POOLER_TYPE", "ROIPool")):
            bad = mask_r101_fpn_cfg(320, 533)
            bad["MODEL"]["ROI_MASK_HEAD"][key] = value
            with self.assertRaisesRegex(core.ExportError, "ROI_MASK_HEAD", msg=key):
                ed2.model_json_from_cfg(bad, config="x", classes=coco80())
            # ... which --boxes-only does not need
            ed2.model_json_from_cfg(bad, config="x", classes=coco80(), boxes_only=True)


class JsonFormatTest(unittest.TestCase):
    def test_layout_and_round_trip(self):
        value = {"a": 1, "b": {"c": [1, 2.5, None], "d": {}}, "e": 1e-8, "f": [[1], [2]], "g": "x"}
        text = core.format_json(value)
        self.assertEqual(json.loads(text), value)
        self.assertIn('"c": [1, 2.5, null]', text)
        self.assertIn('"e": 1e-08', text)
        with self.assertRaises(core.ExportError):
            core.format_json({"x": float("nan")})


class Doubler(nn.Module):
    def forward(self, x):
        return (x * 2.0, x.sum(dim=1))


class ShapeBranch(nn.Module):
    """Traces to the branch of its example's shape: wrong on inputs of another width."""

    def forward(self, x):
        scale = 2.0 if x.shape[-1] > 8 else 3.0
        return (x * scale, x.mean(dim=1))


class Offset(nn.Module):
    def __init__(self, module, offset):
        super().__init__()
        self.module, self.offset = module, offset

    def forward(self, x):
        a, b = self.module(x)
        return (a + self.offset, b)


def tiny_spec(module, inputs):
    return core.ModuleSpec("box_head", module, inputs, core.flatten_box_head)


class TraceCheckTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.model_json = {"format": core.BUNDLE_FORMAT, "modules": {"box_head": {"file": "box_head.pt",
                                                                                 "static_rois": None}}}

    def test_good_module_is_written_with_sha256(self):
        inputs = [torch.randn(4, 6), torch.randn(3, 10)]
        report = core.export_bundle(self.tmp.name, self.model_json, [tiny_spec(Doubler(), inputs)])
        path = os.path.join(self.tmp.name, "box_head.pt")
        with open(os.path.join(self.tmp.name, "model.json")) as f:
            written = json.load(f)
        self.assertEqual(written["modules"]["box_head"]["sha256"], core.sha256_file(path))
        self.assertEqual([c["max_abs_diff"]["class_logits"] for c in report["box_head"]["checks"]], [0.0, 0.0])

    def test_shape_dependent_module_fails_on_second_shape(self):
        inputs = [torch.randn(4, 16), torch.randn(4, 6)]
        with self.assertRaisesRegex(core.ExportError, "does not reproduce"):
            core.export_bundle(self.tmp.name, self.model_json, [tiny_spec(ShapeBranch(), inputs)])
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "model.json")))

    def test_wrong_module_fails(self):
        traced = torch.jit.trace(Offset(Doubler(), 1e-2), torch.randn(4, 6), strict=False)
        spec = tiny_spec(Doubler(), [torch.randn(4, 6)])
        with self.assertRaisesRegex(core.ExportError, "class_logits: max \\|diff\\|"):
            core.check_module(spec, traced, "cpu", 1e-4)
        core.check_module(spec, torch.jit.trace(Offset(Doubler(), 1e-6), torch.randn(4, 6), strict=False),
                          "cpu", 1e-4)

    def test_contract_validation(self):
        mj = {"backbone": {"rpn_levels": ["p2", "p3"], "roi_levels": ["p2"], "strides": {"p2": 4, "p3": 8},
                           "channels": 8},
              "anchors": {"sizes": [[32], [64]], "aspect_ratios": [[0.5, 1.0, 2.0]]},
              "roi_heads": {"num_classes": 5, "background": "last", "class_agnostic_box_regression": False}}
        image = torch.zeros(1, 3, 64, 96)
        good = core.flatten_backbone_rpn(
            ([torch.zeros(1, 3, 16, 24), torch.zeros(1, 3, 8, 12)],
             [torch.zeros(1, 12, 16, 24), torch.zeros(1, 12, 8, 12)], [torch.zeros(1, 8, 16, 24)]),
            ["p2", "p3"], ["p2"])
        core.validate_backbone_rpn(good, mj, image)
        bad = list(good)
        bad[1] = ("rpn_objectness_p3", torch.zeros(1, 3, 9, 12))
        with self.assertRaisesRegex(core.ExportError, "stride"):
            core.validate_backbone_rpn(bad, mj, image)
        core.validate_box_head([("class_logits", torch.zeros(7, 6)), ("box_deltas", torch.zeros(7, 20))], mj, 7)
        with self.assertRaises(core.ExportError):
            core.validate_box_head([("class_logits", torch.zeros(7, 6)), ("box_deltas", torch.zeros(7, 24))], mj, 7)
        with self.assertRaisesRegex(core.ExportError, "three lists"):
            core.flatten_backbone_rpn((1, 2), ["p2"], ["p2"])


def torch_neuron_available():
    try:
        import torch_neuron  # noqa: F401
        return True
    except Exception:
        return False


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=TOOLS)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


class CommandLineTest(unittest.TestCase):
    def test_help(self):
        for script, words in (("export_torchvision.py", ["--model", "--seed", "--weights", "--fixed-size",
                                                         "--static-rois", "--target", "neuron", "--classes"]),
                              ("export_detectron2.py", ["--config", "--opts", "--weights", "--fixed-size",
                                                        "--static-rois", "--target", "Mask R-CNN"])):
            result = run_tool(os.path.join(TOOLS, script), "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            for word in words:
                self.assertIn(word, result.stdout, script)

    @unittest.skipIf(torch_neuron_available(), "torch-neuron is installed")
    def test_neuron_target_without_torch_neuron(self):
        with self.assertRaises(core.TargetUnavailable) as ctx:
            core.check_target("neuron")
        self.assertIn("pip install torch-neuron", str(ctx.exception))
        with tempfile.TemporaryDirectory() as tmp:
            for main, args in ((etv.main, ["--model", "fasterrcnn_resnet50_fpn", "--seed", "0"]),
                               (ed2.main, ["--config", "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
                                           "--weights", "model.pkl"])):
                code, err = run_main(main, *args, "--output", tmp, "--target", "neuron",
                                     "--fixed-size", "800", "800", "--static-rois", "1000")
                self.assertEqual(code, 2, err)
                self.assertIn("torch-neuron", err)
                self.assertIn("pip install torch-neuron", err)
                self.assertIn("Inf1", err)
                self.assertEqual(os.listdir(tmp), [])
            code, err = run_main(etv.main, "--model", "fasterrcnn_resnet50_fpn", "--seed", "0", "--output", tmp,
                                 "--target", "neuron")
            self.assertEqual(code, 2)
            self.assertIn("--fixed-size", err)

    @unittest.skipIf(torch.cuda.is_available(), "CUDA is available")
    def test_cuda_target_without_gpu(self):
        with self.assertRaisesRegex(core.TargetUnavailable, "torch.cuda.is_available"):
            core.check_target("cuda")

    def test_detectron2_missing(self):
        try:
            import detectron2  # noqa: F401
            self.skipTest("detectron2 is installed")
        except ImportError:
            pass
        with tempfile.TemporaryDirectory() as tmp:
            code, err = run_main(ed2.main, "--config", "x.yaml", "--weights", "w.pkl", "--output", tmp)
        self.assertEqual(code, 2)
        self.assertIn("detectron2.git@v0.6", err)


def run_main(main, *args):
    """(exit status, stderr) of an exporter's main() run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


# A stand-in for Detectron2 v0.6 with the API surface export_detectron2.py uses (get_cfg,
# model_zoo.get_config_file, CfgNode.merge_from_file / merge_from_list, build_model,
# DetectionCheckpointer, MetadataCatalog; backbone.output_shape / size_divisibility,
# proposal_generator.rpn_head / in_features, roi_heads.box_pooler / box_head / box_predictor /
# box_in_features) and a tiny model, so that the adapter runs end to end without Detectron2.
FAKE_D2 = {
    "__init__.py": "__version__ = '0.6'\n",
    "config/__init__.py": """
import ast, json, os

class CfgNode(dict):
    def __init__(self, d=None):
        super().__init__()
        for k, v in (d or {}).items():
            self[k] = CfgNode(v) if isinstance(v, dict) else v
    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k)
    def __setattr__(self, k, v):
        self[k] = v
    def _merge(self, d):
        for k, v in d.items():
            if isinstance(v, dict):
                self[k]._merge(v)
            else:
                self[k] = v
    def merge_from_file(self, path):
        with open(path) as f:
            self._merge(json.load(f))
    def merge_from_list(self, opts):
        for key, value in zip(opts[0::2], opts[1::2]):
            node = self
            *parents, last = key.split(".")
            for p in parents:
                node = node[p]
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
            node[last] = value
    def freeze(self):
        pass

def get_cfg():
    with open(os.path.join(os.path.dirname(__file__), "defaults.json")) as f:
        return CfgNode(json.load(f))
""",
    "model_zoo/__init__.py": """
import os
def get_config_file(name):
    path = os.path.join(os.path.dirname(__file__), name.replace("/", "__") + ".json")
    if not os.path.exists(path):
        raise RuntimeError(f"{name} not available in Model Zoo!")
    return path
""",
    "model_zoo/COCO-Detection__faster_rcnn_R_101_FPN_3x.yaml.json": '{"MODEL": {"FPN": {"OUT_CHANNELS": 8}}}',
    "data/__init__.py": """
class _Meta:
    thing_classes = ["c%d" % i for i in range(5)]
class MetadataCatalog:
    @staticmethod
    def get(name):
        return _Meta()
""",
    "checkpoint/__init__.py": """
import torch
class DetectionCheckpointer:
    def __init__(self, model):
        self.model = model
    def load(self, path):
        self.model.load_state_dict(torch.load(path))
        return {}
""",
    "modeling/__init__.py": """
import collections
import torch
from torch import nn
import torch.nn.functional as F

ShapeSpec = collections.namedtuple("ShapeSpec", "channels height width stride")

class Backbone(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.stem = nn.Conv2d(3, ch, 3, stride=4, padding=1)
        self.down = nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1) for _ in range(3)])
    @property
    def size_divisibility(self):
        return 32
    def output_shape(self):
        return {f"p{k}": ShapeSpec(self.stem.out_channels, None, None, 2 ** k) for k in range(2, 7)}
    def forward(self, x):
        x = torch.relu(self.stem(x))
        out = {"p2": x}
        for k, conv in zip(range(3, 6), self.down):
            x = conv(x)
            out[f"p{k}"] = x
        out["p6"] = F.max_pool2d(x, kernel_size=1, stride=2, padding=0)
        return out

class RPNHead(nn.Module):
    def __init__(self, ch, a):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.objectness_logits = nn.Conv2d(ch, a, 1)
        self.anchor_deltas = nn.Conv2d(ch, 4 * a, 1)
    def forward(self, features):
        t = [F.relu(self.conv(x)) for x in features]
        return [self.objectness_logits(x) for x in t], [self.anchor_deltas(x) for x in t]

class Pooler(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.level_poolers = nn.ModuleList([nn.Identity() for _ in range(n)])
        self.canonical_box_size, self.canonical_level = 224, 4

class BoxHead(nn.Module):
    def __init__(self, ch, p, fc):
        super().__init__()
        self.fc1 = nn.Linear(ch * p * p, fc)
    def forward(self, x):
        return F.relu(self.fc1(torch.flatten(x, 1)))

class Predictor(nn.Module):
    def __init__(self, fc, k):
        super().__init__()
        self.cls_score = nn.Linear(fc, k + 1)
        self.bbox_pred = nn.Linear(fc, 4 * k)
    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)

class MaskHead(nn.Module):
    def __init__(self, ch, k):
        super().__init__()
        self.mask_fcn1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(ch, ch, 2, stride=2)
        self.predictor = nn.Conv2d(ch, k, 1)
    def layers(self, x):
        return self.predictor(F.relu(self.deconv(F.relu(self.mask_fcn1(x)))))
    def forward(self, x):
        raise RuntimeError("forward() adds mask_rcnn_inference: the exporter must trace layers()")

class Holder(nn.Module):
    pass

class GeneralizedRCNN(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, k = cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.ROI_HEADS.NUM_CLASSES
        p = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        self.backbone = Backbone(ch)
        self.proposal_generator = Holder()
        self.proposal_generator.rpn_head = RPNHead(ch, 3)
        self.proposal_generator.in_features = list(cfg.MODEL.RPN.IN_FEATURES)
        self.roi_heads = Holder()
        self.roi_heads.box_in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        self.roi_heads.box_pooler = Pooler(len(self.roi_heads.box_in_features))
        self.roi_heads.box_head = BoxHead(ch, p, 16)
        self.roi_heads.box_predictor = Predictor(16, k)
        if cfg.MODEL.get("MASK_ON", False):
            self.roi_heads.mask_in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
            self.roi_heads.mask_pooler = Pooler(len(self.roi_heads.mask_in_features))
            agnostic = cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK
            self.roi_heads.mask_head = MaskHead(ch, 1 if agnostic else k)

def build_model(cfg):
    return GeneralizedRCNN(cfg)
""",
}


class Detectron2AdapterTest(unittest.TestCase):
    """export_detectron2.py end to end on the stand-in above."""

    @staticmethod
    def make_fake_detectron2(tmp, cfg):
        """Write the stand-in package under tmp/fake with ``cfg`` as its defaults, and its
        model's state_dict as tmp/w.pth."""
        package = os.path.join(tmp, "fake", "detectron2")
        for name, text in FAKE_D2.items():
            path = os.path.join(package, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        with open(os.path.join(package, "config", "defaults.json"), "w") as f:
            json.dump(cfg, f)
        # A real Detectron2 imported earlier in this process (another test) would shadow the
        # stand-in: forget it first, as the cleanup below forgets the stand-in.
        for name in [m for m in sys.modules if m == "detectron2" or m.startswith("detectron2.")]:
            del sys.modules[name]
        sys.path.insert(0, os.path.join(tmp, "fake"))
        try:
            from detectron2.modeling import build_model
            from detectron2.config import get_cfg
            c = get_cfg()
            c.merge_from_file(os.path.join(package, "model_zoo", "COCO-Detection__faster_rcnn_R_101_FPN_3x.yaml.json"))
            torch.manual_seed(0)
            torch.save(build_model(c).state_dict(), os.path.join(tmp, "w.pth"))
        finally:
            sys.path.remove(os.path.join(tmp, "fake"))
            for name in [m for m in sys.modules if m == "detectron2" or m.startswith("detectron2.")]:
                del sys.modules[name]
        return dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(tmp, "fake"), TOOLS]))

    def test_export_with_fake_detectron2(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = r101_fpn_cfg(800, 1333)
            cfg["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] = 5
            env = self.make_fake_detectron2(tmp, cfg)
            out = os.path.join(tmp, "bundle")
            result = subprocess.run(
                [sys.executable, os.path.join(TOOLS, "export_detectron2.py"), "--config",
                 "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", "--opts", "INPUT.MIN_SIZE_TEST", "64",
                 "INPUT.MAX_SIZE_TEST", "100", "--weights", os.path.join(tmp, "w.pth"), "--output", out],
                capture_output=True, text=True, env=env, timeout=120)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("traced vs eager", result.stderr)
            with open(os.path.join(out, "model.json")) as f:
                mj = json.load(f)
            self.assertEqual(mj["input"]["resize"], {"mode": "shortest_edge", "min_size": 64, "max_size": 100})
            self.assertEqual(mj["backbone"]["channels"], 8)
            self.assertEqual(mj["classes"], [f"c{i}" for i in range(5)])
            self.assertEqual(mj["source"]["note"], "weights: w.pth; opts: INPUT.MIN_SIZE_TEST 64 INPUT.MAX_SIZE_TEST 100")
            for key in ("backbone_rpn", "box_head"):
                entry = mj["modules"][key]
                self.assertEqual(entry["sha256"], core.sha256_file(os.path.join(out, entry["file"])))
            module = torch.jit.load(os.path.join(out, "box_head.pt"))
            logits, deltas = module(torch.zeros(3, 8, 7, 7))
            self.assertEqual((list(logits.shape), list(deltas.shape)), ([3, 6], [3, 20]))

            sys.path.insert(0, os.path.join(tmp, "fake"))
            try:
                code, err = run_main(ed2.main, "--config", "No/such.yaml", "--weights", os.path.join(tmp, "w.pth"),
                                     "--output", out)
            finally:
                sys.path.remove(os.path.join(tmp, "fake"))
                for name in [m for m in sys.modules if m == "detectron2" or m.startswith("detectron2.")]:
                    del sys.modules[name]
            self.assertEqual(code, 2)  # a bad argument (issue 14)
            self.assertIn("model zoo", err)

    def test_export_mask_with_fake_detectron2(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = mask_r101_fpn_cfg(800, 1333)
            cfg["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] = 5
            env = self.make_fake_detectron2(tmp, cfg)
            for extra, rows in (([], None), (["--static-rois", "40"], 100)):
                out = os.path.join(tmp, f"bundle{len(extra)}")
                result = subprocess.run(
                    [sys.executable, os.path.join(TOOLS, "export_detectron2.py"), "--config",
                     "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", "--opts", "INPUT.MIN_SIZE_TEST", "64",
                     "INPUT.MAX_SIZE_TEST", "100", "--weights", os.path.join(tmp, "w.pth"), "--output", out, *extra],
                    capture_output=True, text=True, env=env, timeout=120)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn("mask_head: traced vs eager", result.stderr)
                with open(os.path.join(out, "model.json")) as f:
                    mj = json.load(f)
                self.assertEqual(mj["architecture"], "mask_rcnn")
                self.assertEqual(mj["mask_head"]["paste"], "detectron2")
                entry = mj["modules"]["mask_head"]
                self.assertEqual(entry["static_rois"], rows)
                self.assertEqual(entry["sha256"], core.sha256_file(os.path.join(out, "mask_head.pt")))
                module = torch.jit.load(os.path.join(out, "mask_head.pt"))
                r = rows or 3
                self.assertEqual(list(module(torch.zeros(r, 8, 14, 14)).shape), [r, 5, 28, 28])

            out = os.path.join(tmp, "boxes")
            result = subprocess.run(
                [sys.executable, os.path.join(TOOLS, "export_detectron2.py"), "--config",
                 "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", "--opts", "INPUT.MIN_SIZE_TEST", "64",
                 "INPUT.MAX_SIZE_TEST", "100", "--weights", os.path.join(tmp, "w.pth"), "--output", out,
                 "--boxes-only"], capture_output=True, text=True, env=env, timeout=120)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(os.path.join(out, "model.json")) as f:
                mj = json.load(f)
            self.assertEqual(mj["architecture"], "faster_rcnn")
            self.assertNotIn("mask_head", mj)
            self.assertFalse(os.path.exists(os.path.join(out, "mask_head.pt")))


class TorchvisionModelJsonTest(unittest.TestCase):
    def test_resnet50_fpn(self):
        model = etv.build_model("fasterrcnn_resnet50_fpn", num_classes=91, min_size=320, max_size=512)
        mj = etv.model_json_for(model, "fasterrcnn_resnet50_fpn", etv.coco_categories()[1:],
                                fixed_size=(800, 800), static_rois=1000)
        self.assertEqual(mj["backbone"]["rpn_levels"], ["0", "1", "2", "3", "pool"])
        self.assertEqual(mj["backbone"]["roi_levels"], ["0", "1", "2", "3"])
        self.assertEqual(mj["backbone"]["strides"], {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64})
        self.assertEqual(mj["input"]["pixel_scale"], 0.00392156862745098)
        self.assertIsNone(mj["rpn"]["score_threshold"])
        self.assertEqual(mj["roi_heads"]["num_classes"], 90)
        self.assertEqual(mj["classes"][11], "N/A")
        self.assertEqual(mj["modules"]["backbone_rpn"]["static_shape"], [1, 3, 800, 800])
        self.assertEqual(mj["modules"]["box_head"]["static_rois"], 1000)
        self.assertEqual(mj["input"]["resize"], {"mode": "fixed", "height": 800, "width": 800})
        self.assertEqual(list(mj), list(json.loads(fixture_text("narrow_r101_fpn_fixed800"))))

    def test_mobilenet_fpn(self):
        model = etv.build_model("fasterrcnn_mobilenet_v3_large_fpn", num_classes=11)
        mj = etv.model_json_for(model, "fasterrcnn_mobilenet_v3_large_fpn", [f"c{i}" for i in range(10)])
        self.assertEqual(mj["backbone"]["rpn_levels"], ["0", "1", "pool"])
        self.assertEqual(mj["backbone"]["roi_levels"], ["0", "1"])
        self.assertEqual(mj["rpn"]["score_threshold"], 0.05)
        self.assertEqual(mj["anchors"]["sizes"], [[32, 64, 128, 256, 512]] * 3)
        self.assertEqual(mj["input"]["resize"], {"mode": "shortest_edge", "min_size": 800, "max_size": 1333})
        with self.assertRaises(core.ExportError):
            etv.model_json_for(model, "x", ["a"])

    def test_maskrcnn_resnet50_fpn(self):
        model = etv.build_model("maskrcnn_resnet50_fpn", num_classes=91, min_size=320, max_size=512)
        mj = etv.model_json_for(model, "maskrcnn_resnet50_fpn", etv.coco_categories()[1:], static_rois=1000)
        self.assertEqual(mj["architecture"], "mask_rcnn")
        self.assertEqual(mj["mask_head"], {
            "pooler_resolution": 14, "sampling_ratio": 2, "aligned": False, "canonical_box_size": 224,
            "canonical_level": 4, "level_eps": 1e-6, "level_eps_inside_log": False, "class_agnostic": False,
            "mask_threshold": 0.5, "paste": "torchvision"})
        self.assertEqual(mj["modules"]["box_head"]["static_rois"], 1000)
        # The mask head sees the final detections: at most detections_per_image rows.
        self.assertEqual(mj["modules"]["mask_head"], {"file": "mask_head.pt", "static_rois": 100})
        self.assertEqual(core.mask_channels(mj), 91)
        # Same keys, in the same order, as the Detectron2 Mask R-CNN fixture.
        self.assertEqual(list(mj), list(json.loads(fixture_text("narrow_mask_rcnn_r101_fpn_shortest_edge"))))
        box = etv.model_json_for(etv.build_model("fasterrcnn_resnet50_fpn", min_size=320, max_size=512),
                                 "fasterrcnn_resnet50_fpn", etv.coco_categories()[1:])
        plain = etv.model_json_for(model, "fasterrcnn_resnet50_fpn", etv.coco_categories()[1:])
        for key in ("input", "backbone", "anchors", "rpn", "roi_heads", "postprocess", "classes"):
            self.assertEqual(plain[key], box[key], key)


PHOTO = "/usr/share/doc/opencv-doc/examples/data/fruits.jpg"


class TorchvisionMaskExportTest(unittest.TestCase):
    """export_torchvision.py --model maskrcnn_resnet50_fpn --seed 0 at a small size (160/224)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = os.path.join(cls.tmp.name, "mask_r50")
        cls.code, cls.err = run_main(etv.main, "--model", "maskrcnn_resnet50_fpn", "--seed", "0", "--min-size", "160",
                                     "--max-size", "224", "--output", cls.out)
        cls.model = etv.build_model("maskrcnn_resnet50_fpn", num_classes=91, min_size=160, max_size=224)
        etv.apply_seed_recipe(cls.model, 0, name="maskrcnn_resnet50_fpn")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.assertEqual(self.code, 0, self.err)

    def test_model_json(self):
        with open(os.path.join(self.out, "model.json"), encoding="utf-8") as f:
            text = f.read()
        mj = json.loads(text)
        self.assertEqual(text, core.format_json(mj) + "\n")
        self.assertEqual(mj["architecture"], "mask_rcnn")
        self.assertEqual(mj["mask_head"]["paste"], "torchvision")
        self.assertEqual(mj["input"]["resize"], {"mode": "shortest_edge", "min_size": 160, "max_size": 224})
        self.assertEqual(sorted(mj["modules"]), ["backbone_rpn", "box_head", "mask_head"])
        for entry in mj["modules"].values():
            self.assertEqual(entry["sha256"], core.sha256_file(os.path.join(self.out, entry["file"])))
        self.assertIsNone(mj["modules"]["mask_head"]["static_rois"])
        self.assertIn("mask_head: traced vs eager", self.err)
        # torchvision's COCO labels are the COCO category ids: class_id c is COCO id c + 1
        self.assertEqual(mj["category_ids"], list(range(1, 91)))
        self.assertEqual(list(mj)[-2:], ["classes", "category_ids"])
        expected = etv.model_json_for(self.model, "maskrcnn_resnet50_fpn", etv.coco_categories()[1:],
                                      note=mj["source"]["note"], category_ids=etv.coco_category_ids())
        for entry in mj["modules"].values():
            del entry["sha256"]
        self.assertEqual(mj, expected)

    def test_mask_head_module_equals_eager(self):
        module = torch.jit.load(os.path.join(self.out, "mask_head.pt"))
        eager = etv.MaskHead(self.model).eval()
        image = core.example_image({"input": {"pixel_mean": [0.485, 0.456, 0.406], "pixel_std": [0.229, 0.224, 0.225],
                                              "pixel_scale": 1 / 255.0}}, (1, 3, 160, 224), 5, pad=False,
                                   device=torch.device("cpu"))
        with torch.no_grad():
            features = self.model.backbone(image)
            boxes = torch.tensor([[10.0, 12.0, 90.0, 100.0], [0.0, 0.0, 224.0, 160.0], [50.5, 60.25, 58.0, 70.0],
                                  [100.0, 20.0, 220.0, 60.0]])
            pooled = self.model.roi_heads.mask_roi_pool(features, [boxes], [(160, 224)])
            want = eager(pooled)
            got = module(pooled)
        self.assertEqual(list(got.shape), [4, 91, 28, 28])
        self.assertLessEqual(float((got - want).abs().max()), 1e-5 * max(1.0, float(want.abs().max())))

    def test_seed_recipe(self):
        """Non-mask weights are the Faster R-CNN's of the same seed; masks are real shapes."""
        box_model = etv.build_model("fasterrcnn_resnet50_fpn", num_classes=91)
        etv.apply_seed_recipe(box_model, 0, name="fasterrcnn_resnet50_fpn")
        box_state, state = box_model.state_dict(), self.model.state_dict()
        self.assertTrue(all(torch.equal(box_state[k], state[k]) for k in box_state))
        mask_keys = [k for k in state if k not in box_state]
        self.assertTrue(mask_keys and all(".mask_" in k for k in mask_keys), mask_keys[:3])
        if not os.path.exists(PHOTO):
            self.skipTest("no opencv-doc photos")
        from PIL import Image

        with Image.open(PHOTO) as im:
            rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy())
        with torch.no_grad():
            out = self.model([rgb.permute(2, 0, 1).contiguous().float() / 255.0])[0]
        masks = out["masks"][:, 0] >= 0.5
        boxes = out["boxes"]
        self.assertGreaterEqual(len(masks), 5)
        pixels = masks.flatten(1).sum(1).float()
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)
        coverage = pixels / area
        # neither empty nor full: a mask fills part of its box (the torchvision paste reaches
        # a little beyond the box, so a full mask would be ~1.1)
        self.assertGreater(float(coverage.min()), 0.05)
        self.assertLess(float(coverage.max()), 0.95)
        # different for every detection
        m = masks.flatten(1).float()
        inter = m @ m.T
        union = pixels[:, None] + pixels[None, :] - inter
        iou = (inter / union.clamp(min=1)).triu(1)
        self.assertLess(float(iou.max()), 0.95)


if __name__ == "__main__":
    unittest.main()
