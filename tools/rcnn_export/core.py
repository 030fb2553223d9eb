"""Framework-neutral half of the rcnn bundle exporters (model bundle format v1).

A bundle is a directory with ``model.json``, ``backbone_rpn.pt`` and ``box_head.pt``, plus
``mask_head.pt`` for a Mask R-CNN (BUNDLE-v1.md). A framework adapter (torchvision, Detectron2) builds two small eager
wrapper modules and the ``model.json`` dictionary; this module does the rest:

* ``trace_module``: ``torch.jit.trace(strict=False)`` (the backbone returns lists), or
  ``torch_neuron.trace`` for ``--target neuron``, on the target device;
* ``check_module``: the saved and reloaded module against the eager wrapper on every check
  input (the tracing example and, unless the shape is static, one of another shape);
  max |diff| per output is reported and an ``ExportError`` is raised above the tolerance;
* ``validate_*``: the outputs against the bundle contract and ``model.json`` (levels,
  anchors per cell, channels, strides, logits/deltas widths);
* ``write_model_json``: the exact layout of the reference bundles (objects one key per
  line, arrays on one line), with an optional ``sha256`` key in each ``modules`` entry.

A Mask R-CNN adds one more ``ModuleSpec`` (``mask_head``: pooled detection features
``[R, C, P, P]`` -> raw mask logits ``[R, Km, 2P, 2P]``) to the list given to ``export_bundle``;
``standard_specs`` builds it when it is given the mask head wrapper.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

BUNDLE_FORMAT = "rcnn-bundle"
BUNDLE_VERSION = 1
#: log(1000 / 16): the dw/dh clamp of both frameworks' box coders.
SCALE_CLAMP = math.log(1000.0 / 16)
TARGETS = ("cpu", "cuda", "neuron")
#: Allowed max |traced - eager| relative to max(1, max |eager|), per target. Traced and eager
#: run the same kernels on cpu/cuda (measured 0 on cpu); Neuron compiles to its own
#: (by default bf16-cast) arithmetic.
DEFAULT_TOLERANCE = {"cpu": 1e-4, "cuda": 1e-3, "neuron": 5e-2}

NamedTensors = List[Tuple[str, Tensor]]


class ExportError(RuntimeError):
    """The export cannot produce a correct bundle; the message says why (exit status 1)."""

    exit_code = 1


class UsageError(ExportError):
    """A bad argument: a missing or unreadable file, a value the model cannot take (exit status 2)."""

    exit_code = 2


class TargetUnavailable(ExportError):
    """The requested --target cannot be used on this machine."""


def log(message: str) -> None:
    """Progress message on stderr (stdout stays free for the caller)."""
    print(f"[rcnn-export] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------

NEURON_HELP = (
    "--target neuron needs torch-neuron (PyTorch Neuron for AWS Inferentia / Inf1), "
    "which cannot be imported here ({error}).\n"
    "Install it on the export machine, for example on an Inf1 instance with the AWS Neuron "
    "pip repository:\n"
    "    pip install torch-neuron neuron-cc[tensorflow] "
    "--extra-index-url=https://pip.repos.neuron.amazonaws.com\n"
    "(pick the torch-neuron release built for this torch, {torch}), then run this command "
    "again. Compilation also works on a large non-Inf1 x86-64 machine; running the compiled "
    "modules needs an Inf1 instance."
)

CUDA_HELP = (
    "--target cuda needs a CUDA build of torch and a visible GPU, but "
    "torch.cuda.is_available() is False here (torch {torch}). Run the export on the machine "
    "(or container) that has the GPU, or use --target cpu."
)


def check_target(target: str) -> None:
    """Raise ``TargetUnavailable`` with instructions when ``target`` cannot be used here."""
    if target not in TARGETS:
        raise TargetUnavailable(f"unknown --target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "cuda" and not torch.cuda.is_available():
        raise TargetUnavailable(CUDA_HELP.format(torch=torch.__version__))
    if target == "neuron":
        try:
            import torch_neuron  # noqa: F401  (registers torch.neuron)
        except Exception as error:  # ImportError, or a broken install
            raise TargetUnavailable(
                NEURON_HELP.format(error=f"{type(error).__name__}: {error}", torch=torch.__version__)
            ) from None


def target_device(target: str) -> torch.device:
    """Device the eager model and the tracing inputs live on (Neuron traces from CPU)."""
    return torch.device("cuda") if target == "cuda" else torch.device("cpu")


def exit_with_error(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def exit_with_export_error(error: ExportError) -> NoReturn:
    """``exit_with_error`` with the error's status: 2 for a ``UsageError``, 1 otherwise."""
    exit_with_error(str(error), code=error.exit_code)


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, for an error from a library (torch.load, yacs)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def check_input_file(path: str, option: str) -> None:
    """Raise ``UsageError`` unless ``path`` (the value of ``option``) is a readable file."""
    if not os.path.exists(path):
        raise UsageError(f"{option} {path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {path}: not readable (permission denied)")


