"""Block registry: the modular building blocks candidate networks are assembled from, plus the adapters between them.

Every block is an ``nn.Module`` built from an input :class:`Shape` and keyword parameters, and knows
its output shape without running. Adding a block is one class with ``@register_block("name")``;
the search spaces, the assembler and the dashboard pick it up from :func:`list_blocks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from nas_core.errors import ConfigError
from nas_core.registry import Registry

__all__ = [
    "Shape",
    "Block",
    "BLOCKS",
    "ACTIVATIONS",
    "register_block",
    "get_block",
    "list_blocks",
    "make_activation",
    "ChannelAdapter",
    "ReduceAdapter",
    "ToTokens",
    "ToImage",
]

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
