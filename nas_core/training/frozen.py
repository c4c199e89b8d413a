"""A head fitted on a frozen body: MoCA's idea (trained blocks frozen, their features cached once, a small part trained on
them) applied to the one training's small companion.

The companion design (``search.seeds.COMPANION``) has the 4-conv net's convolutions and only a linear head, where the
4-conv net has an FC-128 layer before it. When the one training trains the 4-conv net, the companion need not train
from scratch: its body is the trained one, frozen, and only its head trains, on features computed once for every split.
That costs one forward pass over the data and a few seconds of head training, instead of a training of its own.

Measured on Fashion-MNIST, 2 CPU threads: in seed 4's hour the head on the 4-conv net's body (40 epochs) reached test
0.9402 with 96,554 parameters, beside the 4-conv net's 0.9414 (features 33 s, 20 head epochs 91 s); on seed 3's body (38
epochs) three head recipes gave 0.9407-0.9411 (``benchmarks/head_probe.py``). The companion trained from scratch for 12
epochs gave 0.9323-0.9346.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas_core.errors import ConfigError
from nas_core.schema.config import Architecture, TrainingRecipe
from nas_core.training.loop import CHANNELS_LAST, EpochCallback, train_model
from nas_core.training.stops import StopRequested

__all__ = ["BODY_PREFIX", "HEAD_EPOCHS", "body_state", "same_body", "body_features", "fit_head"]

BODY_PREFIX = "body."
# Epochs of head training on the cached features (the companion's own recipe otherwise): at 20 the seed-3 probe gave
# test 0.9407 with the companion's optimizer (AdamW 3e-3, weight decay 5e-2, dropout 0.3, one-cycle, label smoothing 0.1,
# batch 256); 30 epochs of two other recipes gave 0.9407 and 0.9411 (``benchmarks/results/fashion_head_probe.json``).
HEAD_EPOCHS = 20


def body_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The body's tensors (``body.*``) of a network's state dict, copied to the CPU."""
    return {k: v.detach().cpu().clone() for k, v in state_dict.items() if k.startswith(BODY_PREFIX)}


def same_body(a: Architecture, b: Architecture) -> bool:
    """Whether two architectures have the same body (input, stem and stages), so one's trained body fits the other."""
    return tuple(a.input_shape) == tuple(b.input_shape) and a.stem == b.stem and a.stages == b.stages


@torch.no_grad()
def body_features(model: Any, x: torch.Tensor, device: torch.device, *, should_stop: Callable[[], bool] = lambda: False,
                  batch: int = 512) -> torch.Tensor:
    """The pooled body output (what the head reads) of ``model`` in eval mode for every image of ``x``, on the CPU.

    Raises :class:`StopRequested` between batches once ``should_stop()`` is true.
    """
    model.eval()
    channels_last = CHANNELS_LAST and device.type == "cpu" and x.dim() == 4
    out = []
    for i in range(0, len(x), batch):
        if should_stop():
            raise StopRequested("stopped while computing the frozen body's features")
        xb = x[i : i + batch].to(device)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        out.append(model.pool(model.features(xb)).contiguous().cpu())
    return torch.cat(out) if out else x[:0].flatten(1)


class Trainable(nn.Module):
    """The trainable parts only, so ``train_model``'s train()/state_dict never touch frozen layers (here and in the
    ``cached`` fidelity)."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)


def fit_head(model: Any, data: Any, recipe: TrainingRecipe, body: dict[str, torch.Tensor], *, device: torch.device, seed: int = 0,
             on_epoch: EpochCallback | None = None, should_stop: Callable[[], bool] = lambda: False,
             time_up: Callable[[], bool] | None = None, time_left: Callable[[], float] | None = None) -> tuple[list[dict[str, float]], float]:
    """Load ``body`` (the ``body.*`` tensors of a trained network with this body) into ``model``, keep it frozen, and train
    only the head with ``recipe`` on the body's features, computed once for the training and validation splits (no
    augmentation: the features are fixed). Returns (the training history, seconds spent on the features).

    The body's batch-norm statistics stay those of its own training (eval mode throughout). ``model`` leaves with the
    body as loaded and the best head (``train_model`` keeps the best validation epoch).
    """
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(k.startswith(BODY_PREFIX) for k in missing):
        raise ConfigError(f"the frozen body does not fit this architecture ({len(unexpected)} unexpected, "
                          f"{sum(k.startswith(BODY_PREFIX) for k in missing)} missing tensors); it must share the body it came from.")
    model.to(device)
    channels_last = CHANNELS_LAST and device.type == "cpu"
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; the stubs omit it
    start = time.perf_counter()
    try:
        x_train = body_features(model, data.x_train, device, should_stop=should_stop)
        x_val = body_features(model, data.x_val, device, should_stop=should_stop)
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # as above
    feature_s = time.perf_counter() - start
    model.eval()  # the body: frozen, with its own statistics; train_model switches only the head to train mode
    history = train_model(Trainable([model.head]), data, recipe, device=device, seed=seed, on_epoch=on_epoch, should_stop=should_stop,
                          params=list(model.head.parameters()), forward=model.head, x_train=x_train, x_val=x_val,
                          time_up=time_up, time_left=time_left)
    model.eval()
    return history, feature_s
