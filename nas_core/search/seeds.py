"""Known-good designs a new study starts from, so a search cannot end worse than a textbook network.

Each design is a set of search-space values (architecture and training recipe) for a space *kind*,
sized to the input: the 4-conv batch-norm CNN (32-32-pool-64-64-pool, FC 128 with dropout), a
small ResNet and, for inputs of 16x16 and up, a wider 4-conv net (32-64-pool-64-128-pool), all with a one-cycle /
warm-up recipe, random-shift augmentation, label smoothing and weight averaging. They are put in front of the sampler with Optuna's ``enqueue_trial`` (one at a time,
:class:`KnownGoodQueue`), so they are the study's first trials and the sampler (TPE, NSGA-II...) then improves on them. A design is skipped
when an edited space cannot express it (a value outside a range or choice list), so a narrowed space
is searched as it was given.
"""

from __future__ import annotations

import math
from typing import Any

from nas_core.errors import NasCoreError

__all__ = ["known_good_designs", "fits", "replay", "KnownGoodQueue", "WIDER", "COMPANION"]

# The recipe of the reference runs (benchmarks/results/fashion_mnist.md, digits_default.md): Adam, one-cycle to 3e-3,
# batch 64, random shifts, label smoothing 0.1, EMA of the weights.
_RECIPE = {"optimizer": "adam", "lr": 3e-3, "batch_size": 64, "weight_decay": 0.0, "schedule": "onecycle", "augmentation": "crop",
           "label_smoothing": 0.1, "ema_decay": 0.99}
_RECIPE_ADAMW = {**_RECIPE, "optimizer": "adamw", "weight_decay": 5e-2, "schedule": "cosine-warmup"}


# A design's wider variant, which the one training (``search._plan_one_training``) takes instead when the budget fits
# enough epochs of it (``schema.budget.ONE_TRAINING_WIDER_EPOCHS``): once the 4-conv net has its ~30 epochs, the rest of
# an hour buys more by width than by epochs (Fashion-MNIST, one CPU thread: 31-54 epochs of it gave test 0.9411-0.9437;
# 32-33 epochs of this variant 0.9439 and 0.9442, seeds 0 and 1: benchmarks/results/fashion_default_wide.md; with AdamW
# 5e-2 0.9474 and 0.9448 in 27 and 31 epochs: fashion_default_decay.md).
WIDER = {"4-conv BN CNN": "4-conv BN CNN, wide"}

# The small design the one training trains after itself when the time it leaves fits enough epochs of it
# (``schema.budget.ONE_TRAINING_COMPANION_EPOCHS``): a <= 100K-parameter point on the accuracy-cost front beside the one
# large model. The 4-conv net without its FC 128 layer (which holds 401K of its 468K parameters): 96,554 parameters on
# 28x28, the same convolutions. Fashion-MNIST, one fp32 CPU thread, AdamW 5e-2 and the designs' recipe, seed 0:
# 12 epochs, test 0.9346 (val 0.9409). Measured against it, a cheaper one (32-64-64-64, a max-pool after every conv,
# linear head, 95K, a third of the compute an epoch) reached only 0.9330 after 30 epochs, in about the same time.
COMPANION = "small CNN (<= 100K)"
# A lower bound on the companion's epoch as a share of the 4-conv net's (it runs the same convolutions without the FC
# layer; measured 0.55 in float32 and ~0.9 in bf16): the planner does not spend a timing on it when the time the one
# training would leave cannot fit its epochs even at this share.
COMPANION_MIN_SHARE = 0.3


def _halvings(input_shape: tuple[int, int, int]) -> int:
    """How many 2x poolings the input takes while keeping at least a 2x2 grid (8x8 -> 2, 28x28 -> 3, 32x32 -> 4)."""
    side = min(int(input_shape[1]), int(input_shape[2]))
    return max(0, int(math.log2(side)) - 1) if side >= 4 else 0


