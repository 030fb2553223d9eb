"""Synthetic "shapes" detection data: coloured circles, squares, triangles and stars on
textured backgrounds, with exact boxes. Used by tools/demo/train_shapes.py (training),
tools/demo/eval_shapes.py (held-out evaluation) and the demo images in models/shapes/.

Every sample is a pure function of (seed, index): ``make_sample(seed, index)`` always returns
the same image and boxes (numpy's PCG64 seeded with SeedSequence([seed, index])).

Boxes are [x1, y1, x2, y2] in pixel-edge coordinates (pixel i covers [i, i + 1]): the exact
extent of the drawn shape (circle: centre +- radius; polygons: min/max of the vertices), also
for shapes partly covered by later ones (at least ``MIN_VISIBLE`` of every shape stays visible).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ["circle", "square", "triangle", "star"]
#: Image side of the generated samples (square images).
IMAGE_SIZE = 256
#: Object size range: the diameter of the shape's circumscribed circle, in pixels.
MIN_DIAMETER, MAX_DIAMETER = 22.0, 100.0
MAX_OBJECTS = 12
#: Fraction of a shape's area that must stay visible when later shapes overlap it.
MIN_VISIBLE = 0.7
SUPERSAMPLE = 4
BACKGROUNDS = ("noise", "gradient", "stripes", "checker", "solid", "blobs")
#: OpenCV sample photos (Debian package opencv-doc) used as backgrounds of the held-out
#: "real background" set only, never for training.
PHOTO_DIR = "/usr/share/doc/opencv-doc/examples/data"
PHOTOS = ("baboon.jpg", "building.jpg", "fruits.jpg", "home.jpg", "starry_night.jpg", "board.jpg",
          "stuff.jpg", "messi5.jpg", "lena.jpg", "aero1.jpg", "left01.jpg", "orange.jpg", "apple.jpg",
          "butterfly.jpg", "graf1.png", "leuvenA.jpg", "squirrel_cls.jpg", "HappyFish.jpg", "pic1.png")


@dataclass
class Sample:
    image: np.ndarray   # uint8 [H, W, 3], RGB
    boxes: np.ndarray   # float32 [N, 4], x1 y1 x2 y2
    labels: np.ndarray  # int64 [N], 1..len(CLASSES) (0 is the background)
    background: str


def rng_for(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index)])))


# --------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------

def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, channels: int, cells: Sequence[int]) -> np.ndarray:
    """Sum of bilinearly upsampled uniform noise at several cell sizes, scaled to [0, 1]."""
    out = np.zeros((size, size, channels), np.float32)
    for cell in cells:
        n = max(2, size // cell)
        noise = rng.uniform(0, 1, size=(n, n, channels)).astype(np.float32)
        layers = [np.asarray(Image.fromarray(noise[:, :, c], mode="F").resize((size, size), Image.BILINEAR))
                  for c in range(channels)]
        out += np.stack(layers, axis=2) * rng.uniform(0.5, 1.5)
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


_coords_cache: dict = {}


def _coords(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), each [size, size] (cached: do not modify)."""
    if size not in _coords_cache:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        _coords_cache[size] = (x + 0.5, y + 0.5)
    return _coords_cache[size]


