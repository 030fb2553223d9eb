"""rcnn-detect over real workloads (issue 14), with the demo bundle (models/shapes) on real
photos: a directory of 30 images made at test time from the photos in tests/data and OpenCV's
sample data (nested folders, the same file name twice), progress, JSON Lines, COCO results,
--keep-going over a corrupt file, --draw paths, @lists, a video written here with OpenCV, an
interrupt. Every check compares against another run of the same program on the same images
(the detections themselves are checked against the frameworks by test_cli.py and the parity
tests) or against the inputs.

Needs the built binaries: RCNN_BUILD_DIR (default: build) / bin / rcnn-detect, rcnn-eval."""
import glob
import hashlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("RCNN_BUILD_DIR", os.path.join(ROOT, "build"))
DETECT = os.path.join(BUILD, "bin", "rcnn-detect")
EVAL = os.path.join(BUILD, "bin", "rcnn-eval")
BUNDLE = os.path.join(ROOT, "models", "shapes")
OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"


def source_photos():
    """Real photos: the Detectron2 fixture cases in tests/data, then OpenCV's samples."""
    photos = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "detectron2", "*", "cases", "*", "image.jpg")))
    for name in ("smarties.png", "fruits.jpg", "baboon.jpg", "building.jpg", "home.jpg", "lena.jpg",
                 "messi5.jpg", "orange.jpg", "apple.jpg", "butterfly.jpg", "board.jpg", "pic1.png"):
        p = os.path.join(OPENCV_DATA, name)
        if os.path.exists(p):
            photos.append(p)
    # Distinct photos only (the fixtures share some).
    seen, out = set(), []
    for p in photos:
        with open(p, "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(p)
    return out


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@unittest.skipUnless(os.path.exists(DETECT), f"{DETECT} not built")
class WorkloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="rcnn-workloads-")
        cls.data = os.path.join(cls.tmp, "photos")
        photos = source_photos()
        assert len(photos) >= 5, photos
        # 30 images, at most 320 pixels a side: crops, flips and scales of the photos, in
        # nested folders a/, b/, b/deep/; a/img00.jpg and b/img00.jpg share a name.
        cls.images = []
        for i in range(30):
            src = cv2.imread(photos[i % len(photos)], cv2.IMREAD_COLOR)
            h, w = src.shape[:2]
            variant = i // len(photos)
            if variant % 3 == 1:
                src = cv2.flip(src, 1)
            elif variant % 3 == 2:
                src = src[h // 4:, w // 4:]
            s = 320.0 / max(src.shape[:2])
            img = cv2.resize(src, (max(1, int(src.shape[1] * s)), max(1, int(src.shape[0] * s))),
                             interpolation=cv2.INTER_AREA)
            folder = ("a", "b", os.path.join("b", "deep"))[i % 3]
            name = f"img{i // 3:02d}" + (".png" if i % 5 == 4 else ".jpg")
            path = os.path.join(cls.data, folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            assert cv2.imwrite(path, img), path
            cls.images.append(path)
        cls.images.sort()
        assert len(set(cls.images)) == 30
        # One run over the folder, the reference of the other checks.
        p = cls.run_cli("-q", "--threads", "1", cls.data)
        assert p.returncode == 0, p.stderr
        cls.reference = {e["image"]: e for e in json.loads(p.stdout)}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @staticmethod
    def run_cli(*args, **kw):
        return subprocess.run([DETECT, "-m", BUNDLE, *args], capture_output=True, text=True,
                              timeout=600, **kw)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def same_detections(self, got, ref):
        self.assertEqual(len(got), len(ref))
        for g, r in zip(got, ref):
            self.assertEqual(g["class_id"], r["class_id"])
            self.assertEqual(g["score"], r["score"])
            self.assertEqual(g["box"], r["box"])

    def test_directory_of_30_images(self):
        # Recursive, sorted, image extensions only (a text file beside them is not an input).
        with open(os.path.join(self.data, "a", "notes.txt"), "w") as f:
            f.write("not an image\n")
        self.assertEqual(sorted(self.reference), self.images)
        self.assertGreater(sum(len(e["detections"]) for e in self.reference.values()), 0)
        # Progress when stderr is not a terminal: a line every --progress-every images, a summary.
        p = self.run_cli("--threads", "1", "--progress-every", "10", "-o", self.path("all.json"), self.data)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stderr.splitlines()
        self.assertEqual([l.split(",")[0] for l in lines[:3]],
                         ["rcnn-detect: 10/30 images", "rcnn-detect: 20/30 images", "rcnn-detect: 30/30 images"])
        self.assertIn("images/s", lines[0])
        self.assertIn("ETA", lines[0])
        self.assertRegex(lines[-1], r"^rcnn-detect: 30 images, \d+ detections in [0-9.]+ s")
        with open(self.path("all.json")) as f:
            written = json.load(f)
        self.assertEqual([e["image"] for e in written], self.images)
        for e in written:
            self.same_detections(e["detections"], self.reference[e["image"]]["detections"])

    def test_progress_bar_on_a_terminal(self):
        master, slave = pty.openpty()
        proc = subprocess.Popen([DETECT, "-m", BUNDLE, "--threads", "1", "-o", self.path("tty.json"), self.data],
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=600)
        os.close(master)
        text = b"".join(chunks).decode(errors="replace")
        self.assertEqual(proc.returncode, 0, text)
        self.assertIn("\r[", text)  # redrawn in place
        self.assertIn("30/30 images", text)
        self.assertIn("images/s", text)
        self.assertIn("#" * 24 + "]", text)

    def test_quiet(self):
        p = self.run_cli("-q", "--threads", "1", self.images[0])
        self.assertEqual(p.returncode, 0)
        self.assertEqual(p.stderr, "")

    def same_as_reference(self, jsonl_lines):
        """Each JSON line's detections equal the reference run's for its image."""
        for line in jsonl_lines:
            e = json.loads(line)
            self.same_detections(e["detections"], self.reference[e["image"]]["detections"])

    def test_jsonl_streams_the_same_results(self):
        p = self.run_cli("-q", "--threads", "1", "--format", "jsonl", self.data)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 30)
        self.same_as_reference(lines)

    def test_interrupt_keeps_complete_lines(self):
        out = self.path("interrupted.jsonl")
        proc = subprocess.Popen([DETECT, "-m", BUNDLE, "--threads", "1", "--format", "jsonl", "-o", out,
                                 self.data, self.data, self.data], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and (not os.path.exists(out) or os.path.getsize(out) == 0):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("interrupted", err)
        with open(out) as f:
            text = f.read()
        self.assertTrue(text.endswith("\n"))
        lines = text.splitlines()
        self.assertGreaterEqual(len(lines), 1)
        self.assertLess(len(lines), 90)
        self.same_as_reference(lines)

    def test_keep_going_over_a_corrupt_image(self):
        folder = self.path("with_corrupt")
        shutil.copytree(self.data, folder)
        corrupt = os.path.join(folder, "b", "corrupt.jpg")
        with open(self.images[0], "rb") as f:
            data = f.read()
        with open(corrupt, "wb") as f:
            f.write(data[: len(data) // 3])  # a truncated JPEG
        out = self.path("kept.json")
        p = self.run_cli("--threads", "1", "-k", "-o", out, folder)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(corrupt + ": truncated JPEG file", p.stderr)
        self.assertIn("(skipped)", p.stderr)
        summary = p.stderr.splitlines()[-1]
        self.assertIn("30 images", summary)
        self.assertIn("1 skipped: " + corrupt, summary)
        with open(out) as f:
            done = json.load(f)
        self.assertEqual(len(done), 30)
        self.assertNotIn(corrupt, [e["image"] for e in done])
        # Without --keep-going the run stops there, and the results before it stay.
        p = self.run_cli("-q", "--threads", "1", "-o", out, folder)
        self.assertEqual(p.returncode, 1)
        self.assertIn("truncated JPEG file", p.stderr)
        with open(out) as f:
            done = json.load(f)  # a complete JSON array
        names = sorted(glob.glob(os.path.join(folder, "**", "*.*"), recursive=True))
        names = [n for n in names if n.endswith((".jpg", ".png"))]
        self.assertEqual([e["image"] for e in done], names[: names.index(corrupt)])

    def test_coco_results_with_annotations(self):
        # An annotation file naming the images by their path below the folder (a/img00.jpg and
        # b/img00.jpg share a file name) and the shapes by name, with ids of its own.
        with open(os.path.join(BUNDLE, "model.json")) as f:
            classes = json.load(f)["classes"]
        cat_ids = {name: 11 * (k + 1) for k, name in enumerate(classes)}
        images = [{"id": 500 + i, "file_name": os.path.relpath(p, self.data), "height": 1, "width": 1}
                  for i, p in enumerate(self.images)]
        ann = {"images": images, "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
               "annotations": []}
        ann_path = self.path("instances.json")
        with open(ann_path, "w") as f:
            json.dump(ann, f)
        out = self.path("coco.json")
        p = self.run_cli("-q", "--threads", "1", "--format", "coco", "--coco-annotations", ann_path,
                         "-o", out, self.data)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out) as f:
            results = json.load(f)
        id_of = {im["file_name"]: im["id"] for im in images}
        expected = []
        for path in self.images:
            for d in self.reference[path]["detections"]:
                x1, y1, x2, y2 = d["box"]
                expected.append((id_of[os.path.relpath(path, self.data)], cat_ids[d["class_name"]],
                                 d["score"], x1, y1))
        self.assertEqual(len(results), len(expected))
        for r, (image_id, cat, score, x1, y1) in zip(results, expected):
            self.assertEqual((r["image_id"], r["category_id"], r["score"]), (image_id, cat, score))
            self.assertEqual(r["bbox"][:2], [x1, y1])
        # Width and height of the COCO box are x2 - x1, y2 - y1 of the float32 box.
        first = self.reference[self.images[0]]["detections"][0]["box"]
        r0 = [r for r in results if r["image_id"] == 500][0]
        self.assertAlmostEqual(r0["bbox"][2], first[2] - first[0], places=3)
        self.assertAlmostEqual(r0["bbox"][3], first[3] - first[1], places=3)
        # rcnn-eval reads it (no ground truth: every AP is -1, but the file is accepted).
        if os.path.exists(EVAL):
            e = subprocess.run([EVAL, "-a", ann_path, "-r", out], capture_output=True, text=True)
            self.assertEqual(e.returncode, 0, e.stderr)
            self.assertIn(f"{len(results)} results", e.stdout)

    def test_coco_category_ids_from_the_bundle(self):
        image = self.images[0]
        p = self.run_cli("-q", "--format", "coco", image)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--format coco needs category ids", p.stderr)
        bundle = self.path("shapes_with_ids")
        shutil.copytree(BUNDLE, bundle)
        with open(os.path.join(bundle, "model.json")) as f:
            doc = json.load(f)
        doc["category_ids"] = [7 + 2 * k for k in range(len(doc["classes"]))]
        with open(os.path.join(bundle, "model.json"), "w") as f:
            json.dump(doc, f)
        p = subprocess.run([DETECT, "-m", bundle, "-q", "--threads", "1", "--format", "coco",
                            self.images[1], image], capture_output=True, text=True, timeout=600)
        self.assertEqual(p.returncode, 0, p.stderr)
        results = json.loads(p.stdout)
        expected = [(1, 7 + 2 * d["class_id"]) for d in self.reference[self.images[1]]["detections"]] + \
                   [(2, 7 + 2 * d["class_id"]) for d in self.reference[image]["detections"]]
        self.assertEqual([(r["image_id"], r["category_id"]) for r in results], expected)

    def test_coco_masks(self):
        # A Mask R-CNN bundle: each COCO result carries the same RLE as the JSON output.
        bundle = os.path.join(ROOT, "tests", "data", "detectron2", "narrow_mask_rcnn_r101_fpn_shortest_edge")
        image = os.path.join(ROOT, "tests", "data", "detectron2", "narrow_r101_fpn_shortest_edge", "cases",
                             "fruits", "image.jpg")
        with open(os.path.join(bundle, "model.json")) as f:
            classes = json.load(f)["classes"]
        ann_path = self.path("mask_instances.json")
        with open(ann_path, "w") as f:
            json.dump({"images": [{"id": 42, "file_name": "image.jpg", "height": 1, "width": 1}],
                       "categories": [{"id": 100 + k, "name": n} for k, n in enumerate(classes)]}, f)
        run = lambda *a: subprocess.run([DETECT, "-m", bundle, "-q", "--threads", "1", *a, image],
                                        capture_output=True, text=True, timeout=600)
        p_json, p_coco = run(), run("--format", "coco", "--coco-annotations", ann_path)
        self.assertEqual(p_json.returncode, 0, p_json.stderr)
        self.assertEqual(p_coco.returncode, 0, p_coco.stderr)
        dets, results = json.loads(p_json.stdout)[0]["detections"], json.loads(p_coco.stdout)
        self.assertGreater(len(dets), 0)
        self.assertEqual(len(results), len(dets))
        for d, r in zip(dets, results):
            self.assertEqual((r["image_id"], r["category_id"]), (42, 100 + d["class_id"]))
            self.assertEqual(r["segmentation"], d["segmentation"])

    def test_draw_keeps_relative_paths_and_never_overwrites_inputs(self):
        cwd = self.tmp
        out = self.path("drawn")
        p = self.run_cli("-q", "--threads", "1", "--draw", out, "--draw-format", "png", "photos", cwd=cwd)
        self.assertEqual(p.returncode, 0, p.stderr)
        for img in self.images:
            rel = os.path.splitext(os.path.relpath(img, self.tmp))[0] + ".png"
            self.assertTrue(os.path.getsize(os.path.join(out, rel)) > 0, rel)
        a, b = os.path.join(out, "photos", "a", "img00.png"), os.path.join(out, "photos", "b", "img00.png")
        self.assertNotEqual(sha(a), sha(b))  # a/img00.jpg and b/img00.jpg stay apart
        # Drawn into the input folder itself, in the inputs' format: the inputs are untouched.
        folder = self.path("inplace")
        shutil.copytree(os.path.join(self.data, "a"), folder)
        before = {f: sha(os.path.join(folder, f)) for f in os.listdir(folder)}
        p = self.run_cli("-q", "--threads", "1", "--draw", self.tmp, "inplace", cwd=cwd)
        self.assertEqual(p.returncode, 0, p.stderr)
        for f, h in before.items():
            self.assertEqual(sha(os.path.join(folder, f)), h, f)
        jpgs = [f for f in before if f.endswith(".jpg")]
        for f in jpgs:
            self.assertTrue(os.path.exists(os.path.join(folder, f[:-4] + "_2.jpg")), f)

    def test_list_file(self):
        lst = self.path("lists", "some.txt")
        os.makedirs(os.path.dirname(lst), exist_ok=True)
        chosen = self.images[:4]
        with open(lst, "w") as f:
            f.write("# a comment, then a blank line\n\n")
            for p in chosen:
                f.write(os.path.relpath(p, os.path.dirname(lst)) + "\n")
        p = self.run_cli("-q", "--threads", "1", "@" + lst)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = json.loads(p.stdout)
        self.assertEqual(len(got), 4)
        for e, path in zip(got, chosen):
            self.same_detections(e["detections"], self.reference[path]["detections"])
        p = self.run_cli("-q", "@" + self.path("lists", "missing.txt"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing.txt: cannot open the list file", p.stderr)

    def test_video_every_nth_frame(self):
        video = self.path("clip.avi")
        frames = [cv2.imread(p) for p in self.images[:12]]
        size = (256, 192)
        writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, size)
        if not writer.isOpened():
            self.skipTest("OpenCV's VideoWriter cannot write MJPG .avi here")
        for fr in frames:
            writer.write(cv2.resize(fr, size))
        writer.release()
        p = self.run_cli("-q", "--threads", "1", "--every", "3", "--format", "jsonl", video)
        if "built without OpenCV videoio" in p.stderr:
            self.skipTest("rcnn-detect was built without OpenCV videoio")
        self.assertEqual(p.returncode, 0, p.stderr)
        entries = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertEqual([e["frame"] for e in entries], [0, 3, 6, 9])
        self.assertTrue(all(e["image"] == video and e["width"] == 256 for e in entries))
        # Frame 3 gives what the same decoded frame gives as an image file.
        cap = cv2.VideoCapture(video)
        for _ in range(4):
            ok, frame = cap.read()
        self.assertTrue(ok)
        png = self.path("frame3.png")
        cv2.imwrite(png, frame)
        p = self.run_cli("-q", "--threads", "1", png)
        self.same_detections(entries[1]["detections"], json.loads(p.stdout)[0]["detections"])


if __name__ == "__main__":
    unittest.main()
