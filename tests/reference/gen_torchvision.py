#!/usr/bin/python3
"""torchvision Faster R-CNN references for the C++ parity tests, stage by stage.

Run by the test build before the C++ tests (cwd = repository root, PYTHONPATH=tools):

    /usr/bin/python3 tests/reference/gen_torchvision.py --output build/reference/gen_torchvision

For every bundle in BUNDLES it exports a seeded (untrained, deterministic) model with
tools/export_torchvision.py into ``<output>/<bundle>/`` and, for each photo, writes the output
of every pipeline stage to ``<output>/<bundle>/cases/<photo>/`` with the file names of the
Detectron2 fixture cases (shared/fixtures/detectron2/README.md), computed with torchvision's own
code and one thread:

    image.jpg            the photo, unchanged (from OpenCV's sample data, opencv-doc)
    decoded_rgb.npy      uint8 [H, W, 3] RGB, PIL's decode: what torchvision was fed
    input.npy            [1, 3, Hp, Wp] model.transform output (normalised, resized, padded)
    rpn_objectness_<l>.npy, rpn_deltas_<l>.npy   model.rpn.head, every RPN level
    features_<l>.npy     model.backbone, the RoI levels
    anchors_<l>.npy      [Hi*Wi*A, 4] model.rpn.anchor_generator, row (y*Wi + x)*A + a
    proposals.npy        [P, 4] model.rpn.filter_proposals boxes (resized frame, clipped)
    proposal_scores.npy  [P] their sigmoid scores (what torchvision ranks by), descending
    box_features.npy     [P, C, 7, 7] model.roi_heads.box_roi_pool
    box_level.npy        int64 [P] index into backbone.roi_levels (the pooler's LevelMapper)
    class_logits.npy     [P, K+1] background first;  box_deltas.npy [P, 4(K+1)]
    detections_resized.npy  [D, 6] x1 y1 x2 y2 score class_id (= label - 1), postprocess_detections
    detections.json      model([image]) in original image coordinates: box, score, class_id, class_name
    meta.json            sizes, scale factors, counts per level, checks (below)

The script asserts that the staged path gives exactly model([image])'s detections and that the
saved TorchScript modules reproduce the eager stages; meta.json records those diffs and
knife-edge checks (results unchanged with the NMS / score thresholds nudged, ties).
It is idempotent: a stamp (hash of this script, _common.py, the exporter code, the photos and
the library versions) makes a second run return at once. ``generate`` (the export, case and
stamp loop) also drives gen_tv_masks.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)

import _common  # noqa: E402

# torch & co. are imported by load_libraries() after the stamp check, so that an up-to-date
# run takes a fraction of a second.
np = PIL = Image = torch = torchvision = concat_box_prediction_layers = box_ops = etv = core = None


def load_libraries() -> None:
    global np, PIL, Image, torch, torchvision, concat_box_prediction_layers, box_ops, etv, core
    import numpy as np
    import PIL
    import torch
    import torchvision
    from PIL import Image
    from torchvision.models.detection.rpn import concat_box_prediction_layers
    from torchvision.ops import boxes as box_ops

    from rcnn_export import torchvision as etv
    from rcnn_export import core

PHOTO_DIR = "/usr/share/doc/opencv-doc/examples/data"

#: name -> torchvision model, seed, resize, photos. The two resnet50 bundles share weights.
BUNDLES: List[Dict[str, Any]] = [
    dict(name="fasterrcnn_resnet50_fpn_320", model="fasterrcnn_resnet50_fpn", seed=0,
         min_size=320, max_size=512, photos=["fruits", "messi5", "baboon"]),
    dict(name="fasterrcnn_resnet50_fpn_480", model="fasterrcnn_resnet50_fpn", seed=0,
         min_size=480, max_size=640, photos=["fruits", "baboon"]),
    dict(name="fasterrcnn_mobilenet_v3_large_fpn_320", model="fasterrcnn_mobilenet_v3_large_fpn", seed=0,
         min_size=320, max_size=512, photos=["messi5", "home"]),
]

STAMP = "stamp.json"
MIN_DETECTIONS = 15


def log(message: str) -> None:
    print(f"[gen_torchvision] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Stamp
# --------------------------------------------------------------------------------------------

def bundle_photos(bundles: Sequence[Dict[str, Any]]) -> List[str]:
    return sorted({p for b in bundles for p in b["photos"]})


def input_files(bundles: Sequence[Dict[str, Any]]) -> List[str]:
    files = [os.path.abspath(__file__), _common.COMMON, os.path.join(REPO, "tools", "export_torchvision.py")]
    pkg = os.path.join(REPO, "tools", "rcnn_export")
    files += sorted(os.path.join(pkg, f) for f in os.listdir(pkg) if f.endswith(".py"))
    for photo in bundle_photos(bundles):
        files.append(photo_path(photo))
    return files


def photo_path(photo: str) -> str:
    return os.path.join(PHOTO_DIR, f"{photo}.jpg")


def stamp_digest(bundles: Sequence[Dict[str, Any]] = BUNDLES) -> str:
    digest = hashlib.sha256()
    for path in input_files(bundles):
        digest.update(os.path.relpath(path, REPO).encode() if path.startswith(REPO) else path.encode())
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    for package in ("torch", "torchvision", "numpy", "Pillow"):
        digest.update(f"{package}={_common.package_version(package, '?')}".encode())
    return digest.hexdigest()


def derived_stamp_digest(script: str, bundles: Sequence[Dict[str, Any]]) -> str:
    """The stamp of a generator built on this one (gen_tv_masks.py, gen_tv_keypoints.py): its
    script, this script, and ``stamp_digest`` of its bundles (the exporter, the photos)."""
    digest = hashlib.sha256()
    for path in (os.path.abspath(script), os.path.abspath(__file__)):
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    digest.update(stamp_digest(bundles).encode())
    return digest.hexdigest()


def expected_outputs(output: str, bundles: Sequence[Dict[str, Any]] = BUNDLES,
                     modules: Sequence[str] = ("backbone_rpn.pt", "box_head.pt"),
                     case_files: Sequence[str] = ("meta.json",)) -> List[str]:
    paths = [os.path.join(output, "index.json")]
    for b in bundles:
        root = os.path.join(output, b["name"])
        paths += [os.path.join(root, f) for f in ("model.json", *modules)]
        paths += [os.path.join(root, "cases", p, f) for p in b["photos"] for f in case_files]
    return paths


def up_to_date(output: str, digest: str, expected: Sequence[str]) -> bool:
    try:
        with open(os.path.join(output, STAMP)) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return False
    return stamp.get("digest") == digest and all(os.path.exists(p) for p in expected)


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------

def load_photo(photo: str) -> np.ndarray:
    with Image.open(photo_path(photo)) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def to_model_input(rgb: np.ndarray) -> torch.Tensor:
    # Contiguous CHW, as torchvision's to_tensor / read_image give it. (A channels-last view
    # such as a bare permute() makes ATen pick another bilinear kernel that rounds
    # differently; TorchvisionPreprocess::memory_format selects that one.)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous().float() / 255.0


def select_proposals(decoded: torch.Tensor, logits: torch.Tensor, counts: Sequence[int],
                     image_size: Tuple[int, int], rpn: torch.nn.Module, nms_threshold: float
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The RPN's proposal selection written out with torchvision.ops (top-k logits per level,
    clip, small boxes, score threshold, per-level NMS on sigmoid scores, top post_nms): gives
    the source level of every proposal, and must equal rpn.filter_proposals."""
    pre, post = rpn._pre_nms_top_n["testing"], rpn._post_nms_top_n["testing"]
    picks, levels, start = [], [], 0
    for level, n in enumerate(counts):
        k = min(pre, n)
        top = logits[start:start + n].topk(k).indices + start
        picks.append(top)
        levels.append(torch.full((k,), level, dtype=torch.int64))
        start += n
    index, level = torch.cat(picks), torch.cat(levels)
    boxes = box_ops.clip_boxes_to_image(decoded[index], image_size)
    scores = torch.sigmoid(logits[index])
    keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
    boxes, scores, level = boxes[keep], scores[keep], level[keep]
    keep = torch.where(scores >= rpn.score_thresh)[0]
    boxes, scores, level = boxes[keep], scores[keep], level[keep]
    keep = box_ops.batched_nms(boxes, scores, level, nms_threshold)[:post]
    return boxes[keep], scores[keep], level[keep]


