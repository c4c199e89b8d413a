"""Architecture -> torch.nn.Module (adapters where shapes disagree), and weights as safetensors.

:mod:`nas_core.model.assembly` (torch) loads on first use, so the weights helpers and everything that only
names them (the CLI's parser, the exporters' declarations) import without torch.
"""

from __future__ import annotations

import importlib

from nas_core.model.weights import load_weights, save_weights

_ASSEMBLE = ("MAX_TOKENS", "LayerInfo", "MocaNet", "assemble", "plan")

__all__ = ["MAX_TOKENS", "LayerInfo", "MocaNet", "assemble", "load_weights", "plan", "save_weights"]


def __getattr__(name: str) -> object:
    if name in _ASSEMBLE:
        return getattr(importlib.import_module("nas_core.model.assembly"), name)
    raise AttributeError(f"module 'nas_core.model' has no attribute {name!r}")
