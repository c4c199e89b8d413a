"""Everything done with a config after the search: load and rebuild it, export it, retrain it."""

from __future__ import annotations

from nas_core.deploy.config import build_model, load_config, package_versions, trial_config
from nas_core.deploy.exporters import EXPORT_FORMATS, export_model
from nas_core.deploy.retraining import rebuild_snippet, retrain
from nas_core.model.weights import load_weights, save_weights

__all__ = [
    "EXPORT_FORMATS",
    "build_model",
    "export_model",
    "load_config",
    "load_weights",
    "package_versions",
    "rebuild_snippet",
    "retrain",
    "save_weights",
    "trial_config",
]