def check_output_dir(path: str) -> None:
    """Raise ``UsageError`` when the bundle directory ``path`` cannot be created or written."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--output {path}: exists and is not a directory")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--output {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--output {path}: {parent} is not writable")


def read_category_ids(path: str) -> List[int]:
    """``--category-ids FILE``: one non-negative integer per line (blank lines ignored)."""
    check_input_file(path, "--category-ids")
    ids: List[int] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ids.append(int(line))
            except ValueError:
                raise UsageError(f"--category-ids {path}:{number}: {line.strip()!r} is not an integer") from None
    return ids


def add_category_ids(model_json: Dict[str, Any], category_ids: Sequence[int]) -> None:
    """Record the dataset category id of each contiguous class as the optional top-level
    ``category_ids`` (right after ``classes``): same length as ``classes``, non-negative,
    distinct (docs/reference/bundle-format.md)."""
    ids = [int(i) for i in category_ids]
    classes = model_json["classes"]
    if len(ids) != len(classes):
        raise UsageError(f"{len(ids)} category ids for {len(classes)} classes")
    if any(i < 0 for i in ids):
        raise UsageError(f"category ids must be non-negative, got {min(ids)}")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UsageError(f"category id {dup} is given to more than one class")
    tail = {k: model_json.pop(k) for k in list(model_json)[list(model_json).index("classes") + 1:]}
    model_json["category_ids"] = ids
    model_json.update(tail)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

BUNDLE_OPTIONS_HELP = """\
bundle options:
  --fixed-size H W   resize every image to exactly H x W (aspect ratio not kept, as in the
                     AWS Neuron R-CNN app note) instead of the framework's shortest-edge resize;
                     the backbone is traced at exactly [1, 3, H', W'] (H, W rounded up to the
                     size divisibility) and model.json records it as static_shape.
  --static-rois R    trace the box head for exactly R rows (static_rois); the runtime pads
                     the proposals with zero boxes to R and ignores the padded rows. A Mask
                     R-CNN's mask head is traced for exactly detections_per_image rows (the
                     most detections an image can have; its modules.mask_head.static_rois).
  --target T         cpu (default): plain TorchScript, runs anywhere LibTorch runs.
                     cuda: traced on the GPU (the modules hold CUDA tensors; load them on a
                     CUDA device). neuron: compiled with torch_neuron.trace for AWS Inferentia
                     (Inf1); needs torch-neuron and both --fixed-size and --static-rois.
  --tolerance T      allowed max |traced - eager| relative to max(1, max |eager|) per output
                     (default: 1e-4 cpu, 1e-3 cuda, 5e-2 neuron).
  --freeze           torch.jit.freeze the traced modules: weights become graph constants and
                     convolution + batch norm are folded (faster on CPU; checked against the
                     eager model like any export). cpu and cuda targets.
  --channels-last    store the modules' 4-D weights channels-last, so that CPU convolutions
                     run oneDNN's NHWC kernels (the runtime's NCHW inputs are accepted as they
                     are). With --freeze the fastest CPU bundle; bench/exporter_options.py
                     and docs/performance.md have the measurements. cpu and cuda targets.
"""


def add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every exporter shares."""
    group = parser.add_argument_group("bundle")
    group.add_argument("--output", required=True, metavar="DIR",
                       help="bundle directory to write (created; existing files are replaced)")
    group.add_argument("--fixed-size", nargs=2, type=int, metavar=("H", "W"), default=None,
                       help="fixed resize to H x W and a static backbone input shape")
    group.add_argument("--static-rois", type=int, metavar="R", default=None,
                       help="trace the box head for exactly R RoIs (static_rois)")
    group.add_argument("--target", choices=TARGETS, default="cpu",
                       help="where the modules run: cpu (default), cuda or neuron (Inf1)")
    group.add_argument("--tolerance", type=float, default=None, metavar="T",
                       help="traced-vs-eager tolerance (relative to max(1, max |eager|))")
    group.add_argument("--freeze", action="store_true",
                       help="torch.jit.freeze the modules (faster on CPU)")
    group.add_argument("--channels-last", action="store_true",
                       help="channels-last weights (NHWC convolutions on CPU)")
    group.add_argument("--features-layout", choices=FEATURES_LAYOUTS, default="nchw",
                       help="memory layout of the RoI feature maps backbone_rpn returns: nchw "
                            "(default) or nhwc (channels-last, converted inside the module, on "
                            "its device; rcnn's SimdRoIAlign reads it without a copy); recorded as "
                            "backbone.features_layout in model.json")


