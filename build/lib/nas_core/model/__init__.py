"""Architecture -> torch.nn.Module (adapters where shapes disagree), and weights as safetensors."""

from __future__ import annotations

from nas_core.model.assemble import MAX_TOKENS, LayerInfo, MocaNet, assemble, plan
from nas_core.model.weights import load_weights, save_weights

__all__ = ["MAX_TOKENS", "LayerInfo", "MocaNet", "assemble", "load_weights", "plan", "save_weights"]
