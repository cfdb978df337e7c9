"""The AttentiveNAS weight-sharing supernet.

Structure and `state_dict()` key names are the official ones (see
../shared/attentivenas/README.md), so the released checkpoint loads after stripping
`module.`. Shapes come from `pipeline.space.arch` applied to the space's largest config
(every choice at its maximum gives every tensor's full size); the active subnet's shapes
come from the same functions applied to the active config.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from pipeline.model.dynamic import DynamicClassifier, DynamicConvLayer, DynamicHead, DynamicResidualBlock
from pipeline.model.layers import init_weights
from pipeline.model.static import StaticSubnet, skeleton
from pipeline.space import SearchSpace, SubnetConfig
from pipeline.space.arch import block_specs, head_spec


class Supernet(nn.Module):
    """Dynamic supernet: `set_active(config)` then `forward(x)` runs that subnet (any input size).

    `dropout` (before the classifier) and `drop_connect` (on identity blocks of the last
    two stages, growing with depth as in the official code) act in training mode only;
    `set_dropout_rate` changes them, e.g. to switch them off for the sandwich rule's
    non-largest subnets.
    """

    def __init__(self, space: SearchSpace, num_classes: int = 1000, dropout: float = 0.2,
                 drop_connect: float = 0.2) -> None:
        super().__init__()
        # the space labelled with this supernet's dataset (its head): a space saved in an
        # older checkpoint, or loaded for another head, would otherwise time a wrong head
        self.space = replace(space, num_classes=num_classes)
        self.num_classes = num_classes
        largest = space.largest()
        head = head_spec(space, largest, num_classes)
        specs = block_specs(space, largest)
        # Global block index of each stage's first block (stages hold max(depth) blocks).
        self._stage_start = [sum(max(s.depths) for s in space.stages[:i]) for i in range(len(space.stages))]

        self.first_conv = DynamicConvLayer(3, head.stem_channels, 3, head.stem_stride, act=space.first_conv_act)
        self.blocks = nn.ModuleList(DynamicResidualBlock(spec) for spec in specs)
        self.last_conv = DynamicHead(head, space.last_conv_act)
        self.classifier = DynamicClassifier(head.feature_channels, num_classes, dropout)

        init_weights(self)
        for block in self.blocks:
            block.zero_last_gamma()
        self.set_dropout_rate(dropout, drop_connect)
        self.set_active(largest)

    # ------------------------------------------------------------------ subnet
    def set_active(self, config: SubnetConfig) -> None:
        """Make `config` (validated against the space) the subnet that `forward` runs."""
        self.space.validate(config)
        self._config = config
        self._specs = block_specs(self.space, config)
        self._head = head_spec(self.space, config, self.num_classes)

    @property
    def active_config(self) -> SubnetConfig:
        return self._config

    def set_dropout_rate(self, dropout: float, drop_connect: float) -> None:
        """Official schedule: drop-connect `drop_connect * index / num_blocks` in the last two stages."""
        self.classifier.dropout_rate = dropout
        last_two = self._stage_start[-2]
        for index, block in enumerate(self.blocks):
            block.drop_connect_rate = drop_connect * index / len(self.blocks) if index >= last_two else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x, self._head.stem_channels, 3)
        for spec in self._specs:
            x = self.blocks[self._stage_start[spec.stage] + spec.index](x, spec)
        x = self.last_conv(x, self._head)
        return self.classifier(torch.flatten(x, 1))

    # -------------------------------------------------------------- extraction
    def extract(self, config: SubnetConfig) -> StaticSubnet:
        """A static module of `config` with copied weights, in eval mode.

        Its output equals this supernet's with `config` active in eval mode.
        """
        subnet = skeleton(self.space, config, self.num_classes)
        self.first_conv.copy_to(subnet.first_conv)
        for spec, block in zip(block_specs(self.space, config), subnet.blocks):
            self.blocks[self._stage_start[spec.stage] + spec.index].copy_to(block)
        self.last_conv.copy_to(subnet.last_conv)
        self.classifier.copy_to(subnet.classifier)
        return subnet.eval()
