"""The parts of a training recipe beyond optimizer and learning rate: schedules, augmentation, weight averaging.

Each is named by a value of :class:`nas_core.genotype.TrainingRecipe` (``schedule``, ``warmup``,
``augmentation``, ``label_smoothing``, ``ema_decay``), so a best config's ``training`` block says
everything ``train --config`` needs to repeat the run. The defaults are the recipe that configs written
before these keys existed were trained with (per-epoch cosine annealing, no smoothing, no averaging).
Every random draw comes from the caller's ``torch.Generator``: a seed gives the same run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_core.schema.config import AUGMENT_OPS, SCHEDULES, parse_augmentation

__all__ = [
    "SCHEDULES",
    "AUGMENT_OPS",
    "parse_augmentation",
    "make_scheduler",
    "compress_schedule",
    "augment",
    "ModelEma",
    "resolve_precision",
    "autocast",
]

# SCHEDULES: "cosine" is per-epoch cosine annealing to 0 (what every config before schedules were recorded used);
# "onecycle" is the one-cycle policy per step (cosine warm-up from lr/25 to ``lr`` over ``warmup`` of the run, default
# 0.3, then cosine down to lr/25e4); "cosine-warmup" is a linear warm-up over ``warmup`` of the steps, then per-step cosine to 0.
# AUGMENT_OPS: "shift" rolls the whole batch by one random offset (legacy); "flip" mirrors the whole batch with p=0.5
# (legacy); "crop" translates each image by its own offset, zero-filled (pad-and-random-crop); "hflip" mirrors each image
# left-right with its own p=0.5; "erase" is random erasing.


class _Timeline:
    """Where in its schedule an optimizer step is: the step itself, until :func:`compress_schedule` makes the rest of the
    schedule pass faster (piecewise linear, so the learning rate never jumps)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.at_step, self.at_position, self.rate = 0, 0.0, 1.0

    def __call__(self, step: int) -> float:
        return self.at_position + (step - self.at_step) * self.rate if step > self.at_step else float(step)

    def compress(self, step: int, steps_left: int) -> None:
        position = self(step)
        self.at_step, self.at_position = step, position
        self.rate = max(self.rate, (self.total - position) / max(1, steps_left))


def make_scheduler(opt: torch.optim.Optimizer, *, schedule: str, epochs: int, steps_per_epoch: int, warmup: float) -> tuple[Any, bool]:
    """(scheduler, steps per batch?) for the recipe's schedule; the caller steps it per batch or per epoch.

    A per-step schedule can be made to end sooner with :func:`compress_schedule`.
    """
    epochs = max(1, epochs)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), False
    total = max(1, epochs * max(1, steps_per_epoch))
    timeline = _Timeline(total)
    if schedule == "onecycle":
        # OneCycleLR's shape (cosine from lr/25 up to lr, then cosine down to lr/25e4), written out so that runs of a few
        # steps work too (torch's own divides by zero when the warm-up rounds to no step)
        warm = max(1, round(total * (warmup if 0 < warmup < 1 else 0.3)))

        def factor(step: int) -> float:
            at = timeline(step)
            if at < warm:
                return _cos(1 / 25, 1.0, at / warm)
            return _cos(1.0, 1 / 25e4, min(1.0, (at - warm) / max(1, total - warm)))

    elif schedule == "cosine-warmup":
        warm = max(1, round(total * warmup)) if warmup > 0 else 0

        def factor(step: int) -> float:
            at = timeline(step)
            if at < warm:
                return (at + 1) / warm
            return _cos(1.0, 0.0, min(1.0, (at - warm) / max(1, total - warm)))

    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, but got {schedule!r}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    sched.moca_timeline = timeline  # type: ignore[attr-defined]  # read by compress_schedule
    return sched, True


def compress_schedule(sched: Any, *, steps_left: int) -> bool:
    """Make a per-step schedule reach its end in ``steps_left`` more steps (never later than planned); False when it cannot.

    A training that its time budget will end early (the machine runs slower than it was timed) then still ends
    annealed, at the schedule's small last learning rate, instead of being cut mid-schedule at a high one. The steps
    taken so far keep their learning rates; the rest of the schedule's shape is run through faster.
    """
    timeline = getattr(sched, "moca_timeline", None)
    if timeline is None:
        return False
    # the learning rate of the step to come is the same on both timelines (they meet at the current step)
    timeline.compress(int(sched.last_epoch), steps_left)
    return True


