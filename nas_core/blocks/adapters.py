"""Adapters the assembler inserts where shapes disagree: channel (1x1), reduce (pooling), image <-> tokens."""

from __future__ import annotations

import torch
from torch import nn


class ChannelAdapter(nn.Module):
    """1x1 convolution: matches the channel count a (pretrained) block expects."""

    kind = "channel"

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ReduceAdapter(nn.Module):
    """Average-pools the grid down to ``(h, w)``: keeps attention affordable and matches a block's input size."""

    kind = "reduce"

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class ToTokens(nn.Module):
    """Image (B, C, H, W) -> tokens (B, H*W, C), with a linear projection to ``dim``."""

    kind = "to_tokens"

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Linear(cin, dim) if cin != dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


class ToImage(nn.Module):
    """Tokens (B, H*W, C) -> image (B, C, H, W)."""

    kind = "to_image"

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.h, self.w)
