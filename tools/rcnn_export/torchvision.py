"""Export a torchvision Faster R-CNN or Mask R-CNN to an rcnn model bundle (format v1).

Usable as a program (see --help) and as a module: ``build_model``, ``apply_seed_recipe``,
``load_weights``, ``model_json_for`` and ``export`` are what tests/reference/gen_torchvision.py
calls. The command line is ``tools/export_torchvision.py``.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from . import core

MODELS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
          "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "keypointrcnn_resnet50_fpn")
MASK_MODELS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
KEYPOINT_MODELS = ("keypointrcnn_resnet50_fpn",)

#: COCO's person keypoints (torchvision's KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.meta
#: "keypoint_names") and the person skeleton of the COCO annotations ("skeleton", made 0-based):
#: what a keypoint_rcnn bundle of the COCO person model records for drawing.
COCO_PERSON_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
]
COCO_PERSON_SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7],
                        [6, 8], [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]]

#: How torchvision builds each model when it loads its COCO weights: the norm layers and,
#: for FrozenBatchNorm2d, the eps it uses (fasterrcnn_resnet50_fpn's COCO_V1 weights call
#: overwrite_eps(model, 0.0), and so do maskrcnn_resnet50_fpn's; the MobileNet builder keeps
#: FrozenBatchNorm2d's 1e-5; the v2 models keep trainable BatchNorm2d).
PRETRAINED_NORM = {
    "fasterrcnn_resnet50_fpn": ("frozen", 0.0),
    "fasterrcnn_resnet50_fpn_v2": ("batchnorm", None),
    "fasterrcnn_mobilenet_v3_large_fpn": ("frozen", 1e-5),
    "maskrcnn_resnet50_fpn": ("frozen", 0.0),
    "maskrcnn_resnet50_fpn_v2": ("batchnorm", None),
    "keypointrcnn_resnet50_fpn": ("frozen", 0.0),
}

#: torchvision's 91 COCO category names (FasterRCNN_*_Weights.COCO_V1.meta["categories"]), used
#: when that meta cannot be imported. Index = label; "N/A" are unused ids kept so that
#: class_id = label - 1.
COCO_CATEGORIES = [
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack",
    "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]

#: Seed recipe constants per model (see apply_seed_recipe).
RECIPES: Dict[str, Dict[str, float]] = {
    "fasterrcnn_resnet50_fpn": dict(
        residual_bn=0.2, rpn_objectness_std=0.1, rpn_objectness_bias=0.0, rpn_deltas_std=0.01,
        rpn_size_bias=1.0, cls_std=1.15, background_bias=7.3, box_std=0.5),
    # v2's box head has four conv+BN layers before its Linear: its output is ~8x larger.
    "fasterrcnn_resnet50_fpn_v2": dict(
        residual_bn=0.2, rpn_objectness_std=0.1, rpn_objectness_bias=0.0, rpn_deltas_std=0.01,
        rpn_size_bias=1.0, cls_std=0.25, background_bias=7.3, box_std=0.06),
    "fasterrcnn_mobilenet_v3_large_fpn": dict(
        residual_bn=0.2, calibrate_norms=0.03, se_gate_scale=0.05, fpn_std=0.7,
        rpn_objectness_std=0.1, rpn_objectness_bias=-2.0, rpn_deltas_std=0.01, rpn_size_bias=1.0,
        cls_std=0.7, background_bias=7.3, box_std=0.5),
}
#: Mask R-CNN: the Faster R-CNN recipe of the same backbone and box head (the non-mask weights
#: are the same tensors for the same seed) plus the mask head's constants (see
#: apply_mask_seed_recipe).
MASK_RECIPE: Dict[str, float] = dict(mask_deconv_spread=0.2, mask_logits_std=4.0)
RECIPES["maskrcnn_resnet50_fpn"] = dict(RECIPES["fasterrcnn_resnet50_fpn"], **MASK_RECIPE)
RECIPES["maskrcnn_resnet50_fpn_v2"] = dict(RECIPES["fasterrcnn_resnet50_fpn_v2"], **MASK_RECIPE)
#: Keypoint R-CNN: one class (person) against the background; heatmap logits spread a few units.
KEYPOINT_RECIPE: Dict[str, float] = dict(keypoint_logits_std=1.0)
RECIPES["keypointrcnn_resnet50_fpn"] = dict(RECIPES["fasterrcnn_resnet50_fpn"], background_bias=3.5,
                                            **KEYPOINT_RECIPE)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

def coco_categories() -> List[str]:
    """torchvision's COCO names (with "__background__" and the "N/A" gaps), offline."""
    try:
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

        names = list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
        if len(names) == 91:
            return names
    except Exception:
        pass
    return list(COCO_CATEGORIES)


def coco_category_ids() -> List[int]:
    """The COCO category id of each of the 90 contiguous classes: torchvision's labels are the
    COCO ids themselves (label = index in COCO_CATEGORIES, class_id = label - 1)."""
    return list(range(1, len(COCO_CATEGORIES)))


