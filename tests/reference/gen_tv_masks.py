#!/usr/bin/python3
"""torchvision Mask R-CNN references for the C++ parity tests, stage by stage.

Run by the test build before the C++ tests (cwd = repository root, PYTHONPATH=tools):

    /usr/bin/python3 tests/reference/gen_tv_masks.py --output build/reference/gen_tv_masks

Exports one seeded (untrained, deterministic) maskrcnn_resnet50_fpn with
tools/export_torchvision.py into ``<output>/<bundle>/`` and, for each photo, writes
``<output>/<bundle>/cases/<photo>/`` with torchvision's own code and one thread: every Faster
R-CNN stage file of gen_torchvision.py (same names, same code), plus the mask files of the
Detectron2 Mask R-CNN fixture (shared/fixtures/detectron2/README.md, "Mask case files"):

    mask_features.npy      [D, 256, 14, 14] roi_heads.mask_roi_pool on the detections'
                           boxes in the resized frame (detections_resized.npy), detection order
    mask_level.npy         int64 [D] index into backbone.roi_levels (mask_roi_pool's LevelMapper)
    mask_logits_class.npy  [D, 28, 28] channel label (= class_id + 1) of mask_head.pt's
                           raw logits [D, 91, 28, 28]
    mask_probs.npy         [D, 28, 28] roi_heads.maskrcnn_inference: sigmoid, that channel
    masks.npz              model([image])["masks"] >= 0.5 (torchvision returns soft masks and
                           documents that threshold), bool [D, H, W] in the original image as
                           ``packed`` = np.packbits(masks, axis=-1) and ``shape`` (int64), an
                           uncompressed np.savez like the Detectron2 fixture's
    detections.json        gen_torchvision.py's, plus ``mask_pixels`` per detection
    meta.json              gen_torchvision.py's, plus num_masks, mask_size,
                           mask_features_per_roi_level, mask_pixels_total, mask_coverage_of_box,
                           mask_iou_28x28_between_detections and checks.masks (below)

It asserts that the staged path (transform, backbone, rpn, box stage, mask_roi_pool,
mask_head, mask_predictor, maskrcnn_inference, transform.postprocess) gives exactly
model([image])'s boxes, scores, labels and soft masks, and that the saved mask_head.pt
reproduces the eager mask head. checks.masks records that, and the knife edges: how many
pasted soft values lie within 1e-6 / 1e-5 / 1e-4 of the threshold (the pixels a last-bit
difference upstream could flip). Idempotent: a stamp (hash of this script,
gen_torchvision.py, the exporter code, the photos and the library versions) makes a second run
return at once.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)

import _common  # noqa: E402
import gen_torchvision as gtv  # noqa: E402  (imports nothing heavy until load_libraries())

np = torch = etv = maskrcnn_inference = None  # imported after the stamp check

#: One small bundle: the mask stages cost little next to the backbone, so a few photos at 320
#: cover them (fruits: many overlapping objects, messi5: people and thin shapes, baboon: texture).
BUNDLES: List[Dict[str, Any]] = [
    dict(name="maskrcnn_resnet50_fpn_320", model="maskrcnn_resnet50_fpn", seed=0,
         min_size=320, max_size=512, photos=["fruits", "messi5", "baboon"]),
]

MASK_THRESHOLD = 0.5


def log(message: str) -> None:
    print(f"[gen_tv_masks] {message}", flush=True)


def load_libraries() -> None:
    global np, torch, etv, maskrcnn_inference
    gtv.load_libraries()
    import numpy as np
    import torch
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    from rcnn_export import torchvision as etv


# --------------------------------------------------------------------------------------------
# Stamp
# --------------------------------------------------------------------------------------------

def stamp_digest() -> str:
    return gtv.derived_stamp_digest(__file__, BUNDLES)


def expected_outputs(output: str) -> List[str]:
    return gtv.expected_outputs(output, BUNDLES, modules=("backbone_rpn.pt", "box_head.pt", "mask_head.pt"),
                                case_files=("meta.json", "masks.npz", "mask_probs.npy"))


# --------------------------------------------------------------------------------------------
# Mask stages
# --------------------------------------------------------------------------------------------

def run_mask_stages(model: torch.nn.Module, st: Dict[str, Any], original: Sequence[int]) -> Dict[str, Any]:
    """The mask branch of RoIHeads.forward and GeneralizedRCNNTransform.postprocess, written
    out: mask_roi_pool on the final boxes (resized frame), mask_head, mask_predictor,
    maskrcnn_inference (sigmoid, channel = label), paste_masks_in_image with the rescaled boxes."""
    heads = model.roi_heads
    images = st["image_list"]
    boxes, labels = st["det_boxes"], st["det_labels"]
    pool = heads.mask_roi_pool
    features = pool(st["features"], [boxes], images.image_sizes)
    level = pool.map_levels([boxes]) if len(boxes) else torch.zeros(0, dtype=torch.int64)
    logits = heads.mask_predictor(heads.mask_head(features))
    probs = maskrcnn_inference(logits, [labels])[0]
    result = model.transform.postprocess(
        [{"boxes": boxes, "scores": st["det_scores"], "labels": labels, "masks": probs}],
        images.image_sizes, [tuple(original)])[0]
    return {"features": features, "level": level.to(torch.int64), "logits": logits,
            "logits_class": logits[torch.arange(len(labels)), labels], "probs": probs[:, 0],
            "result": result}


def mask_statistics(masks: np.ndarray, boxes: np.ndarray, probs: np.ndarray) -> Dict[str, Any]:
    d = len(masks)
    pixels = masks.reshape(d, -1).sum(axis=1) if d else np.zeros(0, np.int64)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6) if d else np.zeros(0)
    coverage = pixels / area if d else np.zeros(0)
    small = (probs >= MASK_THRESHOLD).reshape(d, -1).astype(np.float64)
    inter = small @ small.T
    sizes = small.sum(axis=1)
    iou = inter / np.maximum(sizes[:, None] + sizes[None, :] - inter, 1.0)
    pairs = iou[np.triu_indices(d, 1)] if d > 1 else np.zeros(1)
    return {
        "mask_pixels_total": int(pixels.sum()),
        "mask_pixels_min_median_max": [int(pixels.min()), int(np.median(pixels)), int(pixels.max())] if d else None,
        "mask_coverage_of_box": {"mean": float(coverage.mean()), "min": float(coverage.min()),
                                 "max": float(coverage.max())} if d else None,
        "mask_fraction_28x28": {"mean": float(small.mean()), "min": float(small.mean(axis=1).min()),
                                "max": float(small.mean(axis=1).max())} if d else None,
        "mask_iou_28x28_between_detections": {"mean": float(pairs.mean()), "max": float(pairs.max())},
        "empty_masks": int((pixels == 0).sum()),
    }


def write_mask_case(model: torch.nn.Module, model_json: Dict[str, Any], modules: Dict[str, Any], photo: str,
                    case_dir: str) -> Dict[str, Any]:
    # The Faster R-CNN stage files, checks and meta.json, exactly as gen_torchvision.py writes them.
    meta = gtv.write_case(model, model_json, modules, photo, case_dir)
    rgb = gtv.load_photo(photo)
    image = gtv.to_model_input(rgb)
    original = rgb.shape[:2]
    with torch.no_grad():
        st = gtv.run_stages(model, image)
        ms = run_mask_stages(model, st, original)
        eager = model([image])[0]
        staged = ms["result"]
        for key in ("boxes", "scores", "labels", "masks"):
            if not torch.equal(eager[key], staged[key]):
                raise AssertionError(f"{photo}: staged {key} differ from model([image])")
        traced = modules["mask_head"](ms["features"])
        traced_diff = gtv.max_diff(ms["logits"], traced)
        scale = max(1.0, float(ms["logits"].abs().max())) if ms["logits"].numel() else 1.0
        if not traced_diff <= 1e-4 * scale:
            raise AssertionError(f"{photo}: mask_head.pt differs from the eager mask head by {traced_diff}")
        logits_probs_diff = gtv.max_diff(torch.sigmoid(ms["logits_class"]), ms["probs"])

    soft = staged["masks"][:, 0].numpy()
    masks = soft >= MASK_THRESHOLD
    boxes = staged["boxes"].numpy()
    d = len(masks)
    gtv.save(os.path.join(case_dir, "mask_features.npy"), ms["features"])
    gtv.save(os.path.join(case_dir, "mask_level.npy"), ms["level"])
    gtv.save(os.path.join(case_dir, "mask_logits_class.npy"), ms["logits_class"])
    gtv.save(os.path.join(case_dir, "mask_probs.npy"), ms["probs"])
    shape = np.array(masks.shape, np.int64)
    np.savez(os.path.join(case_dir, "masks.npz"), packed=np.packbits(masks, axis=-1), shape=shape)

    with open(os.path.join(case_dir, "detections.json")) as f:
        detections = json.load(f)
    if len(detections) != d:
        raise AssertionError(f"{photo}: {len(detections)} detections but {d} masks")
    pixels = masks.reshape(d, -1).sum(axis=1).tolist() if d else []
    for det, count in zip(detections, pixels):
        det["mask_pixels"] = int(count)
    _common.write_json(os.path.join(case_dir, "detections.json"), detections)

    roi_levels = model_json["backbone"]["roi_levels"]
    counts = torch.bincount(ms["level"], minlength=len(roi_levels)).tolist()
    distance = np.abs(soft.astype(np.float64) - MASK_THRESHOLD)
    meta.update({
        "num_masks": int(d),
        "mask_size": int(ms["probs"].shape[-1]) if d else 2 * model_json["mask_head"]["pooler_resolution"],
        "mask_features_per_roi_level": dict(zip(roi_levels, counts)),
        **mask_statistics(masks, boxes, ms["probs"].numpy()),
    })
    meta["checks"]["masks"] = {
        "staged_vs_eager_model": {"boxes_scores_labels_soft_masks_equal": True},
        "traced_mask_head_max_abs_diff": traced_diff,
        "mask_logits_range": [float(ms["logits_class"].min()), float(ms["logits_class"].max())] if d else None,
        "sigmoid_of_class_channel_vs_maskrcnn_inference_max_abs_diff": logits_probs_diff,
        "soft_values_within_1e-6_1e-5_1e-4_of_threshold": [int((distance < e).sum()) for e in (1e-6, 1e-5, 1e-4)],
    }
    _common.write_json(os.path.join(case_dir, "meta.json"), meta)
    return meta


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def make_model(spec: Dict[str, Any]) -> torch.nn.Module:
    model = etv.build_model(spec["model"], num_classes=91, min_size=spec["min_size"], max_size=spec["max_size"])
    etv.apply_seed_recipe(model, spec["seed"], name=spec["model"])
    return model.eval()


def review_case(spec: Dict[str, Any], photo: str, meta: Dict[str, Any], seconds: float) -> List[str]:
    checks = meta["checks"]["masks"]
    cov = meta["mask_coverage_of_box"] or {"mean": 0.0, "min": 0.0, "max": 0.0}
    ious = meta["mask_iou_28x28_between_detections"]
    log(f"{spec['name']}/{photo}: {meta['num_detections']} detections of {meta['num_classes_detected']} "
        f"classes; masks: pixels min/median/max {meta['mask_pixels_min_median_max']}, coverage of box "
        f"{cov['mean']:.2f} ({cov['min']:.2f}-{cov['max']:.2f}), 28x28 IoU between detections "
        f"{ious['mean']:.2f} (max {ious['max']:.2f}), mask RoIs per level "
        f"{meta['mask_features_per_roi_level']}, logits {checks['mask_logits_range']}, values within "
        f"1e-6/1e-5/1e-4 of 0.5: {checks['soft_values_within_1e-6_1e-5_1e-4_of_threshold']}; "
        f"traced mask head max |diff| {checks['traced_mask_head_max_abs_diff']:.3g}; "
        f"{seconds:.1f} s")
    problems = []
    if meta["num_detections"] < gtv.MIN_DETECTIONS or meta["empty_masks"]:
        problems.append(f"{spec['name']}/{photo}: {meta['num_detections']} detections, "
                        f"{meta['empty_masks']} empty masks")
    # Degenerate: a 28 x 28 mask (nearly) empty or full, or two detections' masks alike.
    frac = meta["mask_fraction_28x28"] or {"min": 0.0, "max": 1.0}
    if frac["min"] < 0.01 or frac["max"] > 0.99 or ious["max"] >= 0.98:
        problems.append(f"{spec['name']}/{photo}: degenerate masks (28x28 fraction set {frac}, "
                        f"28x28 IoU {ious})")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    return gtv.generate(argv, doc=__doc__, generator="tests/reference/gen_tv_masks.py", bundles=BUNDLES,
                        digest=stamp_digest, expected=expected_outputs, load=load_libraries,
                        make_model=make_model, write_case=write_mask_case, review=review_case, log=log)


if __name__ == "__main__":
    sys.exit(main())
