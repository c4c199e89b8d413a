"""Convolution blocks: conv + BN + activation, and the two-conv residual block."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas_core.blocks.base import Block, Shape, _conv_bn_act, make_activation, register_block


@register_block("conv")
class ConvBlock(Block):
    description = "convolution + batch norm + activation"
    defaults = {"out_channels": 32, "kernel": 3, "stride": 1, "activation": "relu"}

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        p = self.resolve(params)
        self.body = _conv_bn_act(in_shape.c, p["out_channels"], p["kernel"], p["stride"], p["activation"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_block("residual")
class ResidualBlock(Block):
    description = "two convolutions with an identity (or 1x1 projection) shortcut"
    defaults = {"out_channels": 32, "kernel": 3, "stride": 1, "activation": "relu"}

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        p = self.resolve(params)
        cout, k = p["out_channels"], p["kernel"]
        self.conv1 = _conv_bn_act(in_shape.c, cout, k, p["stride"], p["activation"])
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if p["stride"] != 1 or in_shape.c != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_shape.c, cout, 1, stride=p["stride"], bias=False), nn.BatchNorm2d(cout)
            )
        self.act = make_activation(p["activation"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))
