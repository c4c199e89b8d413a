"""Tests for nas_core.library: round trip, checksum and metadata refusal, build, CLI, loading into a config's network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas_core.blocks import Shape, get_block
from nas_core.cli import main as cli_main
from nas_core.errors import LibraryError
from nas_core.library import BlockMeta, Library, build_library, load_library_weights, open_library, save_block


def _save_conv(root: Path, cin: int = 1, cout: int = 8) -> BlockMeta:
    torch.manual_seed(0)
    shape = Shape("image", cin, 8, 8)
    params = get_block("conv").resolve({"out_channels": cout})
    block = get_block("conv")(shape, **params)
    with torch.no_grad():
        block.body[1].running_mean.uniform_(-1, 1)  # buffers must round-trip too
    return save_block(root, block, kind="conv", block_params=params, input_shape=shape,
                      output_shape=get_block("conv").output_shape(shape, params), source_dataset="digits", donor_accuracy=0.5)


def test_round_trip_gives_the_same_block(tmp_path: Path) -> None:
    meta = _save_conv(tmp_path)
    lib = Library(tmp_path)
    assert [m.id for m in lib.blocks()] == [meta.id]
    got = lib.get(meta.id)
    assert got == meta
    assert got.params == sum(p.numel() for p in got.build_empty().parameters()) and got.flops > 0 and got.latency_ms > 0
    data = json.loads((tmp_path / f"{meta.id}.json").read_text())
    for key in ("id", "kind", "block_params", "input_shape", "output_shape", "params", "flops", "latency_ms",
                "source_dataset", "donor_accuracy", "sha256", "library_version"):
        assert key in data
    torch.manual_seed(0)
    original = get_block("conv")(Shape("image", 1, 8, 8), **meta.block_params)
    original.load_state_dict(lib.load_state(meta.id))
    x = torch.randn(4, 1, 8, 8)
    loaded = lib.load_block(meta.id)
    original.eval()
    assert torch.equal(loaded(x), original(x))
    assert not any(p.suffix == ".pkl" for p in tmp_path.iterdir())


def test_tampered_weights_are_refused_by_sha256(tmp_path: Path) -> None:
    meta = _save_conv(tmp_path)
    path = tmp_path / f"{meta.id}.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(LibraryError, match="sha256"):
        Library(tmp_path).load_block(meta.id)


def test_config_sha256_must_match_the_library(tmp_path: Path) -> None:
    meta = _save_conv(tmp_path)
    with pytest.raises(LibraryError, match="rebuilt"):
        Library(tmp_path).load_state(meta.id, sha256="0" * 64)


@pytest.mark.parametrize(
    "edit, message",
    [
        pytest.param(lambda d: d.pop("sha256"), "missing", id="missing-key"),
        pytest.param(lambda d: d.update(kind="warp"), "unknown block", id="unknown-kind"),
        pytest.param(lambda d: d.update(block_params={"out_channels": -3}), "positive integer", id="bad-params"),
        pytest.param(lambda d: d.update(library_version=99), "newer", id="future-version"),
        pytest.param(lambda d: d.update(sha256="xyz"), "64 lowercase hex", id="bad-sha"),
        pytest.param(lambda d: d.update(input_shape=[1, 8, 8]), "input_shape", id="bad-shape"),
    ],
)
def test_malformed_metadata_is_refused_with_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    meta = _save_conv(tmp_path)
    path = tmp_path / f"{meta.id}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    lib = Library(tmp_path)
    assert meta.id not in lib and meta.id in lib.problems
    with pytest.raises(LibraryError, match=message):
        lib.get(meta.id)


def test_not_json_metadata_is_refused(tmp_path: Path) -> None:
    meta = _save_conv(tmp_path)
    (tmp_path / f"{meta.id}.json").write_text("{not json")
    with pytest.raises(LibraryError, match="not valid JSON"):
        Library(tmp_path).get(meta.id)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    build_library(dataset="digits", workspace=ws, minutes=0.02, train_samples=300, donors=("conv-a", "residual-a"), min_steps=10)
    return ws


def test_build_stores_every_donor_block_with_provenance(built: Path) -> None:
    lib = open_library(built)
    assert len(lib) == 22 and not lib.problems  # 2 donors x (stem + 10 chain blocks)
    kinds = {m.kind for m in lib.blocks()}
    assert kinds == {"conv", "residual"}
    for m in lib.blocks():
        assert m.source_dataset == "digits" and m.dataset_fingerprint and 0 <= m.donor_accuracy <= 1
        lib.load_block(m.id)  # every stored block verifies and loads


def test_cli_list_and_inspect(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["library", "list", "--workspace", str(built), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 22
    assert cli_main(["library", "inspect", rows[0]["id"], "--workspace", str(built)]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert cli_main(["library", "inspect", "nope", "--workspace", str(built)]) == 2
    assert capsys.readouterr().err.startswith("error: library block 'nope'")


def test_cli_inspect_refuses_a_tampered_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = _save_conv(tmp_path / "library")
    (tmp_path / "library" / f"{meta.id}.safetensors").write_bytes(b"\0" * 64)
    assert cli_main(["library", "inspect", meta.id, "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256" in err


def test_load_library_weights_into_a_bound_network(built: Path) -> None:
    from nas_core.assemble import assemble
    from nas_core.genotype import Architecture, BlockSpec

    lib = open_library(built)
    meta = next(m for m in lib.blocks() if m.kind == "residual" and m.in_channels != m.out_channels)
    spec = BlockSpec("residual", {**meta.block_params, "in_channels": meta.in_channels}, library_id=meta.id, sha256=meta.sha256)
    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 4}), spec),))

    class Cfg:
        architecture = arch

    model = assemble(arch)
    assert load_library_weights(model, Cfg, workspace=built) == 1
    layer = next(layer for info, layer in zip(model.layers_info, model.body) if info.spec is spec)
    for key, value in lib.load_state(meta.id).items():
        assert torch.equal(layer.state_dict()[key], value)
    with pytest.raises(LibraryError, match="no module library"):
        load_library_weights(model, Cfg, workspace=built / "elsewhere")


def test_library_rows_for_the_dashboard_table(tmp_path: Path) -> None:
    from nas_core.library import library_rows

    good = _save_conv(tmp_path / "library")
    bad = _save_conv(tmp_path / "library", cout=4)
    (tmp_path / "library" / f"{bad.id}.json").write_text("[]")
    rows = library_rows(tmp_path)
    assert [r["status"] for r in rows] == ["ok", rows[1]["status"]] and rows[1]["status"].startswith("refused")
    assert rows[0]["id"] == good.id and rows[0]["params"] == good.params