def validate_bundle_arguments(args: argparse.Namespace) -> None:
    """Check the shared options and the target; exits with status 2 and a message on error."""
    if args.fixed_size is not None and min(args.fixed_size) <= 0:
        exit_with_error("--fixed-size needs two positive integers H W")
    if args.static_rois is not None and args.static_rois <= 0:
        exit_with_error("--static-rois needs a positive integer")
    if args.tolerance is not None and not args.tolerance > 0:
        exit_with_error("--tolerance must be positive")
    if args.target == "neuron" and (getattr(args, "freeze", False) or getattr(args, "channels_last", False)):
        exit_with_error("--freeze and --channels-last are for the cpu and cuda targets "
                        "(torch_neuron.trace compiles the graph itself)")
    if args.target == "neuron" and (args.fixed_size is None or args.static_rois is None):
        exit_with_error(
            "--target neuron compiles for fixed shapes: give --fixed-size H W and --static-rois R "
            "(the AWS Neuron R-CNN app note uses --fixed-size 800 800 --static-rois 1000)")
    try:
        check_output_dir(args.output)
    except UsageError as error:
        exit_with_error(str(error))
    try:
        check_target(args.target)
    except TargetUnavailable as error:
        exit_with_error(str(error))


# --------------------------------------------------------------------------------------------
# model.json
# --------------------------------------------------------------------------------------------

