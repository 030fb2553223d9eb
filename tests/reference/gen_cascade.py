#!/usr/bin/python3
"""Cascade R-CNN references, made by a real Detectron2 v0.6 during the test run (issue 13).

Run by the test build before the C++ tests (cwd = repository root, PYTHONPATH=tools):

    /usr/bin/python3 tests/reference/gen_cascade.py --output build/reference/gen_cascade

The Detectron2 model zoo's ``Misc/cascade_mask_rcnn_R_50_FPN_3x`` (CascadeROIHeads: three
box-head stages with box-regression weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15),
class-agnostic deltas, and a mask head) at the fixtures' narrow widths, with seeded weights (each
stage's head seeded as gen_detectron2.py's box head), exported by ``tools/export_detectron2.py``'s
real code path (box_head.pt, box_head_stage1.pt, box_head_stage2.pt and ``roi_heads.cascade`` in
model.json) for the shortest-edge resize and for the app note's fixed 800x800 input with 1000
static RoIs, and run by ``DefaultPredictor`` / ``model()`` and stage by stage exactly as
gen_detectron2.py does (same case files), with the box branch written out through
CascadeROIHeads' own functions. Stage 0's files have the standard names (box_features,
box_level, class_logits, box_deltas: the RPN proposals through the first head); per later stage
k (1, 2):

    cascade_boxes_<k>.npy         [R, 4] the stage's input boxes (_create_proposals_from_boxes of
                                  stage k-1's predict_boxes: decoded, clipped)
    cascade_box_features_<k>.npy  [R, C, 7, 7] box_pooler on them
    cascade_class_logits_<k>.npy  [R, K + 1] box_predictor[k](box_head[k](...)) class logits
    cascade_box_deltas_<k>.npy    [R, 4] its class-agnostic deltas
    cascade_scores.npy            [R, K + 1] the stages' predict_probs summed, times 1 / 3
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_detectron2 as d2  # noqa: E402

GENERATOR = "tests/reference/gen_cascade.py"
CONFIG = "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"



def correlate_stages(model, spread: float = 0.15) -> None:
    """Stages 1, 2 of the seeded model: stage 0's box head and class scores plus ``spread`` x
    their own (independently seeded) weights, so that the stages mostly agree on the class of
    a RoI (independent stages would average to flat scores near 1 / (K + 1)) yet every stage
    module differs; each keeps its own independently seeded box deltas."""
    import torch

    heads = model.roi_heads
    with torch.no_grad():
        for k in range(1, heads.num_cascade_stages):
            for mine, first in ((heads.box_head[k].fc1, heads.box_head[0].fc1),
                                (heads.box_head[k].fc2, heads.box_head[0].fc2),
                                (heads.box_predictor[k].cls_score, heads.box_predictor[0].cls_score)):
                mine.weight.mul_(spread).add_(first.weight)
                mine.bias.copy_(first.bias)


BUNDLES = [
    dict(name="cascade_mask_rcnn_R_50_FPN_shortest_edge", config=CONFIG, opts=d2.NARROW + d2.MASK_NARROW + d2.SHORT,
         export=[], photos=["fruits", "messi5"], background_bias=3.0, after_seed=correlate_stages),
    dict(name="cascade_mask_rcnn_R_50_FPN_fixed800", config=CONFIG, opts=d2.NARROW + d2.MASK_NARROW + d2.SHORT,
         export=["--fixed-size", "800", "800", "--static-rois", "1000"], photos=["fruits"], background_bias=3.0,
         after_seed=correlate_stages),
]


def log(message: str) -> None:
    print(f"[gen_cascade] {message}", flush=True)


def cascade_box_heads(heads, box_in, proposals, save):
    """CascadeROIHeads._forward_box at inference, stage by stage with its own functions
    (_create_proposals_from_boxes, box_pooler, box_head[k], box_predictor[k], predict_boxes,
    predict_probs, fast_rcnn_inference), every stage saved. Returns what
    gen_detectron2.standard_box_heads returns, stage 0's features, levels and outputs."""
    import torch
    from detectron2.modeling.poolers import assign_boxes_to_levels
    from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference

    image_sizes = [p.image_size for p in proposals]
    pooler = heads.box_pooler
    outputs = []  # (predictor, predictions, proposals)
    stage0 = None
    boxes = None
    for k in range(heads.num_cascade_stages):
        if k > 0:
            proposals = heads._create_proposals_from_boxes(boxes, image_sizes)
            save(f"cascade_boxes_{k}", proposals[0].proposal_boxes.tensor)
        features = pooler(box_in, [p.proposal_boxes for p in proposals])
        logits, deltas = predictions = heads.box_predictor[k](heads.box_head[k](features))
        if k == 0:
            level = assign_boxes_to_levels([proposals[0].proposal_boxes], pooler.min_level, pooler.max_level,
                                           pooler.canonical_box_size, pooler.canonical_level)
            for name, value in (("box_features", features), ("box_level", level.to(torch.int64)),
                                ("class_logits", logits), ("box_deltas", deltas)):
                save(name, value)
            stage0 = (features, level, logits, deltas)
        else:
            for name, value in (("box_features", features), ("class_logits", logits), ("box_deltas", deltas)):
                save(f"cascade_{name}_{k}", value)
        boxes = heads.box_predictor[k].predict_boxes(predictions, proposals)
        outputs.append((heads.box_predictor[k], predictions, proposals))
    per_stage = [predictor.predict_probs(predictions, props) for predictor, predictions, props in outputs]
    scores = [sum(list(s)) * (1.0 / heads.num_cascade_stages) for s in zip(*per_stage)]
    save("cascade_scores", scores[0])
    predictor, predictions, props = outputs[-1]
    boxes = predictor.predict_boxes(predictions, props)
    instances, _ = fast_rcnn_inference(boxes, scores, image_sizes, predictor.test_score_thresh,
                                       predictor.test_nms_thresh, predictor.test_topk_per_image)
    return (instances, *stage0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return d2.run(argv, doc=__doc__, generator=GENERATOR, bundles=BUNDLES, log=log,
                  scripts=[os.path.abspath(__file__)], box_heads=cascade_box_heads)


if __name__ == "__main__":
    sys.exit(main())
