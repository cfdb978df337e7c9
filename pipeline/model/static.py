"""Static subnets: plain torch modules with fixed shapes, for export, compile and fine-tuning.

The structure mirrors the supernet's (stem, residual blocks of expand / depthwise (+SE) /
projection convs plus a shortcut, v3 head, classifier) and every shape comes from
`pipeline.space.arch`, so a static subnet is exactly what the analytic FLOPs count.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.model.layers import build_activation, init_weights, se_gate, shortcut_pool
from pipeline.space import SearchSpace, SubnetConfig
from pipeline.space.arch import BlockSpec, HeadSpec, block_specs, head_spec


class SqueezeExcite(nn.Module):
    """SE with its own 1x1 convs (bias on both)."""

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid_channels, 1)
        self.expand = nn.Conv2d(mid_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * se_gate(x, self.reduce, self.expand)


class ConvLayer(nn.Module):
    """conv -> [BN] -> [act] -> [SE]: every conv of the network (stem, block parts, head)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 depthwise: bool = False, use_bn: bool = True, act: str | None = None,
                 se_channels: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=in_channels if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels) if use_bn else None
        self.act = build_activation(act) if act else None
        self.se = SqueezeExcite(out_channels, se_channels) if se_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        if self.se is not None:
            x = self.se(x)
        return x


class MBConv(nn.Module):
    """Inverted bottleneck: [1x1 expand] -> kxk depthwise [+SE] -> 1x1 projection (no act)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.inverted_bottleneck = (
            ConvLayer(spec.in_channels, spec.mid_channels, act=spec.act) if spec.has_expand else None
        )
        self.depth_conv = ConvLayer(spec.mid_channels, spec.mid_channels, spec.kernel_size, spec.stride,
                                    depthwise=True, act=spec.act, se_channels=spec.se_channels)
        self.point_linear = ConvLayer(spec.mid_channels, spec.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class Shortcut(nn.Module):
    """Identity, or average pool where strided and a 1x1 conv (no BN) where channels change.

    Like the official `ShortcutLayer`, it always holds the 1x1 conv (idle when channels
    match): the official static subnet, and so the published parameter counts, have it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.changes_channels = in_channels != out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = shortcut_pool(x, self.stride)
        if self.changes_channels:
            x = self.conv(x)
        return x


class ResidualBlock(nn.Module):
    """MBConv plus shortcut; every block of the AttentiveNAS structure is residual."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.mobile_inverted_conv = MBConv(spec)
        self.shortcut = Shortcut(spec.in_channels, spec.out_channels, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mobile_inverted_conv(x) + self.shortcut(x)

    def zero_last_gamma(self) -> None:
        """Start as the shortcut alone (AttentiveNAS init)."""
        nn.init.zeros_(self.mobile_inverted_conv.point_linear.bn.weight)


class Head(nn.Module):
    """v3 head: 1x1 expand + BN + act, global pool, 1x1 conv (no BN) + act."""

    def __init__(self, head: HeadSpec, act: str) -> None:
        super().__init__()
        self.final_expand_layer = ConvLayer(head.last_stage_channels, head.final_expand_channels, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix_layer = ConvLayer(head.final_expand_channels, head.feature_channels,
                                           use_bn=False, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_mix_layer(self.pool(self.final_expand_layer(x)))


class StaticSubnet(nn.Module):
    """One subnet as an ordinary module; `config` records which one (inputs: N x 3 x r x r)."""

    def __init__(self, config: SubnetConfig, first_conv: ConvLayer, blocks: list[ResidualBlock],
                 last_conv: Head, classifier: nn.Linear) -> None:
        super().__init__()
        self.config = config
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.last_conv = last_conv
        self.classifier = classifier

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.last_conv(x)
        return self.classifier(torch.flatten(x, 1))


def skeleton(space: SearchSpace, config: SubnetConfig, num_classes: int = 1000) -> StaticSubnet:
    """The static subnet of `config` with torch's default init (to be re-initialised or filled by extraction)."""
    space.validate(config)
    head = head_spec(space, config, num_classes)
    return StaticSubnet(
        config,
        ConvLayer(3, head.stem_channels, 3, head.stem_stride, act=space.first_conv_act),
        [ResidualBlock(spec) for spec in block_specs(space, config)],
        Head(head, space.last_conv_act),
        nn.Linear(head.feature_channels, num_classes),
    )


def build_static(space: SearchSpace, config: SubnetConfig, num_classes: int = 1000) -> StaticSubnet:
    """A freshly initialised static subnet of `config` (same structure as `Supernet.extract`)."""
    model = skeleton(space, config, num_classes)
    init_weights(model)
    for block in model.blocks:
        block.zero_last_gamma()
    return model