def known_good_designs(kind: str, input_shape: tuple[int, int, int]) -> list[tuple[str, dict[str, Any]]]:
    """(name, space values) of the designs for a space kind and input shape, best first."""
    deep = _halvings(input_shape) >= 3
    if kind == "seed-cnn":
        bn4 = {"n_conv": 4, "conv_filters_0": 32, "conv_filters_1": 32, "conv_filters_2": 64, "conv_filters_3": 64,
               **{f"conv_kernel_{i}": 3 for i in range(4)}, "conv_block": "conv", "activation": "relu", "pooling": True,
               "pool_every": 2, "n_fc": 2, "fc_units_0": 128, "fc_units_1": 128, "dropout": 0.3, **_RECIPE}
        n = 3 if deep else 2
        filters = (32, 64, 128)[:n]
        resnet = {"n_conv": n, **{f"conv_filters_{i}": f for i, f in enumerate(filters)}, **{f"conv_kernel_{i}": 3 for i in range(n)},
                  "conv_block": "residual", "activation": "relu", "pooling": True, "pool_every": 1, "n_fc": 1, "fc_units_0": 128,
                  "dropout": 0.1, **_RECIPE_ADAMW}
        designs = [("4-conv BN CNN", bn4), ("small ResNet", resnet)]
        if deep:
            # decoupled weight decay (AdamW 5e-2) for the one training's nets (see WIDER); digits (8x8) keeps the measured Adam
            bn4.update(optimizer="adamw", weight_decay=5e-2)
            # the one training's scale-up (WIDER): twice the filters after the first conv, ~2x the compute an epoch
            designs.append((WIDER["4-conv BN CNN"], {**bn4, "conv_filters_1": 64, "conv_filters_2": 64, "conv_filters_3": 128}))
            small = {**bn4, "n_fc": 1}
            small.pop("fc_units_1")
            designs.append((COMPANION, small))
        return designs
    if kind == "modular":
        n = 3 if deep else 2
        channels = (32, 64, 96)[:n]
        resnet = {"stem_channels": 32, "stem_stride": 1, "n_stages": n, "activation": "relu", "head_hidden": 0, "dropout": 0.1,
                  **{k: v for i, c in enumerate(channels) for k, v in (
                      (f"stage_block_{i}", "residual"), (f"stage_channels_{i}", c), (f"stage_repeats_{i}", 2),
                      (f"stage_kernel_{i}", 3), (f"stage_stride_{i}", 1 if i == 0 else 2))},
                  **_RECIPE_ADAMW}
        bn4 = {"stem_channels": 32, "stem_stride": 1, "n_stages": 2, "activation": "relu", "head_hidden": 128, "dropout": 0.3,
               "stage_block_0": "conv", "stage_channels_0": 32, "stage_repeats_0": 1, "stage_kernel_0": 3, "stage_stride_0": 1,
               "stage_block_1": "conv", "stage_channels_1": 64, "stage_repeats_1": 2, "stage_kernel_1": 3, "stage_stride_1": 2,
               **_RECIPE}
        return [("small ResNet", resnet), ("4-conv BN CNN (strided)", bn4)]
    return []


def replay(space: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The values the space samples when every ``suggest`` is answered from ``values`` (the active ones, in the space's
    order); raises ``LookupError`` naming a value the space cannot sample (missing, or outside its range or choices)."""
    from nas_core.space import sample_values

    class Replay:
        def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
            return self._take(name, lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high)

        def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
            return self._take(name, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high)

        def suggest_categorical(self, name: str, choices: Any) -> Any:
            return self._take(name, lambda v: any(v == c and type(v) is type(c) for c in choices))

        def _take(self, name: str, ok: Any) -> Any:
            if name not in values or not ok(values[name]):
                raise LookupError(name)
            return values[name]

    return sample_values(space, Replay())


def fits(space: Any, values: dict[str, Any]) -> bool:
    """Whether every value is one the space can sample (in its range or choice list), and the space builds it."""
    try:
        space.build(replay(space, values), input_shape=(1, 8, 8), num_classes=2, epochs=1)
    except (LookupError, NasCoreError):
        return False
    return True


class KnownGoodQueue:
    """Hands the designs to the study one at a time, each just before an ``ask`` that has no other waiting trial.

    A new study records the names of the designs that fit its space (study attribute ``known_good``); every run of the
    study then enqueues those not yet tried. One at a time, so a crashed trial's retry (which Optuna queues as a waiting
    trial) runs before the next design rather than behind all of them.
    """

    def __init__(self, pending: list[tuple[str, dict[str, Any]]]) -> None:
        self.pending = list(pending)

    @classmethod
    def start(cls, study: Any, space: Any, input_shape: tuple[int, int, int], *, enabled: bool = True) -> KnownGoodQueue:
        trials = study.get_trials(deepcopy=False)
        designs = known_good_designs(space.kind, input_shape)
        if enabled and not trials:
            study.set_user_attr("known_good", [name for name, values in designs if fits(space, values)])
        planned = set(study.user_attrs.get("known_good") or []) if enabled else set()
        used = {t.user_attrs.get("known_good") for t in trials}
        return cls([(name, values) for name, values in designs if name in planned and name not in used])

    def entry(self, name: str | None) -> tuple[str, dict[str, Any]] | None:
        """The queued design ``name`` (its name and values), or ``None`` when it is not queued."""
        return next(((n, v) for n, v in self.pending if n == name), None)

    def move(self, entry: tuple[str, dict[str, Any]], to: int) -> None:
        """Put the queued ``entry`` at position ``to`` of the queue (0: the next design handed to the study)."""
        self.pending.remove(entry)
        self.pending.insert(to, entry)

    def before_ask(self, study: Any) -> str | None:
        """Enqueue the next design unless another trial is already waiting; returns its name."""
        if not self.pending:
            return None
        from optuna.trial import TrialState

        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None
        name, values = self.pending.pop(0)
        study.enqueue_trial(values, user_attrs={"known_good": name}, skip_if_exists=True)
        return name