_noise_bank: dict = {}


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Unit Gaussian noise [size, size, 3]: a random window of a fixed bank (drawing fresh
    noise costs as much as the rest of a sample)."""
    if size not in _noise_bank:
        bank_rng = np.random.Generator(np.random.PCG64(12345))
        _noise_bank[size] = bank_rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32)
    y0, x0 = (int(v) for v in rng.integers(0, size, 2))
    return _noise_bank[size][y0:y0 + size, x0:x0 + size]


def make_background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """float32 [size, size, 3] in 0..255."""
    c0, c1 = _random_colour(rng), _random_colour(rng)
    x, y = _coords(size)
    if kind == "noise":
        t = _smooth_noise(rng, size, 3, rng.choice([1, 2, 4, 8, 16, 32, 64], size=3, replace=False))
        base = c0 + (c1 - c0) * t
    elif kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        t = (x * math.cos(a) + y * math.sin(a)) / size
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        base = c0 + (c1 - c0) * t[:, :, None]
    elif kind == "stripes":
        a = rng.uniform(0, math.pi)
        period = rng.uniform(5, 40)
        phase = (x * math.cos(a) + y * math.sin(a)) * 2 * math.pi / period
        t = 0.5 + 0.5 * np.sin(phase)
        if rng.uniform() < 0.5:
            t = (t > 0.5).astype(np.float32)
        base = c0 + (c1 - c0) * t[:, :, None]
    elif kind == "checker":
        # cells smaller than the smallest object: a texture, not a field of unlabelled squares
        a = rng.uniform(0, math.pi / 2)
        cell = rng.uniform(3, 12)
        u = (x * math.cos(a) + y * math.sin(a)) / cell
        v = (-x * math.sin(a) + y * math.cos(a)) / cell
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        base = c0 + (c1 - c0) * t[:, :, None]
    elif kind == "solid":
        base = np.broadcast_to(c0, (size, size, 3)).copy()
    elif kind == "blobs":
        # large camouflage regions (noise cells of 64 px): bigger than most objects, irregular
        t = _smooth_noise(rng, size, 1, [64])[:, :, 0]
        t = (t > rng.uniform(0.35, 0.65)).astype(np.float32)
        t = np.asarray(Image.fromarray(t * 255).convert("L").filter(ImageFilter.GaussianBlur(1.0)),
                       np.float32) / 255
        base = c0 + (c1 - c0) * t[:, :, None]
    else:
        raise ValueError(f"unknown background {kind!r}")
    return base.astype(np.float32)


_photo_cache: dict = {}


def available_photos() -> List[str]:
    return [os.path.join(PHOTO_DIR, p) for p in PHOTOS if os.path.exists(os.path.join(PHOTO_DIR, p))]


def photo_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop (random scale) of one of the OpenCV sample photos."""
    photos = available_photos()
    if not photos:
        raise FileNotFoundError(f"no sample photos in {PHOTO_DIR} (Debian package opencv-doc)")
    path = photos[int(rng.integers(len(photos)))]
    if path not in _photo_cache:
        _photo_cache[path] = Image.open(path).convert("RGB")
    photo = _photo_cache[path]
    w, h = photo.size
    side = int(rng.uniform(0.35, 1.0) * min(w, h))
    x0 = int(rng.integers(0, w - side + 1))
    y0 = int(rng.integers(0, h - side + 1))
    crop = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, np.float32)


