"""Dynamic (weight-sharing) layers of the supernet, each able to fill its static twin.

A dynamic layer owns the largest tensor and runs a slice of it: a smaller width takes
the first channels, a smaller kernel the centre k x k. The input width is read from the
input tensor; the output width and kernel are passed in by the caller (the supernet,
from `pipeline.space.arch` specs), so no layer keeps hidden per-subnet state. Every
dynamic layer has a `copy_to(twin)` that copies the active slices into the matching
`pipeline.model.static` layer, whose shapes (built from the same specs) pick the slices.
Attribute names follow the official AttentiveNAS modules so that `state_dict()` keys
are the official ones (e.g. `blocks.3.mobile_inverted_conv.depth_conv.conv.conv.weight`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model import static
from pipeline.model.layers import build_activation, drop_connect, se_gate, shortcut_pool
from pipeline.space.arch import SE_REDUCTION, BlockSpec, HeadSpec, make_divisible


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


class DynamicConv2d(nn.Module):
    """A conv of up to `max_in` -> `max_out` channels and kernel `max_kernel` (no bias)."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int = 1, stride: int = 1,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = depthwise
        self.conv = nn.Conv2d(max_in, max_out, max_kernel, stride, max_kernel // 2,
                              groups=max_in if depthwise else 1, bias=False)

    def active_weight(self, in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
        """First channels, centre kernel_size x kernel_size of the largest kernel."""
        start = (self.conv.kernel_size[0] - kernel_size) // 2
        end = start + kernel_size
        if self.depthwise:
            return self.conv.weight[:out_channels, :, start:end, start:end]
        return self.conv.weight[:out_channels, :in_channels, start:end, start:end]

    def forward(self, x: torch.Tensor, out_channels: int, kernel_size: int) -> torch.Tensor:
        in_channels = x.size(1)
        if self.depthwise:
            out_channels = in_channels
        weight = self.active_weight(in_channels, out_channels, kernel_size)
        return F.conv2d(x, weight, None, self.stride, kernel_size // 2, 1,
                        in_channels if self.depthwise else 1)

    def copy_to(self, conv: nn.Conv2d) -> None:
        """Fill a static conv (whose shape fixes the slice) with the shared weights."""
        _copy(conv.weight, self.active_weight(conv.in_channels, conv.out_channels, conv.kernel_size[0]))


class DynamicBatchNorm2d(nn.Module):
    """BN over the first C channels; running statistics are updated in place through the slice."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c = self.bn, x.size(1)
        if c == bn.num_features:
            return bn(x)
        factor = 0.0
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                            bn.training or not bn.track_running_stats, factor, bn.eps)

    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            _copy(getattr(bn, name), getattr(self.bn, name)[:c])
        _copy(bn.num_batches_tracked, self.bn.num_batches_tracked)


class DynamicSE(nn.Module):
    """SE whose hidden width follows the input width (official `make_divisible(C // 4, 8)`)."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        mid = make_divisible(max_channels // SE_REDUCTION)
        self.fc = nn.ModuleDict({
            "reduce": nn.Conv2d(max_channels, mid, 1),
            "expand": nn.Conv2d(mid, max_channels, 1),
        })

    def _weights(self, channels: int, mid: int) -> tuple[torch.Tensor, ...]:
        reduce, expand = self.fc["reduce"], self.fc["expand"]
        return (reduce.weight[:mid, :channels], reduce.bias[:mid],
                expand.weight[:channels, :mid], expand.bias[:channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.size(1)
        rw, rb, ew, eb = self._weights(channels, make_divisible(channels // SE_REDUCTION))
        return x * se_gate(x, lambda y: F.conv2d(y, rw, rb), lambda y: F.conv2d(y, ew, eb))

    def copy_to(self, se: static.SqueezeExcite) -> None:
        targets = (se.reduce.weight, se.reduce.bias, se.expand.weight, se.expand.bias)
        for dst, src in zip(targets, self._weights(se.reduce.in_channels, se.reduce.out_channels)):
            _copy(dst, src)


class DynamicConvLayer(nn.Module):
    """Dynamic twin of `static.ConvLayer`: conv -> [BN] -> [act] -> [SE]."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int = 1, stride: int = 1,
                 depthwise: bool = False, use_bn: bool = True, act: str | None = None,
                 use_se: bool = False) -> None:
        super().__init__()
        self.conv = DynamicConv2d(max_in, max_out, max_kernel, stride, depthwise)
        self.bn = DynamicBatchNorm2d(max_out) if use_bn else None
        self.act = build_activation(act) if act else None
        self.se = DynamicSE(max_out) if use_se else None

    def forward(self, x: torch.Tensor, out_channels: int, kernel_size: int = 1) -> torch.Tensor:
        x = self.conv(x, out_channels, kernel_size)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        if self.se is not None:
            x = self.se(x)
        return x

    def copy_to(self, layer: static.ConvLayer) -> None:
        """Fill the static twin (whose shapes pick the slices) with the shared weights."""
        self.conv.copy_to(layer.conv)
        if self.bn is not None:
            self.bn.copy_to(layer.bn)
        if self.se is not None:
            self.se.copy_to(layer.se)


class DynamicMBConv(nn.Module):
    """Dynamic inverted bottleneck sized by the largest block spec of its position.

    The expand conv exists when the stage's largest expand ratio is not 1 and runs only
    for subnets whose ratio is not 1 (as `BlockSpec.has_expand`, which the FLOPs count).
    """

    def __init__(self, largest: BlockSpec) -> None:
        super().__init__()
        self.inverted_bottleneck = (
            DynamicConvLayer(largest.in_channels, largest.mid_channels, act=largest.act)
            if largest.has_expand else None
        )
        self.depth_conv = DynamicConvLayer(largest.mid_channels, largest.mid_channels, largest.kernel_size,
                                           largest.stride, depthwise=True, act=largest.act,
                                           use_se=largest.use_se)
        self.point_linear = DynamicConvLayer(largest.mid_channels, largest.out_channels)

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        if spec.has_expand:
            x = self.inverted_bottleneck(x, spec.mid_channels)
        x = self.depth_conv(x, spec.mid_channels, spec.kernel_size)
        return self.point_linear(x, spec.out_channels)

    def copy_to(self, mb: static.MBConv) -> None:
        if mb.inverted_bottleneck is not None:
            self.inverted_bottleneck.copy_to(mb.inverted_bottleneck)
        self.depth_conv.copy_to(mb.depth_conv)
        self.point_linear.copy_to(mb.point_linear)


class DynamicShortcut(nn.Module):
    """Shortcut whose 1x1 conv (always present, as in the official supernet) runs only when widths differ."""

    def __init__(self, max_in: int, max_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = DynamicConv2d(max_in, max_out)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        in_channels = x.size(1)
        if self.stride > 1:
            x = shortcut_pool(x, self.stride)
        if in_channels != out_channels:
            x = self.conv(x, out_channels, 1)
        return x

    def copy_to(self, shortcut: static.Shortcut) -> None:
        self.conv.copy_to(shortcut.conv)


class DynamicResidualBlock(nn.Module):
    """Official `MobileInvertedResidualBlock` over dynamic parts, with optional drop-connect."""

    def __init__(self, largest: BlockSpec) -> None:
        super().__init__()
        self.mobile_inverted_conv = DynamicMBConv(largest)
        self.shortcut = DynamicShortcut(largest.in_channels, largest.out_channels, largest.stride)
        self.drop_connect_rate = 0.0

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        residual = self.shortcut(x, spec.out_channels)
        x = self.mobile_inverted_conv(x, spec)
        identity = spec.stride == 1 and spec.in_channels == spec.out_channels
        if self.training and self.drop_connect_rate > 0 and identity:
            x = drop_connect(x, self.drop_connect_rate)
        return x + residual

    def copy_to(self, block: static.ResidualBlock) -> None:
        self.mobile_inverted_conv.copy_to(block.mobile_inverted_conv)
        self.shortcut.copy_to(block.shortcut)

    def zero_last_gamma(self) -> None:
        nn.init.zeros_(self.mobile_inverted_conv.point_linear.bn.bn.weight)


class DynamicHead(nn.Module):
    """Dynamic v3 head (official key prefix `last_conv.`)."""

    def __init__(self, largest: HeadSpec, act: str) -> None:
        super().__init__()
        self.final_expand_layer = DynamicConvLayer(largest.last_stage_channels,
                                                   largest.final_expand_channels, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix_layer = DynamicConvLayer(largest.final_expand_channels, largest.feature_channels,
                                                  use_bn=False, act=act)

    def forward(self, x: torch.Tensor, head: HeadSpec) -> torch.Tensor:
        x = self.pool(self.final_expand_layer(x, head.final_expand_channels))
        return self.feature_mix_layer(x, head.feature_channels)

    def copy_to(self, head: static.Head) -> None:
        self.final_expand_layer.copy_to(head.final_expand_layer)
        self.feature_mix_layer.copy_to(head.feature_mix_layer)


class DynamicLinear(nn.Module):
    """A Linear over the first `in_features` inputs (all outputs)."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(max_in, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear.weight[:, :x.size(1)], self.linear.bias)


class DynamicClassifier(nn.Module):
    """Dropout + dynamic Linear (official key prefix `classifier.linear.linear.`)."""

    def __init__(self, max_in: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.linear = DynamicLinear(max_in, num_classes)
        self.dropout_rate = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_rate > 0:
            x = F.dropout(x, self.dropout_rate)
        return self.linear(x)

    def copy_to(self, linear: nn.Linear) -> None:
        _copy(linear.weight, self.linear.linear.weight[:, :linear.in_features])
        _copy(linear.bias, self.linear.linear.bias)