def freeze_batchnorm(module: nn.Module, eps: float) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d (as torchvision's pretrained builders do)."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child, eps)
    return module


def build_model(name: str, *, num_classes: int = 91, min_size: Optional[int] = None,
                max_size: Optional[int] = None, fixed_size: Optional[Sequence[int]] = None,
                norm: str = "pretrained", frozen_bn_eps: Optional[float] = None) -> nn.Module:
    """The torchvision model, without downloading anything (weights=None, weights_backbone=None).

    ``num_classes`` includes the background. ``norm``: "pretrained" (the layers torchvision uses
    with its COCO weights), "frozen" (FrozenBatchNorm2d) or "batchnorm" (BatchNorm2d, eval mode).
    ``fixed_size`` (H, W) makes model.transform resize to exactly that size."""
    import torchvision.models.detection as det

    if name not in MODELS:
        raise core.ExportError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    kwargs: Dict[str, Any] = {}
    if min_size is not None:
        kwargs["min_size"] = int(min_size)
    if max_size is not None:
        kwargs["max_size"] = int(max_size)
    builder = getattr(det, name)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    kind, eps = PRETRAINED_NORM[name]
    if norm == "frozen" or (norm == "pretrained" and kind == "frozen"):
        if frozen_bn_eps is not None:
            eps = frozen_bn_eps
        freeze_batchnorm(model, 1e-5 if eps is None else float(eps))
    elif norm not in ("batchnorm", "pretrained"):
        raise core.ExportError(f"unknown norm {norm!r}")
    if fixed_size is not None:
        # GeneralizedRCNNTransform takes fixed_size as (width, height).
        model.transform.fixed_size = (int(fixed_size[1]), int(fixed_size[0]))
    return model.eval()


def load_weights(model: nn.Module, path: str) -> None:
    """Load a state_dict file (a plain state_dict, or a dict holding one under "model" or
    "state_dict")."""
    state = read_state_dict(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise core.UsageError(f"--weights {path} does not match the model (wrong --model or --num-classes?): "
                              f"{' '.join(str(error).split())}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise core.UsageError(
            f"--weights {path} does not match the model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]} (wrong --model or --num-classes?)")
    model.eval()


def read_state_dict(path: str) -> Dict[str, Any]:
    """A state_dict file: a plain state_dict, or a dict holding one under "model" or "state_dict"."""
    core.check_input_file(path, "--weights")
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as error:  # pickle / zip / EOF errors of a file that is not a checkpoint
        raise core.UsageError(f"--weights {path}: cannot be read as a torch checkpoint "
                              f"({core.one_line(error)})") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise core.UsageError(f"--weights {path} does not hold a state_dict")
    return state


def state_dict_uses_batchnorm(state: Dict[str, Any]) -> bool:
    """True when the saved backbone norm layers are trainable BatchNorm2d (num_batches_tracked)."""
    return any(k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state)


def state_dict_num_classes(state: Dict[str, Any]) -> Optional[int]:
    """Foreground classes of a saved model (cls_score rows - 1), if the key is there."""
    weight = state.get("roi_heads.box_predictor.cls_score.weight")
    return int(weight.shape[0]) - 1 if weight is not None else None


def apply_seed_recipe(model: nn.Module, seed: int, recipe: Optional[Dict[str, float]] = None,
                      name: Optional[str] = None) -> nn.Module:
    """Deterministic untrained weights that give spread-out, useful detections.

    ``torch.manual_seed(seed)``, then in ``model.modules()`` order: every Conv2d
    kaiming-normal (fan_out, relu; the fan of one group, so depthwise convolutions keep their
    scale), bias 0; every Linear N(0, 0.01), bias 0; every norm layer
    identity (weight 1, bias 0, mean 0, var 1 - eps). Then:

    * the last norm layer of every residual block (ResNet ``bn3``, MobileNetV3 blocks with a
      residual connection) gets weight ``residual_bn``, damping the growth of the residual
      stream so that the FPN outputs stay O(1-10);
    * box head: the first Linear's weights are made zero-mean over each pooled window (the
      per-channel offset that pooled features share otherwise makes one class win everywhere),
      every later Linear's rows zero-mean;
    * ``cls_score`` N(0, cls_std) with zero-mean rows and ``background_bias`` on the background
      (first) logit; ``bbox_pred`` N(0, box_std) with zero-mean rows (the box-head output is
      small, so these stds are larger than usual);
    * RPN head: ``cls_logits`` N(0, rpn_objectness_std) with bias ``rpn_objectness_bias``,
      ``bbox_pred`` N(0, rpn_deltas_std) with bias ``rpn_size_bias`` on every anchor's dw, dh
      (proposals e^bias times their anchor: NMS keeps hundreds and every RoI level is reached).

    MobileNetV3 (hardswish and squeeze-excitation in 15 blocks) needs two more steps, or the
    output scale varies by orders of magnitude between photos: ``se_gate_scale`` multiplies
    every SE block's fc2 weights (gates stay near 0.5), and ``calibrate_norms`` rescales every
    trunk norm layer on a synthetic calibration image (see ``calibrate_norms``) and the FPN's
    lateral convolutions to output std ``fpn_std``.

    A Mask R-CNN's mask head and predictor are left out of all that (so that every other
    weight equals the Faster R-CNN's of the same seed) and get ``apply_mask_seed_recipe``; a
    Keypoint R-CNN's keypoint head and predictor likewise get ``apply_keypoint_seed_recipe``.

    The constants per model are in ``RECIPES``; they were tuned on fruits, messi5, baboon and
    building from OpenCV's sample data (tests/reference/gen_torchvision.py and, for the masks,
    gen_tv_masks.py print the result).
    """
    from torchvision.ops import FrozenBatchNorm2d

    if recipe is None:
        recipe = RECIPES[name] if name in RECIPES else RECIPES["fasterrcnn_resnet50_fpn"]
    torch.manual_seed(seed)
    norm_types = (nn.BatchNorm2d, FrozenBatchNorm2d)
    mask_modules = {id(m) for part in mask_parts(model) + keypoint_parts(model) for m in part.modules()}
    with torch.no_grad():
        for m in model.modules():
            if id(m) in mask_modules:
                continue
            if isinstance(m, nn.Conv2d):
                kaiming_conv_(m)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.01)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, norm_types):
                identity_norm_(m)

        for block in residual_blocks(model.backbone):
            last_norm_of_branch(block, norm_types).weight.fill_(recipe["residual_bn"])

        if "se_gate_scale" in recipe:
            # Squeeze-excitation gates x * hardsigmoid(fc2(...)) grow with the input's
            # amplitude (a quadratic response that compounds over the blocks): scale fc2 down
            # so that every gate stays near 0.5.
            from torchvision.ops import SqueezeExcitation

            for m in model.backbone.modules():
                if isinstance(m, SqueezeExcitation):
                    m.fc2.weight.mul_(recipe["se_gate_scale"])
        if recipe.get("calibrate_norms"):
            calibrate_norms(model, seed, float(recipe["calibrate_norms"]), float(recipe["residual_bn"]),
                            float(recipe.get("fpn_std", 1.0)), norm_types)

        linears = [m for m in model.roi_heads.box_head.modules() if isinstance(m, nn.Linear)]
        channels = model.backbone.out_channels
        for i, fc in enumerate(linears):
            w = fc.weight
            if i == 0 and w.shape[1] % channels == 0:
                window = w.view(w.shape[0], channels, -1)
                window -= window.mean(dim=2, keepdim=True)
            else:
                w -= w.mean(dim=1, keepdim=True)

        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.normal_(0.0, recipe["cls_std"])
        predictor.cls_score.weight -= predictor.cls_score.weight.mean(dim=1, keepdim=True)
        predictor.cls_score.bias.zero_()
        predictor.cls_score.bias[0] = recipe["background_bias"]
        predictor.bbox_pred.weight.normal_(0.0, recipe["box_std"])
        predictor.bbox_pred.weight -= predictor.bbox_pred.weight.mean(dim=1, keepdim=True)
        predictor.bbox_pred.bias.zero_()

        head = model.rpn.head
        head.cls_logits.weight.normal_(0.0, recipe["rpn_objectness_std"])
        head.cls_logits.bias.fill_(recipe["rpn_objectness_bias"])
        head.bbox_pred.weight.normal_(0.0, recipe["rpn_deltas_std"])
        bias = head.bbox_pred.bias.view(-1, 4)
        bias.zero_()
        bias[:, 2:] = recipe["rpn_size_bias"]
    if mask_parts(model):
        apply_mask_seed_recipe(model, seed, recipe)
    if keypoint_parts(model):
        apply_keypoint_seed_recipe(model, seed, recipe)
    return model.eval()


