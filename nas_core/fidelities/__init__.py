"""How a candidate is scored: the Fidelity protocol, its registry, and the built-in fidelities.

``train`` trains from scratch with early stopping; ``cached`` (MoCAFT) trains adapters and a head over
cached features of frozen library blocks; ``zero-cost`` scores an untrained network on one minibatch.
Registration order is the order the Search page and ``--help`` list them: train (the default) first.
"""

from __future__ import annotations

# ruff: noqa: I001 - the import order is the registration order
from nas_core.fidelities.base import (
    FIDELITIES,
    FINALIZERS,
    FINETUNE_OPTIONS,
    FINETUNE_SHARE,
    EvalContext,
    EvalResult,
    Fidelity,
    FidelityOption,
    finish,
    list_fidelities,
    register_fidelity,
)
from nas_core.fidelities.train import full_training
from nas_core.fidelities import cached, zero_cost

__all__ = [
    "FIDELITIES",
    "FINALIZERS",
    "FINETUNE_OPTIONS",
    "FINETUNE_SHARE",
    "EvalContext",
    "EvalResult",
    "Fidelity",
    "FidelityOption",
    "cached",
    "finish",
    "full_training",
    "list_fidelities",
    "register_fidelity",
    "zero_cost",
]