def _cos(start: float, end: float, progress: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def augment(x: torch.Tensor, ops: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """Apply the ops in a fixed order (shift, crop, flip, hflip, erase) to an image batch (N, C, H, W); other tensors pass through."""
    if x.dim() != 4 or not ops:
        return x
    if "shift" in ops and x.shape[-1] >= 8:
        pad = max(1, x.shape[-1] // 14)
        dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=gen))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if "crop" in ops:
        x = _random_translate(x, max(1, x.shape[-1] // 14), gen)
    if "flip" in ops and bool(torch.rand(1, generator=gen) < 0.5):
        x = torch.flip(x, dims=(3,))
    if "hflip" in ops:
        mirror = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(mirror.view(-1, 1, 1, 1), torch.flip(x, dims=(3,)), x)
    if "erase" in ops:
        x = _random_erase(x, gen)
    return x


def _random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by its own (dy, dx) in [-pad, pad], the uncovered border zero (the normalised mean)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    rows = (offs[:, 0:1] + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (offs[:, 1:2] + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


def _random_erase(x: torch.Tensor, gen: torch.Generator, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.2)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): with probability ``p`` a rectangle of 2-20 % of the image, aspect 0.3-3.3, set to 0."""
    n, _, h, w = x.shape
    u = torch.rand(n, 5, generator=gen)
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * h * w
    aspect = torch.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[:, 1])
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = ((h - eh + 1) * u[:, 2]).long()
    left = ((w - ew + 1) * u[:, 3]).long()
    on = u[:, 4] < p
    r = torch.arange(h).view(1, h, 1)
    c = torch.arange(w).view(1, 1, w)
    mask = (r >= top.view(n, 1, 1)) & (r < (top + eh).view(n, 1, 1)) & (c >= left.view(n, 1, 1)) & (c < (left + ew).view(n, 1, 1))
    mask &= on.view(n, 1, 1)
    return x.masked_fill(mask.unsqueeze(1), 0.0)


class ModelEma:
    """Exponential moving average of a model's floating-point parameters and buffers (batch-norm statistics included).

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` so that a short run's average is not dominated by
    its random initialisation; validation, early stopping and the saved weights use the average.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        # state_dict() shares storage with the model and is updated in place by training and load_state_dict, so the
        # pairs are collected once: building a state dict every step cost as much as the step itself on small networks.
        live = model.state_dict()
        self.state = {k: v.detach().clone() for k, v in live.items()}
        keys = [k for k, v in live.items() if v.is_floating_point()]
        self._avg = [self.state[k] for k in keys]
        self._live = [live[k] for k in keys]
        self._copied = [(self.state[k], v) for k, v in live.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._avg, self._live, 1 - d)
        for mine, v in self._copied:
            mine.copy_(v)


# Pixels per channel up to which an image counts as small: on 8x8 digits the convolutions are too small for bfloat16 to
# pay for its casts, so ``auto`` keeps them in float32; ``training.loop.cpu_threads`` gives them one CPU thread.
SMALL_INPUT = 16 * 16


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), so oneDNN runs bf16 convolutions natively.

    Read from ``/proc/cpuinfo`` (Linux); elsewhere False, so ``auto`` stays in float32. Torch's own
    ``mkldnn._is_mkldnn_bf16_supported`` is true on every AVX512 CPU, where bf16 is emulated and slower than float32.
    On this project's 2-core AMD EPYC (AVX512-BF16) one step of the 4-conv network on 28x28 images, batch 64, one
    thread, takes 58 ms in bf16 against 119 ms in float32.
    """
    if sys.platform != "linux" or not torch.backends.mkldnn.is_available():
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device, input_shape: tuple[int, ...]) -> str:
    """The arithmetic a recipe's ``precision`` means here: ``fp32`` or ``bf16`` as asked; ``auto`` is bf16 on a CUDA GPU
    that computes it natively (Ampere or later; a T4 stays in float32) or a CPU with native bf16, for images larger
    than 16x16 pixels (``input_shape`` is C, H, W or N, C, H, W), else fp32."""
    if precision != "auto":
        return precision
    if len(input_shape) < 3:  # not images (C, H, W or a batch of them): features stay in float32
        return "fp32"
    if int(input_shape[-1]) * int(input_shape[-2]) <= SMALL_INPUT:
        return "fp32"
    if device.type == "cuda":
        # native only (compute capability 8+, or ROCm): torch's default also says yes where bf16 is emulated (a T4)
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device) -> Any:
    """The context a training step's forward pass and loss run in: torch's bfloat16 autocast, or nothing for fp32.
    Weights, gradients and the optimizer stay in float32, and no loss scaling is needed (bf16 has float32's range)."""
    if precision == "bf16" and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
