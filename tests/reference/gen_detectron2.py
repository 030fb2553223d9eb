#!/usr/bin/python3
"""Detectron2 references for the C++ parity tests, made by a real Detectron2 v0.6 during the test run.

Run by the test build before the C++ tests (cwd = repository root, PYTHONPATH=tools):

    /usr/bin/python3 tests/reference/gen_detectron2.py --output build/reference/gen_detectron2

For every bundle in BUNDLES it builds the model from Detectron2's own model-zoo config (at the
narrow widths of the committed fixtures, so that it runs in seconds), gives it seeded weights
(``seed_weights``: the recipe of shared/fixtures/detectron2/README.md, spread-out scores and
non-degenerate masks), saves them as a checkpoint, and exports that checkpoint with
``tools/export_detectron2.py``'s real code path (``rcnn_export.detectron2.main``: argument
parsing, Detectron2's get_cfg / model_zoo / build_model / DetectionCheckpointer, tracing,
traced-vs-eager checks) into ``<output>/<bundle>/``. Then, for each photo, it runs
Detectron2's inference as a user does (shortest edge: the real ``DefaultPredictor``; fixed
800x800: the AWS Neuron app note's resize, then ``model([{"image", "height", "width"}])``) and
the same model stage by stage with Detectron2's functions, asserts that both give the same
detections (and masks), and writes every stage into ``<output>/<bundle>/cases/<photo>/`` with
the file names of the fixture cases (shared/fixtures/detectron2/README.md): image.jpg,
resized_bgr.npy, input.npy, rpn_objectness_<l>, rpn_deltas_<l>, features_<l>, anchors_<l>,
proposals, proposal_logits, box_features, box_level, class_logits, box_deltas,
detections_resized, detections.json, and for Mask R-CNN mask_features, mask_level,
mask_logits_class, mask_probs, masks.npz. meta.json records the sizes, counts and the measured
agreement (``checks``: saved TorchScript modules vs eager Detectron2, staged vs model()).

Detectron2 is found as tests/reference/_peers.py says (importable, $RCNN_PEERS_PYTHON,
../shared/peers/python). Without it the script writes ``<output>/skipped.txt`` (one line: why),
which makes the C++ tests skip with that line, and exits 0 - or exits 1 when
RCNN_REQUIRE_PEERS=1 (.ci/run). Idempotent: a stamp (this script, _common.py, the exporter
package, the photos, the library versions) makes a second run return at once.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)

import _common  # noqa: E402
import _peers  # noqa: E402

GENERATOR = "tests/reference/gen_detectron2.py"
PHOTO_DIR = "/usr/share/doc/opencv-doc/examples/data"
SKIPPED = "skipped.txt"
STAMP = "stamp.json"

#: The committed fixtures' narrowing (shared/fixtures/detectron2/README.md): depth, FPN, heads
#: and thresholds as in the config, fewer channels.
NARROW = ["MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
          "MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "128"]
MASK_NARROW = ["MODEL.ROI_MASK_HEAD.CONV_DIM", "32"]
SHORT = ["INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "533"]
#: DC5 (no FPN): the same ResNet narrowing (res5: 512 channels). C4 halves it once more
#: (res4 128, res5 256 channels, bottlenecks 64): its res5 is the box head, run on every
#: proposal's 14x14 pool, and the generator runs it three times per photo.
DC5_NARROW = [v for i in range(0, len(NARROW), 2) if not NARROW[i].startswith("MODEL.FPN")
              for v in NARROW[i:i + 2]]
C4_NARROW = DC5_NARROW + ["MODEL.RESNETS.WIDTH_PER_GROUP", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32"]

#: name -> model-zoo config, config overrides, exporter options, photos, the committed fixture
#: (tests/data/detectron2) whose model.json the export must equal, and the background
#: bias of the seed recipe where 7.5 (R-101) leaves too few detections (R-50: 2 and 7 on these
#: photos; 5.5 gives 22 and 44). The two R-101 bundles share their weights (same config, seed).
BUNDLES: List[Dict[str, Any]] = [
    dict(name="faster_rcnn_R_101_FPN_shortest_edge", config="COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
         opts=NARROW + SHORT, export=[], photos=["fruits", "messi5"], fixture="narrow_r101_fpn_shortest_edge"),
    dict(name="faster_rcnn_R_101_FPN_fixed800", config="COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
         opts=NARROW + SHORT, export=["--fixed-size", "800", "800", "--static-rois", "1000"], photos=["fruits"],
         fixture="narrow_r101_fpn_fixed800"),
    dict(name="mask_rcnn_R_50_FPN_shortest_edge", config="COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
         opts=NARROW + MASK_NARROW + SHORT, export=[], photos=["fruits", "messi5"], background_bias=5.5,
         fixture="narrow_mask_rcnn_r101_fpn_shortest_edge"),
    # C4 (Res5ROIHeads: RPN and 14x14 pooler on res4, res5 + mean + predictor as the box head,
    # res5 + deconv as the mask head) and DC5 (res5 dilated, stride 16; 2FC box head).
    # Class scores: C4 whitens its predictor (seed_weights), DC5's 2FC head sees small features.
    dict(name="faster_rcnn_R_50_C4_shortest_edge", config="COCO-Detection/faster_rcnn_R_50_C4_3x.yaml",
         opts=C4_NARROW + SHORT, export=[], photos=["fruits", "messi5"], background_bias=3.0,
         class_logits_std=0.5),
    dict(name="faster_rcnn_R_50_DC5_shortest_edge", config="COCO-Detection/faster_rcnn_R_50_DC5_3x.yaml",
         opts=DC5_NARROW + SHORT, export=[], photos=["fruits", "messi5"], class_logits_std=15.0),
    # Its boxes are the C4 Faster R-CNN's (seed_weights): one photo is enough for the masks.
    dict(name="mask_rcnn_R_50_C4_shortest_edge", config="COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml",
         opts=C4_NARROW + MASK_NARROW + SHORT, export=[], photos=["fruits"], background_bias=3.0,
         class_logits_std=0.5),
]
SEED = 1234
MIN_DETECTIONS = 15


def log(message: str) -> None:
    print(f"[gen_detectron2] {message}", flush=True)


def photo_path(photo: str) -> str:
    return os.path.join(PHOTO_DIR, f"{photo}.jpg")


def input_files(bundles: Sequence[Dict[str, Any]], scripts: Sequence[str]) -> List[str]:
    pkg = os.path.join(REPO, "tools", "rcnn_export")
    files = [os.path.abspath(__file__), *scripts, _common.COMMON, os.path.join(HERE, "_peers.py"),
             os.path.join(REPO, "tools", "export_detectron2.py")]
    files += sorted(os.path.join(pkg, f) for f in os.listdir(pkg) if f.endswith(".py"))
    files += sorted({photo_path(p) for b in bundles for p in b["photos"]})
    return files


def stamp_digest(detectron2_version: str, bundles: Sequence[Dict[str, Any]], scripts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in input_files(bundles, scripts):
        digest.update(os.path.relpath(path, REPO).encode() if path.startswith(REPO) else path.encode())
        digest.update(bytes.fromhex(_common.file_sha256(path)))
    for package in ("torch", "torchvision", "numpy", "Pillow", "opencv-python"):
        digest.update(f"{package}={_common.package_version(package, '?')}".encode())
    digest.update(f"detectron2={detectron2_version}".encode())
    return digest.hexdigest()


def expected_outputs(output: str, bundles: Sequence[Dict[str, Any]]) -> List[str]:
    paths = [os.path.join(output, "index.json")]
    for b in bundles:
        root = os.path.join(output, b["name"])
        paths += [os.path.join(root, "model.json")]
        paths += [os.path.join(root, "cases", p, "meta.json") for p in b["photos"]]
    return paths


def up_to_date(output: str, digest: str, bundles: Sequence[Dict[str, Any]]) -> bool:
    try:
        with open(os.path.join(output, STAMP)) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return False
    return stamp.get("digest") == digest and all(os.path.exists(p) for p in expected_outputs(output, bundles))


# --------------------------------------------------------------------------------------------
# Model and weights
# --------------------------------------------------------------------------------------------

def build_cfg(spec: Dict[str, Any]):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(spec["config"]))
    cfg.merge_from_list(list(spec["opts"]) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    cfg.freeze()
    return cfg


def seed_weights(model, seed: int, background_bias: float = 7.5, keypoint_logits_std: float = 1.0,
                 class_logits_std: float = 3.0) -> None:
    """Deterministic untrained weights that give spread-out detections on real photos (the
    fixtures' recipe, shared/fixtures/detectron2/README.md "Weight recipe"): kaiming convs,
    N(0, 0.01) linears, identity FrozenBN; damped residual branches; box head rows zero-mean
    (pooled features carry a per-channel offset that otherwise makes one class win
    everywhere); class scores N(0, 3) with background bias 7.5 (or ``background_bias``), deltas N(0, 1); RPN deltas
    with +1 on dw, dh (proposals ~2.7x their anchors: every RoI level gets proposals); the mask
    head's 3x3 kernels zero-mean, deconv taps pulled to the first one, predictor N(0, 3); the
    class scores' N(0, 3) is N(0, ``class_logits_std``) where the box features are smaller (DC5); the
    keypoint head's 3x3 kernels zero-mean too (the per-channel offsets shared by all RoIs would
    otherwise put every heatmap's peak at the same place) and its score_lowres deconvolution
    N(0, keypoint_logits_std) with zero mean over the input channels."""
    import torch
    from torch import nn
    from detectron2.layers import FrozenBatchNorm2d

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                m.bias.zero_()
            elif isinstance(m, FrozenBatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
        body = getattr(model.backbone, "bottom_up", model.backbone)  # FPN, or the ResNet (C4, DC5)
        body.stem.conv1.norm.weight.fill_(0.05)
        heads = model.roi_heads
        res5 = list(getattr(heads, "res5", []))  # Res5ROIHeads (C4): res5 is in the heads
        if res5:
            # The mask head comes last in model.modules(): from here on the same numbers with
            # and without it, so that the C4 Mask R-CNN has the C4 Faster R-CNN's boxes.
            torch.manual_seed(seed + 1)
        for block in [b for stage in body.stages for b in stage] + res5:
            block.conv3.norm.weight.fill_(0.2)
        # CascadeROIHeads: one box head and predictor per stage, each seeded the same way.
        predictors = list(heads.box_predictor) if isinstance(heads.box_predictor, nn.ModuleList) else [heads.box_predictor]
        box_heads = ([None] if res5 else
                     list(heads.box_head) if isinstance(heads.box_head, nn.ModuleList) else [heads.box_head])
        for box_head, predictor in zip(box_heads, predictors):
            if box_head is not None:
                fc1 = box_head.fc1.weight
                pool = heads.box_pooler.output_size
                cells = pool[0] * pool[1] if isinstance(pool, (tuple, list)) else pool * pool
                w = fc1.view(fc1.shape[0], fc1.shape[1] // cells, cells)
                w.sub_(w.mean(dim=2, keepdim=True))
                fc2 = box_head.fc2.weight
                fc2.sub_(fc2.mean(dim=1, keepdim=True))
            cls = predictor.cls_score
            nn.init.normal_(cls.weight, 0.0, class_logits_std)
            cls.weight.sub_(cls.weight.mean(dim=1, keepdim=True))
            cls.bias.zero_()
            if res5:
                # Res5ROIHeads feeds the predictor the mean of res5's (post-ReLU) output: the RoIs'
                # features share an offset and vary mostly along one direction (85% of their
                # variance on fruits.jpg), which would make one class win everywhere. The class rows
                # are whitened against the features of a seeded noise image (no photo in the weights)
                # and their biases cancel its mean.
                feats = res5_features(model, seed)
                mean = feats.mean(dim=0)
                centered = feats - mean
                cov = centered.T @ centered / len(feats)
                evals, evecs = torch.linalg.eigh(cov + 1e-3 * cov.diagonal().mean() * torch.eye(len(cov)))
                whiten = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
                cls.weight[:-1] = cls.weight[:-1] @ whiten / cls.weight.shape[1] ** 0.5
                cls.bias[:-1] = -(cls.weight[:-1] @ mean)
            cls.bias[-1] = background_bias
            bbox = predictor.bbox_pred
            nn.init.normal_(bbox.weight, 0.0, 1.0)
            bbox.weight.sub_(bbox.weight.mean(dim=1, keepdim=True))
        rpn = model.proposal_generator.rpn_head
        nn.init.normal_(rpn.objectness_logits.weight, 0.0, 0.1)
        nn.init.normal_(rpn.anchor_deltas.weight, 0.0, 0.01)
        rpn.anchor_deltas.bias.view(-1, 4)[:, 2:].fill_(1.0)
        mask = getattr(heads, "mask_head", None)
        if mask is not None:
            for name, m in mask.named_children():
                if name.startswith("mask_fcn"):
                    m.weight.sub_(m.weight.mean(dim=(2, 3), keepdim=True))
            d = mask.deconv.weight
            d.copy_(d[:, :, :1, :1] + 0.2 * (d - d[:, :, :1, :1]))
            p = mask.predictor.weight
            nn.init.normal_(p, 0.0, 3.0)
            p.sub_(p.mean(dim=1, keepdim=True))
            mask.predictor.bias.zero_()
        keypoints = getattr(heads, "keypoint_head", None)
        if keypoints is not None:
            for name, m in keypoints.named_children():
                if name.startswith("conv_fcn") and isinstance(m, nn.Conv2d):
                    m.weight.sub_(m.weight.mean(dim=(2, 3), keepdim=True))
            s = keypoints.score_lowres.weight  # ConvTranspose2d: [in, K, 4, 4]
            nn.init.normal_(s, 0.0, keypoint_logits_std)
            s.sub_(s.mean(dim=0, keepdim=True))
            keypoints.score_lowres.bias.zero_()


def res5_features(model, seed: int):
    """Res5ROIHeads' box-predictor inputs (pooled on res4, res5, mean over H and W) of 512
    random boxes on a seeded uniform-noise 320x320 image: [512, C]."""
    import torch
    from detectron2.structures import Boxes

    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, 320, 320, generator=gen) * 255.0
    x = (image - model.pixel_mean.view(1, 3, 1, 1)) / model.pixel_std.view(1, 3, 1, 1)
    heads = model.roi_heads
    features = model.backbone(x)
    xy = torch.rand(512, 2, generator=gen) * 240.0
    wh = 8.0 + torch.rand(512, 2, generator=gen) * 120.0
    boxes = Boxes(torch.cat([xy, xy + wh], 1))
    pooled = heads.pooler([features[f] for f in heads.in_features], [boxes])
    return heads.res5(pooled).mean(dim=[2, 3])


# --------------------------------------------------------------------------------------------
# One case: Detectron2 inference, stage by stage
# --------------------------------------------------------------------------------------------

def resize_for(cfg, spec: Dict[str, Any], bgr):
    """The resized uint8 BGR image the model is fed: DefaultPredictor's ResizeShortestEdge, or
    the app note's fixed resize (that transform with new_h = new_w = H = W)."""
    from detectron2.data import transforms as T

    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    t = aug.get_transform(bgr)
    if "--fixed-size" in spec["export"]:
        i = spec["export"].index("--fixed-size")
        fh, fw = int(spec["export"][i + 1]), int(spec["export"][i + 2])
        t = T.ResizeTransform(t.h, t.w, fh, fw, t.interp)
    return t.apply_image(bgr)


def standard_box_heads(heads, box_in, proposals, save):
    """StandardROIHeads' (or Res5ROIHeads': one pooler, res5, mean over H and W, predictor)
    box branch on the proposals, every stage saved: box_features, box_level, class_logits,
    box_deltas. Returns (instances, box_features, box_level, logits, box_deltas)."""
    import torch
    from detectron2.modeling.poolers import assign_boxes_to_levels

    props = proposals[0]
    res5 = getattr(heads, "res5", None) if not hasattr(heads, "box_head") else None  # Res5ROIHeads (C4)
    pooler = heads.pooler if res5 is not None else heads.box_pooler
    box_features = pooler(box_in, [props.proposal_boxes])
    save("box_features", box_features)
    box_level = assign_boxes_to_levels([props.proposal_boxes], pooler.min_level, pooler.max_level,
                                       pooler.canonical_box_size, pooler.canonical_level)
    save("box_level", box_level.to(torch.int64))
    if res5 is not None:
        logits, box_deltas = heads.box_predictor(res5(box_features).mean(dim=[2, 3]))
    else:
        logits, box_deltas = heads.box_predictor(heads.box_head(box_features))
    save("class_logits", logits)
    save("box_deltas", box_deltas)
    instances, _ = heads.box_predictor.inference((logits, box_deltas), proposals)
    return instances, box_features, box_level, logits, box_deltas


def write_case(spec, cfg, model, modules, model_json, photo: str, case_dir: str,
               generator: str = GENERATOR, box_heads: Callable = standard_box_heads) -> Dict[str, Any]:
    import cv2
    import numpy as np
    import torch
    from detectron2.engine import DefaultPredictor
    from rcnn_export import detectron2 as ed2
    from detectron2.modeling.poolers import assign_boxes_to_levels
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.modeling.roi_heads.keypoint_head import keypoint_rcnn_inference
    from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference

    os.makedirs(case_dir)
    shutil.copyfile(photo_path(photo), os.path.join(case_dir, "image.jpg"))
    save = lambda name, a: np.save(os.path.join(case_dir, name + ".npy"), np.ascontiguousarray(a))  # noqa: E731
    bgr = cv2.imread(photo_path(photo))
    H, W = bgr.shape[:2]
    resized = resize_for(cfg, spec, bgr)
    h, w = resized.shape[:2]
    save("resized_bgr", resized)
    inputs = {"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)), "height": H, "width": W}

    # What a user gets: DefaultPredictor (shortest edge) or model([...]) on the fixed-size image.
    with torch.no_grad():
        if "--fixed-size" in spec["export"]:
            final = model([inputs])[0]["instances"]
        else:
            predictor = DefaultPredictor(cfg)  # builds the model again and loads cfg.MODEL.WEIGHTS
            final = predictor(bgr)["instances"]

    heads, rpn = model.roi_heads, model.proposal_generator
    res5 = getattr(heads, "res5", None) if not hasattr(heads, "box_head") else None  # Res5ROIHeads (C4)
    in_features = ed2.box_in_features(heads)
    with torch.no_grad():
        images = model.preprocess_image([inputs])
        x = images.tensor
        save("input", x)
        features = model.backbone(x)
        rpn_in = [features[f] for f in rpn.in_features]
        anchors = rpn.anchor_generator(rpn_in)
        objectness, deltas = rpn.rpn_head(rpn_in)
        for level, o, d, a in zip(rpn.in_features, objectness, deltas, anchors):
            save(f"rpn_objectness_{level}", o)
            save(f"rpn_deltas_{level}", d)
            save(f"anchors_{level}", a.tensor)
        for level in in_features:
            save(f"features_{level}", features[level])
        flat_obj = [o.permute(0, 2, 3, 1).flatten(1) for o in objectness]
        flat_del = [d.view(d.shape[0], -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                    for d in deltas]
        proposals = rpn.predict_proposals(anchors, flat_obj, flat_del, images.image_sizes)
        props = proposals[0]
        save("proposals", props.proposal_boxes.tensor)
        save("proposal_logits", props.objectness_logits)
        box_in = [features[f] for f in in_features]
        instances, box_features, box_level, logits, box_deltas = box_heads(heads, box_in, proposals, save)
        inst = instances[0]
        dets = torch.cat([inst.pred_boxes.tensor, inst.scores[:, None], inst.pred_classes[:, None].float()], 1)
        save("detections_resized", dets)
        masks_on = "mask_head" in model_json["modules"]
        if masks_on:
            # Res5ROIHeads.forward_with_given_boxes: its one pooler, then res5 and the head.
            mp = heads.pooler if res5 is not None else heads.mask_pooler
            mask_in = [features[f] for f in (in_features if res5 is not None else heads.mask_in_features)]
            mask_features = mp(mask_in, [inst.pred_boxes])
            save("mask_features", mask_features)
            save("mask_level", assign_boxes_to_levels([inst.pred_boxes], mp.min_level, mp.max_level,
                                                      mp.canonical_box_size, mp.canonical_level).to(torch.int64))
            mask_logits = heads.mask_head.layers(res5(mask_features) if res5 is not None else mask_features)
            D = len(inst)
            cls = inst.pred_classes
            class_logits = mask_logits[torch.arange(D), cls] if D else mask_logits[:, 0]
            save("mask_logits_class", class_logits)
            mask_rcnn_inference(mask_logits, instances)
            save("mask_probs", inst.pred_masks[:, 0])
        keypoints_on = "keypoint_head" in model_json["modules"]
        if keypoints_on:
            kp_in = [features[f] for f in heads.keypoint_in_features]
            kp = heads.keypoint_pooler
            keypoint_features = kp(kp_in, [inst.pred_boxes])
            save("keypoint_features", keypoint_features)
            save("keypoint_level", assign_boxes_to_levels([inst.pred_boxes], kp.min_level, kp.max_level,
                                                          kp.canonical_box_size, kp.canonical_level).to(torch.int64))
            heatmaps = heads.keypoint_head.layers(keypoint_features)
            save("keypoint_heatmaps", heatmaps)
            keypoint_rcnn_inference(heatmaps, instances)  # heatmaps_to_keypoints, resized frame
            save("keypoints_resized", inst.pred_keypoints)
        staged = detector_postprocess(inst, H, W)

    # The staged path must be exactly what the user gets.
    same = (len(staged) == len(final) and torch.equal(staged.pred_classes, final.pred_classes)
            and torch.equal(staged.pred_boxes.tensor, final.pred_boxes.tensor) and torch.equal(staged.scores, final.scores))
    if not same:
        raise AssertionError(f"{spec['name']}/{photo}: the staged Detectron2 path differs from the model's "
                             f"{len(staged)} vs {len(final)} detections")
    if keypoints_on and not torch.equal(staged.pred_keypoints, final.pred_keypoints):
        raise AssertionError(f"{spec['name']}/{photo}: staged keypoints differ from the model's")
    names = model_json["classes"]
    detections = [{"box": [float(v) for v in b], "score": float(s), "class_id": int(c), "class_name": names[int(c)]}
                  for b, s, c in zip(final.pred_boxes.tensor.tolist(), final.scores.tolist(), final.pred_classes.tolist())]
    meta: Dict[str, Any] = {}
    if keypoints_on:
        kps = final.pred_keypoints  # [D, K, 3]: x, y, score in the original image
        for d, k in zip(detections, kps.tolist()):
            d["keypoints"] = k
        if len(kps):
            inside = ((kps[:, :, 0] >= final.pred_boxes.tensor[:, None, 0] - 1) &
                      (kps[:, :, 0] <= final.pred_boxes.tensor[:, None, 2] + 1)).float().mean()
            meta["keypoint_score_range"] = [float(kps[:, :, 2].min()), float(kps[:, :, 2].max())]
            meta["keypoints_distinct_positions"] = int(len({(round(x, 1), round(y, 1)) for x, y, _ in
                                                            kps.reshape(-1, 3).tolist()}))
            meta["keypoints_inside_box_fraction"] = float(inside)
    if masks_on:
        if not torch.equal(staged.pred_masks, final.pred_masks):
            raise AssertionError(f"{spec['name']}/{photo}: staged masks differ from the model's")
        m = final.pred_masks.numpy().astype(bool)
        np.savez(os.path.join(case_dir, "masks.npz"), packed=np.packbits(m, axis=-1),
                 shape=np.array(m.shape, dtype=np.int64))
        for d, pixels in zip(detections, m.reshape(len(m), -1).sum(1).tolist() if len(m) else []):
            d["mask_pixels"] = int(pixels)
        areas = (final.pred_boxes.area()).numpy()
        coverage = m.reshape(len(m), -1).sum(1) / np.maximum(areas, 1)
        meta["num_masks"] = len(m)
        meta["mask_pixels_total"] = int(m.sum())
        meta["mask_coverage_of_box"] = ({"mean": float(coverage.mean()), "min": float(coverage.min()),
                                         "max": float(coverage.max())} if len(m) else None)
    _common.write_json(os.path.join(case_dir, "detections.json"), detections)

    # Agreement of the exported TorchScript modules with eager Detectron2, on these inputs.
    checks: Dict[str, Any] = {}
    with torch.no_grad():
        o, d, f = modules["backbone_rpn"](x)
        worst = 0.0
        for got, want in zip(list(o) + list(d) + list(f),
                             list(objectness) + list(deltas) + [features[k] for k in in_features]):
            worst = max(worst, float((got - want).abs().max()))
        checks["traced_backbone_rpn_max_abs_diff"] = worst
        rows = model_json["modules"]["box_head"].get("static_rois")
        padded = box_features
        if rows:
            padded = torch.cat([box_features, box_features.new_zeros((rows - len(box_features),) + box_features.shape[1:])])
        tl, td = modules["box_head"](padded)
        n = len(box_features)
        checks["traced_box_head_max_abs_diff"] = max(float((tl[:n] - logits).abs().max()),
                                                     float((td[:n] - box_deltas).abs().max()))
        if masks_on and len(inst):
            checks["traced_mask_head_max_abs_diff"] = float((modules["mask_head"](mask_features) - mask_logits).abs().max())
        if keypoints_on and len(inst):
            checks["traced_keypoint_head_max_abs_diff"] = float(
                (modules["keypoint_head"](keypoint_features) - heatmaps).abs().max())
    checks["staged_vs_model_detections_max_abs_diff"] = 0.0
    fixture_case = os.path.join(FIXTURES, spec.get("fixture") or "-", "cases", photo, "detections.json")
    if os.path.exists(fixture_case) and "mask_head" not in model_json["modules"]:
        # Same config and weight recipe as the committed fixture: its detections again, to
        # the float differences of another machine's kernels.
        with open(fixture_case) as f:
            ref = json.load(f)
        same = len(ref) == len(detections) and all(a["class_id"] == b["class_id"] for a, b in zip(ref, detections))
        checks["vs_committed_fixture"] = {
            "same_classes_and_count": same,
            "max_box_diff": max((abs(p - q) for a, b in zip(ref, detections) for p, q in zip(a["box"], b["box"])),
                                default=0.0),
            "max_score_diff": max((abs(a["score"] - b["score"]) for a, b in zip(ref, detections)), default=0.0)}
    scores = final.scores.numpy()
    meta = {
        "generator": generator, "config": spec["config"], "photo": photo,
        "original_height": H, "original_width": W, "resized_height": h, "resized_width": w,
        "padded_height": int(x.shape[2]), "padded_width": int(x.shape[3]),
        "decoded_pixel_sum": int(bgr.astype(np.int64).sum()),
        "num_proposals": len(props), "proposals_per_roi_level": np.bincount(box_level.numpy(), minlength=len(box_in)).tolist(),
        "num_detections_resized": len(inst), "num_detections": len(final),
        "num_classes_detected": int(len(set(final.pred_classes.tolist()))),
        "score_range": [float(scores.min()), float(scores.max())] if len(scores) else None,
        **meta, "checks": checks,
    }
    _common.write_json(os.path.join(case_dir, "meta.json"), meta)
    return meta


# --------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------

FIXTURES = os.path.join(REPO, "tests", "data", "detectron2")
#: What an export may differ in from a committed fixture's model.json: provenance, digests, the
#: category ids (the fixtures predate them).
FREE_KEYS = ("source", "category_ids")


def compare_with_fixture(spec: Dict[str, Any], model_json: Dict[str, Any]) -> List[str]:
    """Keys of model.json where the real export differs from the committed fixture's (made by a
    separate Detectron2 script, shared/fixtures/detectron2): [] when every convention agrees."""
    with open(os.path.join(FIXTURES, spec["fixture"], "model.json")) as f:
        fixture = json.load(f)
    mine = json.loads(json.dumps(model_json))
    for entry in mine["modules"].values():
        entry.pop("sha256", None)
    return [k for k in sorted(set(fixture) | set(mine)) if k not in FREE_KEYS and fixture.get(k) != mine.get(k)]


def export_bundle(spec: Dict[str, Any], weights: str, bundle_dir: str, generator: str = GENERATOR) -> None:
    """tools/export_detectron2.py, in this process (the same main() the command line runs)."""
    from rcnn_export import detectron2 as ed2

    argv = ["--config", spec["config"], "--opts", *spec["opts"], "--weights", weights, "--output", bundle_dir,
            "--note", f"untrained deterministic weights ({generator} seed_weights, seed {SEED})", *spec["export"]]
    code = ed2.main(argv)
    if code != 0:
        raise RuntimeError(f"export_detectron2.py {' '.join(argv)} exited with {code}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(argv, doc=__doc__, generator=GENERATOR, bundles=BUNDLES, log=log)


def run(argv: Optional[Sequence[str]], *, doc: str, generator: str, bundles: Sequence[Dict[str, Any]],
        log: Callable[[str], None], scripts: Sequence[str] = (), box_heads: Callable = standard_box_heads) -> int:
    """A generator's run (this one's, and gen_keypoints.py's / gen_cascade.py's with their bundles
    and their own script in ``scripts``, which the stamp covers): --output / --force, the peer and
    photo checks, the stamp, then per bundle: build, seed, save the weights, export, and write
    the cases (the box branch by ``box_heads``, standard_box_heads' signature)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="directory for the bundles and cases")
    parser.add_argument("--force", action="store_true", help="regenerate even when the stamp matches")
    args = parser.parse_args(argv)
    output = os.path.abspath(args.output)

    reason = _peers.find("detectron2")
    if reason is not None:
        if _peers.required():
            print(f"error: {reason} ({_peers.ENV_REQUIRE}=1)", file=sys.stderr)
            return 1
        shutil.rmtree(output, ignore_errors=True)
        os.makedirs(output)
        with open(os.path.join(output, SKIPPED), "w") as f:
            f.write(f"real Detectron2 not found: {reason}\n")
        log(f"skipped: {reason}")
        return 0
    missing = [photo_path(p) for b in bundles for p in b["photos"] if not os.path.exists(photo_path(p))]
    if missing:
        print(f"error: missing photos {missing}: install opencv-doc (scripts/install-deps.sh)", file=sys.stderr)
        return 1
    import detectron2

    digest = stamp_digest(detectron2.__version__, bundles, scripts)
    if not args.force and up_to_date(output, digest, bundles):
        log(f"{output} is up to date")
        return 0

    import torch
    from detectron2.modeling import build_model

    start = time.time()
    torch.set_num_threads(1)
    tmp = _common.fresh_dir(output)
    index: Dict[str, Any] = {"generator": generator, "detectron2": detectron2.__version__,
                             "torch": torch.__version__, "bundles": {}}
    problems: List[str] = []
    for spec in bundles:
        t0 = time.time()
        cfg = build_cfg(spec)
        model = build_model(cfg).eval()
        seed_weights(model, SEED, spec.get("background_bias", 7.5), spec.get("keypoint_logits_std", 1.0),
                     spec.get("class_logits_std", 3.0))
        if spec.get("after_seed"):
            spec["after_seed"](model)
        weights = os.path.join(tmp, f"{spec['name']}.weights.pth")
        torch.save(model.state_dict(), weights)
        bundle_dir = os.path.join(tmp, spec["name"])
        log(f"{spec['name']}: {spec['config']}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
            f"exporting with tools/export_detectron2.py {' '.join(spec['export'])}")
        export_bundle(spec, weights, bundle_dir, generator)
        with open(os.path.join(bundle_dir, "model.json")) as f:
            model_json = json.load(f)
        modules = {k: torch.jit.load(os.path.join(bundle_dir, e["file"])) for k, e in model_json["modules"].items()}
        if spec.get("fixture"):
            differ = compare_with_fixture(spec, model_json)
            if differ:
                raise AssertionError(f"{spec['name']}: model.json differs from tests/data/detectron2/"
                                     f"{spec['fixture']}'s in {differ}")
            log(f"{spec['name']}: model.json equals tests/data/detectron2/{spec['fixture']}'s but for {FREE_KEYS}")
        cfg.defrost()
        cfg.MODEL.WEIGHTS = weights  # DefaultPredictor loads it
        cfg.freeze()
        for photo in spec["photos"]:
            t1 = time.time()
            meta = write_case(spec, cfg, model, modules, model_json, photo, os.path.join(bundle_dir, "cases", photo),
                              generator, box_heads)
            log(f"{spec['name']}/{photo}: {meta['original_height']}x{meta['original_width']} -> "
                f"{meta['resized_height']}x{meta['resized_width']}; proposals {meta['num_proposals']} "
                f"(roi levels {meta['proposals_per_roi_level']}); detections {meta['num_detections']} of "
                f"{meta['num_classes_detected']} classes, scores {meta['score_range']}; checks {meta['checks']}; "
                f"{time.time() - t1:.1f} s")
            if meta["num_detections"] < spec.get("min_detections", MIN_DETECTIONS) or \
                    meta["num_classes_detected"] < min(3, len(model_json["classes"])):
                problems.append(f"{spec['name']}/{photo}: only {meta['num_detections']} detections")
        index["bundles"][spec["name"]] = {"config": spec["config"], "opts": spec["opts"], "export": spec["export"],
                                          "seed": SEED, "cases": list(spec["photos"]),
                                          "architecture": model_json["architecture"],
                                          "model_json_equals_fixture": spec.get("fixture")}
        log(f"{spec['name']}: done in {time.time() - t0:.1f} s")
    for problem in problems:
        log(f"WARNING: {problem}")
    _common.write_json(os.path.join(tmp, "index.json"), index)
    _common.write_json(os.path.join(tmp, STAMP), {"digest": digest, "seconds": round(time.time() - start, 1)})
    shutil.rmtree(output, ignore_errors=True)
    os.replace(tmp, output)
    log(f"all references written to {output} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
