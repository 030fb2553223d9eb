#!/usr/bin/python3
"""End to end on the CPU: one torchvision bundle, one photo, the same thread counts, three
pipelines, each in its own process:

* ``eager``: torchvision's own model (``fasterrcnn_*`` built by tools/export_torchvision.py
  with the bundle's seed, so the same weights), ``model([image])`` under inference_mode.
  Network time = forward time of model.backbone, model.rpn.head, model.roi_heads.box_head
  and .box_predictor (forward hooks).
* ``partitioned``: the AWS Neuron R-CNN note's split: the bundle's TorchScript modules
  (backbone_rpn.pt, box_head.pt) driven by torchvision's own Python code for everything
  between them (GeneralizedRCNNTransform, AnchorGenerator, RegionProposalNetwork's decode /
  filter_proposals, MultiScaleRoIAlign, RoIHeads.postprocess_detections, transform
  .postprocess). Network time = the two module calls.
* ``rcnn``: build/bin/rcnn-detect on the same bundle (TorchScriptExec + the native glue);
  network time = its backbone_rpn + box_head stage times.

"glue" = total - network time: everything but the two networks (preprocessing included).
Reported per pipeline and thread count: median total, network and glue ms over --repeat
images after --warmup images, and the process's peak resident memory (ru_maxrss).
Ratios: speed-up = other pipeline's time / rcnn's time; memory = other / rcnn.

Usage:
  /usr/bin/python3 tools/export_torchvision.py --model fasterrcnn_resnet50_fpn --seed 0 --output /tmp/tv_r50
  /usr/bin/python3 bench/end_to_end.py --bundle /tmp/tv_r50 --seed 0 --build build \\
      --image tests/data/detectron2/narrow_r101_fpn_fixed800/cases/messi5/image.jpg [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---- workers (run in their own process) -------------------------------------------------------

def load_image(path: str):
    import numpy as np
    import torch
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())  # to_tensor


def build_eager(model_json: Dict[str, Any], seed: int):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from rcnn_export import torchvision as tv  # type: ignore

    name = model_json["source"].get("model") or model_json["source"].get("config")
    if name not in tv.MODELS:
        raise SystemExit(f"bundle source {name!r} is not one of {tv.MODELS}")
    resize = model_json["input"]["resize"]
    fixed = [resize["height"], resize["width"]] if resize["mode"] == "fixed" else None
    model = tv.build_model(name, num_classes=model_json["roi_heads"]["num_classes"] + 1,
                           min_size=resize.get("min_size"), max_size=resize.get("max_size"), fixed_size=fixed)
    tv.apply_seed_recipe(model, seed, name=name)
    return model.eval()


class Stopwatch:
    """Accumulates the wall time spent inside hooked modules."""

    def __init__(self) -> None:
        self.ms = 0.0
        self._t0: List[float] = []

    def hook(self, module) -> None:
        module.register_forward_pre_hook(lambda *_: self._t0.append(time.perf_counter()))
        module.register_forward_hook(lambda *_: self._stop())

    def _stop(self) -> None:
        self.ms += (time.perf_counter() - self._t0.pop()) * 1e3


def worker_eager(args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    with open(os.path.join(args.bundle, "model.json")) as f:
        model_json = json.load(f)
    model = build_eager(model_json, args.seed)
    net = Stopwatch()
    for m in (model.backbone, model.rpn.head, model.roi_heads.box_head, model.roi_heads.box_predictor):
        net.hook(m)
    image = load_image(args.image)
    runs = []
    for i in range(args.warmup + args.repeat):
        net.ms = 0.0
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model([image])[0]
        total = (time.perf_counter() - t0) * 1e3
        if i >= args.warmup:
            runs.append({"total": total, "network": net.ms})
    return {"runs": runs, "detections": to_list(out)}


def worker_partitioned(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    torch.set_num_threads(args.threads)
    with open(os.path.join(args.bundle, "model.json")) as f:
        model_json = json.load(f)
    # torchvision's Python stages, configured as the bundle's model (the networks of this
    # eager model are never run: the bundle's TorchScript modules replace them).
    model = build_eager(model_json, args.seed)
    backbone_rpn = torch.jit.load(os.path.join(args.bundle, model_json["modules"]["backbone_rpn"]["file"])).eval()
    box_head = torch.jit.load(os.path.join(args.bundle, model_json["modules"]["box_head"]["file"])).eval()
    rpn, heads, transform = model.rpn, model.roi_heads, model.transform
    names = list(heads.box_roi_pool.featmap_names)
    image = load_image(args.image)
    runs = []
    for i in range(args.warmup + args.repeat):
        t0 = time.perf_counter()
        c0 = time.thread_time()
        with torch.inference_mode():
            images, _ = transform([image])
            original = [tuple(image.shape[-2:])]
            t1 = time.perf_counter()
            n0 = time.thread_time()
            objectness, deltas, feats = backbone_rpn(images.tensors)
            # A --features-layout nhwc bundle returns channels-last maps; torchvision's
            # roi_align would make them contiguous inside the glue. Done here, counted as
            # network time (on an accelerator the layout change is part of the traced module),
            # so the Python glue is the same as with an NCHW bundle.
            feats = [f.contiguous() for f in feats]
            network = time.perf_counter() - t1
            network_cpu = time.thread_time() - n0
            # RegionProposalNetwork.forward, after its head.
            anchors = rpn.anchor_generator(images, list(objectness))
            shapes = [o[0].shape for o in objectness]
            per_level = [s[0] * s[1] * s[2] for s in shapes]
            obj, dlt = concat_box_prediction_layers(list(objectness), list(deltas))
            proposals = rpn.box_coder.decode(dlt.detach(), anchors).view(1, -1, 4)
            boxes, _ = rpn.filter_proposals(proposals, obj, images.image_sizes, per_level)
            # RoIHeads.forward (inference), with the box head replaced.
            pooled = heads.box_roi_pool(dict(zip(names, feats)), boxes, images.image_sizes)
            t1 = time.perf_counter()
            n0 = time.thread_time()
            class_logits, box_regression = box_head(pooled)
            network += time.perf_counter() - t1
            network_cpu += time.thread_time() - n0
            b, s, l = heads.postprocess_detections(class_logits, box_regression, boxes, images.image_sizes)
            dets = transform.postprocess([{"boxes": b[0], "scores": s[0], "labels": l[0]}],
                                         images.image_sizes, original)
        total = (time.perf_counter() - t0) * 1e3
        total_cpu = time.thread_time() - c0
        if i >= args.warmup:
            # glue_cpu_ms: the calling thread's CPU time outside the two networks (the whole
            # glue's CPU time at 1 thread, where torch runs every op on this thread).
            runs.append({"total": total, "network": network * 1e3,
                         "glue_cpu_ms": (total_cpu - network_cpu) * 1e3})
    return {"runs": runs, "detections": to_list(dets[0])}


def to_list(out: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [{"box": [float(v) for v in b], "score": float(s), "class_id": int(l) - 1}
            for b, s, l in zip(out["boxes"], out["scores"], out["labels"])]


# ---- driver --------------------------------------------------------------------------------------

def run_child(cmd: List[str]) -> Dict[str, Any]:
    """Runs cmd, returns its JSON stdout plus its peak RSS (MiB)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
        out.seek(0)
        data = json.loads(out.read().decode())
    data["peak_rss_mib"] = usage.ru_maxrss / 1024.0
    return data


