"""Every registered block runs forward on a tiny input with the shape it promises; adapters appear where needed."""

from __future__ import annotations

import pytest
import torch

from nas_core.assemble import MAX_TOKENS, assemble, plan
from nas_core.blocks import BLOCKS, IMAGE, TOKENS, Shape, get_block, list_blocks, register_block
from nas_core.errors import ConfigError, RegistryError
from nas_core.genotype import Architecture, BlockSpec, HeadSpec


def _input(cls: type, c: int = 3, h: int = 9, w: int = 9) -> tuple[Shape, torch.Tensor]:
    if cls.layout_in == TOKENS:
        return Shape(TOKENS, 16, 3, 3), torch.randn(2, 9, 16)
    return Shape(IMAGE, c, h, w), torch.randn(2, c, h, w)


@pytest.mark.parametrize("name", list_blocks())
@pytest.mark.parametrize("stride", [1, 2])
def test_every_block_forward_shape_and_finite(name: str, stride: int) -> None:
    cls = get_block(name)
    params = {"stride": stride} if "stride" in cls.defaults else {}
    shape, x = _input(cls)
    torch.manual_seed(0)
    y = cls(shape, **params)(x)
    want = cls.output_shape(shape, params)
    assert tuple(y.shape[1:]) == want.as_tuple()
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", [n for n in list_blocks() if get_block(n).layout_in == IMAGE])
def test_image_blocks_survive_a_1x1_map(name: str) -> None:
    cls = get_block(name)
    shape = Shape(IMAGE, 4, 1, 1)
    y = cls(shape)(torch.randn(2, 4, 1, 1))
    assert tuple(y.shape[1:]) == cls.output_shape(shape, {}).as_tuple()


def test_registry_refuses_duplicates_and_lists_valid_names() -> None:
    with pytest.raises(RegistryError, match="already registered"):
        register_block("conv")(type("Dup", (get_block("conv"),), {}))
    with pytest.raises(RegistryError, match="valid names are: .*attention.*conv"):
        get_block("convv")


def test_unknown_block_parameter_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="no parameter.*filters.*valid parameters are: activation, kernel, out_channels, stride"):
        get_block("conv").resolve({"filters": 3})


def test_even_kernel_is_refused() -> None:
    with pytest.raises(ConfigError, match="kernel must be odd"):
        get_block("conv").resolve({"kernel": 4})


def _arch(*blocks: BlockSpec, shape: tuple[int, int, int] = (1, 28, 28), head: HeadSpec = HeadSpec()) -> Architecture:
    return Architecture(input_shape=shape, num_classes=10, stages=(tuple(blocks),), head=head)


def test_assembler_inserts_token_adapters_and_reduces_large_grids() -> None:
    arch = _arch(BlockSpec("conv", {"out_channels": 8}), BlockSpec("attention", {"heads": 2}), BlockSpec("conv", {"out_channels": 4}))
    kinds = [layer.kind for layer in plan(arch)]
    assert kinds == ["conv", "reduce", "to_tokens", "attention", "to_image", "conv"]
    attention = [layer for layer in plan(arch) if layer.kind == "attention"][0]
    assert attention.in_shape.tokens <= MAX_TOKENS
    out = assemble(arch)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_assembler_adds_channel_adapter_for_pinned_blocks() -> None:
    arch = _arch(BlockSpec("conv", {"out_channels": 8}), BlockSpec("conv", {"out_channels": 16, "in_channels": 32}))
    layers = plan(arch)
    assert [layer.kind for layer in layers] == ["conv", "channel", "conv"]
    assert layers[1].out_shape.c == 32
    assert assemble(arch)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_flatten_head_matches_planned_shape() -> None:
    arch = _arch(BlockSpec("conv", {"out_channels": 8}), BlockSpec("pool", {}), BlockSpec("conv", {"out_channels": 4, "stride": 2}),
                 shape=(1, 9, 9), head=HeadSpec(pool="flatten", hidden=(16,), dropout=0.2))
    assert plan(arch)[-1].out_shape.as_tuple() == (4, 3, 3)
    assert assemble(arch)(torch.randn(3, 1, 9, 9)).shape == (3, 10)


def test_registered_block_is_a_one_file_change() -> None:
    @register_block("test-double")
    class Double(get_block("identity")):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    try:
        arch = _arch(BlockSpec("test-double"), BlockSpec("conv", {"out_channels": 4}), shape=(1, 8, 8))
        assert assemble(arch)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    finally:
        BLOCKS._entries.pop("test-double")


@pytest.mark.parametrize("name", list_blocks())
def test_every_block_declares_what_the_space_summary_and_library_read(name: str) -> None:
    """The Block protocol: stage values it takes, its own sampled parameters, its label, whether it binds to the library."""
    cls = get_block(name)
    assert cls.name == name and cls.description
    assert set(cls.stage_params) <= {"out_channels", "kernel", "stride", "activation"} and set(cls.stage_params) <= set(cls.defaults)
    for param, choices in cls.search_params.items():
        assert param in cls.defaults and choices, f"{name}.{param}: sampled parameters need a default and choices"
        for choice in choices:
            cls.resolve({param: choice})  # every choice the space may sample is a valid value
    label = BlockSpec(name, dict(cls.defaults)).label()
    assert isinstance(label, str) and label
    shape, x = _input(cls)
    n_weights = sum(p.numel() for p in cls(shape).parameters())
    assert cls.library_bindable == (n_weights > 0), "a block binds to a library block exactly when it has weights to load"
    if cls.keeps_layout:
        assert cls.output_shape(shape, {}).layout == shape.layout
