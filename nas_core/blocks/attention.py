"""The attention block: a pre-norm transformer encoder layer over spatial tokens."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nas_core.blocks.base import TOKENS, Block, Shape, register_block


@register_block("attention")
class AttentionBlock(Block):
    description = "transformer encoder block: self-attention over spatial tokens + MLP (pre-norm)"
    layout_in = TOKENS
    layout_out = TOKENS
    defaults = {"heads": 4, "mlp_ratio": 2}
    stage_params = ()  # keeps its input's width and grid
    search_params = {"heads": (2, 4)}

    @classmethod
    def output_shape(cls, in_shape: Shape, params: dict[str, Any]) -> Shape:
        cls.resolve(params)
        return Shape(TOKENS, in_shape.c, in_shape.h, in_shape.w)

    def __init__(self, in_shape: Shape, **params: Any) -> None:
        super().__init__()
        p = self.resolve(params)
        dim = in_shape.c
        heads = math.gcd(dim, p["heads"])  # heads must divide the token width
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * p["mlp_ratio"]), nn.GELU(), nn.Linear(dim * p["mlp_ratio"], dim))
        self.pos = nn.Parameter(torch.zeros(1, in_shape.tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))
