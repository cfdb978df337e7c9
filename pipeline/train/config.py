"""The training recipe as a typed, frozen config loaded from YAML and checked at load.

Defaults are the published AttentiveNAS recipe (../shared/attentivenas/README.md,
"Training recipe"), so a YAML file only states what differs; `pipeline/data/
train_attentivenas.yaml` spells the recipe out and `train_demo.yaml` is the CPU demo.
Unknown keys and wrong types are refused with the key's full name and the allowed keys,
so a typo cannot silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from pipeline.errors import ConfigError
from pipeline.paths import DATA_DIR

SAMPLER_METHODS = ("uniform", "bestup", "worstup")
ESTIMATORS = ("loss", "predictor")
BUILTIN_RECIPES = {"attentivenas": DATA_DIR / "train_attentivenas.yaml", "demo": DATA_DIR / "train_demo.yaml"}


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD with Nesterov momentum, linear warm-up then cosine decay to 0, clipping by value."""

    lr: float = 0.8  # at `lr_reference_batch` images per step; scaled linearly to the real global batch
    lr_reference_batch: int = 2048
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-5  # not applied to BN parameters and biases
    warmup_epochs: float = 5.0
    grad_clip_value: float = 1.0  # 0 disables clipping

    def __post_init__(self) -> None:
        _require(self.lr > 0 and self.lr_reference_batch > 0, "optimizer.lr and lr_reference_batch must be > 0")
        _require(0 <= self.momentum < 1, "optimizer.momentum must be in [0, 1)")
        _require(self.weight_decay >= 0 and self.warmup_epochs >= 0 and self.grad_clip_value >= 0,
                 "optimizer.weight_decay, warmup_epochs and grad_clip_value must be >= 0")


@dataclass(frozen=True)
class SandwichConfig:
    """Sandwich rule and in-place distillation: largest (labels), N-2 sampled, smallest (KL to largest).

    `label_epochs`: for that many epochs at the start the other subnets learn from the
    labels too (cross-entropy with label smoothing), and only then from the largest's soft
    outputs. Distilling from an untrained largest pulls every subnet towards its near-uniform
    outputs, which is negligible over 360 epochs but costs a short run most of its steps.
    0 = distillation from the first step, as published.
    """

    num_arch_training: int = 4
    label_smoothing: float = 0.1
    dropout: float = 0.2
    drop_connect: float = 0.2
    label_epochs: float = 0.0

    def __post_init__(self) -> None:
        _require(self.num_arch_training >= 2, "sandwich.num_arch_training must be >= 2 (largest and smallest)")
        _require(0 <= self.label_smoothing < 1 and 0 <= self.dropout < 1 and 0 <= self.drop_connect < 1,
                 "sandwich.label_smoothing, dropout and drop_connect must be in [0, 1)")
        _require(self.label_epochs >= 0, "sandwich.label_epochs must be >= 0")


@dataclass(frozen=True)
class SamplerConfig:
    """How the middle subnets of the sandwich are picked.

    `uniform`: each choice uniformly (the BigNAS/OFA baseline). `bestup` / `worstup`: draw a
    FLOPs target from the prior histogram (`flops_bin_mflops` bins over `prior_samples`
    sampled configs), draw `num_candidates` configs in the target's bin, keep the one the
    estimator ranks best / worst: `loss` = label loss on the current minibatch (as
    published), `predictor` = an accuracy predictor (`predictor` = .npz forest file).
    """

    method: str = "bestup"
    estimator: str = "loss"
    num_candidates: int = 3
    flops_bin_mflops: float = 25.0
    prior_samples: int = 10000
    predictor: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.method in SAMPLER_METHODS, f"sampler.method must be one of {SAMPLER_METHODS}, got {self.method!r}")
        _require(self.estimator in ESTIMATORS, f"sampler.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        _require(self.num_candidates >= 1 and self.prior_samples >= 10 and self.flops_bin_mflops > 0,
                 "sampler.num_candidates >= 1, prior_samples >= 10 and flops_bin_mflops > 0 are required")
        _require(self.estimator != "predictor" or self.predictor is not None,
                 "sampler.estimator 'predictor' needs sampler.predictor: a forest .npz file")


@dataclass(frozen=True)
class CheckpointConfig:
    """Where the run lives and how often its state is saved (atomically)."""

    dir: str = "runs/train"
    every_steps: int = 500

    def __post_init__(self) -> None:
        _require(self.every_steps >= 1, "checkpoint.every_steps must be >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """BN recalibration on `recalib_batches` training batches, then validation top-1 and loss."""

    recalib_batches: int = 64
    batch_size: int = 256

    def __post_init__(self) -> None:
        _require(self.recalib_batches >= 1 and self.batch_size >= 1,
                 "evaluation.recalib_batches and batch_size must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. `batch_size` is per process; the global batch is it x world size."""

    data: str
    space: str = "attentivenas"
    image_size: int = 0  # training crop; 0 = the space's largest resolution
    min_crop_area: float = 0.08  # random-resized-crop keeps 8%..100% of the image area (ImageNet default)
    epochs: float = 360.0
    batch_size: int = 32
    workers: int = 4
    threads: int = 0  # torch threads per process; 0 = torch's default (1 is best on a busy small CPU)
    seed: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    sandwich: SandwichConfig = field(default_factory=SandwichConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _require(0 < self.min_crop_area <= 1, f"min_crop_area must be in (0, 1], got {self.min_crop_area}")
        _require(self.epochs > 0 and self.batch_size >= 1 and min(self.workers, self.image_size, self.threads) >= 0,
                 "epochs > 0, batch_size >= 1 and workers, image_size, threads >= 0 are required")

    @classmethod
    def load(cls, path_or_name: str | Path, **overrides: Any) -> "TrainConfig":
        """Load a recipe (built-in name `attentivenas`/`demo` or YAML file); `overrides` are
        dotted keys (`sampler.method="uniform"`, written `sampler__method`) applied on top."""
        key = str(path_or_name)
        path = BUILTIN_RECIPES.get(key, Path(key))
        if not path.is_file():
            raise ConfigError(f"training config {key!r} is neither a built-in recipe "
                              f"({', '.join(BUILTIN_RECIPES)}) nor a YAML file; pass --config with one of those")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"training config {path} is not valid YAML: {err}") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"training config {path} must be a mapping of keys to values")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = raw
            *parents, leaf = dotted.split("__")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        raw.setdefault("data", "")
        return from_dict(cls, raw, str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (round-trips through `from_dict`)."""
        return dataclasses.asdict(self)


def from_dict(cls: type, raw: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {[prefix + u for u in unknown]}; allowed: {[prefix + n for n in names]}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _convert(hints[name], value, where, prefix + name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key + ".")
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None:
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }[tp]
    if not ok:
        raise ConfigError(f"{where}: '{key}' must be {tp.__name__}, got {value!r}")
    return tp(value)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
