"""The exporters on bad arguments (issue 14): a missing, unreadable or wrong --weights / --classes /
--category-ids file, a bad --config / --opts, an --output that cannot be written: exit status 2
and exactly one line on stderr, "error: ...", naming the option and the file; never a Python
traceback. Also the dataset category ids the exporters record in model.json (``category_ids``),
checked against Detectron2's own COCO metadata when Detectron2 is found (tests/reference/_peers.py).

The torchvision cases fail before the model is built (about 1 s each); the Detectron2 cases that
need a built model use a narrow R-101-FPN (seconds)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))

import torch  # noqa: E402

import _peers  # noqa: E402
from rcnn_export import core  # noqa: E402
from rcnn_export import detectron2 as ed2  # noqa: E402
from rcnn_export import torchvision as etv  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_exporters import run_main  # noqa: E402

#: Narrow widths: the exporter builds and loads a model in seconds.
NARROW = ["MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
          "MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
          "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]
D2_CONFIG = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"


def run_script(script, *args, env=None):
    """(exit status, stderr) of tools/<script> run as a user runs it."""
    result = subprocess.run([sys.executable, os.path.join(TOOLS, script), *args], capture_output=True, text=True,
                            env=env, timeout=300, cwd=ROOT)
    return result.returncode, result.stderr


def peers_env():
    """The environment of a subprocess that imports Detectron2 the way _peers found it."""
    paths = [d for d in _peers.candidate_dirs() if os.path.isdir(d)]
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths + ([old] if old else [])))


class ErrorLineMixin:
    def assert_usage_error(self, code, err, *words):
        """Status 2, one line "error: ..." containing every word, no traceback."""
        self.assertNotIn("Traceback", err)
        lines = [line for line in err.splitlines() if not line.startswith("[rcnn-export]")]
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("error: "), err)
        for word in words:
            self.assertIn(word, lines[0])
        self.assertEqual(code, 2, err)


class TorchvisionErrorTest(ErrorLineMixin, unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.out = os.path.join(self.tmp.name, "bundle")

    def path(self, name, content=None):
        p = os.path.join(self.tmp.name, name)
        if content is not None:
            with open(p, "wb") as f:
                f.write(content)
        return p

    def export(self, *args):
        return run_script("export_torchvision.py", "--model", "fasterrcnn_resnet50_fpn", "--output", self.out, *args)

    def test_missing_weights(self):
        missing = self.path("no_such.pth")
        self.assert_usage_error(*self.export("--weights", missing), "--weights", missing, "no such file")
        self.assertFalse(os.path.exists(self.out))

    def test_weights_is_a_directory(self):
        self.assert_usage_error(*self.export("--weights", self.tmp.name), "--weights", "directory")

    def test_weights_not_a_checkpoint(self):
        garbage = self.path("garbage.pth", b"this is not a torch checkpoint\n" * 10)
        self.assert_usage_error(*self.export("--weights", garbage), "--weights", garbage, "torch checkpoint")

    def test_weights_of_another_model(self):
        other = self.path("other.pth")
        torch.save({"some.layer.weight": torch.zeros(3)}, other)
        self.assert_usage_error(*self.export("--weights", other), "--weights", other, "does not match the model")

    def test_weights_wrong_shapes(self):
        """A state_dict of the right keys but other class count: torch's multi-line message, on one line."""
        model = etv.build_model("fasterrcnn_resnet50_fpn", num_classes=11, min_size=64, max_size=96)
        wrong = self.path("wrong.pth")
        torch.save(model.state_dict(), wrong)
        code, err = run_main(etv.main, "--model", "fasterrcnn_resnet50_fpn", "--weights", wrong, "--num-classes",
                             "90", "--output", self.out)
        self.assert_usage_error(code, err, "--weights", "does not match the model", "size mismatch")

    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0, "root reads files whatever their mode")
    def test_unreadable_weights(self):
        locked = self.path("locked.pth", b"x")
        os.chmod(locked, 0)
        self.assert_usage_error(*self.export("--weights", locked), "--weights", "not readable")

    def test_bad_classes_and_ids(self):
        self.assert_usage_error(*self.export("--seed", "0", "--classes", self.path("none.txt")), "--classes",
                                "no such file")
        binary = self.path("binary.txt", b"\xff\xfe\x00bad")
        self.assert_usage_error(*run_main(etv.main, "--model", "fasterrcnn_resnet50_fpn", "--seed", "0",
                                          "--classes", binary, "--output", self.out), "--classes", binary)
        ids = self.path("ids.txt", b"1\ntwo\n")
        self.assert_usage_error(*run_main(etv.main, "--model", "fasterrcnn_resnet50_fpn", "--seed", "0",
                                          "--category-ids", ids, "--output", self.out), "--category-ids",
                                f"{ids}:2", "'two'")

    def test_bad_output_and_numbers(self):
        file = self.path("a_file", b"x")
        self.assert_usage_error(*self.export("--seed", "0", "--output", os.path.join(file, "bundle")), "--output",
                                "not a directory")
        self.assert_usage_error(*self.export("--seed", "0", "--num-classes", "0"), "--num-classes")
        self.assert_usage_error(*self.export("--seed", "0", "--static-rois", "0"), "--static-rois")


