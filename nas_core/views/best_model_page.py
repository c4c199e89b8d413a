"""The Best Model page's logic: the Pareto table and picks, a trial's config and details, the architecture diagram,
layer table, confusion and per-class figures, weights and exports, retrain jobs and the module library.

Part of :mod:`nas_core.views` (no Streamlit import); the pages reach it as ``nas_core.views.<name>``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas_core.errors import ConfigError
from nas_core.jobs import RetrainJob, get_retrain, start_retrain  # noqa: F401 - the pages call them here
from nas_core.schema.config import Architecture, ModelConfig
from nas_core.views.studies import _complete, _per_state, _trials, proxy_name
from nas_core.workspace import study_dir

log = logging.getLogger(__name__)

__all__ = ["PICK_LABELS", "pareto_frame", "complete_trials", "trial_config", "trial_details", "architecture_dot", "layer_table", "confusion_figure", "per_class_frame", "per_class_figure", "format_ms", "trial_weights", "onnx_available", "network_exporters", "export_bytes", "config_json", "jsonable_params", "library_frame"]


# --- Best Model page -----------------------------------------------------------------------------

PICK_LABELS = {
    "best_accuracy": "Best accuracy",
    "fastest_within_1pt": "Fastest within 1 point",
    "knee": "Knee / balanced",
    "smallest": "Smallest",
}


@_per_state
def pareto_frame(study: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    """(Pareto table, {pick name: trial number}) using :func:`nas_core.pareto.pick_points`."""
    from nas_core.results.pareto import pick_points
    from nas_core.results.tables import pareto_rows

    trials, metrics = pareto_rows(study)
    if not trials:
        return pd.DataFrame(), {}
    picks = {k: trials[i].number for k, i in pick_points(metrics).items()}
    rows = []
    for t, m in zip(trials, metrics):
        tags = [PICK_LABELS[k] for k, n in picks.items() if n == t.number]
        rows.append({
            "trial": t.number, "pick": ", ".join(tags), "val_accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"),
            "macro_f1": m.get("macro_f1"), "latency_ms": m.get("latency_ms"), "params": m.get("params"), "flops": m.get("flops"),
            "architecture": t.user_attrs.get("summary", ""),
        })
    return pd.DataFrame(rows), picks


@_per_state
def complete_trials(study: Any) -> list[int]:
    """Numbers of the complete trials that carry a config (any of them can be opened on Best Model)."""
    return [t.number for t in _complete(study) if "config" in t.user_attrs]


def _trial(study: Any, number: int) -> Any:
    for t in _trials(study):
        if t.number == number:
            return t
    raise ConfigError(f"study {study.study_name!r} has no trial {number}; pick one of {complete_trials(study)}.")


def trial_config(study: Any, number: int) -> ModelConfig:
    """The downloadable config of a complete trial (validated like any JSON config)."""
    t = _trial(study, number)
    if "config" not in t.user_attrs:
        raise ConfigError(f"trial {number} of {study.study_name!r} is {t.state.name} and has no config; pick a complete trial.")
    return ModelConfig.from_dict(t.user_attrs["config"])


def trial_details(study: Any, number: int) -> dict[str, Any]:
    """Metrics, latency measurement, confusion matrix, per-class accuracy and history of a trial."""
    t = _trial(study, number)
    a = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name,
        "summary": a.get("summary", ""),
        "metrics": dict(a.get("metrics", {})),
        "latency": dict(a.get("latency", {})),
        "confusion": a.get("confusion") or [],
        "per_class_accuracy": a.get("per_class_accuracy") or [],
        "history": a.get("history") or [],
        "mlflow_run_id": a.get("mlflow_run_id", ""),
        "params": dict(t.params),
        "duplicate_of": a.get("duplicate_of"),
        # "trained" unless a proxy-ranked study's trial never got past its proxy phase (no final_accuracy)
        "accuracy_source": "proxy" if proxy_name(study) and "final_accuracy" not in a.get("metrics", {}) else "trained",
    }


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _spec_text(spec: Any) -> str:
    if spec is None:
        return ""
    keep = {k: v for k, v in spec.params.items() if k not in ("activation",)}
    return ", ".join(f"{k}={v}" for k, v in sorted(keep.items()))


def architecture_dot(arch: Architecture) -> str:
    """Graphviz DOT of the network: input, every block and adapter (dashed) with output shape, then the head."""
    from nas_core.model.assembly import plan

    layers = plan(arch)
    c, h, w = arch.input_shape
    lines = [
        "digraph moca {",
        '  rankdir=TB; nodesep=0.25; ranksep=0.25;',
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
        '  edge [color="#555555", arrowsize=0.6];',
        f'  input [label="input\\n{c}x{h}x{w}", shape=oval, fillcolor="#dde8d5"];',
    ]
    prev = "input"
    for i, info in enumerate(layers):
        node = f"l{i}"
        detail = _spec_text(info.spec)
        label = f"{info.name}: {info.kind}" + (f"\\n{_dot_escape(detail)}" if detail else "") + f"\\n→ {info.out_shape}"
        style = ', style="rounded,dashed,filled", fillcolor="#fff4e0"' if info.adapter else ""
        if info.spec is not None and info.spec.library_id:
            label += "\\nlibrary block (pretrained)"
            style = ', fillcolor="#e8defa"'
        lines.append(f'  {node} [label="{label}"{style}];')
        lines.append(f"  {prev} -> {node};")
        prev = node
    head = arch.head
    pool = "global avg pool" if head.pool == "avg" or (layers and layers[-1].out_shape.layout != "image") else "flatten"
    lines.append(f'  pool [label="{pool}", fillcolor="#f3f3f3"];')
    lines.append(f"  {prev} -> pool;")
    prev = "pool"
    for j, units in enumerate(head.hidden):
        lines.append(f'  fc{j} [label="linear {units} + {head.activation}' + (f'\\ndropout {head.dropout:.2f}' if head.dropout else "") + '", fillcolor="#f3f3f3"];')
        lines.append(f"  {prev} -> fc{j};")
        prev = f"fc{j}"
    lines.append(f'  out [label="linear → {arch.num_classes} classes", shape=oval, fillcolor="#dde8d5"];')
    lines.append(f"  {prev} -> out;")
    lines.append("}")
    return "\n".join(lines)


def layer_table(arch: Architecture) -> pd.DataFrame:
    """One row per body layer plus the head: kind, details, input/output shape, parameters and FLOPs (batch 1).

    Memoised per architecture (building the network and counting its FLOPs is most of a Best Model rerun); a copy is returned.
    """
    return _layer_table(json.dumps(arch.to_dict(), sort_keys=True)).copy()


@functools.lru_cache(maxsize=64)
def _layer_table(arch_json: str) -> pd.DataFrame:
    arch = Architecture.from_dict(json.loads(arch_json))
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from nas_core.model.assembly import assemble

    model = assemble(arch).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *arch.input_shape))
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    rows = []
    for i, info in enumerate(model.layers_info):
        rows.append({
            "layer": info.name, "kind": info.kind + (" (adapter)" if info.adapter else ""), "details": _spec_text(info.spec),
            "input": str(info.in_shape), "output": str(info.out_shape),
            "params": sum(p.numel() for p in model.body[i].parameters()), "flops": int(flops.get(f"{root}.body.{i}", 0)),
        })
    head = arch.head
    rows.append({
        "layer": "head", "kind": "classifier", "details": f"{head.pool}" + "".join(f" > {u}" for u in head.hidden) + f" > {arch.num_classes}",
        "input": str(model.layers_info[-1].out_shape), "output": str(arch.num_classes),
        "params": sum(p.numel() for p in model.head.parameters()), "flops": int(flops.get(f"{root}.head", 0)),
    })
    df = pd.DataFrame(rows)
    total = {"layer": "total", "kind": "", "details": "", "input": "", "output": "", "params": int(df["params"].sum()),
             "flops": int(flops.get("Global", df["flops"].sum()))}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str] = ()) -> Any:
    """Confusion-matrix heatmap (rows: true class, columns: predicted)."""
    import plotly.express as px

    cm = np.asarray(confusion, dtype=int)
    labels = [str(c) for c in classes] if len(classes) == len(cm) else [str(i) for i in range(len(cm))]
    fig = px.imshow(cm, x=labels, y=labels, text_auto=True, color_continuous_scale="Blues", aspect="auto",
                    labels={"x": "predicted", "y": "true", "color": "samples"})
    fig.update_layout(title="Confusion matrix (test split)", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def per_class_frame(per_class: Sequence[float], classes: Sequence[str] = ()) -> pd.DataFrame:
    labels = [str(c) for c in classes] if len(classes) == len(per_class) else [str(i) for i in range(len(per_class))]
    return pd.DataFrame({"class": labels, "accuracy": [float(v) for v in per_class]})


def per_class_figure(per_class: Sequence[float], classes: Sequence[str] = ()) -> Any:
    """Per-class test accuracy as bars on a fixed 0-1 axis (an auto-scaled axis ran to 1.6 and made 1.0 look low)."""
    import plotly.graph_objects as go

    df = per_class_frame(per_class, classes)
    fig = go.Figure(go.Bar(x=df["class"], y=df["accuracy"], marker_color="#1f77b4",
                           hovertemplate="class %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title="Per-class accuracy (test split)", height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title="class", yaxis_title="accuracy")
    fig.update_xaxes(type="category")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return fig


def format_ms(value: Any) -> str:
    """A latency in ms with 3 significant digits ("0.336 ms", "35.6 ms"): short enough for a metric tile."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if value >= 100:
        return f"{value:,.0f} ms"
    return f"{value:.3g} ms" if value >= 1 else f"{value:.3f} ms"