def format_json(value: Any, indent: int = 0) -> str:
    """JSON in the reference bundles' layout: objects one key per line (two-space indent),
    arrays and scalars on one line, floats as Python's repr (``1e-08``, ``1.0``)."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = "  " * (indent + 1)
        items = [f"{inner}{json.dumps(str(k))}: {format_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ExportError(f"model.json cannot hold the non-finite number {value}")
    return json.dumps(value)


def write_model_json(path: str, model_json: Dict[str, Any]) -> None:
    text = format_json(model_json) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def round_up(value: int, multiple: int) -> int:
    if multiple <= 1:
        return int(value)
    return int(math.ceil(value / multiple) * multiple)


def static_shape_for(fixed_size: Optional[Sequence[int]], size_divisibility: int) -> Optional[List[int]]:
    """``static_shape`` of a fixed-size bundle: [1, 3, H, W] padded up to the divisibility."""
    if fixed_size is None:
        return None
    h, w = (int(v) for v in fixed_size)
    return [1, 3, round_up(h, size_divisibility), round_up(w, size_divisibility)]


def mask_static_rois(static_rois: Optional[int], detections_per_image: int) -> Optional[int]:
    """``modules.mask_head.static_rois`` for ``--static-rois``: the mask head sees the final
    detections, at most ``detections_per_image`` of them, so it is traced for exactly that many
    rows (the box head's R, typically 1000 proposals, would run the mask head on padding)."""
    return None if static_rois is None else int(detections_per_image)


def resize_json(fixed_size: Optional[Sequence[int]], min_size: int, max_size: int) -> Dict[str, Any]:
    if fixed_size is not None:
        return {"mode": "fixed", "height": int(fixed_size[0]), "width": int(fixed_size[1])}
    return {"mode": "shortest_edge", "min_size": int(min_size), "max_size": int(max_size)}


def anchors_per_level(model_json: Dict[str, Any]) -> List[int]:
    """Anchors per cell for each RPN level (a one-entry list applies to every level)."""
    levels = model_json["backbone"]["rpn_levels"]
    sizes = model_json["anchors"]["sizes"]
    ratios = model_json["anchors"]["aspect_ratios"]

    def pick(lists: List[List[Any]], i: int) -> List[Any]:
        return lists[0] if len(lists) == 1 else lists[i]

    for name, lists in (("sizes", sizes), ("aspect_ratios", ratios)):
        if len(lists) not in (1, len(levels)):
            raise ExportError(f"anchors.{name} has {len(lists)} entries for {len(levels)} RPN levels")
    return [len(pick(sizes, i)) * len(pick(ratios, i)) for i in range(len(levels))]


# --------------------------------------------------------------------------------------------
# Module outputs: naming and contract checks
# --------------------------------------------------------------------------------------------

def flatten_backbone_rpn(output: Any, rpn_levels: Sequence[str], roi_levels: Sequence[str]) -> NamedTensors:
    """Name the three output lists of backbone_rpn (same names as the reference .npy files)."""
    if not isinstance(output, (tuple, list)) or len(output) != 3:
        raise ExportError("backbone_rpn must return a tuple of three lists "
                          f"(objectness, deltas, features), got {type(output).__name__}")
    objectness, deltas, features = output
    expected = (("objectness", objectness, rpn_levels), ("deltas", deltas, rpn_levels),
                ("features", features, roi_levels))
    for what, values, levels in expected:
        if not isinstance(values, (tuple, list)) or len(values) != len(levels):
            count = len(values) if isinstance(values, (tuple, list)) else type(values).__name__
            raise ExportError(f"backbone_rpn {what}: expected a list of {len(levels)} tensors "
                              f"({', '.join(levels)}), got {count}")
    named: NamedTensors = []
    named += [(f"rpn_objectness_{l}", t) for l, t in zip(rpn_levels, objectness)]
    named += [(f"rpn_deltas_{l}", t) for l, t in zip(rpn_levels, deltas)]
    named += [(f"features_{l}", t) for l, t in zip(roi_levels, features)]
    return named


def flatten_box_head(output: Any) -> NamedTensors:
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        raise ExportError("box_head must return (class_logits, box_deltas)")
    return [("class_logits", output[0]), ("box_deltas", output[1])]


def validate_backbone_rpn(named: NamedTensors, model_json: Dict[str, Any], image: Tensor) -> None:
    """Shapes of the backbone_rpn outputs against model.json (levels, anchors, channels, strides)."""
    backbone = model_json["backbone"]
    rpn_levels, roi_levels = backbone["rpn_levels"], backbone["roi_levels"]
    out = dict(named)
    n, _, h, w = image.shape
    errors = []
    for level, a in zip(rpn_levels, anchors_per_level(model_json)):
        obj, dlt = out[f"rpn_objectness_{level}"], out[f"rpn_deltas_{level}"]
        if obj.dim() != 4 or tuple(obj.shape[:2]) != (n, a):
            errors.append(f"rpn_objectness_{level} is {list(obj.shape)}, expected [{n}, {a}, H, W]")
        if dlt.dim() != 4 or tuple(dlt.shape[:2]) != (n, 4 * a) or dlt.shape[2:] != obj.shape[2:]:
            errors.append(f"rpn_deltas_{level} is {list(dlt.shape)}, expected [{n}, {4 * a}, "
                          f"{obj.shape[2] if obj.dim() == 4 else 'H'}, {obj.shape[3] if obj.dim() == 4 else 'W'}]")
    grids = {}
    for level in rpn_levels:
        grids[level] = tuple(out[f"rpn_objectness_{level}"].shape[2:])
    for level in roi_levels:
        feat = out[f"features_{level}"]
        if feat.dim() != 4 or feat.shape[0] != n or feat.shape[1] != backbone["channels"]:
            errors.append(f"features_{level} is {list(feat.shape)}, expected [{n}, {backbone['channels']}, H, W]")
        grids.setdefault(level, tuple(feat.shape[2:]))
    for level, grid in grids.items():
        stride = backbone["strides"].get(level)
        if stride is None:
            errors.append(f"backbone.strides has no entry for level {level}")
            continue
        want = (math.ceil(h / stride), math.ceil(w / stride))
        if tuple(grid) != want:
            errors.append(f"level {level}: map {list(grid)} on a {h}x{w} input does not match "
                          f"stride {stride} (expected {list(want)})")
    if errors:
        raise ExportError("backbone_rpn outputs do not match model.json:\n  " + "\n  ".join(errors))


def validate_box_head(named: NamedTensors, model_json: Dict[str, Any], rois: int) -> None:
    heads = model_json["roi_heads"]
    k = heads["num_classes"]
    logits, deltas = named[0][1], named[1][1]
    if heads["class_agnostic_box_regression"]:
        width = 4
    else:
        width = 4 * (k + 1) if heads["background"] == "first" else 4 * k
    errors = []
    if list(logits.shape) != [rois, k + 1]:
        errors.append(f"class_logits is {list(logits.shape)}, expected [{rois}, {k + 1}] (num_classes + 1)")
    if list(deltas.shape) != [rois, width]:
        errors.append(f"box_deltas is {list(deltas.shape)}, expected [{rois}, {width}]")
    if errors:
        raise ExportError("box_head outputs do not match model.json:\n  " + "\n  ".join(errors))


def flatten_mask_head(output: Any) -> NamedTensors:
    if isinstance(output, (tuple, list)):
        if len(output) != 1:
            raise ExportError("mask_head must return one tensor, the raw mask logits [R, Km, M, M]")
        output = output[0]
    if not isinstance(output, Tensor):
        raise ExportError(f"mask_head must return a tensor, got {type(output).__name__}")
    return [("mask_logits", output)]


def flatten_keypoint_head(output: Any) -> NamedTensors:
    if isinstance(output, (tuple, list)):
        if len(output) != 1:
            raise ExportError("keypoint_head must return one tensor, the keypoint heatmap logits [R, K, S, S]")
        output = output[0]
    if not isinstance(output, Tensor):
        raise ExportError(f"keypoint_head must return a tensor, got {type(output).__name__}")
    return [("keypoint_heatmaps", output)]


def validate_keypoint_head(named: NamedTensors, model_json: Dict[str, Any], rois: int) -> None:
    """The heatmap logits are [R, K, S, S] (K = keypoint_head.num_keypoints, S = heatmap_size)."""
    heatmaps = named[0][1]
    head = model_json["keypoint_head"]
    s = int(head["heatmap_size"])
    want = [rois, int(head["num_keypoints"]), s, s]
    if list(heatmaps.shape) != want:
        raise ExportError(f"keypoint_head outputs do not match model.json: keypoint_heatmaps is "
                          f"{list(heatmaps.shape)}, expected {want} ([R, K, S, S])")


def mask_channels(model_json: Dict[str, Any]) -> int:
    """Km of BUNDLE-v1.md: 1 when class-agnostic, else K (background last) or K + 1 (first)."""
    if model_json["mask_head"]["class_agnostic"]:
        return 1
    k = model_json["roi_heads"]["num_classes"]
    return k + 1 if model_json["roi_heads"]["background"] == "first" else k


def mask_size(mask_head: Dict[str, Any]) -> int:
    """M, the side of the mask logits: ``mask_head.mask_size`` when present (Detectron2's C4
    head: res5 halves the 14x14 pool, the deconvolution doubles it back: M = P), else 2P."""
    return int(mask_head.get("mask_size") or 2 * int(mask_head["pooler_resolution"]))


def validate_mask_head(named: NamedTensors, model_json: Dict[str, Any], rois: int) -> None:
    """The raw logits are [R, Km, M, M] (M = mask_size(mask_head): 2 x pooler_resolution unless
    model.json's mask_head.mask_size says otherwise)."""
    logits = named[0][1]
    m = mask_size(model_json["mask_head"])
    want = [rois, mask_channels(model_json), m, m]
    if list(logits.shape) != want:
        raise ExportError(f"mask_head outputs do not match model.json: mask_logits is {list(logits.shape)}, "
                          f"expected {want} ([R, Km, M, M], M = mask_head.mask_size or 2 x pooler_resolution)")


# --------------------------------------------------------------------------------------------
# Example inputs
# --------------------------------------------------------------------------------------------

def example_image(model_json: Dict[str, Any], shape: Sequence[int], seed: int, pad: bool,
                  device: torch.device) -> Tensor:
    """A deterministic photo-like input (smooth colour blobs plus fine noise), normalised as
    model.json says; with ``pad`` the bottom/right margin is zero as in a padded batch."""
    n, c, h, w = (int(v) for v in shape)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, max(2, h // 24), max(2, w // 24), generator=gen)
    pixels = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    pixels = (pixels * 230.0 + torch.rand(n, c, h, w, generator=gen) * 25.0).clamp(0, 255).round()
    spec = model_json["input"]
    mean = torch.tensor(spec["pixel_mean"], dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(spec["pixel_std"], dtype=torch.float32).view(1, c, 1, 1)
    image = (pixels * float(spec["pixel_scale"]) - mean) / std
    if pad:
        div = int(spec.get("size_divisibility", 32))
        content_h = max(div, h - div // 2)
        content_w = max(div, w - (3 * div) // 4)
        image[:, :, content_h:, :] = 0
        image[:, :, :, content_w:] = 0
    return image.to(device)


def example_box_features(features: Tensor, stride: int, image_hw: Tuple[int, int], rois: int, real: int,
                         pooler_resolution: int, sampling_ratio: int, aligned: bool, seed: int) -> Tensor:
    """RoIAlign of random boxes on one feature map: box-head inputs with realistic statistics.
    Rows from ``real`` on are zero (the runtime's padding rows)."""
    import torchvision  # every supported framework depends on it

    gen = torch.Generator().manual_seed(seed)
    h, w = image_hw
    real = max(0, min(real, rois))
    size = torch.rand(real, 2, generator=gen) * 0.6 + 0.05
    wh = size * torch.tensor([w, h], dtype=torch.float32)
    xy = torch.rand(real, 2, generator=gen) * (torch.tensor([w, h], dtype=torch.float32) - wh)
    boxes = torch.cat([xy, xy + wh], dim=1).to(features.device)
    pooled = torchvision.ops.roi_align(features[:1], [boxes], output_size=pooler_resolution,
                                       spatial_scale=1.0 / stride, sampling_ratio=sampling_ratio,
                                       aligned=aligned)
    out = features.new_zeros((rois,) + tuple(pooled.shape[1:]))
    out[:real] = pooled
    return out


def default_check_shapes(model_json: Dict[str, Any]) -> List[List[int]]:
    """Backbone inputs: the tracing example first, then one of another shape (landscape, then
    portrait); a static shape is used twice (same shape, other content)."""
    static = model_json["modules"]["backbone_rpn"]["static_shape"]
    if static is not None:
        return [list(static), list(static)]
    spec = model_json["input"]
    div = int(spec["size_divisibility"])
    resize = spec["resize"]
    short, long_max = int(resize["min_size"]), int(resize["max_size"])
    long_side = min(long_max, int(round(short * 1.3)))
    first = [1, 3, round_up(short, div), round_up(long_side, div)]
    second = [1, 3, round_up(int(short * 1.2), div), round_up(max(div, int(short * 0.75)), div)]
    if second == first:
        step = max(div, 1)
        second = [1, 3, first[2] + step, first[3] + 2 * step]
    return [first, second]


# --------------------------------------------------------------------------------------------
# Tracing, checking, writing
# --------------------------------------------------------------------------------------------

@dataclass
class ModuleSpec:
    """One TorchScript module of the bundle.

    ``inputs[0]`` is the tracing example; the saved module is checked against ``module`` on
    every input. ``flatten`` names the outputs; ``validate(named, input)`` checks them against
    the bundle contract."""
    key: str
    module: nn.Module
    inputs: List[Tensor]
    flatten: Callable[[Any], NamedTensors]
    validate: Optional[Callable[[NamedTensors, Tensor], None]] = None
    file: str = ""

    def __post_init__(self) -> None:
        if not self.file:
            self.file = f"{self.key}.pt"


def trace_module(module: nn.Module, example: Tensor, target: str) -> torch.jit.ScriptModule:
    module.eval()
    with torch.no_grad():
        if target == "neuron":
            import torch_neuron

            # torch_neuron.trace(model, example_inputs, **kwargs) compiles the supported
            # operators for Inferentia (the rest stays on CPU) and passes extra keyword
            # arguments on to torch.jit.trace.
            return torch_neuron.trace(module, example_inputs=example, strict=False)
        return torch.jit.trace(module, example, strict=False, check_trace=False)


def optimize_module(module: torch.jit.ScriptModule, *, freeze: bool = False,
                    channels_last: bool = False) -> torch.jit.ScriptModule:
    """The CPU speed options of the exporters (--freeze, --channels-last) on a traced module.

    channels_last: every 4-D parameter and buffer is stored channels-last, so convolutions
    take oneDNN's NHWC path whatever the input's layout; freeze: ``torch.jit.freeze``
    (parameters become constants, conv + batch norm and conv + add/mul are folded). Both
    keep the module serialisable (``torch.jit.optimize_for_inference`` does not in torch
    1.13: its MKLDNN constants cannot be reloaded). Measured by bench/exporter_options.py.
    """
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if freeze:
        module = torch.jit.freeze(module.eval())
    return module


def max_abs_diffs(reference: NamedTensors, actual: NamedTensors, tolerance: float
                  ) -> Tuple[Dict[str, float], List[str]]:
    """Max |diff| per output and the list of failures (shape mismatch or above tolerance)."""
    diffs: Dict[str, float] = {}
    failures: List[str] = []
    for (name, ref), (name2, got) in zip(reference, actual):
        if name != name2:
            failures.append(f"output order differs: {name} vs {name2}")
            continue
        if tuple(ref.shape) != tuple(got.shape):
            failures.append(f"{name}: shape {list(got.shape)} != eager {list(ref.shape)}")
            diffs[name] = float("inf")
            continue
        if ref.numel() == 0:
            diffs[name] = 0.0
            continue
        r, g = ref.detach().float().cpu(), got.detach().float().cpu()
        diff = float((r - g).abs().max())
        if not math.isfinite(diff):
            diff = 0.0 if torch.equal(r.isnan(), g.isnan()) and torch.equal(r[~r.isnan()], g[~g.isnan()]) else float("inf")
        diffs[name] = diff
        allowed = tolerance * max(1.0, float(r[r.isfinite()].abs().max()) if r.isfinite().any() else 1.0)
        if diff > allowed:
            failures.append(f"{name}: max |diff| {diff:.3g} > allowed {allowed:.3g}")
    if len(reference) != len(actual):
        failures.append(f"{len(actual)} outputs, eager has {len(reference)}")
    return diffs, failures


def check_module(spec: ModuleSpec, loaded: torch.jit.ScriptModule, target: str, tolerance: float
                 ) -> List[Dict[str, Any]]:
    """Run the saved module and the eager wrapper on every check input; raise ExportError when
    an output differs by more than the tolerance. Returns one report entry per input."""
    reports = []
    for index, x in enumerate(spec.inputs):
        with torch.no_grad():
            eager = spec.flatten(spec.module(x))
            if spec.validate is not None:
                spec.validate(eager, x)
            try:
                traced = spec.flatten(loaded(x))
            except Exception as error:  # pragma: no cover - Neuron without an Inferentia device
                if target == "neuron":
                    log(f"{spec.key}: cannot run the compiled module here ({type(error).__name__}); "
                        "check skipped, run the export on an Inf1 instance to check it")
                    reports.append({"input_shape": list(x.shape), "skipped": str(error)})
                    continue
                raise ExportError(f"{spec.key}: the traced module fails on input {list(x.shape)}: {error}") from error
        diffs, failures = max_abs_diffs(eager, traced, tolerance)
        worst = max(diffs.values()) if diffs else 0.0
        what = "tracing example" if index == 0 else "check input"
        log(f"{spec.key}: traced vs eager on {what} {list(x.shape)}: max |diff| {worst:.3g} "
            f"over {len(diffs)} outputs (tolerance {tolerance:g} x max(1, |eager|))")
        if failures:
            raise ExportError(f"{spec.key}: the traced module does not reproduce the eager module on input "
                              f"{list(x.shape)}:\n  " + "\n  ".join(failures))
        reports.append({"input_shape": list(x.shape), "max_abs_diff": diffs})
    return reports


def load_module(path: str, target: str) -> torch.jit.ScriptModule:
    if target == "neuron":
        import torch_neuron  # noqa: F401  (registers the neuron ops before loading)
    return torch.jit.load(path, map_location=target_device(target))


FEATURES_LAYOUTS = ("nchw", "nhwc")


class ChannelsLastFeatures(nn.Module):
    """A backbone_rpn module whose RoI feature maps come out channels-last (NHWC memory, same
    NCHW shape and values): the conversion is part of the traced graph, so it runs on the
    module's device (an accelerator's, not the host's)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: Tensor) -> Any:
        objectness, deltas, features = self.inner(images)
        return objectness, deltas, [f.contiguous(memory_format=torch.channels_last) for f in features]


def export_bundle(output_dir: str, model_json: Dict[str, Any], specs: Sequence[ModuleSpec], *,
                  target: str = "cpu", tolerance: Optional[float] = None,
                  add_sha256: bool = True, freeze: bool = False,
                  channels_last: bool = False, features_layout: str = "nchw") -> Dict[str, Any]:
    """Trace, save, reload and check every module, then write model.json (last, so that a
    directory with a model.json is a complete bundle). Returns a report per module.
    ``freeze`` / ``channels_last``: see ``optimize_module`` (not for the neuron target).
    ``features_layout`` "nhwc": backbone_rpn returns its RoI feature maps channels-last
    (``ChannelsLastFeatures``), recorded as ``backbone.features_layout``."""
    check_target(target)
    if features_layout not in FEATURES_LAYOUTS:
        raise ExportError(f"features_layout: expected one of {', '.join(FEATURES_LAYOUTS)}, got {features_layout!r}")
    tol = DEFAULT_TOLERANCE[target] if tolerance is None else tolerance
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "model.json")
    if os.path.exists(json_path):
        os.remove(json_path)
    model_json = json.loads(json.dumps(model_json))  # private copy
    if features_layout == "nhwc":
        model_json.setdefault("backbone", {})["features_layout"] = "nhwc"
        specs = [replace(spec, module=ChannelsLastFeatures(spec.module))
                 if spec.key == "backbone_rpn" else spec for spec in specs]
    modules = model_json.setdefault("modules", {})
    report: Dict[str, Any] = {}
    for spec in specs:
        if spec.key not in modules:
            raise ExportError(f"model.json has no modules.{spec.key} entry")
        example = spec.inputs[0]
        t0 = time.time()
        log(f"{spec.key}: tracing on {list(example.shape)} for {target} ...")
        traced = trace_module(spec.module, example, target)
        if freeze or channels_last:
            if target == "neuron":
                raise ExportError("freeze / channels_last are for the cpu and cuda targets")
            traced = optimize_module(traced, freeze=freeze, channels_last=channels_last)
            log(f"{spec.key}: {' + '.join(n for n, on in (('channels-last', channels_last), ('frozen', freeze)) if on)}")
        path = os.path.join(output_dir, spec.file)
        torch.jit.save(traced, path)
        del traced
        log(f"{spec.key}: saved {path} ({os.path.getsize(path) / 1e6:.1f} MB) in {time.time() - t0:.1f} s")
        loaded = load_module(path, target)
        t0 = time.time()
        checks = check_module(spec, loaded, target, tol)
        log(f"{spec.key}: checked {len(checks)} inputs in {time.time() - t0:.1f} s")
        entry = modules[spec.key]
        entry["file"] = spec.file
        digest = sha256_file(path) if add_sha256 else None
        if digest is not None:
            entry["sha256"] = digest
        report[spec.key] = {"file": spec.file, "sha256": digest, "checks": checks}
    write_model_json(json_path, model_json)
    log(f"wrote {json_path}")
    return report


def standard_specs(model_json: Dict[str, Any], backbone_rpn: nn.Module, box_head: nn.Module, *,
                   device: torch.device, backbone_shapes: Optional[Sequence[Sequence[int]]] = None,
                   box_rows: Optional[Sequence[int]] = None, seed: int = 0,
                   mask_head: Optional[nn.Module] = None,
                   mask_rows: Optional[Sequence[int]] = None,
                   keypoint_head: Optional[nn.Module] = None) -> List[ModuleSpec]:
    """The modules of a Faster R-CNN bundle (and, given ``mask_head``, of a Mask R-CNN), with
    example inputs made from model.json: photo-like normalised images for the backbone (the
    tracing shape, then another one unless static), and RoIAlign-pooled random boxes on those
    features for the box head (``static_rois`` rows with zero padding rows, or 64 then 37 rows)
    and the per-detection heads (mask / keypoint head: pooled as their model.json object says,
    its ``static_rois`` rows, or 29 then 6)."""
    backbone = model_json["backbone"]
    heads = model_json["roi_heads"]
    static_shape = model_json["modules"]["backbone_rpn"]["static_shape"]
    static_rois = model_json["modules"]["box_head"]["static_rois"]
    shapes = [list(s) for s in (backbone_shapes or default_check_shapes(model_json))]
    images = [example_image(model_json, s, seed + i, pad=static_shape is None, device=device)
              for i, s in enumerate(shapes)]
    backbone_rpn = backbone_rpn.eval().to(device)
    box_head = box_head.eval().to(device)
    # Per-detection heads: key -> (module, rows of each example input, static rows or None).
    roi_heads: Dict[str, Tuple[nn.Module, List[int], Optional[int]]] = {}
    for key, module, rows in (("mask_head", mask_head, mask_rows), ("keypoint_head", keypoint_head, None)):
        if module is None:
            continue
        if key not in model_json or key not in model_json["modules"]:
            raise ExportError(f"a {key} module needs the {key} and modules.{key} entries in model.json")
        static = model_json["modules"][key]["static_rois"]
        if rows is None:
            rows = [static, static] if static else [29, 6]
        roi_heads[key] = (module.eval().to(device), list(rows), static)

    if box_rows is None:
        box_rows = [static_rois, static_rois] if static_rois else [64, 37]
    level = backbone["roi_levels"][0]
    stride = int(backbone["strides"][level])
    box_inputs: List[Tensor] = []
    head_inputs: Dict[str, List[Tensor]] = {key: [] for key in roi_heads}
    with torch.no_grad():
        maps = []
        for i in range(max([len(box_rows)] + [len(rows) for _, rows, _ in roi_heads.values()])):
            image = images[min(i, len(images) - 1)]
            named = dict(flatten_backbone_rpn(backbone_rpn(image), backbone["rpn_levels"], backbone["roi_levels"]))
            maps.append((named[f"features_{level}"], tuple(image.shape[-2:])))
        for i, rows in enumerate(box_rows):
            real = rows if not static_rois else max(1, (rows * (3 + i)) // 5)
            box_inputs.append(example_box_features(
                maps[i][0], stride, maps[i][1], rows, real,
                heads["pooler_resolution"], heads["sampling_ratio"], heads["aligned"], seed + 100 + i))
        for k, (key, (_, rows_list, static)) in enumerate(roi_heads.items()):
            pool = model_json[key]
            for i, rows in enumerate(rows_list):
                real = rows if not static else max(1, (rows * (3 + i)) // 5)
                head_inputs[key].append(example_box_features(
                    maps[i][0], stride, maps[i][1], rows, real,
                    pool["pooler_resolution"], pool["sampling_ratio"], pool["aligned"], seed + 200 + 100 * k + i))

    def validate_backbone(named: NamedTensors, x: Tensor) -> None:
        validate_backbone_rpn(named, model_json, x)

    def validate_box(named: NamedTensors, x: Tensor) -> None:
        validate_box_head(named, model_json, x.shape[0])

    def validate_mask(named: NamedTensors, x: Tensor) -> None:
        validate_mask_head(named, model_json, x.shape[0])

    def validate_keypoints(named: NamedTensors, x: Tensor) -> None:
        validate_keypoint_head(named, model_json, x.shape[0])

    specs = [
        ModuleSpec("backbone_rpn", backbone_rpn, images,
                   lambda out: flatten_backbone_rpn(out, backbone["rpn_levels"], backbone["roi_levels"]),
                   validate_backbone),
        ModuleSpec("box_head", box_head, box_inputs, flatten_box_head, validate_box),
    ]
    checks = {"mask_head": (flatten_mask_head, validate_mask), "keypoint_head": (flatten_keypoint_head, validate_keypoints)}
    for key, (module, _, _) in roi_heads.items():
        specs.append(ModuleSpec(key, module, head_inputs[key], *checks[key]))
    return specs