def run_stages(model: torch.nn.Module, image: torch.Tensor) -> Dict[str, Any]:
    """Every stage of model([image]) in order, with torchvision's own modules and functions."""
    rpn, heads = model.rpn, model.roi_heads
    out: Dict[str, Any] = {}
    images, _ = model.transform([image])
    out["image_list"] = images
    out["input"] = images.tensors
    features = model.backbone(images.tensors)
    out["features"] = features
    maps = list(features.values())
    objectness, deltas = rpn.head(maps)
    out["objectness"], out["deltas"] = objectness, deltas
    anchors = rpn.anchor_generator(images, maps)
    counts = [int(o[0].numel()) for o in objectness]
    out["anchors"] = list(anchors[0].split(counts))
    out["counts"] = counts
    flat_logits, flat_deltas = concat_box_prediction_layers(objectness, deltas)
    decoded = rpn.box_coder.decode(flat_deltas.detach(), anchors).view(1, -1, 4)
    out["flat_logits"], out["decoded"] = flat_logits.view(1, -1), decoded
    boxes, scores = rpn.filter_proposals(decoded, flat_logits, images.image_sizes, counts)
    proposals, proposal_scores = boxes[0], scores[0]
    out["proposals"], out["proposal_scores"] = proposals, proposal_scores
    pool = heads.box_roi_pool
    box_features = pool(features, [proposals], images.image_sizes)
    out["box_features"] = box_features
    out["box_level"] = pool.map_levels([proposals]) if pool.map_levels is not None else \
        torch.zeros(len(proposals), dtype=torch.int64)
    class_logits, box_deltas = heads.box_predictor(heads.box_head(box_features))
    out["class_logits"], out["box_deltas"] = class_logits, box_deltas
    det_boxes, det_scores, det_labels = heads.postprocess_detections(
        class_logits, box_deltas, [proposals], images.image_sizes)
    out["det_boxes"], out["det_scores"], out["det_labels"] = det_boxes[0], det_scores[0], det_labels[0]
    original = [tuple(image.shape[-2:])]
    result = model.transform.postprocess(
        [{"boxes": det_boxes[0], "scores": det_scores[0], "labels": det_labels[0]}],
        images.image_sizes, original)
    out["result"] = result[0]
    return out


