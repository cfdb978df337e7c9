"""A small synthetic image set that a CPU can learn in minutes, written as image folders.

Why: the demo supernet, the tests and the sampling benchmark need labelled images with
no download. Each class is a shape or a texture (circle, square, triangle, cross, ring,
and horizontal, vertical, diagonal stripes, checkerboard, dots) drawn at a random place,
size and colour on a noisy background, so the task is learnable but not trivial and
bigger subnets have something to gain. Every image is a pure function of
(seed, split, class, index), so the set is the same on every machine. It is written as
PNG files in the `root/<split>/<class>/` layout so that the same image-folder loader as
for user data is exercised.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from pipeline.atomic import atomic_path, write_json
from pipeline.errors import ConfigError
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

_SPLIT_IDS = {"train": 0, "val": 1}
#: Written last, so a folder with this file is complete (an interrupted write is redone).
MANIFEST = "synthetic.json"


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: class count, images per class and split, side in pixels, seed."""

    num_classes: int = 10
    train_per_class: int = 200
    val_per_class: int = 50
    resolution: int = 64
    seed: int = 0
    noise: float = 12.0  # std of the Gaussian pixel noise
    clutter: int = 1  # random lines per image that belong to no class

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(_PAINTERS):
            raise ConfigError(f"synthetic num_classes must be 2..{len(_PAINTERS)}, got {self.num_classes}")
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise ConfigError("synthetic train_per_class and val_per_class must be >= 1")
        if self.resolution < 16:
            raise ConfigError(f"synthetic resolution must be >= 16 px, got {self.resolution}")


Painter = Callable[[ImageDraw.ImageDraw, np.random.Generator, int, tuple[int, int, int]], None]


def _box(rng: np.random.Generator, size: int, lo: float = 0.4, hi: float = 0.8) -> tuple[float, float, float, float]:
    """A random square box whose side is a fraction lo..hi of the image."""
    side = rng.uniform(lo, hi) * size
    x0, y0 = rng.uniform(0, size - side, 2)
    return x0, y0, x0 + side, y0 + side


def _circle(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
    d.ellipse(_box(rng, n), fill=c)


def _square(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = _box(rng, n)
    cx, cy, r, a = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, rng.uniform(-0.3, 0.3)
    pts = [(cx + r * np.cos(a + k * np.pi / 2 + np.pi / 4) * 1.2, cy + r * np.sin(a + k * np.pi / 2 + np.pi / 4) * 1.2)
           for k in range(4)]
    d.polygon(pts, fill=c)


def _triangle(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = _box(rng, n)
    d.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=c)


def _cross(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = _box(rng, n)
    w = max(2.0, (x1 - x0) / 4)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    d.rectangle((cx - w / 2, y0, cx + w / 2, y1), fill=c)
    d.rectangle((x0, cy - w / 2, x1, cy + w / 2), fill=c)


def _ring(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
    box = _box(rng, n, 0.4, 0.8)
    d.ellipse(box, outline=c, width=max(2, int((box[2] - box[0]) / 7)))


def _stripes(direction: tuple[float, float]) -> Painter:
    """Stripes across a random box; `direction` is the unit vector the stripes vary along."""
    def paint(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
        period = rng.uniform(0.12, 0.25) * n
        x0, y0, x1, y1 = _box(rng, n, 0.5, 0.9)
        ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
        phase = (xs * direction[0] + ys * direction[1] + rng.uniform(0, period)) % period
        mask = (phase < period * rng.uniform(0.35, 0.55)) & (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        d.bitmap((0, 0), Image.fromarray(mask.astype(np.uint8) * 255, mode="L"), fill=c)
    return paint


def _checker(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = _box(rng, n, 0.5, 0.9)
    cell = max(2.0, rng.uniform(0.1, 0.2) * n)
    for i, y in enumerate(np.arange(y0, y1 - 1, cell)):
        for j, x in enumerate(np.arange(x0, x1 - 1, cell)):
            if (i + j) % 2 == 0:
                d.rectangle((x, y, min(x + cell, x1), min(y + cell, y1)), fill=c)


def _dots(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, c: tuple[int, int, int]) -> None:
    r = max(1.5, rng.uniform(0.03, 0.06) * n)
    for x, y in rng.uniform(r, n - r, (int(rng.integers(6, 12)), 2)):
        d.ellipse((x - r, y - r, x + r, y + r), fill=c)


#: Shapes and textures alternate, so the first few classes of a small set mix both kinds.
_PAINTERS: dict[str, Painter] = {
    "circle": _circle,
    "hstripes": _stripes((0.0, 1.0)),
    "square": _square,
    "checker": _checker,
    "triangle": _triangle,
    "vstripes": _stripes((1.0, 0.0)),
    "cross": _cross,
    "dots": _dots,
    "ring": _ring,
    "dstripes": _stripes((0.7071, 0.7071)),
}


def class_names(num_classes: int) -> list[str]:
    """The first `num_classes` class names, prefixed by their index so folders sort in class order."""
    return [f"{i:02d}_{name}" for i, name in enumerate(list(_PAINTERS)[:num_classes])]


def render(spec: SyntheticSpec, split: str, label: int, index: int) -> np.ndarray:
    """One HxWx3 uint8 image; the same arguments always give the same pixels."""
    rng = np.random.default_rng([spec.seed, _SPLIT_IDS[split], label, index])
    n = spec.resolution
    background = rng.integers(0, 256, 3)
    foreground = rng.integers(0, 256, 3)
    while np.abs(foreground - background).sum() < 250:  # keep the pattern visible
        foreground = rng.integers(0, 256, 3)
    img = Image.new("RGB", (n, n), tuple(int(v) for v in background))
    draw = ImageDraw.Draw(img)
    _PAINTERS[list(_PAINTERS)[label]](draw, rng, n, tuple(int(v) for v in foreground))
    for _ in range(spec.clutter):  # random lines that belong to no class
        ends = [float(v) for v in rng.uniform(0, n, 4)]
        draw.line(ends, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 3)))
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, spec.noise, (n, n, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def generate(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the set under `root` (`train/`, `val/`, one folder per class); reuse it if complete.

    Resumable: a folder is complete when its manifest matches `spec`; otherwise missing
    images are written and existing ones (deterministic, so identical) are kept.
    """
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == asdict(spec):
        return root
    names = class_names(spec.num_classes)
    jobs = [(split, label, i) for split, per in (("train", spec.train_per_class), ("val", spec.val_per_class))
            for label in range(spec.num_classes) for i in range(per)]
    for split, label, i in progress_bar(jobs, desc="synthetic images", unit="img", leave=False):
        path = root / split / names[label] / f"{i:05d}.png"
        if not path.is_file():
            with atomic_path(path, durable=False) as tmp:  # bulk and regenerable: no fsync each
                Image.fromarray(render(spec, split, label, i)).save(tmp)
    write_json(manifest, asdict(spec), indent=1)
    log.info("synthetic set: %d images of %d classes at %d px in %s", len(jobs), spec.num_classes,
             spec.resolution, root)
    return root