def run_rcnn(args: argparse.Namespace, threads: int) -> Dict[str, Any]:
    detect = os.path.join(args.build, "bin", "rcnn-detect")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.json")
        cmd = [detect, "--model", args.bundle, "--threads", str(threads), "--quiet", "--output", path] + \
              [args.image] * (args.warmup + args.repeat)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"failed ({status}): {' '.join(cmd)}")
        with open(path) as f:
            results = json.load(f)
    runs = [{"total": r["timing_ms"]["total"],
             "network": r["timing_ms"]["backbone_rpn"] + r["timing_ms"]["box_head"]}
            for r in results[args.warmup:]]
    return {"runs": runs, "detections": results[-1]["detections"], "peak_rss_mib": usage.ru_maxrss / 1024.0}


def summarize(data: Dict[str, Any]) -> Dict[str, float]:
    runs = data["runs"]
    total = statistics.median(r["total"] for r in runs)
    network = statistics.median(r["network"] for r in runs)
    glue = statistics.median(r["total"] - r["network"] for r in runs)
    out = {"total": total, "network": network, "glue": glue, "rss": data["peak_rss_mib"],
           "detections": len(data["detections"])}
    if runs and all("glue_cpu_ms" in r for r in runs):
        out["glue_cpu"] = statistics.median(r["glue_cpu_ms"] for r in runs)
    return out