def knife_edges(model: torch.nn.Module, st: Dict[str, Any]) -> Dict[str, Any]:
    """Would a slightly different threshold or an order of equal scores change the result?"""
    rpn, heads = model.rpn, model.roi_heads
    images = st["image_list"]
    checks: Dict[str, Any] = {}

    same_rpn = True
    for delta in (-1e-5, 1e-5):
        saved = rpn.nms_thresh
        rpn.nms_thresh = saved + delta
        try:
            boxes, _ = rpn.filter_proposals(st["decoded"], st["flat_logits"], images.image_sizes, st["counts"])
        finally:
            rpn.nms_thresh = saved
        same_rpn &= torch.equal(boxes[0], st["proposals"])
    checks["rpn_unchanged_with_nms_threshold_pm_1e-5"] = bool(same_rpn)

    cut_ties = 0
    pre = rpn._pre_nms_top_n["testing"]
    for logits in st["flat_logits"][0].split(st["counts"]):
        if logits.numel() > pre:
            top = logits.topk(pre + 1).values
            cut_ties += int(top[pre - 1] == top[pre])
    checks["rpn_tied_logits_at_pre_nms_cut"] = cut_ties
    scores = st["proposal_scores"]
    gaps = (scores[:-1] - scores[1:]) if len(scores) > 1 else torch.ones(1)
    checks["rpn_kept_equal_scores"] = int((gaps == 0).sum())
    checks["rpn_kept_min_score_gap"] = float(gaps.min())

    same_roi = True
    reference = (st["det_boxes"], st["det_scores"], st["det_labels"])
    for attr, delta in (("score_thresh", -1e-6), ("score_thresh", 1e-6), ("nms_thresh", -1e-5), ("nms_thresh", 1e-5)):
        saved = getattr(heads, attr)
        setattr(heads, attr, saved + delta)
        try:
            b, s, l = heads.postprocess_detections(st["class_logits"], st["box_deltas"], [st["proposals"]],
                                                   images.image_sizes)
        finally:
            setattr(heads, attr, saved)
        same_roi &= all(torch.equal(x[0], y) for x, y in zip((b, s, l), reference))
    checks["roi_unchanged_with_score_threshold_pm_1e-6_and_nms_threshold_pm_1e-5"] = bool(same_roi)

    limit = heads.detections_per_img
    heads.detections_per_img = 10 ** 9
    try:
        _, all_scores, _ = heads.postprocess_detections(st["class_logits"], st["box_deltas"], [st["proposals"]],
                                                        images.image_sizes)
    finally:
        heads.detections_per_img = limit
    all_scores = all_scores[0]
    checks["roi_candidates_after_nms"] = int(len(all_scores))
    if len(all_scores) > limit:
        checks["roi_score_gap_at_detections_per_image_cut"] = float(all_scores[limit - 1] - all_scores[limit])
    det = st["det_scores"]
    dgaps = (det[:-1] - det[1:]) if len(det) > 1 else torch.ones(1)
    checks["final_equal_scores_any_class"] = int((dgaps == 0).sum())
    checks["final_min_score_gap"] = float(dgaps.min())
    return checks


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max()) if a.numel() else 0.0


