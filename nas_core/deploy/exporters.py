"""Export a config's network to a deployment format: the Exporter protocol, its registry, and TorchScript, ONNX, safetensors.

An exporter is one :class:`Exporter` subclass registered with :func:`register_exporter`; the CLI's
``export --format`` choices and the Best Model page's download buttons come from the registry.
"""

from __future__ import annotations

import abc
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nas_core.deploy.config import build_model, load_config
from nas_core.errors import ExportError
from nas_core.model.weights import save_weights
from nas_core.registry import Registry
from nas_core.schema.config import ModelConfig

__all__ = ["EXPORTERS", "EXPORT_FORMATS", "Exporter", "export_model", "get_exporter", "list_exporters", "register_exporter"]


class Exporter(abc.ABC):
    """One deployment format. Subclass it, set the class attributes, implement :meth:`write`.

    Example (one file; ``docs/extending.md`` runs it as a test)::

        @register_exporter("state-dict-npz")
        class Npz(Exporter):
            label = "NumPy arrays (.npz)"
            suffix = ".npz"

            def write(self, model, example, out):
                ...
    """

    name: str = ""  # set by register_exporter
    label: ClassVar[str] = ""  # the download button's text
    suffix: ClassVar[str] = ".bin"
    mime: ClassVar[str] = "application/octet-stream"
    requires: ClassVar[tuple[str, ...]] = ()  # optional packages it needs (import names)
    install_hint: ClassVar[str] = ""  # how to get them, e.g. "pip install onnx onnxruntime"
    weights_only: ClassVar[bool] = False  # writes the weights, not a runnable network

    def available(self) -> str | None:
        """None when this exporter can run here, else the reason and the fix."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if not missing:
            return None
        return f"{self.label or self.name} export needs the optional package{'s' if len(missing) > 1 else ''} {', '.join(missing)}" + (
            f": {self.install_hint}" if self.install_hint else "")

    @abc.abstractmethod
    def write(self, model: Any, example: Any, out: Path) -> Path:
        """Write ``model`` (eval mode; ``example`` is one input batch of zeros) to ``out``; return the written path."""


EXPORTERS: Registry[Exporter] = Registry("export format")
E = TypeVar("E", bound=type[Exporter])


def register_exporter(name: str) -> Callable[[E], E]:
    """Class decorator: register one instance of the Exporter subclass under ``name`` (a duplicate name is an error)."""
    return EXPORTERS.register_instance(name)


def list_exporters() -> list[str]:
    return EXPORTERS.names()


def get_exporter(name: str) -> Exporter:
    if name not in EXPORTERS:
        raise ExportError(f"unknown export format {name!r}; use one of {', '.join(EXPORTERS.names())}.")
    return EXPORTERS.get(name)


def export_model(config: ModelConfig | str | Path, *, fmt: str, out: str | Path, weights: str | Path | None = None) -> Path:
    """Write the network in format ``fmt`` (any name in :data:`EXPORTERS`) to ``out``."""
    import torch

    exporter = get_exporter(fmt)
    problem = exporter.available()
    if problem:
        raise ExportError(problem + ".")
    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    model = build_model(cfg, weights=weights).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *cfg.architecture.input_shape)
    return exporter.write(model, example, out)


@register_exporter("torchscript")
class TorchScript(Exporter):
    label = "TorchScript (.pt)"
    suffix = ".pt"

    def write(self, model: Any, example: Any, out: Path) -> Path:
        import torch

        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(out))
        return out


@register_exporter("onnx")
class Onnx(Exporter):
    """ONNX, checked against the PyTorch outputs with onnxruntime when that is installed."""

    label = "ONNX"
    suffix = ".onnx"
    requires = ("onnx",)
    install_hint = "pip install onnx onnxruntime"

    def write(self, model: Any, example: Any, out: Path) -> Path:
        import torch

        try:
            with torch.no_grad():
                torch.onnx.export(model, (example,), str(out), dynamo=False, input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
        except Exception as exc:  # noqa: BLE001 - exporter failures vary by torch version; report in one line
            raise ExportError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); TorchScript export still works.") from None
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError:
            return out
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        x = torch.randn(2, *example.shape[1:])
        got = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        if not np.allclose(got, want, atol=1e-3, rtol=1e-3):
            raise ExportError("ONNX export does not reproduce the PyTorch outputs (max diff "
                              f"{float(np.abs(got - want).max()):.2e}); use TorchScript instead.")
        return out


@register_exporter("safetensors")
class Safetensors(Exporter):
    label = "Weights (safetensors)"
    suffix = ".safetensors"
    weights_only = True

    def write(self, model: Any, example: Any, out: Path) -> Path:
        return save_weights(model, out)


# The built-in formats, under their old name (plug-ins appear in list_exporters()).
EXPORT_FORMATS = tuple(EXPORTERS.names())
