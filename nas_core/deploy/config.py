"""The architecture JSON: provenance, a trial's config, load_config and build_model (rebuild anywhere)."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
from pathlib import Path
from typing import Any

from nas_core.errors import ConfigError
from nas_core.model.weights import load_weights
from nas_core.schema.config import Architecture, ModelConfig


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "optuna", "mlflow", "numpy", "scikit-learn", "streamlit"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    from nas_core import __version__

    out["moca-nas"] = __version__
    return tuple(out.items())


def package_versions() -> dict[str, str]:
    """Versions recorded in every config's provenance (read once: metadata lookups cost ~25 ms)."""
    return dict(_package_versions())


def trial_config(candidate: ModelConfig, *, metrics: dict[str, Any], latency: dict[str, Any], study: str, trial: int, seed: int,
                 fidelity: str, extra: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None) -> ModelConfig:
    """The downloadable config of one trial: metrics (with how latency was measured) and provenance filled in."""
    m = dict(metrics)
    m["latency_measurement"] = {k: v for k, v in latency.items() if k != "latency_ms"}
    m["flops_note"] = "torch.utils.flop_counter, batch 1, multiply-add = 2 FLOPs"
    for key in ("proxy", "proxy_accuracy", "final_accuracy"):
        if extra and key in extra:
            m[key] = extra[key]
    prov = {
        "study": study,
        "trial": trial,
        "seed": seed,
        "fidelity": fidelity,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}",
        "packages": package_versions(),
        **(provenance or {}),
    }
    if extra and "library_blocks" in extra:
        prov["library_blocks"] = extra["library_blocks"]
    return candidate.with_metrics(**m).__class__(
        dataset=candidate.dataset, architecture=candidate.architecture, training=candidate.training, metrics=m, provenance=prov
    )


def load_config(path: str | Path) -> ModelConfig:
    """Read and validate a best-config JSON; every problem is a one-line :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass the path of a best_config.json (see `search` output).")
    if p.stat().st_size > 20_000_000:
        raise ConfigError(f"config file {p} is {p.stat().st_size / 1e6:.0f} MB; a MoCA-NAS config is a few KB, is this the right file?")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text; pass a best_config.json.") from None
    return ModelConfig.from_json(text, source=f"config file {p.name}")


def build_model(config: ModelConfig | Architecture | str | Path, *, weights: str | Path | None = None) -> Any:
    """Rebuild the network of a config (same parameter count on any machine); optionally load safetensors weights."""
    from nas_core.model.assembly import assemble

    if isinstance(config, (str, Path)):
        config = load_config(config)
    arch = config.architecture if isinstance(config, ModelConfig) else config
    model = assemble(arch)
    if isinstance(config, ModelConfig) and "params" in config.metrics:
        from nas_core.training.measure import count_params

        if count_params(model) != int(config.metrics["params"]):
            raise ConfigError(
                f"rebuilt network has {count_params(model)} parameters but the config records {config.metrics['params']}; "
                "the config was edited or written by an incompatible version."
            )
    if weights is not None:
        load_weights(model, weights)
    return model