def trial_weights(workspace: str | Path, study: str, number: int) -> Path | None:
    """The trained weights of a trial (``<study>/weights/trial_N.safetensors``) if the search saved them."""
    path = study_dir(workspace, study) / "weights" / f"trial_{number}.safetensors"
    return path if path.is_file() else None


def onnx_available() -> bool:
    from nas_core.deploy.exporters import get_exporter

    return get_exporter("onnx").available() is None


def network_exporters() -> list[Any]:
    """The registered exporters that write a runnable network (the Best Model page offers each as a download)."""
    from nas_core.deploy.exporters import EXPORTERS

    return [EXPORTERS.get(name) for name in EXPORTERS.names() if not EXPORTERS.get(name).weights_only]


def export_bytes(config: ModelConfig, fmt: str, *, weights: str | Path | None = None) -> bytes:
    """The network in format ``fmt`` as bytes (through :func:`nas_core.deploy.export_model`)."""
    from nas_core.deploy.exporters import export_model, get_exporter

    with tempfile.TemporaryDirectory(prefix="moca-export-") as tmp:
        out = export_model(config, fmt=fmt, out=Path(tmp) / f"model{get_exporter(fmt).suffix}", weights=weights)
        return out.read_bytes()


# --- retrain jobs: nas_core.jobs (one background-job class for searches and retrains) --------------------

def config_json(config: ModelConfig) -> str:
    return config.to_json()


def jsonable_params(params: dict[str, Any]) -> str:
    return json.dumps(params, indent=2, default=str)


def library_frame(workspace: str | Path) -> pd.DataFrame:
    """The module library of the workspace as a table (empty when none has been built yet)."""
    from nas_core.library import library_dir, library_rows

    if not library_dir(workspace).exists():
        return pd.DataFrame()
    return pd.DataFrame(library_rows(workspace))
