"""rcnn-detect on bad inputs (issue 6): every one exits non-zero with exactly one line on stderr,
"rcnn-detect: error: ...", naming the file at fault. Inputs are generated in a temp directory.

Needs the built binary: RCNN_BUILD_DIR (default: build) / bin / rcnn-detect."""
import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RCNN_BUILD_DIR", os.path.join(ROOT, "build"))
DETECT = os.path.join(BUILD, "bin", "rcnn-detect")
BUNDLE = os.path.join(ROOT, "tests", "data", "detectron2", "narrow_r101_fpn_shortest_edge")
PHOTO = os.path.join(BUNDLE, "cases", "fruits", "image.jpg")


@unittest.skipUnless(os.path.exists(DETECT), f"{DETECT} not built")
class CliErrorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="rcnn-cli-errors-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write(self, name, data):
        p = self.path(name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def image_bytes(self, fmt, size=(64, 48), mode="RGB"):
        buf = io.BytesIO()
        Image.new(mode, size, (10, 200, 30) if mode == "RGB" else 7).save(buf, format=fmt)
        return buf.getvalue()

    def bundle(self, name, edit=None, modules=None):
        """A copy of the fixture bundle (modules symlinked) with model.json edited."""
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(BUNDLE, "model.json")) as f:
            doc = json.load(f)
        if edit:
            edit(doc)
        with open(os.path.join(d, "model.json"), "w") as f:
            json.dump(doc, f)
        for m in ("backbone_rpn.pt", "box_head.pt"):
            target = os.path.join(d, m)
            if modules and m in modules:
                with open(target, "wb") as f:
                    f.write(modules[m])
            elif not os.path.exists(target):
                os.symlink(os.path.join(BUNDLE, m), target)
        return d

    def assert_one_line_error(self, args, *parts, stdout=""):
        p = subprocess.run([DETECT, "-q", *args], capture_output=True, text=True, timeout=300)
        with self.subTest(args=args):
            self.assertNotEqual(p.returncode, 0, p.stdout)
            lines = p.stderr.splitlines()
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertTrue(lines[0].startswith("rcnn-detect: error: "), lines[0])
            for part in parts:
                self.assertIn(part, lines[0])
            if stdout is not None:
                self.assertEqual(p.stdout, stdout)
        return p

    def test_bad_images(self):
        jpeg = self.image_bytes("JPEG")
        png = self.image_bytes("PNG")
        cases = {
            "missing.jpg": (None, "image file not found"),
            "empty.jpg": (b"", "image file is empty"),
            "text.jpg": (b"not an image\n", "not a decodable image"),
            "half.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG file"),
            "cut.png": (png[:-5], "truncated PNG file"),
            "wide.png": (self.image_bytes("PNG", (16385, 4), "L"), "image is 4x16385 (height x width)"),
        }
        for name, (data, message) in cases.items():
            p = self.path(name) if data is None else self.write(name, data)
            self.assert_one_line_error(["-m", BUNDLE, p], p + ": " + message)
        # The first bad image stops the run, after the good ones, whose results are kept: the
        # JSON array on stdout is complete and holds them.
        p = self.assert_one_line_error(["-m", BUNDLE, PHOTO, self.path("missing.jpg")], "missing.jpg",
                                       "(the results of the 1 image done before are kept)", stdout=None)
        done = json.loads(p.stdout)
        self.assertEqual([e["image"] for e in done], [PHOTO])
        self.assertGreater(len(done[0]["detections"]), 0)

    def test_bad_bundles(self):
        self.assert_one_line_error(["-m", self.path("nope"), PHOTO], "bundle directory does not exist")
        d = self.bundle("malformed")
        with open(os.path.join(d, "model.json"), "w") as f:
            f.write('{"format": "rcnn-bundle",')
        self.assert_one_line_error(["-m", d, PHOTO], os.path.join(d, "model.json") + ": invalid JSON")

        def version(doc):
            doc["version"] = 7

        def wrong_type(doc):
            doc["rpn"]["nms_threshold"] = "0.7"

        def channels(doc):
            doc["backbone"]["channels"] = 64

        def ratios(doc):
            doc["anchors"]["aspect_ratios"] = [[0.25, 0.5, 1.0, 2.0]]

        def classes(doc):
            doc["roi_heads"]["num_classes"] = 79
            del doc["classes"]

        def swapped(doc):
            doc["modules"]["backbone_rpn"]["file"] = "box_head.pt"
            doc["modules"]["box_head"]["file"] = "backbone_rpn.pt"

        cases = [
            ("version", version, "version: unsupported bundle version 7"),
            ("wrong_type", wrong_type, "rpn.nms_threshold: expected a number in (0, 1], got string"),
            ("channels", channels, "backbone_rpn.pt: feature map p2 has shape"),
            ("ratios", ratios, "backbone_rpn.pt: objectness of level p2 has shape"),
            ("classes", classes, "box_head.pt: class_logits has 81 columns"),
            ("swapped", swapped, "box_head.pt: forward failed on input [1, 3, "),
        ]
        for name, edit, message in cases:
            d = self.bundle(name, edit)
            self.assert_one_line_error(["-m", d, PHOTO], message)
        d = self.bundle("random_module", modules={"box_head.pt": os.urandom(2048)})
        self.assert_one_line_error(
            ["-m", d, PHOTO], os.path.join(d, "box_head.pt") + ": not a loadable TorchScript module")
        d = self.bundle("empty_module", modules={"backbone_rpn.pt": b""})
        self.assert_one_line_error(["-m", d, PHOTO], "backbone_rpn.pt: module file is empty")

    def test_bad_arguments(self):
        self.assert_one_line_error(["-m", BUNDLE, "--threads", "0", PHOTO], "--threads")
        self.assert_one_line_error(["-m", BUNDLE], "inputs")
        self.assert_one_line_error(["-m", BUNDLE, "--threads", "abc", PHOTO], "--threads", "'abc' is not a whole number")
        self.assert_one_line_error(["-m", BUNDLE, "--threads", "300", PHOTO], "--threads", "300 is outside 1 to 256")
        out_dir = self.path("no_such_dir")
        self.assert_one_line_error(
            ["-m", BUNDLE, "-o", os.path.join(out_dir, "x", "r.json"), PHOTO], "cannot open for writing")


if __name__ == "__main__":
    unittest.main()
