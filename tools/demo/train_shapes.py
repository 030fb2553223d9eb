#!/usr/bin/python3
"""Train the rcnn demo model: a small torchvision Faster R-CNN that finds circles, squares,
triangles and stars, trained from scratch on synthetic images (tools/demo/shapes_data.py)
on the CPU, then exported with tools/export_torchvision.py into a model bundle.

    /usr/bin/python3 tools/demo/train_shapes.py --output models/shapes

Deterministic for a given --seed (and --threads): the data are a pure function of (seed,
sample index) and torch is seeded. Progress goes to stderr; the bundle directory gets
model.json, backbone_rpn.pt, box_head.pt and training.json (architecture, options, loss
curve, time, the eager model's mAP on a held-out set).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tools/: rcnn_export
# Passive OpenMP waits: on a machine whose cores are busy with other work, spinning threads
# make every convolution several times slower (measured 8x with 2 threads on 2 busy cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import eval_shapes  # noqa: E402
import shapes_data  # noqa: E402
from shapes_model import DEFAULT_ARCH, MODEL_NAME, build_model, to_tensor  # noqa: E402


def log(message: str) -> None:
    print(f"[train-shapes] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

class ShapesDataset(torch.utils.data.Dataset):
    """Training samples: generated sample ``index // variants`` in flip/rotation
    ``index % variants`` (each generated image is used ``variants`` times, differently
    oriented, in the same batch: generating costs about half as much as training on it)."""

    def __init__(self, seed: int, length: int, variants: int = 2):
        self.seed, self.length, self.variants = seed, length, variants
        self._cache = (-1, None)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        base, k = divmod(index, self.variants)
        if self._cache[0] != base:
            self._cache = (base, shapes_data.make_sample(self.seed, base))
        # variant k > 0 of base b: a fixed pseudo-random member of the 8 flips/rotations (the
        # identity again when b % 8 == 1; kept so that the shipped model stays reproducible)
        s = shapes_data.dihedral(self._cache[1], (k * 5 + base * 3) % 8 if k else 0)
        return to_tensor(s.image), {"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)}


def collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def lr_at(it: int, args: argparse.Namespace) -> float:
    """Linear warmup from 1% to --lr over --warmup iterations, then cosine down to 2%."""
    if it < args.warmup:
        return args.lr * (0.01 + 0.99 * it / args.warmup)
    t = (it - args.warmup) / max(1, args.iters - args.warmup)
    return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def train(args: argparse.Namespace) -> Tuple[nn.Module, Dict[str, Any]]:
    torch.manual_seed(args.seed)
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    log(f"model {MODEL_NAME}: {params / 1e6:.2f} M parameters, classes {shapes_data.CLASSES}")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    data = ShapesDataset(args.seed, args.iters * args.batch_size, args.variants)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=False,
                                         num_workers=args.workers, collate_fn=collate,
                                         prefetch_factor=4 if args.workers else 2,
                                         persistent_workers=False)
    eval_set = None
    if args.eval_every > 0 and args.eval_count > 0:
        eval_set = [shapes_data.make_sample(args.eval_seed, i) for i in range(min(40, args.eval_count))]
    model.train()
    curve: List[Dict[str, float]] = []
    window: Dict[str, List[float]] = {}
    t0 = time.time()
    for it, (images, targets) in enumerate(loader):
        lr = lr_at(it, args)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        for k, v in losses.items():
            window.setdefault(k, []).append(float(v))
        window.setdefault("loss", []).append(float(loss))
        if (it + 1) % args.log_every == 0 or it + 1 == args.iters:
            mean = {k: float(np.mean(v)) for k, v in window.items()}
            window = {}
            elapsed = time.time() - t0
            eta = elapsed / (it + 1) * (args.iters - it - 1)
            curve.append({"iter": it + 1, "lr": lr, **{k: round(v, 4) for k, v in mean.items()}})
            parts = " ".join(f"{k.replace('loss_', '')} {v:.3f}" for k, v in mean.items() if k != "loss")
            log(f"iter {it + 1}/{args.iters} loss {mean['loss']:.3f} ({parts}) lr {lr:.2e} "
                f"{elapsed / (it + 1):.2f} s/it, elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min")
        if eval_set and (it + 1) % args.eval_every == 0 and it + 1 < args.iters:
            m = eval_shapes.coco_map(eval_set, eval_shapes.run_eager(model, [s.image for s in eval_set]))
            model.train()
            curve[-1]["eval_map50"] = round(m["map50"], 4) if curve else None
            log(f"iter {it + 1}: mAP@0.5 {m['map50']:.4f}, mAP@[.5:.95] {m['map']:.4f} on {len(eval_set)} "
                f"held-out images")
    seconds = time.time() - t0
    log(f"trained {args.iters} iterations in {seconds / 60:.1f} min")
    return model.eval(), {"seconds": round(seconds, 1), "curve": curve, "parameters": params}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def write_examples(directory: str, seed: int, count: int, photos: int) -> List[str]:
    """Held-out demo images: ``count`` synthetic ones, then ``photos`` on real photo crops."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    written = []
    annotations = {}
    for i in range(count + photos):
        photo = i >= count
        s = shapes_data.make_sample(seed, i, photo=photo)
        name = f"shapes_{i + 1}{'_photo' if photo else ''}.jpg"
        path = os.path.join(directory, name)
        Image.fromarray(s.image).save(path, quality=92)
        annotations[name] = shapes_data.sample_annotation(s)
        written.append(path)
    with open(os.path.join(directory, "annotations.json"), "w") as f:
        json.dump(annotations, f, indent=1)
        f.write("\n")
    return written


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="train_shapes.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="models/shapes", metavar="DIR", help="bundle directory (default models/shapes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the training data (default 0)")
    p.add_argument("--iters", type=int, default=1600, help="training iterations (default 1600)")
    p.add_argument("--batch-size", type=int, default=8, help="images per iteration (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup iterations (default 100)")
    p.add_argument("--clip", type=float, default=5.0, help="gradient norm clip (default 5)")
    p.add_argument("--variants", type=int, default=2,
                   help="orientations each generated image is used in (default 2)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--workers", type=int, default=1,
                   help="data loader processes generating images (default 1; 0 = in the main process)")
    p.add_argument("--log-every", type=int, default=50, metavar="N", help="progress line every N iterations")
    p.add_argument("--eval-seed", type=int, default=1000, help="seed of the held-out evaluation set (default 1000)")
    p.add_argument("--eval-every", type=int, default=250, metavar="N",
                   help="every N iterations, evaluate on the first 40 held-out images (0 = never)")
    p.add_argument("--eval-count", type=int, default=100,
                   help="held-out images the eager model is evaluated on after training (default 100; 0 = skip)")
    p.add_argument("--examples", type=int, default=4, metavar="N",
                   help="synthetic demo images written to DIR/images (default 4)")
    p.add_argument("--example-photos", type=int, default=1, metavar="N",
                   help="demo images on OpenCV sample-photo backgrounds (default 1)")
    p.add_argument("--example-seed", type=int, default=7, help="seed of the demo images (default 7)")
    p.add_argument("--no-export", action="store_true", help="train and evaluate only (quick experiments)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    log(f"options: {vars(args)}")
    model, report = train(args)

    result: Dict[str, Any] = {
        "model": MODEL_NAME, "classes": shapes_data.CLASSES, "arch": DEFAULT_ARCH,
        "command": "/usr/bin/python3 tools/demo/train_shapes.py " + " ".join(sys.argv[1:]),
        "options": {k: v for k, v in vars(args).items()},
        "torch": torch.__version__, "train_seconds": report["seconds"], "parameters": report["parameters"],
        "loss_curve": report["curve"],
    }
    if args.eval_count > 0:
        t0 = time.time()
        samples = [shapes_data.make_sample(args.eval_seed, i) for i in range(args.eval_count)]
        dets = eval_shapes.run_eager(model, [s.image for s in samples])
        metrics = eval_shapes.coco_map(samples, dets)
        log(f"eager model on {args.eval_count} held-out images (seed {args.eval_seed}): "
            f"mAP@0.5 {metrics['map50']:.4f}, mAP@[.5:.95] {metrics['map']:.4f} ({time.time() - t0:.0f} s)")
        log("  per class AP@0.5: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics["per_class_ap50"].items()))
        result["eager_eval"] = {"seed": args.eval_seed, "count": args.eval_count,
                                "map50": round(metrics["map50"], 4), "map": round(metrics["map"], 4)}
    if args.no_export:
        return 0

    from rcnn_export import core
    from rcnn_export import torchvision as export_torchvision

    note = (f"demo model: trained from scratch on synthetic shapes by tools/demo/train_shapes.py "
            f"(--seed {args.seed}, {args.iters} iterations x {args.batch_size} images); "
            "finds circle, square, triangle, star; knows nothing else")
    try:
        export_torchvision.export(model, MODEL_NAME, args.output, classes=shapes_data.CLASSES, note=note)
    except core.ExportError as error:
        core.exit_with_error(str(error), code=1)
    with open(os.path.join(args.output, "training.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    if args.examples + args.example_photos > 0:
        written = write_examples(os.path.join(args.output, "images"), args.example_seed, args.examples,
                                 args.example_photos)
        log(f"wrote {len(written)} demo images to {os.path.join(args.output, 'images')}")
    size = sum(os.path.getsize(os.path.join(args.output, f)) for f in ("model.json", "backbone_rpn.pt", "box_head.pt"))
    log(f"bundle {args.output}: {size / 1e6:.2f} MB")
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
