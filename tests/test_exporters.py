"""Conformance of every registered exporter (suffix, mime type, availability, a written file that loads back)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nas_core.deploy.exporters import EXPORTERS, Exporter, export_model, register_exporter
from nas_core.errors import ExportError
from nas_core.schema import Architecture, BlockSpec, DatasetRef, ModelConfig, TrainingRecipe

NAMES = EXPORTERS.names()


def _config() -> ModelConfig:
    arch = Architecture((1, 8, 8), 10, ((BlockSpec("conv", {"out_channels": 8}),),))
    return ModelConfig(dataset=DatasetRef(name="digits", input_shape=(1, 8, 8), num_classes=10, classes=tuple("0123456789")),
                       architecture=arch, training=TrainingRecipe())


def test_the_built_ins_are_registered() -> None:
    assert NAMES[:3] == ["torchscript", "onnx", "safetensors"]


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name: str) -> None:
    exporter = EXPORTERS.get(name)
    assert isinstance(exporter, Exporter) and exporter.name == name
    assert exporter.label and exporter.suffix.startswith(".") and "/" in exporter.mime
    problem = exporter.available()
    assert problem is None or (isinstance(problem, str) and exporter.install_hint in problem)


@pytest.mark.parametrize("name", NAMES)
def test_export_writes_a_file_that_loads_back(name: str, tmp_path: Path) -> None:
    import torch

    exporter = EXPORTERS.get(name)
    if exporter.available():
        pytest.skip(exporter.available() or "")
    out = export_model(_config(), fmt=name, out=tmp_path / f"model{exporter.suffix}")
    assert out.is_file() and out.stat().st_size > 0
    if name == "torchscript":
        assert torch.jit.load(str(out))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    if name == "safetensors":
        from nas_core.deploy import build_model

        build_model(_config(), weights=out)  # a weights file fits the network it came from


def test_an_unavailable_exporter_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EXPORTERS, "_entries", dict(EXPORTERS._entries))  # the registration below is undone after the test

    @register_exporter("needs-nothing-installed")
    class Missing(Exporter):
        label = "Missing"
        requires = ("no_such_package_here",)
        install_hint = "pip install no-such-package"

        def write(self, model: Any, example: Any, out: Path) -> Path:
            raise AssertionError("never called")

    with pytest.raises(ExportError, match="pip install no-such-package"):
        export_model(_config(), fmt="needs-nothing-installed", out=tmp_path / "m.bin")
    with pytest.raises(ExportError, match="unknown export format 'tflite'; use one of torchscript, onnx, safetensors"):
        export_model(_config(), fmt="tflite", out=tmp_path / "m.bin")
