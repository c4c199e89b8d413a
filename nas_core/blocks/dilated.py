"""The dilated convolution block: a wider receptive field for the same parameters."""

from __future__ import annotations

from typing import Any

import torch

from nas_core.blocks.base import Block, Shape, _conv_bn_act, register_block


@register_block("dilated")
class DilatedConvBlock(Block):
    description = "dilated convolution: a wider receptive field for the same parameters"
    defaults = {"out_channels": 32, "kernel": 3, "dilation": 2, "stride": 1, "activation": "relu"}
    stage_params = ("out_channels", "kernel", "activation")  # dilation keeps the resolution by design: no stride

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        p = self.resolve(params)
        self.body = _conv_bn_act(
            in_shape.c, p["out_channels"], p["kernel"], p["stride"], p["activation"], dilation=p["dilation"]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
