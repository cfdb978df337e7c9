"""Supernet training (sandwich rule, in-place distillation, attentive sampling), data,
evaluation with BN recalibration, and the demo supernet."""
from pipeline.train.config import TrainConfig
from pipeline.train.data import DataError, ImageFolder, load_splits
from pipeline.train.demo import demo_config, demo_supernet, demo_supernet_path, train_demo
from pipeline.train.evaluate import EvalData, EvalResult, evaluate, recalibrate_bn
from pipeline.train.loop import TrainResult, train
from pipeline.train.sampler import ArchSampler
from pipeline.train.synthetic import SyntheticSpec, generate as generate_synthetic

__all__ = [
    "ArchSampler", "DataError", "EvalData", "EvalResult", "ImageFolder", "SyntheticSpec",
    "TrainConfig", "TrainResult", "demo_config", "demo_supernet", "demo_supernet_path", "evaluate",
    "generate_synthetic", "load_splits", "recalibrate_bn", "train", "train_demo",
]
