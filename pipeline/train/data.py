"""Image-folder datasets (`root/train/<class>/*.png|jpg`, `root/val/...`) without torchvision.

torchvision does not install beside our torch build, so images are decoded with Pillow
and turned into tensors with numpy. Augmentation randomness is a pure function of
(seed, epoch, index) rather than of a global RNG: the batches of a step are then the same
whether a run was interrupted and resumed, or uses 1 or 2 data-loading workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: ImageNet channel statistics, as the official recipe normalises.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: Eval resizes the short side to size / EVAL_CROP_RATIO and centre-crops `size`.
EVAL_CROP_RATIO = 0.875


class DataError(ConfigError):
    """A dataset folder is missing, empty or malformed."""


@dataclass(frozen=True)
class ImageFolder:
    """The files and labels of one split; class index = position in the sorted class list."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    @classmethod
    def scan(cls, root: str | Path, split: str) -> "ImageFolder":
        """List `root/split/<class>/<image>`; errors name the folder at fault and the layout."""
        base = Path(root) / split
        layout = f"expected {Path(root)}/{split}/<class>/<image>{'|'.join(IMAGE_SUFFIXES)}"
        if not base.is_dir():
            raise DataError(f"no '{split}' folder in {root}: {layout}")
        class_dirs = sorted(p for p in base.iterdir() if p.is_dir())
        if not class_dirs:
            raise DataError(f"{base} has no class folders: {layout}")
        samples: list[tuple[Path, int]] = []
        for label, folder in enumerate(class_dirs):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): {layout}")
            samples.extend((f, label) for f in files)
        return cls(base, tuple(p.name for p in class_dirs), tuple(samples))

    def __len__(self) -> int:
        return len(self.samples)


def load_splits(root: str | Path) -> tuple[ImageFolder, ImageFolder]:
    """Train and val splits of `root`; they must have the same classes."""
    train, val = ImageFolder.scan(root, "train"), ImageFolder.scan(root, "val")
    if train.classes != val.classes:
        missing = sorted(set(train.classes) ^ set(val.classes))
        raise DataError(f"train and val of {root} have different classes (differ in {missing[:5]}); "
                        "give both splits the same class folders")
    return train, val


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read image {path}: {err}; remove or replace the file") from err


def _to_tensor(img: Image.Image) -> torch.Tensor:
    arr = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def train_transform(img: Image.Image, size: int, rng: np.random.Generator,
                    scale: tuple[float, float] = (0.08, 1.0)) -> torch.Tensor:
    """Random-resized crop (area `scale`, aspect 3/4..4/3) to `size`, random horizontal flip."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            break
    else:  # fall back to the whole image
        x, y, cw, ch = 0, 0, w, h
    img = img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return _to_tensor(img)


def eval_transform(img: Image.Image, size: int) -> torch.Tensor:
    """Resize the short side to size / 0.875, centre-crop `size` (the usual ImageNet eval)."""
    w, h = img.size
    short = max(size, int(round(size / EVAL_CROP_RATIO)))
    nw, nh = (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)
    img = img.resize((nw, nh), Image.BILINEAR)
    x, y = (nw - size) // 2, (nh - size) // 2
    return _to_tensor(img.crop((x, y, x + size, y + size)))


class FolderDataset(Dataset):
    """Items are `(index, epoch)` pairs so that augmentation is seeded per image and epoch."""

    def __init__(self, folder: ImageFolder, size: int, train: bool, seed: int = 0,
                 min_crop_area: float = 0.08) -> None:
        self.folder, self.size, self.train, self.seed = folder, size, train, seed
        self.scale = (min_crop_area, 1.0)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = item
        path, label = self.folder.samples[index]
        img = _open_rgb(path)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            return train_transform(img, self.size, rng, self.scale), label
        return eval_transform(img, self.size), label


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """This rank's batches of one epoch, from batch `start` on (to resume mid-epoch).

    The epoch's order is a permutation seeded by (seed, epoch); rank r of `world` takes
    every world-th index, as DistributedSampler does. Incomplete last batches are dropped
    in training so every step sees `batch_size` images per rank.
    """

    def __init__(self, n: int, batch_size: int, epoch: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world: int = 1, start: int = 0, drop_last: bool = True) -> None:
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        else:
            order = list(range(n))
        mine = order[rank::world]
        stop = len(mine) - len(mine) % batch_size if drop_last else len(mine)
        self.batches = [[(i, epoch) for i in mine[b:b + batch_size]] for b in range(0, stop, batch_size)][start:]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Training steps per epoch (full batches per rank)."""
    return (n // world) // batch_size


def make_loader(dataset: FolderDataset, batches: Sequence[list[tuple[int, int]]] | Sampler,
                workers: int = 0) -> DataLoader:
    """A DataLoader over precomputed batches; workers decode images in parallel.

    It gets its own generator: by default each new iterator draws a seed from torch's
    global RNG, which would shift dropout masks after a resume.
    """
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, generator=torch.Generator(),
                      persistent_workers=False, pin_memory=False)


def eval_batches(dataset: FolderDataset, batch_size: int, workers: int = 0) -> DataLoader:
    """Validation batches in file order, last batch kept."""
    return make_loader(dataset, EpochBatches(len(dataset), batch_size, 0, 0, shuffle=False, drop_last=False),
                       workers)
