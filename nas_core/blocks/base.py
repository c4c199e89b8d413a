"""The Block protocol and its registry: shapes, activations, and what every registered block declares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from nas_core.errors import ConfigError
from nas_core.registry import Registry

IMAGE = "image"
TOKENS = "tokens"


@dataclass(frozen=True)
class Shape:
    """A per-sample tensor shape. Tokens keep their grid (h, w) so they can be folded back into an image."""

    layout: str
    c: int
    h: int
    w: int

    @property
    def tokens(self) -> int:
        return self.h * self.w

    def as_tuple(self) -> tuple[int, ...]:
        return (self.c, self.h, self.w) if self.layout == IMAGE else (self.h * self.w, self.c)

    def __str__(self) -> str:
        if self.layout == IMAGE:
            return f"{self.c}x{self.h}x{self.w}"
        return f"{self.h * self.w} tokens x {self.c}"


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_activation(name: str) -> nn.Module:
    key = str(name).lower().replace("_", "")
    if key not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[key]()


class Block(nn.Module):
    """Base of registered blocks: what a block is, what the search may vary, how it is named and bound to the library.

    Subclasses set ``layout_in``/``layout_out`` and ``defaults``; the rest has defaults that fit a
    convolution-like block. The modular search space, the architecture summary, the assembler and the
    cached fidelity's library binding read these declarations (no kind is special-cased there).
    """

    name: ClassVar[str] = ""
    layout_in: ClassVar[str] = IMAGE
    layout_out: ClassVar[str] = IMAGE
    defaults: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""
    # The stage-level values the modular space gives it (of out_channels, kernel, stride, activation).
    stage_params: ClassVar[tuple[str, ...]] = ("out_channels", "kernel", "stride", "activation")
    # Its own parameters the modular space samples per stage, with their choices (``stage_<param>`` in the space).
    search_params: ClassVar[dict[str, tuple[Any, ...]]] = {}
    # Whether a trained library block of this kind can stand in for it (a block without weights never binds).
    library_bindable: ClassVar[bool] = True
    # Takes whatever layout comes in (no adapter is inserted before it).
    keeps_layout: ClassVar[bool] = False

    @classmethod
    def label_parts(cls, params: dict[str, Any]) -> list[str]:
        """The short name of one configured block, as parts joined by "-" (``conv-64-k5-s2``)."""
        parts = [cls.name]
        if "out_channels" in params:
            parts.append(str(params["out_channels"]))
        if params.get("kernel", 3) != 3:
            parts.append(f"k{params['kernel']}")
        if params.get("stride", 1) == 2:
            parts.append("s2")
        return parts

    @classmethod
    def resolve(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults merged with ``params``; unknown parameters are an error naming the valid ones."""
        unknown = sorted(set(params) - set(cls.defaults) - {"in_channels"})
        if unknown:
            raise ConfigError(
                f"block {cls.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"valid parameters are: {', '.join(sorted(cls.defaults))}."
            )
        merged = {**cls.defaults, **params}
        for key in ("out_channels", "kernel", "stride", "expansion", "heads", "dilation", "mlp_ratio"):
            if key in merged and (not isinstance(merged[key], int) or isinstance(merged[key], bool) or merged[key] < 1):
                raise ConfigError(f"block {cls.name!r}: {key} must be a positive integer, but got {merged[key]!r}.")
        if "kernel" in merged and merged["kernel"] % 2 == 0 and cls.layout_in == IMAGE and "mode" not in merged:
            raise ConfigError(f"block {cls.name!r}: kernel must be odd (3, 5, 7), but got {merged['kernel']}.")
        if "activation" in merged:
            make_activation(merged["activation"])
        return merged

    @classmethod
    def output_shape(cls, in_shape: Shape, params: dict[str, Any]) -> Shape:
        p = cls.resolve(params)
        stride = p.get("stride", 1)
        c = p.get("out_channels", in_shape.c)
        return Shape(cls.layout_out, c, _down(in_shape.h, stride), _down(in_shape.w, stride))


def _down(size: int, stride: int) -> int:
    return max(1, math.ceil(size / stride))


BLOCKS: Registry[type[Block]] = Registry("block")


def register_block(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: register a :class:`Block` subclass under ``name``."""

    def decorator(cls: type[Block]) -> type[Block]:
        cls.name = name
        BLOCKS.add(name, cls)
        return cls

    return decorator


def get_block(name: str) -> type[Block]:
    return BLOCKS.get(name)


def list_blocks() -> list[str]:
    return BLOCKS.names()


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int, activation: str, *, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        make_activation(activation),
    )