# --------------------------------------------------------------------------------------------
# Writing a case
# --------------------------------------------------------------------------------------------

def save(path: str, array: Any) -> None:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    np.save(path, np.ascontiguousarray(array))


def write_case(model: torch.nn.Module, model_json: Dict[str, Any], modules: Dict[str, Any], photo: str,
               case_dir: str) -> Dict[str, Any]:
    os.makedirs(case_dir, exist_ok=True)
    rgb = load_photo(photo)
    image = to_model_input(rgb)
    backbone = model_json["backbone"]
    rpn_levels, roi_levels = backbone["rpn_levels"], backbone["roi_levels"]
    classes = model_json["classes"]

    with torch.no_grad():
        st = run_stages(model, image)
        eager = model([image])[0]
        result = st["result"]
        for key in ("boxes", "scores", "labels"):
            if not torch.equal(eager[key], result[key]):
                raise AssertionError(f"{photo}: staged {key} differ from model([image]) "
                                     f"({len(result[key])} vs {len(eager[key])} entries)")
        mine_boxes, mine_scores, mine_levels = select_proposals(
            st["decoded"][0], st["flat_logits"][0], st["counts"], st["image_list"].image_sizes[0], model.rpn,
            model.rpn.nms_thresh)
        if not (torch.equal(mine_boxes, st["proposals"]) and torch.equal(mine_scores, st["proposal_scores"])):
            raise AssertionError(f"{photo}: select_proposals() does not reproduce rpn.filter_proposals")

        # The saved TorchScript modules on the same inputs.
        traced = core.flatten_backbone_rpn(modules["backbone_rpn"](st["input"]), rpn_levels, roi_levels)
        staged = core.flatten_backbone_rpn(
            (st["objectness"], st["deltas"], [st["features"][l] for l in roi_levels]), rpn_levels, roi_levels)
        backbone_diffs = {name: max_diff(a, b) for (name, a), (_, b) in zip(staged, traced)}
        logits_t, deltas_t = modules["box_head"](st["box_features"])
        box_diffs = {"class_logits": max_diff(st["class_logits"], logits_t),
                     "box_deltas": max_diff(st["box_deltas"], deltas_t)}
        for name, diff in list(backbone_diffs.items()) + list(box_diffs.items()):
            if not diff <= 1e-4:
                raise AssertionError(f"{photo}: saved module output {name} differs from eager by {diff}")
        checks = {"traced_backbone_rpn_max_abs_diff": backbone_diffs,
                  "traced_box_head_max_abs_diff": box_diffs,
                  "staged_vs_eager_model": {"detections_equal": True, "proposals_equal_to_own_selection": True}}
        checks["knife_edges"] = knife_edges(model, st)

    shutil.copyfile(photo_path(photo), os.path.join(case_dir, "image.jpg"))
    save(os.path.join(case_dir, "decoded_rgb.npy"), rgb)
    save(os.path.join(case_dir, "input.npy"), st["input"])
    for level, t in zip(rpn_levels, st["objectness"]):
        save(os.path.join(case_dir, f"rpn_objectness_{level}.npy"), t)
    for level, t in zip(rpn_levels, st["deltas"]):
        save(os.path.join(case_dir, f"rpn_deltas_{level}.npy"), t)
    for level in roi_levels:
        save(os.path.join(case_dir, f"features_{level}.npy"), st["features"][level])
    for level, t in zip(rpn_levels, st["anchors"]):
        save(os.path.join(case_dir, f"anchors_{level}.npy"), t)
    save(os.path.join(case_dir, "proposals.npy"), st["proposals"])
    save(os.path.join(case_dir, "proposal_scores.npy"), st["proposal_scores"])
    save(os.path.join(case_dir, "box_features.npy"), st["box_features"])
    save(os.path.join(case_dir, "box_level.npy"), st["box_level"].to(torch.int64))
    save(os.path.join(case_dir, "class_logits.npy"), st["class_logits"])
    save(os.path.join(case_dir, "box_deltas.npy"), st["box_deltas"])
    labels = st["det_labels"]
    detections_resized = torch.cat([st["det_boxes"], st["det_scores"][:, None],
                                    (labels - 1).to(torch.float32)[:, None]], dim=1)
    save(os.path.join(case_dir, "detections_resized.npy"), detections_resized.to(torch.float32))

    detections = []
    for box, score, label in zip(result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()):
        detections.append({"box": [float(v) for v in box], "score": float(score), "class_id": int(label) - 1,
                           "class_name": classes[int(label) - 1]})
    _common.write_json(os.path.join(case_dir, "detections.json"), detections)

    h0, w0 = rgb.shape[:2]
    rh, rw = (int(v) for v in st["image_list"].image_sizes[0])
    ph, pw = (int(v) for v in st["input"].shape[-2:])
    short, long_ = min(h0, w0), max(h0, w0)
    resize_scale = torch.min(torch.tensor(float(model.transform.min_size[-1])) / torch.tensor(float(short)),
                             torch.tensor(float(model.transform.max_size)) / torch.tensor(float(long_)))
    rpn_counts = torch.bincount(mine_levels, minlength=len(rpn_levels)).tolist()
    roi_counts = torch.bincount(st["box_level"], minlength=len(roi_levels)).tolist()
    label_list = labels.tolist()
    meta = {
        "image": "image.jpg",
        "photo": photo_path(photo),
        "decoded_with": f"PIL.Image.open(...).convert('RGB') (Pillow {PIL.__version__}), RGB uint8",
        "decoded_pixel_sum": int(rgb.astype(np.int64).sum()),
        "original_height": int(h0),
        "original_width": int(w0),
        "resized_height": rh,
        "resized_width": rw,
        "padded_height": ph,
        "padded_width": pw,
        "scale_factors": {
            "resize_scale_float32": float(resize_scale),
            "resize_y": rh / h0,
            "resize_x": rw / w0,
            "postprocess_y": float(np.float32(h0) / np.float32(rh)),
            "postprocess_x": float(np.float32(w0) / np.float32(rw)),
        },
        "num_proposals": int(len(st["proposals"])),
        "proposals_per_rpn_level": dict(zip(rpn_levels, rpn_counts)),
        "proposals_per_roi_level": dict(zip(roi_levels, roi_counts)),
        "num_detections_resized": int(len(label_list)),
        "num_detections": int(len(result["labels"])),
        "num_classes_detected": len(set(label_list)),
        "score_range": [float(st["det_scores"].min()), float(st["det_scores"].max())] if label_list else None,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
                     "pillow": PIL.__version__},
        "checks": checks,
    }
    _common.write_json(os.path.join(case_dir, "meta.json"), meta)
    return meta


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def make_model(spec: Dict[str, Any], cache: Dict[Tuple[str, int], torch.nn.Module]) -> torch.nn.Module:
    key = (spec["model"], spec["seed"])
    if key not in cache:
        model = etv.build_model(spec["model"], num_classes=91)
        etv.apply_seed_recipe(model, spec["seed"], name=spec["model"])
        cache[key] = model
    model = cache[key]
    model.transform.min_size = (int(spec["min_size"]),)
    model.transform.max_size = int(spec["max_size"])
    # MultiScaleRoIAlign caches its scales from the first image; start each bundle afresh.
    model.roi_heads.box_roi_pool.scales = None
    model.roi_heads.box_roi_pool.map_levels = None
    return model.eval()


