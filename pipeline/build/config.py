"""What `pipeline build` is asked to do: one typed, validated config.

Defaults are the built-in demo (demo supernet on its synthetic set, the emulated arm64
device, budgets spread over the device's measured range), sized to finish within
minutes on a 2-core machine once the caches are warm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.search import EvolutionConfig

#: `--target` spellings -> profile `arch`.
TARGET_ALIASES = {"arm64": "arm64", "aarch64": "arm64", "x86": "x86_64", "x86_64": "x86_64", "x64": "x86_64"}
#: What `BuildConfig.search` may name.
SEARCH_METHODS = ("evolution", "nsga2")
#: Connection kinds that exist on this machine without the user doing anything.
LOCAL_KINDS = ("local", "emulated")


@dataclass(frozen=True)
class BuildConfig:
    """Everything `run_build` needs. Paths left None mean the built-in demo."""

    target: str = "arm64"
    #: device profile names; empty = the profiles of `target` reachable here (local/emulated)
    devices: tuple[str, ...] = ()
    #: latency budgets in ms; empty = `n_budgets` at the 20..80 % quantiles of the profiled latencies
    budgets_ms: tuple[float, ...] = ()
    n_budgets: int = 3
    supernet: Path | None = None
    space: str | None = None
    #: image-folder dataset (train/ and val/) for BN recalibration and validation
    data: Path | None = None
    #: official AttentiveNAS predictor arrays: use them as the accuracy source instead
    accuracy_trees: Path | None = None
    out: Path = Path("build")
    profile_subnets: int = 16
    #: also measure every distinct block of the profiled subnets, so the latency model can
    #: be the block table plus a residual (it holds outside the sampled subnets)
    profile_blocks: bool = True
    #: candidates measured per budget in each round of the closed loop (plus one whose
    #: interval is within the budget when all of them are uncertain); each costs a compile
    #: and a measurement, ~6 s on the emulated device: with 3, the default build took 10 min
    measure_top: int = 2
    accuracy_subnets: int = 32
    recalib_batches: int = 4
    eval_batch_size: int = 100
    max_rounds: int = 2
    #: how each round searches: "evolution" (one evolutionary search per budget) or "nsga2"
    #: (one NSGA-II run whose Pareto set serves every budget, about 1/budgets the evaluations)
    search: str = "evolution"
    evolution: EvolutionConfig = field(default_factory=lambda: EvolutionConfig(population=64, parents=16,
                                                                               generations=15))
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGET_ALIASES:
            raise ConfigError(f"--target {self.target!r} is unknown; use one of {sorted(TARGET_ALIASES)}")
        if any(b <= 0 for b in self.budgets_ms):
            raise ConfigError(f"budgets must be positive milliseconds, got {list(self.budgets_ms)}")
        for name in ("n_budgets", "profile_subnets", "accuracy_subnets", "recalib_batches",
                     "eval_batch_size", "max_rounds", "measure_top"):
            if getattr(self, name) < 1:
                raise ConfigError(f"build setting {name} must be >= 1, got {getattr(self, name)}")
        if self.search not in SEARCH_METHODS:
            raise ConfigError(f"--search {self.search!r} is unknown; use one of {list(SEARCH_METHODS)}")
        if self.profile_subnets < 4:
            raise ConfigError("profile_subnets must be >= 4 (a latency predictor needs a few measured subnets)")
        if self.accuracy_subnets < 5:
            raise ConfigError("accuracy_subnets must be >= 5 (the accuracy predictor needs a few evaluated subnets)")
        if self.random_weights and self.accuracy_trees is None:
            raise ConfigError(f"--space {self.space} without --supernet builds on seeded random weights, which "
                              "have no accuracy to evaluate: give --accuracy-trees FILE (the official predictor), "
                              "or --supernet CKPT with --data DIR")
        if self.supernet is not None and self.data is None and self.accuracy_trees is None:
            raise ConfigError(f"--supernet {self.supernet} needs --data DIR (train/ and val/ image folders) "
                              "to evaluate its subnets, or --accuracy-trees for the official predictor")

    @property
    def random_weights(self) -> bool:
        """No checkpoint, and a space that is not the built-in demo supernet's: the build
        compiles seeded random weights in the official layout (latency work; accuracy from
        the official predictor only) and every manifest says so."""
        return self.supernet is None and self.space not in (None, "demo")

    @property
    def arch(self) -> str:
        return TARGET_ALIASES[self.target]
