"""The build's accuracy sources: a cheap one the search ranks with, an exact one for the report.

With a supernet (the demo's or the user's): a set of seeded subnets is evaluated with BN
recalibration (memoised on disk, so re-runs and resumed builds are free), a random
forest is fitted on them and ranks the search's candidates, and every emitted subnet
gets its own supernet evaluation in the manifest. With `--accuracy-trees`: the official
AttentiveNAS predictor serves both roles.
"""
from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from pipeline.build.config import BuildConfig
from pipeline.paths import cache_dir
from pipeline.search import AccuracySource, FittedAccuracyPredictor, TreeForest, SupernetAccuracy
from pipeline.space import SearchSpace, SubnetConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracySetup:
    """`rank` scores search candidates; `exact` scores the subnets that are emitted;
    `eval_data` (when there is data) recalibrates BN of each subnet that is compiled."""

    rank: AccuracySource
    exact: AccuracySource
    source: str  # what the manifest's accuracy.source says
    dataset: str | None
    info: dict[str, Any]
    eval_data: Any = None  # pipeline.train.EvalData

    def learn(self, configs: Sequence[SubnetConfig]) -> "AccuracySetup":
        """This setup with `configs` evaluated exactly and the ranker refitted on every exact
        evaluation so far (itself when the ranker is not fitted on the exact source's).

        The closed loop calls it with each round's measured picks: a forest fitted on the
        32 seeded evaluations rated deep 32 px demo subnets at ~76.4 % that evaluate at
        71-74 %, and the search kept proposing them."""
        if not (isinstance(self.exact, SupernetAccuracy) and isinstance(self.rank, FittedAccuracyPredictor)):
            return self
        self.exact.predict(configs)
        known, top1 = self.exact.samples()
        if len(known) <= self.rank.n_train:
            return self
        ranker = FittedAccuracyPredictor(self.rank.n_estimators, self.rank.seed, self.rank.loss).fit(known, top1)
        log.info("accuracy ranker refitted on %d exact evaluations (was %d)", len(known), self.rank.n_train)
        return replace(self, rank=ranker)


class RecalibratedSubnets:
    """Static subnets, each extracted right after BN recalibration for its own config.

    BN statistics in a supernet are per subnet (AttentiveNAS recalibrates before every
    evaluation), so the weights an app gets must be extracted after recalibrating for
    that subnet. Offers what compilation takes from a supernet: `space`,
    `num_classes`, `extract(config)`.
    """

    def __init__(self, supernet: Any, modules: dict[SubnetConfig, Any]) -> None:
        self.space, self.num_classes = supernet.space, supernet.num_classes
        self._modules = modules

    def extract(self, config: SubnetConfig) -> Any:
        return self._modules[config]


def deployable(supernet: Any | None, space: SearchSpace, configs: list[SubnetConfig], setup: AccuracySetup
               ) -> tuple[RecalibratedSubnets | None, dict[SubnetConfig, float]]:
    """Recalibrate, validate and extract each config; returns the modules and their top-1.

    Without evaluation data (official-predictor builds) the checkpoint's BN statistics
    are used as stored and the top-1 is the accuracy source's; without a supernet (a
    random-weights build) there are no modules (None).
    """
    if setup.eval_data is None:
        top1 = dict(zip(configs, setup.exact.predict(configs)))
        if supernet is None:  # a random-weights build: compilation seeds each subnet's weights
            return None, top1
        return RecalibratedSubnets(supernet, {c: supernet.extract(c) for c in configs}), top1
    from pipeline.train import evaluate

    modules, accuracy = {}, {}
    for config in dict.fromkeys(configs):
        (result,) = evaluate(supernet, [config], setup.eval_data, space, progress=False)
        modules[config], accuracy[config] = supernet.extract(config), result.top1
    return RecalibratedSubnets(supernet, modules), accuracy


def official_setup(trees: Path) -> AccuracySetup:
    predictor = TreeForest.load(trees)
    return AccuracySetup(predictor, predictor, "official AttentiveNAS predictor", "ImageNet (predicted)",
                         {"kind": "official-trees", "trees": str(trees)})