def agreement(a: List[Dict[str, Any]], b: List[Dict[str, Any]]) -> str:
    """Max |box| / |score| difference of the top detections in order (same count expected)."""
    n = min(len(a), len(b))
    if n == 0:
        return f"{len(a)} vs {len(b)} detections"
    box = max(abs(x - y) for da, db in zip(a[:n], b[:n]) for x, y in zip(da["box"], db["box"]))
    score = max(abs(da["score"] - db["score"]) for da, db in zip(a[:n], b[:n]))
    return f"{len(a)} vs {len(b)} detections; first {n}: max |box| {box:.2g} px, |score| {score:.2g}"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="torchvision bundle (tools/export_torchvision.py)")
    parser.add_argument("--seed", type=int, default=0, help="the --seed the bundle was exported with")
    parser.add_argument("--image", required=True)
    parser.add_argument("--build", default="build", help="build directory with bin/rcnn-detect")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the pipelines this many times, alternating (eager, partitioned, rcnn, "
                             "eager, ...), so that a slow spell of a shared machine hits all of them; "
                             "the tables pool every round's images, and the glue speed-up is also "
                             "given per round")
    parser.add_argument("--no-eager", action="store_true", help="skip the eager pipeline (the slowest to run)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE")
    parser.add_argument("--worker", choices=["eager", "partitioned"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.threads = int(args.threads)
        fn = worker_eager if args.worker == "eager" else worker_partitioned
        json.dump(fn(args), sys.stdout)
        return 0

    sys.path.insert(0, HERE)
    from machine import machine_info

    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores; BLAS: {info['blas']}")
    print(f"load average before: {info['load']}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(f"bundle: {args.bundle}; image: {args.image}; median of {args.repeat} images after {args.warmup} "
          f"warm-up{f', pooled over {args.rounds} rounds' if args.rounds > 1 else ''}\n")
    kinds = ("partitioned", "rcnn") if args.no_eager else ("eager", "partitioned", "rcnn")
    rounds: Dict[str, Dict[int, List[Dict[str, Any]]]] = {k: {} for k in kinds}
    raw: Dict[str, Any] = {}
    for r in range(args.rounds):
        for threads in [int(t) for t in args.threads.split(",") if t]:
            for kind in kinds:
                if kind == "rcnn":
                    data = run_rcnn(args, threads)
                else:
                    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--bundle", args.bundle,
                           "--seed", str(args.seed), "--image", args.image, "--threads", str(threads),
                           "--warmup", str(args.warmup), "--repeat", str(args.repeat)]
                    data = run_child(cmd)
                rounds[kind].setdefault(threads, []).append(data)
                tag = f" (round {r + 1})" if args.rounds > 1 else ""
                print(f"{kind} x{threads}{tag}: {summarize(data)}", file=sys.stderr, flush=True)
    # Each pipeline's rounds pooled: every round's measured images, the last round's detections.
    results: Dict[str, Dict[int, Dict[str, Any]]] = {
        k: {t: {"runs": [x for d in ds for x in d["runs"]], "detections": ds[-1]["detections"],
                "peak_rss_mib": max(d["peak_rss_mib"] for d in ds)} for t, ds in v.items()}
        for k, v in rounds.items()}

    header = ["pipeline", "threads", "total ms", "network ms", "glue ms", "peak RSS MiB",
              "rcnn speed-up (total)", "rcnn speed-up (glue)", "memory / rcnn's"]
    rows = []
    for threads in sorted(results["rcnn"]):
        ours = summarize(results["rcnn"][threads])
        for kind in kinds:
            s = summarize(results[kind][threads])
            rows.append([kind if kind != "rcnn" else "rcnn-detect", str(threads), f"{s['total']:.0f}",
                         f"{s['network']:.0f}", f"{s['glue']:.1f}", f"{s['rss']:.0f}",
                         f"{s['total'] / ours['total']:.2f}x" if kind != "rcnn" else "-",
                         f"{s['glue'] / ours['glue']:.1f}x" if kind != "rcnn" else "-",
                         f"{s['rss'] / ours['rss']:.2f}" if kind != "rcnn" else "-"])
            raw[f"{kind}/{threads}"] = s
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
        print("  ".join(header[i].ljust(widths[i]) for i in range(len(header))))
        for r in rows:
            print("  ".join(r[i].ljust(widths[i]) for i in range(len(header))))
    t = sorted(results["rcnn"])[0]
    print("\ndetections (first thread count):")
    print(f"  rcnn vs partitioned: {agreement(results['rcnn'][t]['detections'], results['partitioned'][t]['detections'])}")
    if "eager" in results:
        print(f"  rcnn vs eager:       {agreement(results['rcnn'][t]['detections'], results['eager'][t]['detections'])}")
    if args.rounds > 1:
        for threads in sorted(results["rcnn"]):
            ratios = [summarize(p)["glue"] / summarize(o)["glue"]
                      for p, o in zip(rounds["partitioned"][threads], rounds["rcnn"][threads])]
            print(f"glue speed-up vs partitioned x{threads} per round: "
                  + ", ".join(f"{x:.1f}x" for x in ratios) + f" (median {statistics.median(ratios):.1f}x)")
            raw[f"glue_speedup_per_round/{threads}"] = ratios
    for threads in sorted(results["partitioned"]):
        s = summarize(results["partitioned"][threads])
        if "glue_cpu" in s:
            print(f"partitioned x{threads}: glue CPU time of the calling thread {s['glue_cpu']:.1f} ms "
                  "(the whole glue's at 1 thread; compare rcnn-bench --profile's CPU table)")
    print(f"\nload average after: {machine_info()['load']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "summary": raw,
                       "runs": {k: {str(t): [d["runs"] for d in ds] for t, ds in v.items()}
                                for k, v in rounds.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
