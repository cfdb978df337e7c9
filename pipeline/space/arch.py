"""The layer-level structure of a subnet, derived from its config alone.

One source of truth for the shapes every later step needs: the static subnet builder,
analytic FLOPs and parameter counts (official convention, ../shared/attentivenas/
README.md and the official `utils/flops_counter.py`), the latency lookup table's block keys and the kernel workloads. Pure
functions, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.space.config import SubnetConfig
from pipeline.space.space import SearchSpace

#: The v3 head expands the last stage's channels by this factor before pooling.
HEAD_EXPAND = 6
SE_REDUCTION = 4
CHANNEL_DIVISOR = 8


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Round to a multiple of `divisor`, never below 90% of `value` (OFA/AttentiveNAS rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_out_size(size: int, stride: int) -> int:
    """Output size of a 'same'-padded (k // 2) odd-kernel conv: ceil(size / stride)."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class BlockSpec:
    """One active inverted-residual block with every shape fixed."""

    stage: int  # 0..6 for mb1..mb7
    index: int  # position inside the stage
    in_channels: int
    out_channels: int
    mid_channels: int
    kernel_size: int
    stride: int
    expand_ratio: int
    use_se: bool
    se_channels: int
    in_size: int
    out_size: int
    act: str

    @property
    def has_expand(self) -> bool:
        return self.expand_ratio != 1

    @property
    def shortcut_pool(self) -> bool:
        return self.stride > 1

    @property
    def shortcut_conv(self) -> bool:
        return self.in_channels != self.out_channels

    @property
    def key(self) -> tuple:
        """What determines this block's cost: the latency table's key."""
        return (self.stage, self.in_channels, self.out_channels, self.kernel_size,
                self.expand_ratio, self.stride, self.in_size, self.use_se)

    def flops(self) -> int:
        """Multiply-adds of every conv in the block (official convention)."""
        hw_in, hw_out = self.in_size**2, self.out_size**2
        mid = self.mid_channels
        total = mid * self.kernel_size**2 * hw_out  # depthwise
        total += mid * self.out_channels * hw_out  # projection
        if self.has_expand:
            total += self.in_channels * mid * hw_in
        if self.use_se:
            total += 2 * mid * self.se_channels
        if self.shortcut_conv:
            total += self.in_channels * self.out_channels * hw_out
        return total

    def params(self) -> int:
        """Parameters the block holds, official convention (every leaf module's parameters).

        The official block always holds its 1x1 shortcut conv, which runs only where the
        channels change, so the published counts include it for every block; so do ours.
        """
        idle_shortcut = 0 if self.shortcut_conv else self.in_channels * self.out_channels
        return self.run_params() + idle_shortcut

    def run_params(self) -> int:
        """Parameters the forward pass reads (BN affine included, running stats excluded).

        What a latency feature wants: the idle shortcut conv is held but never read.
        """
        mid = self.mid_channels
        total = mid * self.kernel_size**2 + 2 * mid  # depthwise + BN
        total += mid * self.out_channels + 2 * self.out_channels  # projection + BN
        if self.has_expand:
            total += self.in_channels * mid + 2 * mid
        if self.use_se:
            total += 2 * mid * self.se_channels + self.se_channels + mid
        if self.shortcut_conv:
            total += self.in_channels * self.out_channels
        return total


@dataclass(frozen=True)
class HeadSpec:
    """Stem and head shapes of a subnet."""

    resolution: int
    stem_channels: int
    stem_stride: int
    stem_out_size: int
    last_stage_channels: int
    final_expand_channels: int
    final_size: int
    feature_channels: int
    num_classes: int

    def stem_flops(self) -> int:
        return 3 * 9 * self.stem_channels * self.stem_out_size**2

    def head_flops(self) -> int:
        expand = self.last_stage_channels * self.final_expand_channels * self.final_size**2
        return expand + self.final_expand_channels * self.feature_channels + self.feature_channels * self.num_classes

    def stem_params(self) -> int:
        return 3 * 9 * self.stem_channels + 2 * self.stem_channels

    def head_params(self) -> int:
        e, f = self.final_expand_channels, self.feature_channels
        return self.last_stage_channels * e + 2 * e + e * f + f * self.num_classes + self.num_classes


def block_specs(space: SearchSpace, config: SubnetConfig) -> list[BlockSpec]:
    """The active blocks of `config`, in order, with their input/output sizes."""
    size = conv_out_size(config.resolution, space.first_conv_stride)
    in_ch = config.width[0]
    blocks: list[BlockSpec] = []
    for s, stage in enumerate(space.stages):
        out_ch, k, t = config.width[s + 1], config.kernel_size[s], config.expand_ratio[s]
        for i in range(config.depth[s]):
            stride = stage.stride if i == 0 else 1
            mid = in_ch if t == 1 else make_divisible(round(in_ch * t))
            out_size = conv_out_size(size, stride)
            blocks.append(BlockSpec(
                stage=s, index=i, in_channels=in_ch, out_channels=out_ch, mid_channels=mid,
                kernel_size=k, stride=stride, expand_ratio=t, use_se=stage.use_se,
                se_channels=make_divisible(mid // SE_REDUCTION) if stage.use_se else 0,
                in_size=size, out_size=out_size, act=stage.act,
            ))
            in_ch, size = out_ch, out_size
    return blocks


def head_spec(space: SearchSpace, config: SubnetConfig, num_classes: int = 1000) -> HeadSpec:
    """Stem and head shapes of `config`."""
    stem_size = conv_out_size(config.resolution, space.first_conv_stride)
    size = stem_size
    for stage in space.stages:
        size = conv_out_size(size, stage.stride)
    return HeadSpec(
        resolution=config.resolution,
        stem_channels=config.width[0],
        stem_stride=space.first_conv_stride,
        stem_out_size=stem_size,
        last_stage_channels=config.width[7],
        final_expand_channels=make_divisible(config.width[7] * HEAD_EXPAND),
        final_size=size,
        feature_channels=config.width[8],
        num_classes=num_classes,
    )


def count_flops(space: SearchSpace, config: SubnetConfig, num_classes: int = 1000) -> int:
    """Multiply-adds at batch 1, as the official code counts them (divide by 1e6 for MFLOPs)."""
    head = head_spec(space, config, num_classes)
    return head.stem_flops() + head.head_flops() + sum(b.flops() for b in block_specs(space, config))


def count_params(space: SearchSpace, config: SubnetConfig, num_classes: int = 1000) -> int:
    """Parameters of the static subnet as the official counter reports them (BN affine included).

    A0..A6: 9.065, 9.563, 11.307, 12.999, 11.998, 12.833, 15.441 M.
    """
    head = head_spec(space, config, num_classes)
    return head.stem_params() + head.head_params() + sum(b.params() for b in block_specs(space, config))
