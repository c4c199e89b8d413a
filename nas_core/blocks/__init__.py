"""Block registry: the modular building blocks candidate networks are assembled from, plus the adapters between them.

Every block is an ``nn.Module`` built from an input :class:`Shape` and keyword parameters, and knows
its output shape without running. Adding a block is one file with one ``@register_block("name")`` class
(see ``docs/extending.md``); the search spaces, the assembler and the dashboard pick it up from
:func:`list_blocks`. One file per family here: ``conv``, ``mobile``, ``dilated``, ``attention``, ``pool``,
and the ``adapters`` the assembler inserts; the protocol and registry are in ``base``.
"""

from __future__ import annotations

# ruff: noqa: I001 - the import order is the registration order (how `moca blocks` lists them)
from nas_core.blocks.base import (
    ACTIVATIONS,
    BLOCKS,
    IMAGE,
    TOKENS,
    Block,
    Shape,
    get_block,
    list_blocks,
    make_activation,
    register_block,
)
from nas_core.blocks.conv import ConvBlock, ResidualBlock
from nas_core.blocks.mobile import MBConvBlock, SepConvBlock, SqueezeExcite
from nas_core.blocks.dilated import DilatedConvBlock
from nas_core.blocks.attention import AttentionBlock
from nas_core.blocks.pool import IdentityBlock, PoolBlock
from nas_core.blocks.adapters import ChannelAdapter, ReduceAdapter, ToImage, ToTokens

__all__ = [
    "Shape",
    "Block",
    "BLOCKS",
    "ACTIVATIONS",
    "IMAGE",
    "TOKENS",
    "register_block",
    "get_block",
    "list_blocks",
    "make_activation",
    "ChannelAdapter",
    "ReduceAdapter",
    "ToTokens",
    "ToImage",
    "ConvBlock",
    "ResidualBlock",
    "SepConvBlock",
    "SqueezeExcite",
    "MBConvBlock",
    "DilatedConvBlock",
    "AttentionBlock",
    "PoolBlock",
    "IdentityBlock",
]
