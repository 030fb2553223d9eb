"""The demo model's architecture (a small torchvision Faster R-CNN: TinyResNet + FPN, levels
p2..p5) and what training and evaluation both need: building it, rebuilding the eager model
from a bundle, and running it. Imported by train_shapes.py and eval_shapes.py (neither
imports the other's command line)."""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

import shapes_data

MODEL_NAME = "shapes_tiny_resnet_fpn"

#: Architecture (stored in training.json; eval_shapes.py rebuilds the eager model from it).
DEFAULT_ARCH: Dict[str, Any] = {
    "widths": [24, 48, 64, 96],          # body stages at strides 4, 8, 16, 32
    "fpn_channels": 32,
    "representation": 256,               # TwoMLPHead width
    "anchor_sizes": [[16, 24], [32, 48], [64, 96], [128, 192]],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "min_size": shapes_data.IMAGE_SIZE,
    "max_size": 384,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_test": 200,
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "box_batch_size_per_image": 32,
    "box_positive_fraction": 0.5,
    "box_score_thresh": 0.05,
    "box_detections_per_img": 100,
}


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

def conv_bn(cin: int, cout: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions, projection shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = conv_bn(cout, cout, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """A narrow ResNet: stem to stride 4, then one basic block per stage (strides 4..32).
    Children in execution order, as IntermediateLayerGetter needs."""

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        w = list(widths)
        self.stem = nn.Sequential(conv_bn(3, 16, 2), conv_bn(16, w[0], 2))
        self.layer1 = BasicBlock(w[0], w[0])
        self.layer2 = BasicBlock(w[0], w[1], 2)
        self.layer3 = BasicBlock(w[1], w[2], 2)
        self.layer4 = BasicBlock(w[2], w[3], 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


class BackboneFPN(nn.Module):
    """body + FeaturePyramidNetwork (with BatchNorm: trains much faster from scratch) without
    extra levels (torchvision's BackboneWithFPN always adds a max-pooled level): an
    OrderedDict p2..p5 of ``out_channels`` maps."""

    def __init__(self, body: nn.Module, return_layers: Dict[str, str], in_channels: List[int], out_channels: int):
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.ops import FeaturePyramidNetwork

        self.body = IntermediateLayerGetter(body, return_layers=return_layers)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, norm_layer=nn.BatchNorm2d)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.body(x))


class MLPHead(nn.Module):
    """torchvision's TwoMLPHead with LayerNorm after each Linear (no batch statistics, so
    training and inference see the same function; the plain head learns far slower from
    scratch)."""

    def __init__(self, in_features: int, representation: int):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.norm6 = nn.LayerNorm(representation)
        self.fc7 = nn.Linear(representation, representation)
        self.norm7 = nn.LayerNorm(representation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm6(self.fc6(x.flatten(start_dim=1))))
        return torch.relu(self.norm7(self.fc7(x)))


def build_model(arch: Optional[Dict[str, Any]] = None) -> nn.Module:
    """torchvision FasterRCNN with the TinyResNet + FPN backbone (levels p2..p5)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    a = dict(DEFAULT_ARCH, **(arch or {}))
    levels = ["p2", "p3", "p4", "p5"]
    body = TinyResNet(a["widths"])
    backbone = BackboneFPN(body, {f"layer{i + 1}": name for i, name in enumerate(levels)},
                           list(a["widths"]), a["fpn_channels"])
    anchors = AnchorGenerator(tuple(tuple(s) for s in a["anchor_sizes"]),
                              (tuple(a["aspect_ratios"]),) * len(a["anchor_sizes"]))
    pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2)
    c = a["fpn_channels"]
    num_classes = len(shapes_data.CLASSES) + 1
    return FasterRCNN(
        backbone, min_size=a["min_size"], max_size=a["max_size"],
        rpn_anchor_generator=anchors, box_roi_pool=pool,
        box_head=MLPHead(c * 7 * 7, a["representation"]),
        box_predictor=FastRCNNPredictor(a["representation"], num_classes),
        rpn_pre_nms_top_n_train=a["rpn_pre_nms_top_n_train"], rpn_post_nms_top_n_train=a["rpn_post_nms_top_n_train"],
        rpn_pre_nms_top_n_test=a["rpn_pre_nms_top_n_test"], rpn_post_nms_top_n_test=a["rpn_post_nms_top_n_test"],
        box_batch_size_per_image=a["box_batch_size_per_image"],
        box_positive_fraction=a["box_positive_fraction"], box_score_thresh=a["box_score_thresh"],
        box_detections_per_img=a["box_detections_per_img"])


def load_eager_from_bundle(bundle: str) -> nn.Module:
    """The eager torchvision model with the weights of a bundle written by this script:
    the architecture from training.json, the parameters and buffers from the TorchScript
    modules (backbone_rpn.pt: backbone.*, rpn_head.*; box_head.pt: box_head.*, box_predictor.*)."""
    with open(os.path.join(bundle, "training.json")) as f:
        arch = json.load(f)["arch"]
    model = build_model(arch)
    state: Dict[str, torch.Tensor] = {}
    rename = {"rpn_head.": "rpn.head.", "box_head.": "roi_heads.box_head.",
              "box_predictor.": "roi_heads.box_predictor.", "backbone.": "backbone."}
    for file in ("backbone_rpn.pt", "box_head.pt"):
        module = torch.jit.load(os.path.join(bundle, file), map_location="cpu")
        for key, value in module.state_dict().items():
            prefix = next(p for p in rename if key.startswith(p))
            state[rename[prefix] + key[len(prefix):]] = value
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{bundle}: weights do not match the architecture: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    return model.eval()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> float CHW in 0..1 (what torchvision detection models take)."""
    return torch.from_numpy(np.array(image, np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def run_eager(model, images: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
    """torchvision eager inference, one image at a time (uint8 RGB arrays)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for image in images:
            r = model([to_tensor(image)])[0]
            out.append({"boxes": r["boxes"].numpy(), "scores": r["scores"].numpy(), "labels": r["labels"].numpy()})
    return out
