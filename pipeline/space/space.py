"""The search space: what choices a subnet may make, loaded from the official YAML format.

A space file has the layout of AttentiveNAS' `supernet_space.yaml` (a `supernet_config`
with `resolutions`, `first_conv`, `mb1`..`mb7`, `last_conv`), so a user's own space in
that format loads as it is. The space validates configs, samples, mutates and crosses
them; it owns every rule about which values are allowed.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from pipeline.errors import ConfigError
from pipeline.paths import DATA_DIR
from pipeline.space.config import NUM_STAGES, SubnetConfig

STAGE_NAMES: tuple[str, ...] = tuple(f"mb{i}" for i in range(1, NUM_STAGES + 1))
#: Names of the nine `width` entries, for error messages.
WIDTH_NAMES: tuple[str, ...] = ("first_conv",) + STAGE_NAMES + ("last_conv",)
BUILTIN_SPACES: dict[str, Path] = {
    "attentivenas": DATA_DIR / "attentivenas.yaml",
    "demo": DATA_DIR / "demo.yaml",
}


@dataclass(frozen=True)
class StageSpec:
    """Choices of one stage of inverted-residual blocks (`mb1`..`mb7`)."""

    name: str
    channels: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    stride: int
    use_se: bool
    act: str


@dataclass(frozen=True)
class SearchSpace:
    """A weight-sharing space of MobileNetV3-like subnets (AttentiveNAS layout)."""

    name: str
    resolutions: tuple[int, ...]
    first_conv_channels: tuple[int, ...]
    first_conv_stride: int
    first_conv_act: str
    stages: tuple[StageSpec, ...]
    last_conv_channels: tuple[int, ...]
    last_conv_act: str
    use_v3_head: bool = True
    #: classes of the space's dataset (the demo set has 10, ImageNet 1000): the head of
    #: what is compiled and measured for the space when no supernet says otherwise. A
    #: label of the data, not of the structure (`structure()` leaves it out).
    num_classes: int = 1000

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path_or_name: str | Path = "attentivenas") -> "SearchSpace":
        """Load a built-in space by name (`attentivenas`, `demo`) or a YAML file."""
        key = str(path_or_name)
        path = BUILTIN_SPACES.get(key, Path(key))
        if not path.is_file():
            raise ConfigError(
                f"space {key!r} is neither a built-in space ({', '.join(BUILTIN_SPACES)}) "
                "nor an existing YAML file; pass --space with one of those"
            )
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"space file {path} is not valid YAML: {err}") from err
        name = key if key in BUILTIN_SPACES else path.stem
        return cls.from_dict(raw, name=name, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, name: str, source: str = "<dict>") -> "SearchSpace":
        """Build from the parsed official layout; errors name the missing key and file."""
        cfg = raw.get("supernet_config", raw) if isinstance(raw, dict) else None
        if not isinstance(cfg, dict):
            raise ConfigError(f"space {source}: expected a mapping with 'supernet_config'")

        def get(section: dict, key: str, where: str) -> Any:
            if key not in section:
                raise ConfigError(f"space {source}: '{where}' lacks key '{key}'")
            return section[key]

        def ints(value: Any, where: str) -> tuple[int, ...]:
            vals = value if isinstance(value, list) else [value]
            if not vals or not all(isinstance(v, int) and v > 0 for v in vals):
                raise ConfigError(f"space {source}: '{where}' must be a list of positive ints, got {value!r}")
            return tuple(vals)

        def count(value: Any, where: str) -> int:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"space {source}: '{where}' must be a positive int, got {value!r}")
            return value

        def section(key: str) -> dict:
            sec = get(cfg, key, "supernet_config")
            if not isinstance(sec, dict):
                raise ConfigError(f"space {source}: '{key}' must be a mapping")
            return sec

        stages = []
        for stage in STAGE_NAMES:
            sec = section(stage)
            stages.append(
                StageSpec(
                    name=stage,
                    channels=ints(get(sec, "c", stage), f"{stage}.c"),
                    depths=ints(get(sec, "d", stage), f"{stage}.d"),
                    kernel_sizes=ints(get(sec, "k", stage), f"{stage}.k"),
                    expand_ratios=ints(get(sec, "t", stage), f"{stage}.t"),
                    stride=int(get(sec, "s", stage)),
                    use_se=bool(sec.get("se", False)),
                    act=str(sec.get("act_func", "swish")),
                )
            )
        first, last = section("first_conv"), section("last_conv")
        return cls(
            name=name,
            resolutions=ints(get(cfg, "resolutions", "supernet_config"), "resolutions"),
            first_conv_channels=ints(get(first, "c", "first_conv"), "first_conv.c"),
            first_conv_stride=int(first.get("s", 2)),
            first_conv_act=str(first.get("act_func", "swish")),
            stages=tuple(stages),
            last_conv_channels=ints(get(last, "c", "last_conv"), "last_conv.c"),
            last_conv_act=str(last.get("act_func", "swish")),
            use_v3_head=bool(cfg.get("use_v3_head", True)),
            num_classes=count(cfg.get("num_classes", 1000), "num_classes"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The official layout (`from_dict(space.to_dict(), space.name) == space`), so a
        space loaded from a user's file travels inside what was made with it (a predictor)."""
        stages = {s.name: {"c": list(s.channels), "d": list(s.depths), "k": list(s.kernel_sizes),
                           "t": list(s.expand_ratios), "s": s.stride, "act_func": s.act, "se": s.use_se}
                  for s in self.stages}
        return {"supernet_config": {
            "use_v3_head": self.use_v3_head, "num_classes": self.num_classes,
            "resolutions": list(self.resolutions),
            "first_conv": {"c": list(self.first_conv_channels), "act_func": self.first_conv_act,
                           "s": self.first_conv_stride},
            **stages,
            "last_conv": {"c": list(self.last_conv_channels), "act_func": self.last_conv_act}}}

    def structure(self) -> dict[str, Any]:
        """Everything that shapes a supernet's shared weights, to tell whether a supernet
        fits this space: the name is only a label and the head is sized by the supernet."""
        return {k: v for k, v in asdict(self).items() if k not in ("name", "num_classes")}

    # ------------------------------------------------------------- the choices
    def width_choices(self) -> tuple[tuple[int, ...], ...]:
        """Allowed values of each of the nine `width` entries."""
        return (self.first_conv_channels,) + tuple(s.channels for s in self.stages) + (
            self.last_conv_channels,
        )

    def choices(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Allowed values per config field and position (the shape of a SubnetConfig)."""
        return {
            "resolution": (self.resolutions,),
            "width": self.width_choices(),
            "depth": tuple(s.depths for s in self.stages),
            "kernel_size": tuple(s.kernel_sizes for s in self.stages),
            "expand_ratio": tuple(s.expand_ratios for s in self.stages),
        }

    def validate(self, config: SubnetConfig) -> SubnetConfig:
        """Return `config` if every value is allowed; else raise naming field, value, choices."""
        for field, allowed in self.choices().items():
            values = getattr(config, field)
            values = (values,) if field == "resolution" else values
            if len(values) != len(allowed):
                raise ConfigError(f"{field} has {len(values)} entries, space {self.name!r} needs {len(allowed)}")
            for i, (value, options) in enumerate(zip(values, allowed)):
                if value not in options:
                    where = field if field == "resolution" else f"{field}[{i}] ({_position_name(field, i)})"
                    raise ConfigError(
                        f"{where} = {value} is not allowed in space {self.name!r}; "
                        f"choices: {list(options)}"
                    )
        return config

    # ---------------------------------------------------------------- sampling
    def _pick(self, pick) -> SubnetConfig:
        ch = self.choices()
        return SubnetConfig(
            resolution=pick(ch["resolution"][0]),
            width=tuple(pick(c) for c in ch["width"]),
            depth=tuple(pick(c) for c in ch["depth"]),
            kernel_size=tuple(pick(c) for c in ch["kernel_size"]),
            expand_ratio=tuple(pick(c) for c in ch["expand_ratio"]),
        )

    def smallest(self) -> SubnetConfig:
        """Every choice at its minimum (the sandwich rule's lower slice)."""
        return self._pick(min)

    def largest(self) -> SubnetConfig:
        """Every choice at its maximum (the sandwich rule's teacher)."""
        return self._pick(max)

    def sample(self, rng: random.Random) -> SubnetConfig:
        """Uniform over each choice independently (as the official sampler)."""
        return self._pick(rng.choice)

    def mutate(self, config: SubnetConfig, prob: float, rng: random.Random) -> SubnetConfig:
        """Resample each choice with probability `prob` (AlphaNet/OFA search mutation)."""
        ch = self.choices()

        def mut(values: Sequence[int], allowed: Sequence[Sequence[int]]) -> tuple[int, ...]:
            return tuple(rng.choice(a) if rng.random() < prob else v for v, a in zip(values, allowed))

        return SubnetConfig(
            resolution=mut((config.resolution,), ch["resolution"])[0],
            width=mut(config.width, ch["width"]),
            depth=mut(config.depth, ch["depth"]),
            kernel_size=mut(config.kernel_size, ch["kernel_size"]),
            expand_ratio=mut(config.expand_ratio, ch["expand_ratio"]),
        )

    @staticmethod
    def crossover(a: SubnetConfig, b: SubnetConfig, rng: random.Random, prob: float = 0.5) -> SubnetConfig:
        """Uniform crossover: each choice from `b` with probability `prob`, else from `a`."""

        def mix(x: Sequence[int], y: Sequence[int]) -> tuple[int, ...]:
            return tuple(yv if rng.random() < prob else xv for xv, yv in zip(x, y))

        return SubnetConfig(
            resolution=mix((a.resolution,), (b.resolution,))[0],
            width=mix(a.width, b.width),
            depth=mix(a.depth, b.depth),
            kernel_size=mix(a.kernel_size, b.kernel_size),
            expand_ratio=mix(a.expand_ratio, b.expand_ratio),
        )

    def size(self) -> int:
        """Number of distinct subnets (choices are independent per position)."""
        n = 1
        for allowed in self.choices().values():
            for options in allowed:
                n *= len(options)
        return n


def _position_name(field: str, index: int) -> str:
    return WIDTH_NAMES[index] if field == "width" else STAGE_NAMES[index]
