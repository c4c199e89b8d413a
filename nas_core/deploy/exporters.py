"""Export a config's network to a deployment format: TorchScript, ONNX, safetensors."""

from __future__ import annotations

from pathlib import Path

from nas_core.deploy.config import build_model, load_config
from nas_core.errors import ExportError
from nas_core.model.weights import save_weights
from nas_core.schema.config import ModelConfig

EXPORT_FORMATS = ("torchscript", "onnx", "safetensors")


def export_model(config: ModelConfig | str | Path, *, fmt: str, out: str | Path, weights: str | Path | None = None) -> Path:
    """Write the network as TorchScript, ONNX (checked with onnxruntime when installed) or safetensors weights."""
    import torch

    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}.")
    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    model = build_model(cfg, weights=weights).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *cfg.architecture.input_shape)
    if fmt == "safetensors":
        return save_weights(model, out)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(out))
        return out
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the optional package onnx: pip install onnx onnxruntime") from None
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(out), dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    except Exception as exc:  # noqa: BLE001 - exporter failures vary by torch version; report in one line
        raise ExportError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); TorchScript export still works.") from None
    try:
        import numpy as np
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        x = torch.randn(2, *cfg.architecture.input_shape)
        got = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        if not np.allclose(got, want, atol=1e-3, rtol=1e-3):
            raise ExportError("ONNX export does not reproduce the PyTorch outputs (max diff "
                              f"{float(np.abs(got - want).max()):.2e}); use TorchScript instead.")
    except ImportError:
        pass
    return out
