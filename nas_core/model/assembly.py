"""Architecture -> ``torch.nn.Module``, inserting adapters where neighbouring blocks disagree.

Rules the assembler enforces (the grammar of the modular space):
- a token block (attention) after image blocks gets a ``to_tokens`` adapter, and an image block after
  tokens gets ``to_image``;
- attention never sees more than ``MAX_TOKENS`` tokens: a ``reduce`` adapter pools the grid first;
- a block pinned to ``in_channels`` (a pretrained library block) gets a 1x1 ``channel`` adapter when
  the incoming width differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nas_core.blocks import IMAGE, TOKENS, ChannelAdapter, ReduceAdapter, Shape, ToImage, ToTokens, get_block, make_activation
from nas_core.schema.config import Architecture, BlockSpec

__all__ = ["MAX_TOKENS", "LayerInfo", "MocaNet", "assemble", "plan"]

MAX_TOKENS = 64


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table: name, what it is, shapes, and whether an adapter put it there."""

    name: str
    kind: str
    in_shape: Shape
    out_shape: Shape
    adapter: bool
    spec: BlockSpec | None = None


def plan(arch: Architecture) -> list[LayerInfo]:
    """The layer sequence (blocks and the adapters between them) with shapes, without building anything."""
    arch.validate()
    c, h, w = arch.input_shape
    shape = Shape(IMAGE, c, h, w)
    layers: list[LayerInfo] = []

    def add(name: str, kind: str, out: Shape, adapter: bool, spec: BlockSpec | None = None) -> None:
        nonlocal shape
        layers.append(LayerInfo(name, kind, shape, out, adapter, spec))
        shape = out

    for i, spec in enumerate(arch.blocks()):
        block = get_block(spec.kind)
        tag = "stem" if (arch.stem is not None and i == 0) else f"b{i}"
        want = block.layout_in
        if block.keeps_layout:
            want = shape.layout
        if want == TOKENS and shape.layout == IMAGE:
            if shape.tokens > MAX_TOKENS:
                side = int(math.sqrt(MAX_TOKENS))
                add(f"{tag}.reduce", "reduce", Shape(IMAGE, shape.c, min(shape.h, side), min(shape.w, side)), True)
            add(f"{tag}.to_tokens", "to_tokens", Shape(TOKENS, shape.c, shape.h, shape.w), True)
        elif want == IMAGE and shape.layout == TOKENS:
            add(f"{tag}.to_image", "to_image", Shape(IMAGE, shape.c, shape.h, shape.w), True)
        pinned = spec.params.get("in_channels")
        if pinned and pinned != shape.c and shape.layout == IMAGE:
            add(f"{tag}.channel", "channel", Shape(IMAGE, int(pinned), shape.h, shape.w), True)
        params = {k: v for k, v in spec.params.items() if k != "in_channels"}
        add(tag, spec.kind, block.output_shape(shape, params), False, spec)
    return layers


class MocaNet(nn.Module):
    """An assembled candidate: ``body`` (blocks + adapters, in order) then ``head``.

    ``features(x, upto=k)`` runs the first ``k`` body layers only: the cached fidelity uses it to
    compute a frozen prefix once and reuse it for every candidate that shares the prefix.
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.layers_info = plan(arch)
        self.body = nn.ModuleList()
        for info in self.layers_info:
            self.body.append(_build_layer(info))
        last = self.layers_info[-1].out_shape
        self.token_output = last.layout == TOKENS
        pool = arch.head.pool
        feat = last.c if (pool == "avg" or self.token_output) else last.c * last.h * last.w
        self.head_pool = "avg" if self.token_output else pool
        head: list[nn.Module] = []
        for hidden in arch.head.hidden:
            head += [nn.Linear(feat, hidden), make_activation(arch.head.activation)]
            if arch.head.dropout > 0:
                head.append(nn.Dropout(arch.head.dropout))
            feat = hidden
        if arch.head.dropout > 0 and not arch.head.hidden:
            head.append(nn.Dropout(arch.head.dropout))
        head.append(nn.Linear(feat, arch.num_classes))
        self.head = nn.Sequential(*head)
        self.feature_dim = feat

    def features(self, x: torch.Tensor, upto: int | None = None, start: int = 0) -> torch.Tensor:
        for layer in self.body[start:upto]:
            x = layer(x)
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_output:
            return x.mean(dim=1)
        if self.head_pool == "avg":
            return x.mean(dim=(2, 3))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _build_layer(info: LayerInfo) -> nn.Module:
    if info.kind == "reduce":
        return ReduceAdapter(info.out_shape.h, info.out_shape.w)
    if info.kind == "to_tokens":
        return ToTokens(info.in_shape.c, info.out_shape.c)
    if info.kind == "to_image":
        return ToImage(info.out_shape.h, info.out_shape.w)
    if info.kind == "channel":
        return ChannelAdapter(info.in_shape.c, info.out_shape.c)
    assert info.spec is not None
    params = {k: v for k, v in info.spec.params.items() if k != "in_channels"}
    return get_block(info.spec.kind)(info.in_shape, **params)


def assemble(arch: Architecture) -> MocaNet:
    """Build the network for ``arch`` (validated first; a broken rule raises ``ConfigError``)."""
    return MocaNet(arch)