def supernet_setup(space: SearchSpace, supernet: Any, checkpoint: Path, data_root: Path, n_subnets: int,
                   recalib_batches: int, batch_size: int, seed: int = 0) -> AccuracySetup:
    """Evaluate `n_subnets` seeded subnets (smallest and largest included) and fit the
    ranker on them and every earlier evaluation in the memo (earlier builds' picks)."""
    from pipeline.train import EvalData, evaluate

    data = EvalData.from_root(data_root, image_size=max(space.resolutions), recalib_batches=recalib_batches,
                              batch_size=batch_size, seed=seed)

    def run(configs: list[SubnetConfig]) -> list[float]:
        return [r.top1 for r in evaluate(supernet, configs, data, space, progress=False)]

    exact = SupernetAccuracy(run, _memo_path(checkpoint, data_root, recalib_batches, batch_size, seed))
    rng = random.Random(seed)
    plan = list(dict.fromkeys([space.smallest(), space.largest()] +
                              [space.sample(rng) for _ in range(n_subnets - 2)]))
    before = len(exact.evaluated)
    top1 = exact.predict(plan)
    known, known_top1 = exact.samples()  # the plan and whatever earlier builds evaluated
    ranker = FittedAccuracyPredictor(seed=seed).fit(known, known_top1)
    info = {"kind": "supernet-evaluated + random forest", "evaluated": len(known),
            "newly_evaluated": len(exact.evaluated) - before, "top1_min": float(top1.min()),
            "top1_max": float(top1.max()), "recalib_batches": recalib_batches, "data": str(data_root)}
    log.info("accuracy: %d seeded subnets evaluated (%d new), top-1 %.1f..%.1f %%; ranker fitted on %d evaluations",
             len(plan), info["newly_evaluated"], top1.min(), top1.max(), len(known))
    return AccuracySetup(ranker, exact, "supernet (BN recalibrated)", str(data_root), info, data)


def load_supernet_for(cfg: BuildConfig, space: SearchSpace | None = None
                      ) -> tuple[Any | None, Path | None, SearchSpace]:
    """The configured checkpoint (default: the demo supernet), in eval mode; checked
    against `space` (else `cfg.space`) when one is given. For `cfg.random_weights`: no
    supernet and no checkpoint, only the space (compilation then takes seeded random
    weights per subnet, and each manifest's `weights.source` says "random-init").

    Evaluation then uses as many torch threads as the recipe trained it with, when it
    says (the demo's: 1). Its tiny convolutions only spin on a second thread: with the
    emulated device coming up beside it on a loaded 2-core machine, evaluating a demo
    subnet took 17 s on one thread and 64-94 s on two.
    """
    import torch

    from pipeline.model import load_checkpoint
    from pipeline.train import demo_supernet

    space = space or (SearchSpace.load(cfg.space) if cfg.space else None)
    if cfg.random_weights:
        log.warning("no --supernet: building %s on seeded random weights (latency work; accuracy from the "
                    "official predictor); every manifest says weights.source = random-init", cfg.space)
        return None, None, space
    checkpoint = Path(cfg.supernet) if cfg.supernet else demo_supernet()
    loaded = load_checkpoint(checkpoint, space)
    threads = loaded.extra.get("train", {}).get("config", {}).get("threads", 0)
    if threads:
        log.info("evaluating with %d torch thread(s), as %s was trained", threads, checkpoint.name)
        torch.set_num_threads(threads)
    return loaded.supernet.eval(), checkpoint, loaded.supernet.space


def accuracy_for(cfg: BuildConfig, space: SearchSpace, supernet: Any, checkpoint: Path | None) -> AccuracySetup:
    """Official trees if configured, else the supernet on `cfg.data` (default: the demo's synthetic set)."""
    if cfg.accuracy_trees is not None:
        return official_setup(cfg.accuracy_trees)
    return supernet_setup(space, supernet, checkpoint, data_root_for(cfg), cfg.accuracy_subnets,
                          cfg.recalib_batches, cfg.eval_batch_size, cfg.evolution.seed)


def data_root_for(cfg: BuildConfig) -> Path:
    """`cfg.data`, else the demo's synthetic set (generated on first use)."""
    if cfg.data is not None:
        return Path(cfg.data)
    from pipeline.train.demo import DEMO_DATA, demo_data_dir
    from pipeline.train.synthetic import generate

    data = demo_data_dir()
    generate(data, DEMO_DATA)  # no-op when the set is complete
    return data


def _memo_path(checkpoint: Path, data_root: Path, recalib_batches: int, batch_size: int, seed: int) -> Path:
    """One memo file per (checkpoint contents, data, evaluation settings)."""
    digest = hashlib.sha1()
    with open(checkpoint, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(f"{Path(data_root).resolve()}|{recalib_batches}|{batch_size}|{seed}".encode())
    return cache_dir() / "accuracy" / f"{digest.hexdigest()[:16]}.jsonl"
