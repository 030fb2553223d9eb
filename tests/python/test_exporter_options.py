"""The exporters' CPU speed options (--freeze, --channels-last): rcnn_export.core.optimize_module
and export_bundle with them; the modules stay loadable and equal to the eager ones. And
--features-layout nhwc: channels-last RoI feature maps baked into backbone_rpn.
bench/exporter_options.py measures what they gain.

    /usr/bin/python3 -m unittest discover -s tests/python
"""
import argparse
import contextlib
import io
import os
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from rcnn_export import core  # noqa: E402


class ConvBnHead(nn.Module):
    """A conv + batch norm + linear head: something freeze folds and channels-last changes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.fc = nn.Linear(8 * 5 * 5, 6)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        logits = self.fc(y.flatten(1))
        return (logits, logits[:, :4] * 2.0)


class OptimizeModuleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.model = ConvBnHead().eval()
        self.inputs = [torch.randn(7, 4, 5, 5), torch.randn(3, 4, 5, 5)]

    def test_options_keep_outputs_and_reload(self):
        for freeze in (False, True):
            for channels_last in (False, True):
                with self.subTest(freeze=freeze, channels_last=channels_last):
                    traced = torch.jit.trace(self.model, self.inputs[0])
                    module = core.optimize_module(traced, freeze=freeze, channels_last=channels_last)
                    path = os.path.join(self.tmp.name, "m.pt")
                    torch.jit.save(module, path)
                    loaded = torch.jit.load(path)
                    with torch.no_grad():
                        for x in self.inputs:
                            ref = self.model(x)
                            got = loaded(x)
                            for a, b in zip(ref, got):
                                self.assertLess(float((a - b).abs().max()), 1e-5)
                    if freeze:  # parameters became constants
                        self.assertEqual(len(list(loaded.parameters())), 0)
                    if channels_last and not freeze:
                        self.assertTrue(loaded.conv.weight.is_contiguous(memory_format=torch.channels_last))

    def test_export_bundle_with_options(self):
        model_json = {"format": core.BUNDLE_FORMAT,
                      "modules": {"box_head": {"file": "box_head.pt", "static_rois": None}}}
        spec = core.ModuleSpec("box_head", self.model, self.inputs, core.flatten_box_head)
        report = core.export_bundle(self.tmp.name, model_json, [spec], freeze=True, channels_last=True)
        for check in report["box_head"]["checks"]:
            self.assertLess(max(check["max_abs_diff"].values()), 1e-5)
        loaded = torch.jit.load(os.path.join(self.tmp.name, "box_head.pt"))
        self.assertEqual(len(list(loaded.parameters())), 0)

    def test_neuron_target_refuses_the_options(self):
        parser = argparse.ArgumentParser()
        core.add_bundle_arguments(parser)
        args = parser.parse_args(["--output", self.tmp.name, "--target", "neuron", "--fixed-size", "800", "800",
                                  "--static-rois", "1000", "--freeze"])
        with contextlib.redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit):
            core.validate_bundle_arguments(args)
        self.assertIn("--freeze and --channels-last", err.getvalue())
        parser_args = parser.parse_args(["--output", self.tmp.name, "--freeze", "--channels-last"])
        self.assertTrue(parser_args.freeze and parser_args.channels_last)


class TinyBackboneRpn(nn.Module):
    """Returns (objectness, deltas, features) lists as a backbone_rpn module does."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        f = self.conv(x)
        g = nn.functional.max_pool2d(f, 2)
        return [f[:, :1]], [f[:, :4]], [f, g]


class FeaturesLayoutTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def export(self, layout):
        model_json = {"format": core.BUNDLE_FORMAT, "backbone": {"channels": 6},
                      "modules": {"backbone_rpn": {"file": "backbone_rpn.pt", "static_shape": None}}}
        spec = core.ModuleSpec("backbone_rpn", TinyBackboneRpn().eval(),
                               [torch.randn(1, 3, 8, 12), torch.randn(1, 3, 10, 6)], lambda out: [
                                   (f"t{i}_{j}", t) for i, ts in enumerate(out) for j, t in enumerate(ts)])
        report = core.export_bundle(self.tmp.name, model_json, [spec], features_layout=layout)
        for check in report["backbone_rpn"]["checks"]:
            self.assertEqual(max(check["max_abs_diff"].values()), 0.0)
        with open(os.path.join(self.tmp.name, "model.json")) as f:
            written = f.read()
        loaded = torch.jit.load(os.path.join(self.tmp.name, "backbone_rpn.pt"))
        with torch.no_grad():
            return written, loaded(torch.randn(1, 3, 10, 14))

    def test_nhwc_bakes_channels_last_features_into_the_module(self):
        written, (objectness, deltas, features) = self.export("nhwc")
        self.assertIn('"features_layout": "nhwc"', written)
        for f in features:  # same NCHW shape, channels-last memory
            self.assertEqual(f.shape[1], 6)
            self.assertTrue(f.is_contiguous(memory_format=torch.channels_last))
            self.assertFalse(f.is_contiguous())
        self.assertTrue(objectness[0].shape[1] == 1 and deltas[0].shape[1] == 4)

    def test_nchw_default_writes_no_key(self):
        written, (_, _, features) = self.export("nchw")
        self.assertNotIn("features_layout", written)
        self.assertTrue(all(f.is_contiguous() for f in features))

    def test_bad_layout(self):
        with self.assertRaises(core.ExportError):
            core.export_bundle(self.tmp.name, {"modules": {}}, [], features_layout="nwhc")
        parser = argparse.ArgumentParser()
        core.add_bundle_arguments(parser)
        self.assertEqual(parser.parse_args(["--output", "x"]).features_layout, "nchw")
        self.assertEqual(parser.parse_args(["--output", "x", "--features-layout", "nhwc"]).features_layout, "nhwc")
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            parser.parse_args(["--output", "x", "--features-layout", "hwc"])


if __name__ == "__main__":
    unittest.main()