def kaiming_conv_(m: nn.Module) -> None:
    """Kaiming normal (fan_out, relu) in place, bias 0, for a Conv2d or ConvTranspose2d. The fan
    is out channels x taps of one group and one output position: for depthwise convolutions
    torch's fan_out would count every channel and shrink them, and every output pixel of a
    stride-2 2x2 deconvolution sees one tap. Called under torch.no_grad()."""
    out_channels = m.out_channels // m.groups
    taps = m.kernel_size[0] * m.kernel_size[1]
    if isinstance(m, nn.ConvTranspose2d):
        taps = max(1, taps // (m.stride[0] * m.stride[1]))
    m.weight.normal_(0.0, math.sqrt(2.0 / (out_channels * taps)))
    if m.bias is not None:
        m.bias.zero_()


def identity_norm_(m: nn.Module) -> None:
    """A BatchNorm2d / FrozenBatchNorm2d made the identity in place (weight 1, bias 0, mean 0,
    var 1 - eps). Called under torch.no_grad()."""
    m.weight.fill_(1.0)
    m.bias.zero_()
    m.running_mean.zero_()
    m.running_var.fill_(1.0 - m.eps)


def mask_parts(model: nn.Module) -> List[nn.Module]:
    """roi_heads.mask_head and mask_predictor of a Mask R-CNN; [] for a Faster R-CNN."""
    heads = model.roi_heads
    parts = [getattr(heads, "mask_head", None), getattr(heads, "mask_predictor", None)]
    return [p for p in parts if p is not None]


def keypoint_parts(model: nn.Module) -> List[nn.Module]:
    """roi_heads.keypoint_head and keypoint_predictor of a Keypoint R-CNN; [] otherwise."""
    heads = model.roi_heads
    parts = [getattr(heads, "keypoint_head", None), getattr(heads, "keypoint_predictor", None)]
    return [p for p in parts if p is not None]


def apply_keypoint_seed_recipe(model: nn.Module, seed: int, recipe: Dict[str, float]) -> nn.Module:
    """Deterministic keypoint head weights whose heatmaps peak at different places for every
    detection and keypoint: ``torch.manual_seed(seed)`` again; every Conv2d and the
    ConvTranspose2d kaiming-normal (fan_out, relu), bias 0; every 3x3 kernel of the head's
    convolutions zero-mean over its taps (as the mask head's: the per-channel offsets shared by
    all RoIs would otherwise put every peak at the same place); the predictor's deconvolution
    (``kps_score_lowres``) N(0, keypoint_logits_std) with zero mean over the input channels."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for part in keypoint_parts(model):
            for m in part.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    kaiming_conv_(m)
        for m in model.roi_heads.keypoint_head.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] * m.kernel_size[1] > 1:
                m.weight -= m.weight.mean(dim=(2, 3), keepdim=True)
        deconv = model.roi_heads.keypoint_predictor.kps_score_lowres
        deconv.weight.normal_(0.0, recipe.get("keypoint_logits_std", KEYPOINT_RECIPE["keypoint_logits_std"]))
        deconv.weight -= deconv.weight.mean(dim=0, keepdim=True)
        deconv.bias.zero_()
    return model


def apply_mask_seed_recipe(model: nn.Module, seed: int, recipe: Dict[str, float]) -> nn.Module:
    """Deterministic mask head weights that give masks of real shapes: neither empty nor full,
    different for every detection and every class.

    ``torch.manual_seed(seed)`` again, then in ``modules()`` order of mask_head and
    mask_predictor: every norm layer identity (v2), every Conv2d and the ConvTranspose2d
    kaiming-normal (fan_out, relu) with bias 0, and

    * every 3x3 kernel of the mask head's convolutions zero-mean over its taps: the pooled
      features carry per-channel offsets shared by all RoIs of an image (larger than the
      variation inside one RoI), which would otherwise make whole masks empty or full;
    * every 2x2 kernel of the deconvolution pulled towards its first tap,
      ``w <- w[0, 0] + mask_deconv_spread * (w - w[0, 0])``: independent taps paint a period-2
      checkerboard over the 28 x 28 mask, equal taps make it blocky;
    * ``mask_fcn_logits`` N(0, mask_logits_std) with zero-mean rows (over the input channels:
      the ReLU outputs share a positive mean), bias 0, so that the logits of every class are
      centred near 0 with a spread of a few units.
    """
    from torchvision.ops import FrozenBatchNorm2d

    norm_types = (nn.BatchNorm2d, FrozenBatchNorm2d)
    parts = mask_parts(model)
    torch.manual_seed(seed)
    with torch.no_grad():
        for part in parts:
            for m in part.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    kaiming_conv_(m)
                elif isinstance(m, norm_types):
                    identity_norm_(m)
        head = model.roi_heads.mask_head
        for m in head.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] * m.kernel_size[1] > 1:
                m.weight -= m.weight.mean(dim=(2, 3), keepdim=True)
        spread = recipe.get("mask_deconv_spread", MASK_RECIPE["mask_deconv_spread"])
        predictor = model.roi_heads.mask_predictor
        for m in predictor.modules():
            if isinstance(m, nn.ConvTranspose2d):
                first = m.weight[:, :, :1, :1].clone()
                m.weight.copy_(first + spread * (m.weight - first))
        logits = mask_logits_layer(predictor)
        logits.weight.normal_(0.0, recipe.get("mask_logits_std", MASK_RECIPE["mask_logits_std"]))
        logits.weight -= logits.weight.mean(dim=1, keepdim=True)
        if logits.bias is not None:
            logits.bias.zero_()
    return model


def mask_logits_layer(predictor: nn.Module) -> nn.Conv2d:
    """The 1x1 convolution that gives the per-class mask logits (the predictor's last Conv2d)."""
    convs = [m for m in predictor.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise core.ExportError("the mask predictor has no Conv2d layer")
    return convs[-1]


def calibration_image(model: nn.Module, seed: int, size: Tuple[int, int] = (256, 320)) -> torch.Tensor:
    """A deterministic image with a photo-like (roughly 1/f) spectrum: uniform noise at cell
    sizes 1, 2, 4, ..., 64 pixels, upsampled bilinearly and summed with equal weights, scaled to
    [0, 1]; then normalised as model.transform does."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    image = torch.zeros(1, 3, h, w)
    for cell in (1, 2, 4, 8, 16, 32, 64):
        noise = torch.rand(1, 3, max(1, h // cell), max(1, w // cell), generator=gen)
        image += torch.nn.functional.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    image = (image - image.min()) / (image.max() - image.min())
    mean = torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(1, 3, 1, 1)
    return (image - mean) / std


def calibrate_norms(model: nn.Module, seed: int, target_std: float, residual_ratio: float,
                    fpn_std: float, norm_types: Tuple[type, ...]) -> None:
    """Data-dependent scale of the backbone trunk (for MobileNetV3, whose hardswish/SE layers
    shrink a kaiming-initialised signal ~2x per layer): one forward pass on
    ``calibration_image(seed)`` in which every norm layer's weight is rescaled, in execution
    order, so that its output has std ``target_std`` (times ``residual_ratio`` for the last norm
    of a residual branch). A small target keeps hardswish near its linear range, where the gain
    does not depend on the image. Deterministic for a given seed and machine."""
    ends = {id(last_norm_of_branch(b, norm_types)) for b in residual_blocks(model.backbone)}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        target = target_std * (residual_ratio if id(module) in ends else 1.0)
        std = float(output.std())
        if std <= 0.0 or not math.isfinite(std):
            return output
        factor = target / std
        module.weight.mul_(factor)
        module.bias.mul_(factor)
        return output * factor

    handles = [m.register_forward_hook(hook) for m in model.backbone.body.modules() if isinstance(m, norm_types)]
    image = calibration_image(model, seed)
    try:
        with torch.no_grad():
            model.backbone.body(image)
    finally:
        for h in handles:
            h.remove()
    # The FPN is linear: scale its lateral 1x1 convolutions so that its first output has
    # std fpn_std on the calibration image.
    with torch.no_grad():
        first = next(iter(model.backbone(image).values()))
        factor = fpn_std / float(first.std())
        for m in model.backbone.fpn.inner_blocks.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(factor)
                if m.bias is not None:
                    m.bias.mul_(factor)


def residual_blocks(backbone: nn.Module) -> List[nn.Module]:
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.models.resnet import BasicBlock, Bottleneck

    blocks = []
    for m in backbone.modules():
        if isinstance(m, (Bottleneck, BasicBlock)):
            blocks.append(m)
        elif isinstance(m, InvertedResidual) and m.use_res_connect:
            blocks.append(m)
    return blocks


def last_norm_of_branch(block: nn.Module, norm_types: Tuple[type, ...]) -> nn.Module:
    """The norm layer that ends the residual branch (not the shortcut's downsample)."""
    for attr in ("bn3", "bn2"):
        if hasattr(block, attr):
            return getattr(block, attr)
    norms = [m for m in block.block.modules() if isinstance(m, norm_types)]  # InvertedResidual
    return norms[-1]


# --------------------------------------------------------------------------------------------
# Bundle
# --------------------------------------------------------------------------------------------

class BackboneRPN(nn.Module):
    """model.backbone, then model.rpn.head on every feature map (in order):
    (objectness per level, deltas per level, [feature maps of the RoI levels])."""

    def __init__(self, model: nn.Module, roi_levels: Sequence[str]):
        super().__init__()
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head
        self.roi_levels = list(roi_levels)

    def forward(self, images: torch.Tensor):
        features = self.backbone(images)
        objectness, deltas = self.rpn_head(list(features.values()))
        return objectness, deltas, [features[name] for name in self.roi_levels]


class BoxHead(nn.Module):
    """model.roi_heads.box_head, then box_predictor: (class_logits, box_deltas)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.box_head = model.roi_heads.box_head
        self.box_predictor = model.roi_heads.box_predictor

    def forward(self, box_features: torch.Tensor):
        return self.box_predictor(self.box_head(box_features))


class MaskHead(nn.Module):
    """model.roi_heads.mask_head, then mask_predictor: raw mask logits [R, K+1, 2P, 2P]
    (background channel first, no sigmoid, no class selection)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.mask_head = model.roi_heads.mask_head
        self.mask_predictor = model.roi_heads.mask_predictor

    def forward(self, mask_features: torch.Tensor):
        return self.mask_predictor(self.mask_head(mask_features))


class KeypointHead(nn.Module):
    """model.roi_heads.keypoint_head, then keypoint_predictor (its deconvolution and the x2
    bilinear upsampling): heatmap logits [R, K, 4P, 4P] (no decoding)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.keypoint_head = model.roi_heads.keypoint_head
        self.keypoint_predictor = model.roi_heads.keypoint_predictor

    def forward(self, keypoint_features: torch.Tensor):
        return self.keypoint_predictor(self.keypoint_head(keypoint_features))


def has_keypoints(model: nn.Module) -> bool:
    heads = model.roi_heads
    return all(getattr(heads, k, None) is not None
               for k in ("keypoint_roi_pool", "keypoint_head", "keypoint_predictor"))


def has_mask(model: nn.Module) -> bool:
    heads = model.roi_heads
    return all(getattr(heads, k, None) is not None for k in ("mask_roi_pool", "mask_head", "mask_predictor"))


def pooler_json(pool: nn.Module) -> Dict[str, Any]:
    """RoIAlign + LevelMapper keys of a torchvision MultiScaleRoIAlign (BUNDLE-v1.md): its
    output size and sampling ratio; aligned false (torchvision's roi_align default, which
    MultiScaleRoIAlign keeps); LevelMapper's canonical scale / level and eps 1e-6 added outside
    the log2."""
    resolution = pool.output_size[0] if isinstance(pool.output_size, (tuple, list)) else pool.output_size
    return {
        "pooler_resolution": int(resolution),
        "sampling_ratio": int(pool.sampling_ratio),
        "aligned": False,
        "canonical_box_size": int(getattr(pool, "canonical_scale", 224)),
        "canonical_level": int(getattr(pool, "canonical_level", 4)),
        "level_eps": 1e-6,
        "level_eps_inside_log": False,
    }


def measure_levels(model: nn.Module, size_divisibility: int) -> Tuple[List[str], Dict[str, int], int]:
    """Feature names, strides (input size / map size, both axes) and channels of model.backbone."""
    h, w = 6 * 64, 7 * 64
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, h, w))
    strides: Dict[str, int] = {}
    for name, f in features.items():
        fh, fw = f.shape[-2:]
        sh, sw = h // fh, w // fw
        if sh != sw or sh * fh != h or sw * fw != w:
            raise core.ExportError(f"backbone level {name}: map {fh}x{fw} on a {h}x{w} input has no single stride")
        strides[name] = int(sh)
    channels = {int(f.shape[1]) for f in features.values()}
    if len(channels) != 1:
        raise core.ExportError(f"backbone levels have different channel counts {sorted(channels)}")
    return list(features.keys()), strides, channels.pop()


def model_json_for(model: nn.Module, name: str, classes: Sequence[str], *,
                   fixed_size: Optional[Sequence[int]] = None, static_rois: Optional[int] = None,
                   note: str = "", category_ids: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """model.json for a torchvision Faster R-CNN or Mask R-CNN, read from the model itself."""
    import torchvision

    transform, rpn, heads = model.transform, model.rpn, model.roi_heads
    pool = heads.box_roi_pool
    divisibility = int(transform.size_divisible)
    rpn_levels, strides, channels = measure_levels(model, divisibility)
    roi_levels = [n for n in rpn_levels if n in list(pool.featmap_names)]
    if not roi_levels:
        raise core.ExportError(f"box_roi_pool featmap_names {pool.featmap_names} are not backbone outputs")
    num_classes = int(heads.box_predictor.cls_score.out_features) - 1
    if len(classes) != num_classes:
        raise core.ExportError(f"{len(classes)} class names for {num_classes} classes")
    deltas = int(heads.box_predictor.bbox_pred.out_features)
    if deltas not in (4 * (num_classes + 1), 4):
        raise core.ExportError(f"bbox_pred has {deltas} outputs, expected {4 * (num_classes + 1)}")
    score_thresh = float(rpn.score_thresh)
    gen = rpn.anchor_generator
    mask = has_mask(model)
    keypoints = has_keypoints(model)
    if keypoints:
        kp_pool = heads.keypoint_roi_pool
        if list(kp_pool.featmap_names) != list(pool.featmap_names):
            raise core.ExportError(f"keypoint_roi_pool featmap_names {kp_pool.featmap_names} differ from "
                                   f"box_roi_pool's {pool.featmap_names} (the bundle has one set of RoI levels)")
        num_keypoints = int(heads.keypoint_predictor.kps_score_lowres.out_channels)
    if mask:
        mask_pool = heads.mask_roi_pool
        if list(mask_pool.featmap_names) != list(pool.featmap_names):
            raise core.ExportError(f"mask_roi_pool featmap_names {mask_pool.featmap_names} differ from "
                                   f"box_roi_pool's {pool.featmap_names} (the bundle has one set of RoI levels)")
        mask_classes = int(mask_logits_layer(heads.mask_predictor).out_channels)
        if mask_classes not in (num_classes + 1, 1):
            raise core.ExportError(f"mask predictor has {mask_classes} channels, expected {num_classes + 1}")
    model_json: Dict[str, Any] = {
        "format": core.BUNDLE_FORMAT,
        "version": core.BUNDLE_VERSION,
        "architecture": "mask_rcnn" if mask else "keypoint_rcnn" if keypoints else "faster_rcnn",
        "conventions": "torchvision",
        "source": {
            "framework": "torchvision",
            "framework_version": torchvision.__version__.split("+")[0],
            "config": name,
            "note": note,
        },
        "input": {
            "channel_order": "RGB",
            "pixel_scale": 1.0 / 255.0,
            "pixel_mean": [float(v) for v in transform.image_mean],
            "pixel_std": [float(v) for v in transform.image_std],
            "resize": core.resize_json(fixed_size, int(transform.min_size[-1]), int(transform.max_size)),
            "size_divisibility": divisibility,
        },
        "modules": {
            "backbone_rpn": {"file": "backbone_rpn.pt",
                             "static_shape": core.static_shape_for(fixed_size, divisibility)},
            "box_head": {"file": "box_head.pt", "static_rois": static_rois},
        },
        # modules.mask_head (Mask R-CNN) is added below.
        "backbone": {
            "rpn_levels": rpn_levels,
            "roi_levels": roi_levels,
            "strides": strides,
            "channels": channels,
        },
        "anchors": {
            "sizes": [[int(s) for s in sizes] for sizes in gen.sizes],
            "aspect_ratios": [[float(r) for r in ratios] for ratios in gen.aspect_ratios],
            "offset": 0.0,
            "round_cell_anchors": True,
            "stride_from": "image",
        },
        "rpn": {
            "pre_nms_topk": int(rpn._pre_nms_top_n["testing"]),
            "post_nms_topk": int(rpn._post_nms_top_n["testing"]),
            "nms_threshold": float(rpn.nms_thresh),
            "min_box_size": float(rpn.min_size),
            "min_box_size_inclusive": True,
            # torchvision keeps sigmoid scores >= score_thresh: 0.0 keeps everything.
            "score_threshold": None if score_thresh <= 0.0 else score_thresh,
            "nms_scores": "sigmoid",
            "box_weights": [float(v) for v in rpn.box_coder.weights],
            "scale_clamp": float(rpn.box_coder.bbox_xform_clip),
        },
        "roi_heads": {
            "num_classes": num_classes,
            "background": "first",
            "class_agnostic_box_regression": deltas == 4,
            **pooler_json(pool),
            "box_weights": [float(v) for v in heads.box_coder.weights],
            "scale_clamp": float(heads.box_coder.bbox_xform_clip),
            "score_threshold": float(heads.score_thresh),
            "nms_threshold": float(heads.nms_thresh),
            "detections_per_image": int(heads.detections_per_img),
            # postprocess_detections drops boxes smaller than 1e-2 after decoding.
            "min_box_size": 0.01,
        },
        "postprocess": {"clip": False, "drop_empty": False},
        "classes": list(classes),
    }
    if mask:
        model_json["modules"]["mask_head"] = {
            "file": "mask_head.pt",
            "static_rois": core.mask_static_rois(static_rois, int(heads.detections_per_img))}
        mask_json = {
            **pooler_json(heads.mask_roi_pool),
            "class_agnostic": mask_classes == 1,
            # torchvision returns soft masks; its documentation thresholds them at 0.5.
            "mask_threshold": 0.5,
            "paste": "torchvision",
        }
        # Key order of BUNDLE-v1.md: mask_head right after roi_heads.
        tail = {k: model_json.pop(k) for k in ("postprocess", "classes")}
        model_json["mask_head"] = mask_json
        model_json.update(tail)
    if keypoints:
        model_json["modules"]["keypoint_head"] = {
            "file": "keypoint_head.pt",
            "static_rois": core.mask_static_rois(static_rois, int(heads.detections_per_img))}
        kp_json = pooler_json(heads.keypoint_roi_pool)
        coco = num_keypoints == len(COCO_PERSON_KEYPOINTS)
        kp_json.update({
            "num_keypoints": num_keypoints,
            # kps_score_lowres (stride 2) then interpolate(scale_factor=2): S = 4 P.
            "heatmap_size": 4 * kp_json["pooler_resolution"],
            "decode": "torchvision",
            "keypoint_names": list(COCO_PERSON_KEYPOINTS) if coco else [f"keypoint_{i}" for i in range(num_keypoints)],
            "skeleton": [list(p) for p in COCO_PERSON_SKELETON] if coco else [],
        })
        tail = {k: model_json.pop(k) for k in ("postprocess", "classes")}
        model_json["keypoint_head"] = kp_json
        model_json.update(tail)
    if category_ids is not None:
        core.add_category_ids(model_json, category_ids)
    return model_json


def export(model: nn.Module, name: str, output: str, *, classes: Sequence[str],
           fixed_size: Optional[Sequence[int]] = None, static_rois: Optional[int] = None,
           target: str = "cpu", tolerance: Optional[float] = None, note: str = "",
           seed: int = 0, freeze: bool = False, channels_last: bool = False,
           category_ids: Optional[Sequence[int]] = None,
           features_layout: str = "nchw") -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Write the bundle; returns (model.json dictionary without sha256 keys, check report)."""
    core.check_target(target)
    model_json = model_json_for(model, name, classes, fixed_size=fixed_size, static_rois=static_rois, note=note,
                                category_ids=category_ids)
    device = core.target_device(target)
    model = model.to(device).eval()
    backbone_rpn = BackboneRPN(model, model_json["backbone"]["roi_levels"])
    box_head = BoxHead(model)
    mask_head = MaskHead(model) if has_mask(model) else None
    keypoint_head = KeypointHead(model) if has_keypoints(model) else None
    specs = core.standard_specs(model_json, backbone_rpn, box_head, device=device, seed=seed,
                                mask_head=mask_head, keypoint_head=keypoint_head)
    report = core.export_bundle(output, model_json, specs, target=target, tolerance=tolerance,
                                freeze=freeze, channels_last=channels_last,
                                features_layout=features_layout)
    return model_json, report


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

DESCRIPTION = """\
Export a torchvision Faster R-CNN or Mask R-CNN to an rcnn model bundle (format v1): a
directory with model.json, backbone_rpn.pt (backbone + RPN head) and box_head.pt (box head +
predictor), which the C++ runtime loads; a Mask R-CNN (maskrcnn_*) adds mask_head.pt (mask
head + mask predictor: pooled detection features [R, 256, 14, 14] -> raw mask logits
[R, K+1, 28, 28]) and architecture "mask_rcnn". Everything between the modules (resize,
normalisation, anchors, proposal selection, RoIAlign, box decoding, NMS, the mask RoIAlign,
class-channel sigmoid and pasting the masks into the image) is described in model.json with
torchvision's conventions and done natively by the runtime.

Nothing is downloaded: the model is built with weights=None, weights_backbone=None and then
gets its weights from --weights or --seed."""

EPILOG = """\
weights:
  --weights FILE     a state_dict saved with torch.save(model.state_dict(), FILE) from the same
                     torchvision model (a dict holding it under "model" or "state_dict" works
                     too). Backbone norm layers follow torchvision's pretrained builders
                     (FrozenBatchNorm2d for fasterrcnn_ / maskrcnn_resnet50_fpn with eps 0 as
                     in their COCO_V1 weights,
                     FrozenBatchNorm2d eps 1e-5 for mobilenet_v3_large_fpn, BatchNorm2d for
                     the _v2 models), or BatchNorm2d when the file has num_batches_tracked
                     entries; --frozen-bn-eps overrides the eps.
  --seed N           no trained weights: a deterministic re-initialisation (torch.manual_seed(N))
                     tuned to give spread-out outputs on real photos (tens of detections of
                     several classes, proposals on every RoI level the image size allows,
                     boxes of varied sizes). The detections mean nothing; the bundle exists
                     for parity tests and benchmarks. Recipe: apply_seed_recipe() in this file;
                     a Mask R-CNN's mask head gets apply_mask_seed_recipe() (masks neither empty
                     nor full, different for every detection).

classes:
  COCO by default: torchvision's 91 categories minus "__background__" (class_id = label - 1;
  the "N/A" placeholders stay so the ids line up). --classes FILE gives one name per line
  (background not included); --num-classes K sets the number of foreground classes (the
  model has K + 1 outputs) and defaults to the number of names, or with --weights to the
  file's (cls_score rows - 1).

masks (maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2):
  model.json's mask_head object comes from roi_heads.mask_roi_pool (RoIAlign 14x14, sampling
  ratio 2, not aligned, torchvision's level mapper) and mask_predictor (class-specific masks:
  channel class_id + 1); mask_threshold 0.5 (torchvision returns soft masks and documents
  `mask >= 0.5`); paste "torchvision" (roi_heads.paste_masks_in_image). With --static-rois
  the mask head is traced for exactly detections_per_image rows (100 by default).

keypoints (keypointrcnn_resnet50_fpn; classes default to ["person"], COCO id 1):
  architecture "keypoint_rcnn", a keypoint_head object from roi_heads.keypoint_roi_pool
  (14x14, sampling ratio 2) and keypoint_predictor (K keypoints, heatmap_size 56, decode
  "torchvision", COCO person keypoint names and skeleton), and keypoint_head.pt
  (keypoint_head + keypoint_predictor: heatmap logits [R, K, 56, 56]).

examples:
  %(prog)s --model fasterrcnn_resnet50_fpn --weights frcnn_r50.pth --output bundles/r50
  %(prog)s --model fasterrcnn_resnet50_fpn --seed 0 --min-size 320 --max-size 512 --output /tmp/r50
  %(prog)s --model maskrcnn_resnet50_fpn --weights mrcnn_r50.pth --output bundles/mask_r50
  %(prog)s --model fasterrcnn_resnet50_fpn --weights frcnn_r50.pth --fixed-size 800 800 \\
      --static-rois 1000 --target neuron --output bundles/r50_inf1
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="export_torchvision.py", description=DESCRIPTION,
        epilog=EPILOG + "\n" + core.BUNDLE_OPTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=MODELS, help="torchvision model builder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", metavar="FILE", help="state_dict file to load")
    source.add_argument("--seed", type=int, metavar="N", help="deterministic untrained weights (parity tests)")
    parser.add_argument("--min-size", type=int, metavar="N",
                        help="shortest-edge target size (default: the builder's, 800)")
    parser.add_argument("--max-size", type=int, metavar="N",
                        help="longest-edge limit (default: the builder's, 1333)")
    parser.add_argument("--num-classes", type=int, metavar="K",
                        help="foreground classes (default: 90 COCO ids, or the number of --classes names)")
    parser.add_argument("--classes", metavar="FILE", help="class names, one per line, no background")
    parser.add_argument("--category-ids", metavar="FILE",
                        help="dataset category id of each class, one per line (default: the COCO ids "
                             "1..90 for the COCO classes, none with --classes)")
    parser.add_argument("--frozen-bn-eps", type=float, metavar="EPS",
                        help="eps of the FrozenBatchNorm2d layers (default: as torchvision's pretrained build)")
    parser.add_argument("--note", default=None, help="free text for model.json source.note")
    core.add_bundle_arguments(parser)
    args = parser.parse_args(argv)
    core.validate_bundle_arguments(args)
    if args.num_classes is not None and args.num_classes <= 0:
        core.exit_with_error(f"--num-classes must be positive, got {args.num_classes}")
    for option, path in (("--weights", args.weights), ("--classes", args.classes),
                         ("--category-ids", args.category_ids)):
        if path is not None:
            try:
                core.check_input_file(path, option)
            except core.UsageError as error:
                core.exit_with_export_error(error)
    return args


def read_classes(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.rstrip("\r\n") for line in f]
    except (OSError, UnicodeDecodeError) as error:
        raise core.UsageError(f"--classes {path}: {core.one_line(error)}") from None
    while names and not names[-1].strip():
        names.pop()
    if not names or any(not n.strip() for n in names):
        raise core.UsageError(f"--classes {path}: expected one non-empty class name per line")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        state = read_state_dict(args.weights) if args.weights else None
        num_classes = args.num_classes
        if num_classes is None and args.classes is None and state is not None:
            num_classes = state_dict_num_classes(state)
        if args.classes:
            classes = read_classes(args.classes)
            k = num_classes if num_classes is not None else len(classes)
            if len(classes) != k:
                raise core.UsageError(f"--classes has {len(classes)} names but the model has {k} classes")
        elif args.model in KEYPOINT_MODELS and num_classes in (None, 1):
            k, classes = 1, ["person"]  # torchvision's COCO keypoint model: person (COCO id 1)
        elif num_classes is not None and num_classes != 90:
            k = num_classes
            classes = [f"class_{i}" for i in range(k)]
            core.log(f"no --classes: naming the {k} classes class_0 .. class_{k - 1}")
        else:
            k = 90
            classes = coco_categories()[1:]
        if k <= 0:
            raise core.UsageError("--num-classes must be positive")
        category_ids = None
        if args.category_ids:
            category_ids = core.read_category_ids(args.category_ids)
        elif not args.classes and k == 90:
            category_ids = coco_category_ids()
        elif not args.classes and classes == ["person"]:
            category_ids = [1]

        norm = "pretrained"
        if state is not None and state_dict_uses_batchnorm(state):
            norm = "batchnorm"
        core.log(f"building {args.model} ({k} classes + background, norm layers: {norm})")
        model = build_model(args.model, num_classes=k + 1, min_size=args.min_size, max_size=args.max_size,
                            fixed_size=args.fixed_size, norm=norm, frozen_bn_eps=args.frozen_bn_eps)
        if args.weights:
            core.log(f"loading {args.weights}")
            load_weights(model, args.weights)
            note = args.note if args.note is not None else f"weights: {os.path.basename(args.weights)}"
        else:
            apply_seed_recipe(model, args.seed, name=args.model)
            note = args.note if args.note is not None else (
                f"untrained deterministic weights: export_torchvision.py seed recipe, --seed {args.seed}")
        model_json, _ = export(model, args.model, args.output, classes=classes, fixed_size=args.fixed_size,
                               static_rois=args.static_rois, target=args.target, tolerance=args.tolerance,
                               note=note, freeze=args.freeze, channels_last=args.channels_last,
                               category_ids=category_ids, features_layout=args.features_layout)
    except core.ExportError as error:
        core.exit_with_export_error(error)
    print(args.output)
    return 0

