#!/usr/bin/python3
"""torchvision Keypoint R-CNN references (keypointrcnn_resnet50_fpn), stage by stage (issue 13).

Run by the test build before the C++ tests (cwd = repository root, PYTHONPATH=tools):

    /usr/bin/python3 tests/reference/gen_tv_keypoints.py --output build/reference/gen_tv_keypoints

Like gen_tv_masks.py for masks: it exports a seeded keypointrcnn_resnet50_fpn (one class,
person; the keypoint head gets ``apply_keypoint_seed_recipe``) with tools/export_torchvision.py
(a ``keypoint_rcnn`` bundle: ``keypoint_head.pt`` = keypoint_head + keypoint_predictor, and the
``keypoint_head`` object of model.json), writes every Faster R-CNN stage file exactly as
gen_torchvision.py does, and adds, computed with torchvision's own code and checked against
``model([image])``:

    keypoint_features.npy   [D, C, 14, 14] roi_heads.keypoint_roi_pool on the detection boxes
    keypoint_level.npy      int64 [D] their level (the pooler's LevelMapper)
    keypoint_heatmaps.npy   [D, K, 56, 56] keypoint_predictor(keypoint_head(...)): heatmap logits
    keypoints_resized.npy   [D, K, 3] keypointrcnn_inference (torchvision's heatmaps_to_keypoints):
                            x, y, score (keypoints_scores) in the resized frame
    detections.json         each detection's "keypoints": [[x, y, score] * K] in the original image
                            (transform.postprocess: resize_keypoints)
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common  # noqa: E402
import gen_torchvision as gtv  # noqa: E402  (imports nothing heavy until load_libraries())

torch = etv = keypointrcnn_inference = None  # imported after the stamp check

BUNDLES: List[Dict[str, Any]] = [
    dict(name="keypointrcnn_resnet50_fpn_320", model="keypointrcnn_resnet50_fpn", seed=0,
         min_size=320, max_size=512, photos=["fruits"], classes=["person"]),
]
MIN_DETECTIONS = 10


def log(message: str) -> None:
    print(f"[gen_tv_keypoints] {message}", flush=True)


def load_libraries() -> None:
    global torch, etv, keypointrcnn_inference
    gtv.load_libraries()
    import torch
    from torchvision.models.detection.roi_heads import keypointrcnn_inference

    from rcnn_export import torchvision as etv


def stamp_digest() -> str:
    return gtv.derived_stamp_digest(__file__, BUNDLES)


def expected_outputs(output: str) -> List[str]:
    return gtv.expected_outputs(output, BUNDLES, modules=("backbone_rpn.pt", "box_head.pt", "keypoint_head.pt"),
                                case_files=("meta.json", "keypoint_heatmaps.npy", "keypoints_resized.npy"))


def run_keypoint_stages(model, st: Dict[str, Any], original: Sequence[int]) -> Dict[str, Any]:
    """The keypoint branch of RoIHeads.forward and GeneralizedRCNNTransform.postprocess, written
    out: keypoint_roi_pool on the final boxes (resized frame), keypoint_head, keypoint_predictor,
    keypointrcnn_inference, resize_keypoints to the original image."""
    heads = model.roi_heads
    images = st["image_list"]
    boxes = st["det_boxes"]
    pool = heads.keypoint_roi_pool
    features = pool(st["features"], [boxes], images.image_sizes)
    level = pool.map_levels([boxes]) if len(boxes) else torch.zeros(0, dtype=torch.int64)
    heatmaps = heads.keypoint_predictor(heads.keypoint_head(features))
    kps, scores = keypointrcnn_inference(heatmaps, [boxes])
    result = model.transform.postprocess(
        [{"boxes": boxes, "scores": st["det_scores"], "labels": st["det_labels"], "keypoints": kps[0],
          "keypoints_scores": scores[0]}], images.image_sizes, [tuple(original)])[0]
    resized = torch.cat([kps[0][:, :, :2], scores[0][:, :, None]], dim=2)
    return {"features": features, "level": level.to(torch.int64), "heatmaps": heatmaps, "resized": resized,
            "result": result}


def write_keypoint_case(model, model_json: Dict[str, Any], modules: Dict[str, Any], photo: str,
                        case_dir: str) -> Dict[str, Any]:
    meta = gtv.write_case(model, model_json, modules, photo, case_dir)
    rgb = gtv.load_photo(photo)
    image = gtv.to_model_input(rgb)
    with torch.no_grad():
        st = gtv.run_stages(model, image)
        ks = run_keypoint_stages(model, st, rgb.shape[:2])
        eager = model([image])[0]
        staged = ks["result"]
        for key in ("boxes", "scores", "labels", "keypoints", "keypoints_scores"):
            if not torch.equal(eager[key], staged[key]):
                raise AssertionError(f"{photo}: staged {key} differ from model([image])")
        traced_diff = gtv.max_diff(ks["heatmaps"], modules["keypoint_head"](ks["features"]))
    for name, key in (("keypoint_features", "features"), ("keypoint_level", "level"),
                      ("keypoint_heatmaps", "heatmaps"), ("keypoints_resized", "resized")):
        gtv.save(os.path.join(case_dir, name + ".npy"), ks[key])
    with open(os.path.join(case_dir, "detections.json")) as f:
        detections = json.load(f)
    kps = torch.cat([staged["keypoints"][:, :, :2], staged["keypoints_scores"][:, :, None]], dim=2)
    for det, k in zip(detections, kps.tolist()):
        det["keypoints"] = k
    _common.write_json(os.path.join(case_dir, "detections.json"), detections)
    d = len(kps)
    meta.update({
        "num_keypoint_detections": d,
        "keypoint_score_range": [float(kps[:, :, 2].min()), float(kps[:, :, 2].max())] if d else None,
        "keypoints_distinct_positions": len({(round(x, 1), round(y, 1)) for x, y, _ in kps.reshape(-1, 3).tolist()}),
    })
    meta["checks"]["keypoints"] = {"staged_vs_eager_model_equal": True, "traced_keypoint_head_max_abs_diff": traced_diff}
    _common.write_json(os.path.join(case_dir, "meta.json"), meta)
    return meta


def make_model(spec: Dict[str, Any]):
    model = etv.build_model(spec["model"], num_classes=len(spec["classes"]) + 1, min_size=spec["min_size"],
                            max_size=spec["max_size"])
    etv.apply_seed_recipe(model, spec["seed"], name=spec["model"])
    return model.eval()


def review_case(spec: Dict[str, Any], photo: str, meta: Dict[str, Any], seconds: float) -> List[str]:
    log(f"{spec['name']}/{photo}: {meta['num_detections']} detections; keypoint scores "
        f"{meta['keypoint_score_range']}, {meta['keypoints_distinct_positions']} distinct keypoint positions of "
        f"{17 * meta['num_detections']}; traced keypoint head max |diff| "
        f"{meta['checks']['keypoints']['traced_keypoint_head_max_abs_diff']:.3g}; {seconds:.1f} s")
    if meta["num_detections"] < MIN_DETECTIONS:
        return [f"{spec['name']}/{photo}: only {meta['num_detections']} detections"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    return gtv.generate(argv, doc=__doc__, generator="tests/reference/gen_tv_keypoints.py", bundles=BUNDLES,
                        digest=stamp_digest, expected=expected_outputs, load=load_libraries,
                        make_model=make_model, write_case=write_keypoint_case, review=review_case, log=log)


if __name__ == "__main__":
    sys.exit(main())
