"""Blocks without weights: pooling and identity."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from nas_core.blocks.base import IMAGE, Block, Shape, register_block
from nas_core.errors import ConfigError


@register_block("pool")
class PoolBlock(Block):
    description = "max or average pooling (halves the resolution with the default 2x2 / stride 2)"
    defaults = {"mode": "max", "kernel": 2, "stride": 2}
    library_bindable = False  # no weights
    stage_params = ()  # a fixed 2x2 reduction, not a stage of the modular space

    @classmethod
    def label_parts(cls, params: dict[str, Any]) -> list[str]:
        return [f"{params.get('mode', 'max')}pool"]

    @classmethod
    def resolve(cls, params: dict[str, Any]) -> dict[str, Any]:
        p = super().resolve(params)
        if p["mode"] not in ("max", "avg"):
            raise ConfigError(f"block 'pool': mode must be 'max' or 'avg', but got {p['mode']!r}.")
        return p

    @staticmethod
    def _kernel(in_shape: Shape, p: dict[str, Any]) -> int:
        return min(p["kernel"], in_shape.h, in_shape.w)  # a 1x1 map passes through instead of failing

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        p = self.resolve(params)
        cls = nn.MaxPool2d if p["mode"] == "max" else nn.AvgPool2d
        self.pool = cls(self._kernel(in_shape, p), stride=p["stride"], ceil_mode=True)

    @classmethod
    def output_shape(cls, in_shape: Shape, params: dict[str, Any]) -> Shape:
        p = cls.resolve(params)
        k, s = cls._kernel(in_shape, p), p["stride"]
        return Shape(IMAGE, in_shape.c, math.ceil((in_shape.h - k) / s) + 1, math.ceil((in_shape.w - k) / s) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


@register_block("identity")
class IdentityBlock(Block):
    description = "no-op: lets a search skip a slot"
    defaults: ClassVar[dict[str, Any]] = {}
    library_bindable = False  # no weights
    keeps_layout = True
    stage_params = ()

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        self.resolve(params)

    @classmethod
    def output_shape(cls, in_shape: Shape, params: dict[str, Any]) -> Shape:
        cls.resolve(params)
        return in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


IdentityBlock.layout_in = IMAGE  # identity accepts images; the assembler passes tokens through it unchanged.


# --- adapters: inserted by the assembler where neighbours disagree -------------------------------
