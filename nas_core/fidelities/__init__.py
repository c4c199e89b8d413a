"""How a candidate is scored: the Fidelity protocol, its registry, and the built-in fidelities.

``train`` trains from scratch with early stopping; ``cached`` (MoCAFT) trains adapters and a head over
cached features of frozen library blocks; ``zero-cost`` scores an untrained network on one minibatch.
"""

from __future__ import annotations

from nas_core.fidelities import cached, zero_cost
from nas_core.fidelities.base import FIDELITIES, FINALIZERS, FINETUNE_OPTIONS, EvalContext, EvalResult, finish
from nas_core.fidelities.train import full_training

__all__ = ["FIDELITIES", "FINALIZERS", "FINETUNE_OPTIONS", "EvalContext", "EvalResult", "cached", "finish", "full_training", "zero_cost"]
