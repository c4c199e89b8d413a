"""Mobile blocks: depthwise-separable convolution and the inverted residual (MBConv) with squeeze-excitation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas_core.blocks.base import Block, Shape, _conv_bn_act, register_block


@register_block("sepconv")
class SepConvBlock(Block):
    description = "depthwise-separable convolution (depthwise k x k, then pointwise 1x1)"
    defaults = {"out_channels": 32, "kernel": 3, "stride": 1, "activation": "relu"}

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        p = self.resolve(params)
        self.body = nn.Sequential(
            _conv_bn_act(in_shape.c, in_shape.c, p["kernel"], p["stride"], p["activation"], groups=in_shape.c),
            _conv_bn_act(in_shape.c, p["out_channels"], 1, 1, p["activation"]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


@register_block("mbconv")
class MBConvBlock(Block):
    description = "inverted residual (MobileNetV2/EfficientNet) with optional squeeze-excitation"
    defaults = {"out_channels": 32, "kernel": 3, "stride": 1, "expansion": 4, "se": False, "activation": "relu"}
    search_params = {"expansion": (2, 4, 6), "se": (False, True)}

    @classmethod
    def label_parts(cls, params: dict[str, Any]) -> list[str]:
        return [*super().label_parts(params), f"e{params.get('expansion', 4)}" + ("+se" if params.get("se") else "")]

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        p = self.resolve(params)
        cin, cout = in_shape.c, p["out_channels"]
        hidden = cin * p["expansion"]
        layers: list[nn.Module] = []
        if p["expansion"] != 1:
            layers.append(_conv_bn_act(cin, hidden, 1, 1, p["activation"]))
        layers.append(_conv_bn_act(hidden, hidden, p["kernel"], p["stride"], p["activation"], groups=hidden))
        if p["se"]:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.use_residual = p["stride"] == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out