class CategoryIdsTest(unittest.TestCase):
    def model_json(self):
        return {"format": "rcnn-bundle", "classes": ["a", "b", "c"]}

    def test_recorded_after_classes(self):
        mj = self.model_json()
        mj["mask_head"] = {}  # a key after classes keeps its place after category_ids
        core.add_category_ids(mj, [7, 3, 90])
        self.assertEqual(list(mj), ["format", "classes", "category_ids", "mask_head"])
        self.assertEqual(mj["category_ids"], [7, 3, 90])

    def test_rejected(self):
        for ids, words in (([1, 2], "2 category ids for 3 classes"), ([1, 1, 2], "category id 1"),
                           ([-1, 2, 3], "non-negative")):
            with self.assertRaisesRegex(core.UsageError, words):
                core.add_category_ids(self.model_json(), ids)

    def test_detectron2_coco_table_matches_torchvision_labels(self):
        """Two frameworks' facts agree: the COCO id Detectron2's table gives each of its 80 classes
        is the torchvision label (= COCO id) of the same name; contiguous 68 "microwave" -> 78."""
        coco80 = [c for c in etv.COCO_CATEGORIES[1:] if c != "N/A"]
        self.assertEqual(len(ed2.COCO_THING_IDS), 80)
        self.assertEqual([etv.COCO_CATEGORIES[i] for i in ed2.COCO_THING_IDS], coco80)
        self.assertEqual((coco80[68], ed2.COCO_THING_IDS[68]), ("microwave", 78))
        self.assertEqual(etv.coco_category_ids(), list(range(1, 91)))

    def test_fixtures_stay_without_category_ids(self):
        """model_json_from_cfg writes category_ids only when given (the committed fixtures have none)."""
        data = os.path.join(ROOT, "tests", "data", "detectron2")
        for bundle in sorted(os.listdir(data)):
            path = os.path.join(data, bundle, "model.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    self.assertNotIn("category_ids", json.load(f), path)


class Detectron2ErrorTest(ErrorLineMixin, unittest.TestCase):
    """export_detectron2.py with the real Detectron2 v0.6 (skipped with one line when absent)."""

    @classmethod
    def setUpClass(cls):
        cls.sys_path = list(sys.path)
        _peers.require_or_skip("detectron2", cls.skip)
        cls.env = peers_env()

    @classmethod
    def skip(cls, reason):
        raise unittest.SkipTest(reason)

    @classmethod
    def tearDownClass(cls):
        # _peers imported Detectron2 into this process: leave no trace for the tests that put a
        # stand-in package named detectron2 on sys.path (test_exporters.py).
        for name in [m for m in sys.modules if m == "detectron2" or m.startswith("detectron2.")]:
            del sys.modules[name]
        sys.path[:] = cls.sys_path

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.out = os.path.join(self.tmp.name, "bundle")

    def export(self, *args, config=D2_CONFIG):
        return run_script("export_detectron2.py", "--config", config, "--output", self.out, *args, env=self.env)

    def test_missing_weights(self):
        missing = os.path.join(self.tmp.name, "model_final.pkl")
        self.assert_usage_error(*self.export("--weights", missing), "--weights", missing, "no such file")

    def test_weights_not_a_checkpoint(self):
        garbage = os.path.join(self.tmp.name, "model_final.pth")
        with open(garbage, "wb") as f:
            f.write(b"not a checkpoint" * 64)
        self.assert_usage_error(*self.export("--weights", garbage, "--opts", *NARROW), "--weights", garbage,
                                "Detectron2 checkpoint")

    def test_weights_of_another_config(self):
        """Detectron2's Checkpointer.load only logs missing keys and skips tensors of another
        shape; the exporter refuses them (an R-50 checkpoint for the R-101 config)."""
        d2 = ed2.import_detectron2()
        r50 = d2["build_model"](ed2.build_cfg(d2, "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", NARROW, "cpu"))
        weights = os.path.join(self.tmp.name, "r50.pth")
        torch.save(r50.state_dict(), weights)
        self.assert_usage_error(*self.export("--weights", weights, "--opts", *NARROW), "--weights", weights,
                                "does not match the config", "missing keys")
        r50_wide = os.path.join(self.tmp.name, "r50_wide_fpn.pth")
        state = r50.state_dict()
        state["backbone.fpn_lateral2.weight"] = torch.zeros(48, 64, 1, 1)
        torch.save(state, r50_wide)
        self.assert_usage_error(*self.export("--weights", r50_wide, "--opts", *NARROW,
                                             config="COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"),
                                "1 of another shape", "fpn_lateral2.weight")

    def test_bad_config_and_opts(self):
        weights = os.path.join(self.tmp.name, "w.pth")
        torch.save({}, weights)
        self.assert_usage_error(*self.export("--weights", weights, config="No/such_config.yaml"), "--config",
                                "No/such_config.yaml", "model zoo")
        self.assert_usage_error(*self.export("--weights", weights, "--opts", "MODEL.NO_SUCH_KEY", "1"), "--opts",
                                "MODEL.NO_SUCH_KEY")
        self.assert_usage_error(*self.export("--weights", weights, "--opts", "MODEL.RPN.NMS_THRESH"), "--opts",
                                "KEY VALUE")

    def test_coco_category_ids_from_detectron2_metadata(self):
        """The ids the exporter derives from Detectron2's MetadataCatalog (coco_2017_val's
        thing_dataset_id_to_contiguous_id) are COCO's: the table above, 68 -> 78."""
        d2 = ed2.import_detectron2()
        cfg = ed2.build_cfg(d2, D2_CONFIG, [], "cpu")
        ids = ed2.category_ids(d2, cfg, None, None)
        self.assertEqual(ids, list(ed2.COCO_THING_IDS))
        self.assertEqual(ids[68], 78)
        names = ed2.class_names(d2, cfg, None)
        self.assertEqual(names[68], "microwave")
        self.assertEqual([etv.COCO_CATEGORIES[i] for i in ids], names)
        self.assertIsNone(ed2.category_ids(d2, cfg, "classes.txt", None))  # user names: ids unknown


if __name__ == "__main__":
    unittest.main()