def generate(argv: Optional[Sequence[str]], *, doc: str, generator: str, bundles: Sequence[Dict[str, Any]],
             digest: Callable[[], str], expected: Callable[[str], List[str]], load: Callable[[], None],
             make_model: Callable[[Dict[str, Any]], torch.nn.Module],
             write_case: Callable[..., Dict[str, Any]],
             review: Callable[[Dict[str, Any], str, Dict[str, Any], float], List[str]],
             log: Callable[[str], None]) -> int:
    """The generator's run: parse ``--output`` / ``--force``, return at once when the stamp
    (``digest()``, with every ``expected(output)`` file present) matches; otherwise ``load()``
    the libraries, and for each bundle spec: export ``make_model(spec)`` with
    export_torchvision.py, ``write_case(model, model_json, modules, photo, case_dir)`` for each
    photo (its meta.json), ``review(spec, photo, meta, seconds)`` (logs the case, returns its
    problems, logged as warnings at the end); then index.json and the stamp."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="directory for the bundles and cases")
    parser.add_argument("--force", action="store_true", help="regenerate even when the stamp matches")
    args = parser.parse_args(argv)

    missing = [photo_path(p) for p in bundle_photos(bundles) if not os.path.exists(photo_path(p))]
    if missing:
        print(f"error: missing photos {missing}: install opencv-doc (scripts/install-deps.sh)", file=sys.stderr)
        return 1

    output = os.path.abspath(args.output)
    stamp_value = digest()
    if not args.force and up_to_date(output, stamp_value, expected(output)):
        log(f"{output} is up to date")
        return 0

    start = time.time()
    load()
    torch.set_num_threads(1)
    os.makedirs(output, exist_ok=True)
    stamp_path = os.path.join(output, STAMP)
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    known = {b["name"] for b in bundles}
    for entry in os.listdir(output):  # bundles of an older BUNDLES list
        path = os.path.join(output, entry)
        if entry not in known and os.path.isfile(os.path.join(path, "model.json")):
            shutil.rmtree(path)
    coco = etv.coco_categories()[1:]
    index: Dict[str, Any] = {"generator": generator, "bundles": {}}
    problems: List[str] = []
    for spec in bundles:
        t0 = time.time()
        bundle_dir = os.path.join(output, spec["name"])
        if os.path.exists(bundle_dir):
            shutil.rmtree(bundle_dir)
        model = make_model(spec)
        note = (f"untrained deterministic weights: export_torchvision.py seed recipe, --seed {spec['seed']}; "
                f"reference cases by {generator}")
        log(f"{spec['name']}: exporting {spec['model']} (seed {spec['seed']}, "
            f"resize {spec['min_size']}/{spec['max_size']})")
        model_json, _ = etv.export(model, spec["model"], bundle_dir, classes=spec.get("classes", coco), note=note)
        modules = {key: torch.jit.load(os.path.join(bundle_dir, entry["file"]))
                   for key, entry in model_json["modules"].items()}
        for photo in spec["photos"]:
            t1 = time.time()
            meta = write_case(model, model_json, modules, photo, os.path.join(bundle_dir, "cases", photo))
            problems += review(spec, photo, meta, time.time() - t1)
        index["bundles"][spec["name"]] = {
            "model": spec["model"], "seed": spec["seed"], "min_size": spec["min_size"],
            "max_size": spec["max_size"], "cases": list(spec["photos"]),
        }
        log(f"{spec['name']}: done in {time.time() - t0:.1f} s")
    for problem in problems:
        log(f"WARNING: {problem}")
    _common.write_json(os.path.join(output, "index.json"), index)
    _common.write_json(stamp_path, {"digest": stamp_value, "seconds": round(time.time() - start, 1)})
    log(f"all references written to {output} in {time.time() - start:.1f} s")
    return 0


def review_case(spec: Dict[str, Any], photo: str, meta: Dict[str, Any], seconds: float) -> List[str]:
    edges = meta["checks"]["knife_edges"]
    score_range = meta["score_range"] or [0.0, 0.0]
    log(f"{spec['name']}/{photo}: {meta['original_height']}x{meta['original_width']} -> "
        f"{meta['resized_height']}x{meta['resized_width']} (padded {meta['padded_height']}x"
        f"{meta['padded_width']}); proposals {meta['num_proposals']} "
        f"(rpn levels {meta['proposals_per_rpn_level']}, roi levels {meta['proposals_per_roi_level']}); "
        f"detections {meta['num_detections']} of {meta['num_classes_detected']} classes, "
        f"scores {score_range[0]:.3f}-{score_range[1]:.3f}; {seconds:.1f} s")
    problems = []
    if meta["num_detections"] < MIN_DETECTIONS or meta["num_classes_detected"] < 3:
        problems.append(f"{spec['name']}/{photo}: only {meta['num_detections']} detections of "
                        f"{meta['num_classes_detected']} classes")
    for key in ("rpn_unchanged_with_nms_threshold_pm_1e-5",
                "roi_unchanged_with_score_threshold_pm_1e-6_and_nms_threshold_pm_1e-5"):
        if not edges[key]:
            problems.append(f"{spec['name']}/{photo}: knife edge: {key} is false")
    if edges["rpn_tied_logits_at_pre_nms_cut"] or edges["rpn_kept_equal_scores"] or \
            edges["final_equal_scores_any_class"]:
        problems.append(f"{spec['name']}/{photo}: tied scores {edges}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    cache: Dict[Tuple[str, int], torch.nn.Module] = {}
    return generate(argv, doc=__doc__, generator="tests/reference/gen_torchvision.py", bundles=BUNDLES,
                    digest=stamp_digest, expected=expected_outputs, load=load_libraries,
                    make_model=lambda spec: make_model(spec, cache), write_case=write_case,
                    review=review_case, log=log)


if __name__ == "__main__":
    sys.exit(main())
