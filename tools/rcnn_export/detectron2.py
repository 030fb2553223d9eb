"""Export a Detectron2 (v0.6) Faster R-CNN or Mask R-CNN (FPN, C4 or DC5) to an rcnn model bundle (format v1).

A thin adapter over rcnn_export.core: Detectron2 builds the model; ``model_json_from_cfg``
maps the config to model.json (a pure function over a nested-dict-like config, unit tested
without Detectron2); ``D2BackboneRPN`` / ``D2BoxHead`` / ``D2MaskHead`` are the traced wrappers.

A Mask R-CNN (MODEL.MASK_ON) gets ``"architecture": "mask_rcnn"``, a ``mask_head`` object
from ROI_MASK_HEAD (BUNDLE-v1.md "Mask R-CNN") and ``mask_head.pt``, the trace of
``roi_heads.mask_head.layers`` (convs, deconv, predictor: raw logits, no sigmoid);
``--boxes-only`` exports it without the mask head, as a Faster R-CNN.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import core

DETECTRON2_HELP = (
    "Detectron2 cannot be imported here ({error}). Install Detectron2 v0.6 on the "
    "export/deployment machine (it builds from source against the installed torch):\n"
    "    pip install 'git+https://github.com/facebookresearch/detectron2.git@v0.6'\n"
    "then run this command again."
)

#: COCO's 80 "thing" category ids, in the order of Detectron2's contiguous class ids (its
#: COCO metadata, thing_dataset_id_to_contiguous_id, maps them in increasing order): ids 1..90
#: without the ten ids the 2017 annotations never use. Used when the metadata of a "coco_*"
#: dataset does not carry the mapping itself.
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_THING_IDS = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_IDS)

#: Detectron2's ROIPooler defaults (not in the config) and its level mapper's epsilon.
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4
LEVEL_EPS = 1e-8


# --------------------------------------------------------------------------------------------
# cfg -> model.json (pure; no Detectron2 needed)
# --------------------------------------------------------------------------------------------

_MISSING = object()


def cfg_get(cfg: Mapping[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    """``cfg["A"]["B"]`` for ``"A.B"``; works for yacs CfgNode (a dict) and plain dicts."""
    node: Any = cfg
    for key in dotted.split("."):
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif not isinstance(node, Mapping) and hasattr(node, key):
            node = getattr(node, key)
        else:
            if default is _MISSING:
                raise core.ExportError(f"the config has no {dotted}")
            return default
    return node


def _number(value: Any) -> Any:
    """Keep integers integral (anchor sizes 32, 64, ...) and everything else float."""
    if isinstance(value, bool):
        raise core.ExportError(f"expected a number, got {value!r}")
    return value if isinstance(value, int) else float(value)


def level_stride(name: str) -> int:
    """Stride implied by Detectron2's level names: p2..p6 and res2..res5 are 2**k."""
    for prefix in ("res", "p"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return 2 ** int(name[len(prefix):])
    raise core.ExportError(f"cannot infer the stride of feature {name!r}; pass the backbone's output_shape")


#: ROI_HEADS.NAME values the exporter handles: StandardROIHeads (FPN, DC5: pooler -> box head)
#: and Res5ROIHeads (C4: pooler on res4 -> res5 -> mean -> predictor, the res5 stage being part
#: of the exported box and mask head modules).
SUPPORTED_ROI_HEADS = ("StandardROIHeads", "CascadeROIHeads", "Res5ROIHeads")


def is_res5_heads(cfg: Mapping[str, Any]) -> bool:
    """True for Detectron2's C4 models (MODEL.ROI_HEADS.NAME Res5ROIHeads)."""
    return cfg_get(cfg, "MODEL.ROI_HEADS.NAME", "StandardROIHeads") == "Res5ROIHeads"


def check_supported(cfg: Mapping[str, Any], boxes_only: bool = False) -> None:
    """Raise ExportError for configs the bundle format (v1: Faster, Mask and Keypoint R-CNN;
    FPN, C4 and DC5 backbones) cannot describe."""
    checks = [
        ("MODEL.META_ARCHITECTURE", "GeneralizedRCNN"),
        ("MODEL.PROPOSAL_GENERATOR.NAME", "RPN"),
        ("MODEL.RPN.HEAD_NAME", "StandardRPNHead"),
        ("MODEL.ANCHOR_GENERATOR.NAME", "DefaultAnchorGenerator"),
    ]
    for key, want in checks:
        value = cfg_get(cfg, key, want)
        if value != want:
            raise core.ExportError(f"{key} = {value!r} is not supported (only {want})")
    heads = cfg_get(cfg, "MODEL.ROI_HEADS.NAME", "StandardROIHeads")
    if heads not in SUPPORTED_ROI_HEADS:
        raise core.ExportError(f"MODEL.ROI_HEADS.NAME = {heads!r} is not supported (only "
                               f"{', '.join(SUPPORTED_ROI_HEADS)})")
    if heads == "Res5ROIHeads":
        levels = list(cfg_get(cfg, "MODEL.ROI_HEADS.IN_FEATURES"))
        if len(levels) != 1:
            raise core.ExportError(f"MODEL.ROI_HEADS.IN_FEATURES = {levels}: Res5ROIHeads pools one feature map")
        if exports_keypoints(cfg, boxes_only):
            raise core.ExportError("MODEL.KEYPOINT_ON with Res5ROIHeads is not supported (Detectron2 has none)")
    if is_cascade(cfg):
        weights = cfg_get(cfg, "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS")
        if len(weights) < 2 or any(len(w) != 4 for w in weights):
            raise core.ExportError(f"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = {weights!r}: expected two or "
                                   "more stages of 4 weights")
        if not cfg_get(cfg, "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False):
            raise core.ExportError("CascadeROIHeads needs MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True (as "
                                   "Detectron2 requires)")
    if exports_keypoints(cfg, boxes_only):
        if exports_masks(cfg, boxes_only):
            raise core.ExportError("MODEL.MASK_ON and MODEL.KEYPOINT_ON together are not supported "
                                   "(a bundle has one per-detection head); --boxes-only exports the boxes")
        head = cfg_get(cfg, "MODEL.ROI_KEYPOINT_HEAD.NAME", "KRCNNConvDeconvUpsampleHead")
        if head != "KRCNNConvDeconvUpsampleHead":
            raise core.ExportError(f"MODEL.ROI_KEYPOINT_HEAD.NAME = {head!r} is not supported (only "
                                   "KRCNNConvDeconvUpsampleHead); --boxes-only exports the detector without it")
        pooler = cfg_get(cfg, "MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE", "ROIAlignV2")
        if pooler not in ("ROIAlign", "ROIAlignV2"):
            raise core.ExportError(f"MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = {pooler!r}: only ROIAlign and ROIAlignV2")
    pooler = cfg_get(cfg, "MODEL.ROI_BOX_HEAD.POOLER_TYPE")
    if pooler not in ("ROIAlign", "ROIAlignV2"):
        raise core.ExportError(f"MODEL.ROI_BOX_HEAD.POOLER_TYPE = {pooler!r}: only ROIAlign and ROIAlignV2")
    if exports_masks(cfg, boxes_only):
        head = cfg_get(cfg, "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead")
        if head != "MaskRCNNConvUpsampleHead":
            raise core.ExportError(f"MODEL.ROI_MASK_HEAD.NAME = {head!r} is not supported (only "
                                   "MaskRCNNConvUpsampleHead); --boxes-only exports the detector without it")
        # Res5ROIHeads pools the masks with its one (box) pooler: ROI_MASK_HEAD.POOLER_* unused.
        pooler = cfg_get(cfg, "MODEL.ROI_BOX_HEAD.POOLER_TYPE" if is_res5_heads(cfg)
                         else "MODEL.ROI_MASK_HEAD.POOLER_TYPE")
        if pooler not in ("ROIAlign", "ROIAlignV2"):
            raise core.ExportError(f"MODEL.ROI_MASK_HEAD.POOLER_TYPE = {pooler!r}: only ROIAlign and ROIAlignV2")
    fmt = cfg_get(cfg, "INPUT.FORMAT")
    if fmt not in ("BGR", "RGB"):
        raise core.ExportError(f"INPUT.FORMAT = {fmt!r}: only BGR and RGB inputs")


def is_cascade(cfg: Mapping[str, Any]) -> bool:
    """True for a Cascade R-CNN config (MODEL.ROI_HEADS.NAME CascadeROIHeads)."""
    return cfg_get(cfg, "MODEL.ROI_HEADS.NAME", "StandardROIHeads") == "CascadeROIHeads"


def cascade_module_key(stage: int) -> str:
    """modules key of cascade stage ``stage``'s box head: box_head, box_head_stage1, ..."""
    return "box_head" if stage == 0 else f"box_head_stage{stage}"


def add_cascade(model_json: Dict[str, Any], cfg: Mapping[str, Any], static_rois: Optional[int]) -> None:
    """Cascade R-CNN: ``roi_heads.cascade``, one entry per stage (its box head module and its
    box-regression weights, MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS), one box head module
    per stage, and ``roi_heads.box_weights`` = the last stage's (the final decode's)."""
    weights = [[float(v) for v in w] for w in cfg_get(cfg, "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS")]
    heads = model_json["roi_heads"]
    heads["box_weights"] = weights[-1]
    heads["cascade"] = [{"module": cascade_module_key(k), "box_weights": w} for k, w in enumerate(weights)]
    modules = model_json["modules"]
    for k in range(1, len(weights)):
        modules[cascade_module_key(k)] = {"file": f"{cascade_module_key(k)}.pt", "static_rois": static_rois}


def exports_masks(cfg: Mapping[str, Any], boxes_only: bool = False) -> bool:
    """True for a Mask R-CNN config (MODEL.MASK_ON) unless ``boxes_only``."""
    return bool(cfg_get(cfg, "MODEL.MASK_ON", False)) and not boxes_only


def exports_keypoints(cfg: Mapping[str, Any], boxes_only: bool = False) -> bool:
    """True for a Keypoint R-CNN config (MODEL.KEYPOINT_ON) unless ``boxes_only``."""
    return bool(cfg_get(cfg, "MODEL.KEYPOINT_ON", False)) and not boxes_only


#: KRCNNConvDeconvUpsampleHead: the stride-2 deconvolution (score_lowres), then
#: ``interpolate(scale_factor=up_scale=2, bilinear, align_corners=False)``: S = 4 P.
KEYPOINT_UPSCALE = 4


def keypoint_head_json(cfg: Mapping[str, Any], names: Optional[Sequence[str]] = None,
                       skeleton: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Any]:
    """The ``keypoint_head`` object from ROI_KEYPOINT_HEAD: its pooler (POOLER_*), K keypoints,
    heatmap side S = 4 P, Detectron2's decoding (``heatmaps_to_keypoints`` in the resized frame,
    then scaled with the boxes), names and skeleton (index pairs) for drawing."""
    k = int(cfg_get(cfg, "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS"))
    names = [str(n) for n in names] if names else [f"keypoint_{i}" for i in range(k)]
    if len(names) != k:
        raise core.ExportError(f"{len(names)} keypoint names for MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = {k}")
    pool = pooler_json(cfg, "ROI_KEYPOINT_HEAD")
    return {
        **pool,
        "num_keypoints": k,
        "heatmap_size": KEYPOINT_UPSCALE * pool["pooler_resolution"],
        "decode": "detectron2",
        "keypoint_names": names,
        "skeleton": [[int(a), int(b)] for a, b in (skeleton or [])],
    }


def pooler_json(cfg: Mapping[str, Any], head: str) -> Dict[str, Any]:
    """The pooler keys of ``roi_heads`` / ``mask_head`` from MODEL.<head> (ROI_BOX_HEAD or
    ROI_MASK_HEAD): resolution, sampling ratio, ROIAlignV2 = aligned, and Detectron2's ROIPooler
    level mapping (canonical 224 / level 4, eps 1e-8 inside the log2)."""
    return {
        "pooler_resolution": int(cfg_get(cfg, f"MODEL.{head}.POOLER_RESOLUTION")),
        "sampling_ratio": int(cfg_get(cfg, f"MODEL.{head}.POOLER_SAMPLING_RATIO")),
        "aligned": cfg_get(cfg, f"MODEL.{head}.POOLER_TYPE") == "ROIAlignV2",
        "canonical_box_size": CANONICAL_BOX_SIZE,
        "canonical_level": CANONICAL_LEVEL,
        "level_eps": LEVEL_EPS,
        "level_eps_inside_log": True,
    }


def res5_mask_size(pooler_resolution: int) -> int:
    """Side of the mask logits of Res5ROIHeads' mask head: res5's first block has stride 2
    (P -> (P - 1) // 2 + 1, 14 -> 7), the head's deconvolution doubles it (7 -> 14)."""
    return 2 * ((int(pooler_resolution) - 1) // 2 + 1)


def mask_head_json(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``mask_head`` object of a Mask R-CNN bundle from ROI_MASK_HEAD: Detectron2's
    ROIPooler (canonical 224 / level 4, eps 1e-8 inside the log2, like the box pooler),
    CLS_AGNOSTIC_MASK, the 0.5 threshold of detector_postprocess, and its own paste.
    Res5ROIHeads (C4) pools the detections with its box pooler (ROI_BOX_HEAD.POOLER_*) and
    runs res5 before the head: ``mask_size`` (the side of the logits) is then not 2 x P."""
    if is_res5_heads(cfg):
        pool = pooler_json(cfg, "ROI_BOX_HEAD")
        size: Dict[str, Any] = {"mask_size": res5_mask_size(pool["pooler_resolution"])}
    else:
        pool, size = pooler_json(cfg, "ROI_MASK_HEAD"), {}
    return {
        **pool,
        **size,
        "class_agnostic": bool(cfg_get(cfg, "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", False)),
        "mask_threshold": 0.5,
        "paste": "detectron2",
    }


def resnet_output_shape(cfg: Mapping[str, Any]) -> Dict[str, Tuple[int, int]]:
    """(channels, stride) of a plain ResNet backbone's outputs (C4, DC5: no FPN), as
    ``build_resnet_backbone(cfg).output_shape()`` says: res<k> has RES2_OUT_CHANNELS x 2^(k-2)
    channels and stride 2^k, except res5 with RES5_DILATION 2 (DC5), which keeps stride 16."""
    res2 = int(cfg_get(cfg, "MODEL.RESNETS.RES2_OUT_CHANNELS"))
    dilation = int(cfg_get(cfg, "MODEL.RESNETS.RES5_DILATION", 1))
    shapes: Dict[str, Tuple[int, int]] = {}
    for name in cfg_get(cfg, "MODEL.RESNETS.OUT_FEATURES"):
        k = int(str(name)[3:]) if str(name).startswith("res") and str(name)[3:].isdigit() else 0
        if not 2 <= k <= 5:
            raise core.ExportError(f"MODEL.RESNETS.OUT_FEATURES: cannot infer the shape of {name!r}; "
                                   "pass the backbone's output_shape")
        stride = 2 ** k if not (k == 5 and dilation == 2) else 16
        shapes[str(name)] = (res2 * 2 ** (k - 2), stride)
    return shapes


def model_json_from_cfg(cfg: Mapping[str, Any], *, config: str, classes: Sequence[str], note: str = "",
                        framework_version: str = "0.6",
                        output_shape: Optional[Mapping[str, Tuple[int, int]]] = None,
                        size_divisibility: Optional[int] = None,
                        fixed_size: Optional[Sequence[int]] = None, static_rois: Optional[int] = None,
                        boxes_only: bool = False, category_ids: Optional[Sequence[int]] = None,
                        keypoint_names: Optional[Sequence[str]] = None,
                        keypoint_skeleton: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Any]:
    """model.json for a Detectron2 Faster R-CNN or Mask R-CNN config.

    ``output_shape`` maps backbone feature names to (channels, stride), as
    ``model.backbone.output_shape()`` says; without it both are inferred from the config
    (p<k>/res<k> names, MODEL.FPN.OUT_CHANNELS). ``size_divisibility`` is
    ``model.backbone.size_divisibility`` (default: the largest MODEL.FPN.IN_FEATURES stride, as
    Detectron2's FPN). ``fixed_size`` (H, W) selects the fixed resize and a static backbone
    shape; ``static_rois`` a static box-head row count (and a static mask head of
    TEST.DETECTIONS_PER_IMAGE rows). ``boxes_only``: a Mask R-CNN config without its mask head.
    ``category_ids``: the dataset id of each contiguous class (top-level ``category_ids``)."""
    check_supported(cfg, boxes_only)
    rpn_levels = [str(f) for f in cfg_get(cfg, "MODEL.RPN.IN_FEATURES")]
    roi_levels = [str(f) for f in cfg_get(cfg, "MODEL.ROI_HEADS.IN_FEATURES")]
    fpn = bool(cfg_get(cfg, "MODEL.FPN.IN_FEATURES", []))
    if output_shape is None and not fpn:
        output_shape = resnet_output_shape(cfg)  # C4, DC5
    if output_shape is None:
        channels = int(cfg_get(cfg, "MODEL.FPN.OUT_CHANNELS"))
        output_shape = {name: (channels, level_stride(name)) for name in dict.fromkeys(rpn_levels + roi_levels)}
    missing = [n for n in rpn_levels + roi_levels if n not in output_shape]
    if missing:
        raise core.ExportError(f"the backbone has no output {missing}")
    all_channels = {int(output_shape[n][0]) for n in rpn_levels + roi_levels}
    if len(all_channels) != 1:
        raise core.ExportError(f"RPN/RoI levels have different channel counts {sorted(all_channels)}")
    if size_divisibility is None:
        # Detectron2's FPN: the largest input stride; a plain ResNet (C4, DC5): 0, no padding.
        size_divisibility = max(level_stride(str(f)) for f in cfg_get(cfg, "MODEL.FPN.IN_FEATURES")) if fpn else 0
    size_divisibility = int(size_divisibility)
    if size_divisibility < 0:
        raise core.ExportError(f"the backbone's size divisibility is {size_divisibility}")

    num_classes = int(cfg_get(cfg, "MODEL.ROI_HEADS.NUM_CLASSES"))
    if len(classes) != num_classes:
        raise core.ExportError(f"{len(classes)} class names for MODEL.ROI_HEADS.NUM_CLASSES = {num_classes}")
    strides = {name: int(output_shape[name][1]) for name in dict.fromkeys(rpn_levels + roi_levels)}
    masks = exports_masks(cfg, boxes_only)
    keypoints = exports_keypoints(cfg, boxes_only)
    detections_per_image = int(cfg_get(cfg, "TEST.DETECTIONS_PER_IMAGE"))
    model_json: Dict[str, Any] = {
        "format": core.BUNDLE_FORMAT,
        "version": core.BUNDLE_VERSION,
        "architecture": "mask_rcnn" if masks else "keypoint_rcnn" if keypoints else "faster_rcnn",
        "conventions": "detectron2",
        "source": {
            "framework": "detectron2",
            "framework_version": framework_version,
            "config": config,
            "note": note,
        },
        "input": {
            "channel_order": cfg_get(cfg, "INPUT.FORMAT"),
            "pixel_scale": 1.0,
            "pixel_mean": [float(v) for v in cfg_get(cfg, "MODEL.PIXEL_MEAN")],
            "pixel_std": [float(v) for v in cfg_get(cfg, "MODEL.PIXEL_STD")],
            "resize": core.resize_json(fixed_size, _single(cfg_get(cfg, "INPUT.MIN_SIZE_TEST"), "INPUT.MIN_SIZE_TEST"),
                                       int(cfg_get(cfg, "INPUT.MAX_SIZE_TEST"))),
            "size_divisibility": size_divisibility,
        },
        "modules": {
            "backbone_rpn": {"file": "backbone_rpn.pt",
                             "static_shape": core.static_shape_for(fixed_size, size_divisibility)},
            "box_head": {"file": "box_head.pt", "static_rois": static_rois},
        },
        "backbone": {
            "rpn_levels": rpn_levels,
            "roi_levels": roi_levels,
            "strides": strides,
            "channels": all_channels.pop(),
        },
        "anchors": {
            "sizes": [[_number(v) for v in sizes] for sizes in cfg_get(cfg, "MODEL.ANCHOR_GENERATOR.SIZES")],
            "aspect_ratios": [[float(v) for v in ratios]
                              for ratios in cfg_get(cfg, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")],
            "offset": float(cfg_get(cfg, "MODEL.ANCHOR_GENERATOR.OFFSET", 0.0)),
            "round_cell_anchors": False,
            "stride_from": "backbone",
        },
        "rpn": {
            "pre_nms_topk": int(cfg_get(cfg, "MODEL.RPN.PRE_NMS_TOPK_TEST")),
            "post_nms_topk": int(cfg_get(cfg, "MODEL.RPN.POST_NMS_TOPK_TEST")),
            "nms_threshold": float(cfg_get(cfg, "MODEL.RPN.NMS_THRESH")),
            "min_box_size": float(cfg_get(cfg, "MODEL.PROPOSAL_GENERATOR.MIN_SIZE", 0.0)),
            "min_box_size_inclusive": False,
            "score_threshold": None,
            "nms_scores": "logits",
            "box_weights": [float(v) for v in cfg_get(cfg, "MODEL.RPN.BBOX_REG_WEIGHTS")],
            "scale_clamp": core.SCALE_CLAMP,
        },
        "roi_heads": {
            "num_classes": num_classes,
            "background": "last",
            "class_agnostic_box_regression": bool(cfg_get(cfg, "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False)),
            **pooler_json(cfg, "ROI_BOX_HEAD"),
            "box_weights": [float(v) for v in cfg_get(cfg, "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS")],
            "scale_clamp": core.SCALE_CLAMP,
            "score_threshold": float(cfg_get(cfg, "MODEL.ROI_HEADS.SCORE_THRESH_TEST")),
            "nms_threshold": float(cfg_get(cfg, "MODEL.ROI_HEADS.NMS_THRESH_TEST")),
            "detections_per_image": detections_per_image,
            "min_box_size": None,
        },
        "postprocess": {"clip": True, "drop_empty": True},
        "classes": [str(c) for c in classes],
    }
    if is_cascade(cfg):
        add_cascade(model_json, cfg, static_rois)
    if masks:
        model_json["modules"]["mask_head"] = {
            "file": "mask_head.pt", "static_rois": core.mask_static_rois(static_rois, detections_per_image)}
        # Key order of BUNDLE-v1.md: mask_head right after roi_heads.
        tail = {k: model_json.pop(k) for k in ("postprocess", "classes")}
        model_json["mask_head"] = mask_head_json(cfg)
        model_json.update(tail)
    if keypoints:
        model_json["modules"]["keypoint_head"] = {
            "file": "keypoint_head.pt", "static_rois": core.mask_static_rois(static_rois, detections_per_image)}
        tail = {k: model_json.pop(k) for k in ("postprocess", "classes")}
        model_json["keypoint_head"] = keypoint_head_json(cfg, keypoint_names, keypoint_skeleton)
        model_json.update(tail)
    if category_ids is not None:
        core.add_category_ids(model_json, category_ids)
    return model_json


def _single(value: Any, key: str) -> int:
    """MIN_SIZE_TEST is one integer at test time (a list is only valid for training)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise core.ExportError(f"{key} = {value}: expected one size for inference")
        value = value[0]
    if int(value) <= 0:
        raise core.ExportError(f"{key} = {value}: inference without resizing is not supported")
    return int(value)


# --------------------------------------------------------------------------------------------
# Detectron2 model
# --------------------------------------------------------------------------------------------

def import_detectron2() -> Dict[str, Any]:
    """The Detectron2 entry points; exits with status 2 and install instructions without it."""
    try:
        import detectron2
        from detectron2 import model_zoo
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.data import MetadataCatalog
        from detectron2.modeling import build_model
    except Exception as error:  # ImportError, or a broken build (missing _C)
        core.exit_with_error(DETECTRON2_HELP.format(error=f"{type(error).__name__}: {error}"), code=2)
    return dict(detectron2=detectron2, model_zoo=model_zoo, DetectionCheckpointer=DetectionCheckpointer,
                get_cfg=get_cfg, MetadataCatalog=MetadataCatalog, build_model=build_model)


def build_cfg(d2: Dict[str, Any], config: str, opts: Sequence[str], device: str) -> Any:
    cfg = d2["get_cfg"]()
    if os.path.isfile(config):
        path = config
    else:
        try:
            path = d2["model_zoo"].get_config_file(config)
        except RuntimeError:
            raise core.UsageError(f"--config {config}: neither a file nor a model zoo config name "
                                  "(e.g. COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml)") from None
    try:
        cfg.merge_from_file(path)
    except Exception as error:  # unreadable file, YAML syntax, unknown keys
        raise core.UsageError(f"--config {config}: {core.one_line(error)}") from None
    if len(opts) % 2:
        raise core.UsageError("--opts takes KEY VALUE pairs")
    try:
        cfg.merge_from_list(list(opts))
    except Exception as error:  # yacs: KeyError for an unknown key, ValueError for a bad type
        raise core.UsageError(f"--opts: {core.one_line(error)}") from None
    cfg.MODEL.DEVICE = device
    cfg.freeze()
    return cfg


def class_names(d2: Dict[str, Any], cfg: Any, path: Optional[str]) -> List[str]:
    """--classes FILE, else MetadataCatalog of the first test dataset, else class_<i>."""
    k = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                names = [line.rstrip("\r\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise core.UsageError(f"--classes {path}: {core.one_line(error)}") from None
        if len(names) != k:
            raise core.UsageError(f"--classes {path} has {len(names)} names for MODEL.ROI_HEADS.NUM_CLASSES = {k}")
        return names
    datasets = list(cfg.DATASETS.TEST)
    if datasets:
        try:
            names = list(d2["MetadataCatalog"].get(datasets[0]).thing_classes)
            if len(names) == k:
                return names
            core.log(f"{datasets[0]} has {len(names)} classes, the model {k}: using class_<i> names")
        except (AttributeError, KeyError):
            core.log(f"no thing_classes for {datasets[0]}: using class_<i> names (or pass --classes)")
    return [f"class_{i}" for i in range(k)]


def category_ids(d2: Dict[str, Any], cfg: Any, classes_path: Optional[str],
                 ids_path: Optional[str]) -> Optional[List[int]]:
    """--category-ids FILE; else, when the class names come from the dataset (no --classes),
    the inverse of its metadata's thing_dataset_id_to_contiguous_id (COCO: contiguous class 68
    "microwave" -> 78), or COCO_THING_IDS for an 80-class "coco_*" dataset without it; else None."""
    if ids_path:
        return core.read_category_ids(ids_path)
    datasets = list(cfg.DATASETS.TEST)
    if classes_path or not datasets:
        return None
    k = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    try:
        mapping = dict(d2["MetadataCatalog"].get(datasets[0]).thing_dataset_id_to_contiguous_id)
    except (AttributeError, KeyError):
        mapping = {}
    if sorted(mapping.values()) == list(range(k)):
        inverse = {int(c): int(d) for d, c in mapping.items()}
        return [inverse[c] for c in range(k)]
    if datasets[0].startswith("coco_") and k == len(COCO_THING_IDS):
        return list(COCO_THING_IDS)
    if datasets[0].startswith("keypoints_coco_") and k == 1:
        return [1]  # COCO's "person", the one class of the keypoint datasets (metadata "coco_person")
    return None


def load_checkpoint(d2: Dict[str, Any], model: Any, path: str) -> None:
    """DetectionCheckpointer(model)'s loading of ``path``, with a one-line UsageError for a file
    it cannot read (fvcore asserts that the file exists; pickle / torch.load errors otherwise)
    and for weights that do not fit the config: ``Checkpointer.load`` only logs missing keys and
    skips tensors of another shape, which would export an untrained detector without a word.
    So this calls its two steps, ``_load_file`` and ``_load_model`` (which returns those keys)."""
    core.check_input_file(path, "--weights")
    checkpointer = d2["DetectionCheckpointer"](model)
    steps = hasattr(checkpointer, "_load_file") and hasattr(checkpointer, "_load_model")
    try:
        if steps:
            incompatible = checkpointer._load_model(checkpointer._load_file(path))
        else:  # not fvcore's Checkpointer (a stand-in): its public load(), unchecked
            core.log("the checkpointer has no _load_file / _load_model: loading without the key check")
            checkpointer.load(path)
            incompatible = None
    except Exception as error:
        raise core.UsageError(f"--weights {path}: cannot be loaded as a Detectron2 checkpoint "
                              f"({core.one_line(error)})") from None
    missing = list(getattr(incompatible, "missing_keys", []))
    shapes = list(getattr(incompatible, "incorrect_shapes", []))
    if missing or shapes:
        raise core.UsageError(
            f"--weights {path} does not match the config (wrong --config or --opts?): {len(missing)} missing "
            f"keys {missing[:3]}, {len(shapes)} of another shape {[k for k, *_ in shapes[:3]]}")
    unexpected = list(getattr(incompatible, "unexpected_keys", []))
    if unexpected:
        core.log(f"--weights {path}: {len(unexpected)} keys the model does not use, ignored: {unexpected[:3]}")


def keypoint_metadata(d2: Dict[str, Any], cfg: Any) -> Tuple[Optional[List[str]], Optional[List[List[int]]]]:
    """(keypoint_names, skeleton) from the MetadataCatalog of DATASETS.TEST[0]: its
    keypoint_names and keypoint_connection_rules ((name_a, name_b, colour) -> index pairs)."""
    datasets = list(cfg.DATASETS.TEST)
    if not datasets:
        return None, None
    meta = d2["MetadataCatalog"].get(datasets[0])
    names = list(getattr(meta, "keypoint_names", None) or [])  # Metadata raises AttributeError when unset
    if not names:
        return None, None
    rules = getattr(meta, "keypoint_connection_rules", None)
    index = {n: i for i, n in enumerate(names)}
    skeleton = [[index[a], index[b]] for a, b, *_ in (rules or []) if a in index and b in index]
    return names, skeleton


def box_in_features(heads: Any) -> List[str]:
    """The feature maps the box pooler reads: StandardROIHeads' box_in_features, Res5ROIHeads'
    in_features (one map, res4)."""
    names = getattr(heads, "box_in_features", None)
    return list(names if names is not None else heads.in_features)


def is_res5_model(model: Any) -> bool:
    """A built Res5ROIHeads (C4): its box head is the res5 stage, shared with the mask head."""
    return hasattr(model.roi_heads, "res5") and not hasattr(model.roi_heads, "box_head")


def box_head_wrapper(model: Any, stage: int = 0):
    """roi_heads.box_head, then box_predictor: (class_logits, box_deltas); for CascadeROIHeads
    (per-stage lists of both) those of cascade stage ``stage``."""
    from torch import nn

    class D2BoxHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            heads = model.roi_heads
            cascade = isinstance(heads.box_predictor, nn.ModuleList)
            self.box_head = heads.box_head[stage] if cascade else heads.box_head
            self.box_predictor = heads.box_predictor[stage] if cascade else heads.box_predictor

        def forward(self, box_features):
            return self.box_predictor(self.box_head(box_features))

    return D2BoxHead()


def cascade_specs(model: Any, model_json: Dict[str, Any], box_spec: Any) -> List[Any]:
    """The box head modules of cascade stages 1, 2, ... (stage 0 is ``box_spec``, the bundle's
    box_head), traced and checked on the box head's example inputs."""
    stages = model_json["roi_heads"].get("cascade", [])
    if len(model.roi_heads.box_predictor) != len(stages):
        raise core.ExportError(f"the built CascadeROIHeads has {len(model.roi_heads.box_predictor)} stages, "
                               f"MODEL.ROI_BOX_CASCADE_HEAD {len(stages)}")
    return [core.ModuleSpec(entry["module"], box_head_wrapper(model, k), box_spec.inputs, box_spec.flatten,
                            box_spec.validate) for k, entry in enumerate(stages) if k > 0]


def make_wrappers(model: Any, masks: bool = False, keypoints: bool = False):
    """(backbone_rpn, box_head) wrappers, and with ``masks`` / ``keypoints`` a third: the mask
    head or the keypoint head. For Res5ROIHeads (C4) the box and mask head wrappers each
    include res5 (the pooled 14x14 res4 features are their input)."""
    import torch
    from torch import nn

    class D2BackboneRPN(nn.Module):
        """model.backbone, then proposal_generator.rpn_head on its RPN inputs:
        (objectness per level, deltas per level, [the box pooler's feature maps])."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = model.backbone
            self.rpn_head = model.proposal_generator.rpn_head
            self.rpn_in_features = list(model.proposal_generator.in_features)
            self.roi_in_features = box_in_features(model.roi_heads)

        def forward(self, images: torch.Tensor):
            features = self.backbone(images)
            objectness, deltas = self.rpn_head([features[f] for f in self.rpn_in_features])
            return objectness, deltas, [features[f] for f in self.roi_in_features]

    class D2MaskHead(nn.Module):
        """roi_heads.mask_head.layers: MaskRCNNConvUpsampleHead's convs, deconv and predictor,
        [R, C, P, P] -> raw logits [R, K (1 if class-agnostic), 2P, 2P]. (mask_head.forward
        would add mask_rcnn_inference: class selection and sigmoid, which the runtime does.)"""

        def __init__(self) -> None:
            super().__init__()
            self.mask_head = model.roi_heads.mask_head

        def forward(self, mask_features: torch.Tensor):
            return self.mask_head.layers(mask_features)

    class D2KeypointHead(nn.Module):
        """roi_heads.keypoint_head.layers: KRCNNConvDeconvUpsampleHead's convs, score_lowres
        deconvolution and the x2 bilinear upsampling, [R, C, P, P] -> heatmap logits
        [R, K, 4P, 4P]. (keypoint_head.forward would add keypoint_rcnn_inference: the decoding
        to (x, y, score), which the runtime does.)"""

        def __init__(self) -> None:
            super().__init__()
            self.keypoint_head = model.roi_heads.keypoint_head

        def forward(self, keypoint_features: torch.Tensor):
            return self.keypoint_head.layers(keypoint_features)

    class D2Res5BoxHead(nn.Module):
        """Res5ROIHeads' box path after its pooler: res5 (stride 2), the mean over H and W,
        then box_predictor: [R, C_res4, P, P] -> (class_logits, box_deltas)."""

        def __init__(self) -> None:
            super().__init__()
            self.res5 = model.roi_heads.res5
            self.box_predictor = model.roi_heads.box_predictor

        def forward(self, box_features: torch.Tensor):
            return self.box_predictor(self.res5(box_features).mean(dim=[2, 3]))

    class D2Res5MaskHead(nn.Module):
        """Res5ROIHeads' mask path after its pooler (the box pooler on the detections): res5,
        then mask_head.layers: [R, C_res4, P, P] -> raw logits [R, K, M, M] (M = mask_size)."""

        def __init__(self) -> None:
            super().__init__()
            self.res5 = model.roi_heads.res5
            self.mask_head = model.roi_heads.mask_head

        def forward(self, mask_features: torch.Tensor):
            return self.mask_head.layers(self.res5(mask_features))

    if is_res5_model(model):
        if keypoints:
            raise core.ExportError("Res5ROIHeads has no keypoint head")
        return (D2BackboneRPN(), D2Res5BoxHead(), D2Res5MaskHead()) if masks else (D2BackboneRPN(), D2Res5BoxHead())
    if masks:
        return D2BackboneRPN(), box_head_wrapper(model), D2MaskHead()
    if keypoints:
        return D2BackboneRPN(), box_head_wrapper(model), D2KeypointHead()
    return D2BackboneRPN(), box_head_wrapper(model)


def check_model_matches(model: Any, model_json: Dict[str, Any]) -> None:
    """The built modules agree with what model.json says about them."""
    res5 = is_res5_model(model)
    pooler = model.roi_heads.pooler if res5 else model.roi_heads.box_pooler
    if list(model.proposal_generator.in_features) != model_json["backbone"]["rpn_levels"]:
        raise core.ExportError("proposal_generator.in_features differ from MODEL.RPN.IN_FEATURES")
    if box_in_features(model.roi_heads) != model_json["backbone"]["roi_levels"]:
        raise core.ExportError("roi_heads.box_in_features differ from MODEL.ROI_HEADS.IN_FEATURES")
    if len(pooler.level_poolers) != len(model_json["backbone"]["roi_levels"]):
        raise core.ExportError("the box pooler has a different number of levels")
    if int(getattr(pooler, "canonical_box_size", CANONICAL_BOX_SIZE)) != CANONICAL_BOX_SIZE or \
            int(getattr(pooler, "canonical_level", CANONICAL_LEVEL)) != CANONICAL_LEVEL:
        raise core.ExportError("the box pooler's canonical box size / level differ from 224 / 4")
    heads = model.roi_heads
    if res5:
        if "mask_head" in model_json and (getattr(heads, "mask_head", None) is None
                                          or not callable(getattr(heads.mask_head, "layers", None))):
            raise core.ExportError("MODEL.MASK_ON but the built Res5ROIHeads has no mask_head with layers()")
        return  # one pooler (checked above) for the boxes and the masks
    for key, flag, prefix in (("mask_head", "MASK_ON", "mask"), ("keypoint_head", "KEYPOINT_ON", "keypoint")):
        if key not in model_json:
            continue
        for attr in (f"{prefix}_pooler", f"{prefix}_head", f"{prefix}_in_features"):
            if getattr(heads, attr, None) is None:
                raise core.ExportError(f"MODEL.{flag} but the built roi_heads has no {attr}")
        if list(getattr(heads, f"{prefix}_in_features")) != model_json["backbone"]["roi_levels"]:
            raise core.ExportError(f"roi_heads.{prefix}_in_features differ from the box head's "
                                   "(the bundle has one set of RoI levels)")
        head_pooler = getattr(heads, f"{prefix}_pooler")
        if len(head_pooler.level_poolers) != len(model_json["backbone"]["roi_levels"]):
            raise core.ExportError(f"the {prefix} pooler has a different number of levels")
        if int(getattr(head_pooler, "canonical_box_size", CANONICAL_BOX_SIZE)) != CANONICAL_BOX_SIZE or \
                int(getattr(head_pooler, "canonical_level", CANONICAL_LEVEL)) != CANONICAL_LEVEL:
            raise core.ExportError(f"the {prefix} pooler's canonical box size / level differ from 224 / 4")
        if not callable(getattr(getattr(heads, key), "layers", None)):
            raise core.ExportError(f"roi_heads.{key} has no layers() (not a Detectron2 v0.6 {prefix} head?)")
    if "keypoint_head" in model_json and int(getattr(heads.keypoint_head, "up_scale", 2)) * 2 != KEYPOINT_UPSCALE:
        raise core.ExportError("roi_heads.keypoint_head is not a Detectron2 v0.6 KRCNNConvDeconvUpsampleHead "
                               "(up_scale 2)")


DESCRIPTION = """\
Export a Detectron2 (v0.6) Faster R-CNN or Mask R-CNN to an rcnn model bundle (format v1):
model.json, backbone_rpn.pt (backbone + RPN head) and box_head.pt (box head + predictor); a
Mask R-CNN (MODEL.MASK_ON) adds mask_head.pt (roi_heads.mask_head.layers: raw mask logits).
Everything in between (resize, normalisation, anchors, proposals, RoIAlign, box decoding, NMS,
rescaling, the mask RoIAlign, class-channel sigmoid and pasting the masks) is described in
model.json with Detectron2's conventions and done natively by the runtime.
Needs Detectron2 v0.6 installed (exits with status 2 and instructions otherwise)."""

EPILOG = """\
config:
  --config takes a model zoo name (COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml) or a YAML
  file; --opts KEY VALUE ... are merged after it (cfg.merge_from_list), e.g.
  --opts INPUT.MIN_SIZE_TEST 320 INPUT.MAX_SIZE_TEST 533 MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.5
  model.json comes from the config: INPUT.FORMAT, MODEL.PIXEL_MEAN/STD, INPUT.MIN/MAX_SIZE_TEST,
  MODEL.ANCHOR_GENERATOR, MODEL.RPN (PRE/POST_NMS_TOPK_TEST, NMS_THRESH, BBOX_REG_WEIGHTS),
  MODEL.ROI_HEADS / ROI_BOX_HEAD (POOLER_*, BBOX_REG_WEIGHTS, SCORE/NMS_THRESH_TEST,
  CLS_AGNOSTIC_BBOX_REG), TEST.DETECTIONS_PER_IMAGE; strides and channels from the built
  backbone; class names from MetadataCatalog of DATASETS.TEST[0] (or --classes FILE).
  Supported: GeneralizedRCNN with an FPN, C4 or DC5 backbone, StandardRPNHead,
  StandardROIHeads, CascadeROIHeads or Res5ROIHeads, ROIAlign/ROIAlignV2 (not ROIPool).

C4 and DC5 (one feature map, e.g. COCO-Detection/faster_rcnn_R_50_C4_3x.yaml, _DC5_3x.yaml):
  the RPN and the RoI pooler read one map (C4: res4; DC5: res5, dilated, stride 16: strides
  come from the backbone's output_shape(), channels too); no padding (size_divisibility 0).
  C4's Res5ROIHeads: box_head.pt is res5 + the mean over H, W + box_predictor on the 14x14
  pooled res4 features; with MODEL.MASK_ON, mask_head.pt is res5 + mask_head.layers on the
  same pooler's output for the detections, its logits mask_size = 14 (mask_head.mask_size).

Cascade R-CNN (MODEL.ROI_HEADS.NAME CascadeROIHeads, e.g.
Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml): one box head module per stage (box_head.pt,
  box_head_stage1.pt, ...) and roi_heads.cascade: each stage's module and box-regression
  weights (MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS); the runtime refines the boxes stage
  by stage and averages the stages' class probabilities, as CascadeROIHeads does.

Mask R-CNN (MODEL.MASK_ON, e.g. COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml):
  model.json gets architecture "mask_rcnn" and a mask_head object from MODEL.ROI_MASK_HEAD
  (POOLER_RESOLUTION, POOLER_SAMPLING_RATIO, POOLER_TYPE: ROIAlignV2 = aligned,
  CLS_AGNOSTIC_MASK), mask_threshold 0.5 and paste "detectron2" (paste_masks_in_image, as
  DefaultPredictor). Supported head: MaskRCNNConvUpsampleHead. --boxes-only exports the same
  detector without its mask head (a faster_rcnn bundle with the same boxes). With
  --static-rois the mask head is traced for exactly TEST.DETECTIONS_PER_IMAGE rows.

Keypoint R-CNN (MODEL.KEYPOINT_ON, e.g. COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml):
  architecture "keypoint_rcnn", a keypoint_head object from MODEL.ROI_KEYPOINT_HEAD (pooler,
  NUM_KEYPOINTS, heatmap_size 4 x POOLER_RESOLUTION, decode "detectron2", keypoint names and
  skeleton from the dataset metadata) and keypoint_head.pt (roi_heads.keypoint_head.layers:
  heatmap logits [R, K, S, S]). Supported head: KRCNNConvDeconvUpsampleHead, not with MASK_ON.

example (the AWS Neuron R-CNN app note's model, for Inf1):
  %(prog)s --config COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml --weights model_final.pkl \\
      --fixed-size 800 800 --static-rois 1000 --target neuron --output bundles/r101_inf1
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="export_detectron2.py", description=DESCRIPTION,
                                     epilog=EPILOG + "\n" + core.BUNDLE_OPTIONS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, metavar="NAME_OR_YAML",
                        help="model zoo config name or YAML file")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="config overrides, KEY VALUE pairs (cfg.merge_from_list)")
    parser.add_argument("--weights", required=True, metavar="FILE",
                        help="checkpoint for DetectionCheckpointer (.pth or .pkl)")
    parser.add_argument("--classes", metavar="FILE", help="class names, one per line (default: MetadataCatalog)")
    parser.add_argument("--category-ids", metavar="FILE",
                        help="dataset category id of each class, one per line (default: from the "
                             "MetadataCatalog of DATASETS.TEST[0], e.g. the COCO ids; none with --classes)")
    parser.add_argument("--boxes-only", action="store_true",
                        help="export a Mask R-CNN config without its mask head (a faster_rcnn bundle)")
    parser.add_argument("--note", default=None, help="free text for model.json source.note")
    core.add_bundle_arguments(parser)
    args = parser.parse_args(argv)
    core.validate_bundle_arguments(args)
    return args


def check_input_files(args: argparse.Namespace) -> None:
    """--weights, --classes, --category-ids: readable files, else status 2 and one line."""
    for option, path in (("--weights", args.weights), ("--classes", args.classes),
                         ("--category-ids", args.category_ids)):
        if path is not None:
            try:
                core.check_input_file(path, option)
            except core.UsageError as error:
                core.exit_with_export_error(error)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    d2 = import_detectron2()  # first: without Detectron2 nothing else can be checked
    check_input_files(args)
    import torch

    try:
        device = "cuda" if args.target == "cuda" else "cpu"
        cfg = build_cfg(d2, args.config, args.opts, device)
        check_supported(cfg, args.boxes_only)
        core.log(f"building {args.config} on {device}")
        model = d2["build_model"](cfg)
        model.eval()
        core.log(f"loading {args.weights}")
        load_checkpoint(d2, model, args.weights)
        shapes = {name: (int(s.channels), int(s.stride)) for name, s in model.backbone.output_shape().items()}
        note = args.note if args.note is not None else (
            f"weights: {os.path.basename(args.weights)}" + (f"; opts: {' '.join(args.opts)}" if args.opts else ""))
        kp_names, kp_skeleton = keypoint_metadata(d2, cfg) if exports_keypoints(cfg, args.boxes_only) else (None, None)
        model_json = model_json_from_cfg(
            cfg, config=args.config, classes=class_names(d2, cfg, args.classes), note=note,
            keypoint_names=kp_names, keypoint_skeleton=kp_skeleton,
            framework_version=str(getattr(d2["detectron2"], "__version__", "0.6")), output_shape=shapes,
            size_divisibility=getattr(model.backbone, "size_divisibility", None), fixed_size=args.fixed_size,
            static_rois=args.static_rois, boxes_only=args.boxes_only,
            category_ids=category_ids(d2, cfg, args.classes, args.category_ids))
        check_model_matches(model, model_json)
        masks, keypoints = "mask_head" in model_json, "keypoint_head" in model_json
        wrappers = make_wrappers(model, masks=masks, keypoints=keypoints)
        specs = core.standard_specs(model_json, wrappers[0], wrappers[1], device=torch.device(device),
                                    mask_head=wrappers[2] if masks else None,
                                    keypoint_head=wrappers[2] if keypoints else None)
        if "cascade" in model_json["roi_heads"]:
            specs += cascade_specs(model, model_json, next(s for s in specs if s.key == "box_head"))
        core.export_bundle(args.output, model_json, specs, target=args.target, tolerance=args.tolerance,
                           freeze=args.freeze, channels_last=args.channels_last,
                           features_layout=args.features_layout)
    except core.ExportError as error:
        core.exit_with_export_error(error)
    print(args.output)
    return 0