def add_clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Distractors that are none of the classes: lines, polylines and arcs."""
    size = image.shape[0]
    layer = Image.new("L", (size * 2, size * 2), 0)
    draw = ImageDraw.Draw(layer)
    colour = _random_colour(rng)
    for _ in range(int(rng.integers(1, 6))):
        kind = rng.integers(3)
        width = int(rng.integers(2, 7))
        if kind == 0:
            pts = [tuple(rng.uniform(0, 2 * size, 2)) for _ in range(2)]
            draw.line(pts, fill=255, width=width)
        elif kind == 1:
            pts = [tuple(rng.uniform(0, 2 * size, 2)) for _ in range(int(rng.integers(3, 6)))]
            draw.line(pts, fill=255, width=width, joint="curve")
        else:
            cx, cy = rng.uniform(0, 2 * size, 2)
            r = rng.uniform(20, 120)
            start = rng.uniform(0, 360)
            draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(40, 200), fill=255,
                     width=width)
    alpha = np.asarray(layer.resize((size, size), Image.BOX), np.float32)[:, :, None] / 255
    image *= 1 - alpha
    image += alpha * colour


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------

def shape_vertices(label: int, cx: float, cy: float, radius: float, angle: float) -> Optional[np.ndarray]:
    """Polygon vertices [V, 2] of a class (label 1..4), or None for the circle."""
    name = CLASSES[label - 1]
    if name == "circle":
        return None
    if name == "star":
        inner = 0.45
        k = np.arange(10)
        r = np.where(k % 2 == 0, radius, radius * inner)
        t = angle + k * math.pi / 5
    else:
        n = {"square": 4, "triangle": 3}[name]
        k = np.arange(n)
        r = np.full(n, radius)
        t = angle + k * 2 * math.pi / n
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def shape_alpha(size: int, label: int, cx: float, cy: float, radius: float, angle: float
                ) -> Tuple[np.ndarray, Tuple[slice, slice], np.ndarray]:
    """Anti-aliased coverage (0..1) of a shape on the image patch around it, the patch's
    (rows, cols) slices and the exact box [4]."""
    s = SUPERSAMPLE
    verts = shape_vertices(label, cx, cy, radius, angle)
    if verts is None:
        box = np.array([cx - radius, cy - radius, cx + radius, cy + radius], np.float32)
    else:
        box = np.array([verts[:, 0].min(), verts[:, 1].min(), verts[:, 0].max(), verts[:, 1].max()], np.float32)
    # Draw in a supersampled patch around the box; PIL's pixel (i, j) is the point (i, j), so
    # the continuous point x maps to x * s - 0.5.
    x0, y0 = max(0, int(math.floor(box[0])) - 1), max(0, int(math.floor(box[1])) - 1)
    x1, y1 = min(size, int(math.ceil(box[2])) + 1), min(size, int(math.ceil(box[3])) + 1)
    pw, ph = x1 - x0, y1 - y0
    patch = Image.new("L", (pw * s, ph * s), 0)
    draw = ImageDraw.Draw(patch)
    if verts is None:
        draw.ellipse([(cx - radius - x0) * s - 0.5, (cy - radius - y0) * s - 0.5,
                      (cx + radius - x0) * s - 0.5, (cy + radius - y0) * s - 0.5], fill=255)
    else:
        draw.polygon([((vx - x0) * s - 0.5, (vy - y0) * s - 0.5) for vx, vy in verts], fill=255)
    alpha = np.asarray(patch.resize((pw, ph), Image.BOX), np.float32) * np.float32(1 / 255)
    return alpha, (slice(y0, y1), slice(x0, x1)), box


def shape_fill(rng: np.random.Generator, region: Tuple[slice, slice], box: np.ndarray,
               avoid: np.ndarray) -> np.ndarray:
    """Fill of a shape on its patch [h, w, 3]: a solid colour (most often), a two-colour
    gradient or a 3-D-like shading (highlight, darker rim); its base colour differs from ``avoid`` (the mean background
    under the shape) by at least 80."""
    for _ in range(20):
        c0 = _random_colour(rng)
        if np.linalg.norm(c0 - avoid) >= 80:
            break
    h = region[0].stop - region[0].start
    w = region[1].stop - region[1].start
    kind = rng.uniform()
    if kind < 0.6:
        return np.broadcast_to(c0, (h, w, 3))
    c1 = np.clip(c0 + rng.uniform(-70, 70, 3), 0, 255).astype(np.float32)
    y, x = np.mgrid[region[0], region[1]].astype(np.float32)
    x += 0.5
    y += 0.5
    if kind < 0.75:
        a = rng.uniform(0, 2 * math.pi)
        t = (x - box[0]) * math.cos(a) + (y - box[1]) * math.sin(a)
        t = np.clip(t / max(float(box[2] - box[0]), 1.0), 0, 1)
    else:
        # shaded like a lit 3-D object: bright highlight off-centre, darker towards the rim
        half = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0) / 2
        hx = (box[0] + box[2]) / 2 + rng.uniform(-0.5, 0.5) * half
        hy = (box[1] + box[3]) / 2 + rng.uniform(-0.5, 0.5) * half
        t = np.clip(np.hypot(x - hx, y - hy) / (1.5 * half), 0, 1)
        c1 = np.clip(c0 * rng.uniform(0.3, 0.6), 0, 255).astype(np.float32)
        c0 = np.clip(c0 + rng.uniform(20, 90), 0, 255).astype(np.float32)
    return c0 + (c1 - c0) * t[:, :, None]


def make_sample(seed: int, index: int, size: int = IMAGE_SIZE, photo: bool = False,
                max_objects: int = MAX_OBJECTS) -> Sample:
    """One image with 3..max_objects shapes (fewer when they do not fit); ``photo`` uses an OpenCV sample photo as background."""
    rng = rng_for(seed, index)
    if photo:
        kind = "photo"
        image = photo_background(rng, size)
    else:
        kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        image = make_background(rng, size, kind)
    image = np.ascontiguousarray(image, np.float32)
    if rng.uniform() < 0.3:
        add_clutter(rng, image)
    count = int(rng.integers(3, max_objects + 1))
    visible: List[np.ndarray] = []  # visible coverage of every placed shape (full image)
    visible_sum: List[float] = []
    areas: List[float] = []         # its full area
    boxes: List[np.ndarray] = []
    labels: List[int] = []
    for _ in range(count):
        for _attempt in range(30):
            label = int(rng.integers(1, len(CLASSES) + 1))
            # log-uniform diameter: as many small as large objects per octave
            diameter = math.exp(rng.uniform(math.log(MIN_DIAMETER), math.log(MAX_DIAMETER)))
            radius = diameter / 2
            cx, cy = rng.uniform(radius * 0.7, size - radius * 0.7, 2)
            angle = rng.uniform(0, 2 * math.pi)
            alpha, region, box = shape_alpha(size, label, cx, cy, radius, angle)
            # keep every box mostly inside the image (cut at most 15% of a side)
            bw, bh = box[2] - box[0], box[3] - box[1]
            if box[0] < -0.15 * bw or box[1] < -0.15 * bh or box[2] > size + 0.15 * bw or box[3] > size + 0.15 * bh:
                continue
            lost = [float((v[region] * alpha).sum()) for v in visible]
            if any(vs - l < MIN_VISIBLE * full for vs, l, full in zip(visible_sum, lost, areas)):
                continue
            cover = 1 - alpha
            # the new shape is on top: the earlier ones lose what it covers
            for i, v in enumerate(visible):
                v[region] *= cover
                visible_sum[i] -= lost[i]
            full = np.zeros((size, size), np.float32)
            full[region] = alpha
            visible.append(full)
            area = float(alpha.sum())
            visible_sum.append(area)
            areas.append(area)
            boxes.append(np.clip(box, 0, size))
            labels.append(label)
            patch = image[region]
            avoid = (patch * alpha[:, :, None]).sum(axis=(0, 1)) / max(area, 1e-6)
            fill = shape_fill(rng, region, box, avoid)
            image[region] = patch * cover[:, :, None] + fill * alpha[:, :, None]
            break
    # camera-ish degradations: blur, brightness/contrast, noise
    if rng.uniform() < 0.3:
        radius = rng.uniform(0.3, 1.2)
        rgb = Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8))
        image = np.asarray(rgb.filter(ImageFilter.GaussianBlur(radius)), np.float32)
    image = image * np.float32(rng.uniform(0.8, 1.2)) + np.float32(rng.uniform(-20, 20))
    sigma = rng.uniform(0, 8)
    image += _noise(rng, size) * np.float32(sigma)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Sample(image=image,
                  boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                  labels=np.asarray(labels, np.int64),
                  background=kind)


def dihedral(sample: Sample, k: int) -> Sample:
    """One of the 8 flips/rotations of a square sample (k = 0 is the identity), boxes exact."""
    image, boxes = sample.image, sample.boxes.copy()
    size = image.shape[1]
    if k & 4:  # transpose: x <-> y
        image = image.transpose(1, 0, 2)
        boxes = boxes[:, [1, 0, 3, 2]]
    if k & 1:  # horizontal flip
        image = image[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=1)
    if k & 2:  # vertical flip
        image = image[::-1]
        boxes = np.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], axis=1)
    return Sample(np.ascontiguousarray(image), boxes.astype(np.float32).reshape(-1, 4), sample.labels,
                  sample.background)


def sample_annotation(sample: Sample) -> dict:
    return {"boxes": [[round(float(v), 3) for v in b] for b in sample.boxes],
            "labels": [CLASSES[int(l) - 1] for l in sample.labels],
            "background": sample.background}
