"""The budget planner: how a ``--timeout`` is split between the search, its finalists and the final training.

The product of a search is a trained model, so with a time budget the best candidate is trained once
more at the end, for as many epochs as the time left allows (``nas_core.final_training``). The split:

- ``train`` fidelity: the trials get ``1 - FINAL_SHARE`` of the timeout (all of it until one completes); the final
  training of the best candidate gets the rest (and whatever the trials left unused), with its epochs fitted to it.
- two-phase fidelities (``cached``, ``zero-cost``): the trials get ``1 - finetune_share`` and the
  fine-tune of the finalists the rest; that fine-tune is their final training (``nas_core.search.phase_deadlines``).
  An explicit ``finetune_seconds`` gives the trials all of the timeout and the finalists that many seconds after it.

Without a timeout nothing is planned: the search runs its trials and the best trial is the result.

One training: when the usual plan cannot run (the first known-good design timed on a slice of the data before the trials
start): its search share does not fit :data:`ONE_TRAINING_FIT` trials of ``--epochs``, or its final share does not fit a
refit of ``--epochs`` (which is kept only if it trains at least as long as the trial). A search then cannot compare
designs *and* refit one, and a trial cut by the deadline yields nothing. The first known-good design trains once, for
the epochs the whole budget fits (:func:`one_training_epochs`), and is the result: no refit. When
the budget fits :data:`ONE_TRAINING_WIDER_EPOCHS` epochs of the design's wider variant (timed too), that one trains instead.
The time the one training leaves (its epochs fill only :data:`ONE_TRAINING_SLACK` of the budget) goes to a small design, the
companion (``search.seeds.COMPANION``, timed too), when it fits :data:`ONE_TRAINING_COMPANION_EPOCHS` epochs of it: a
small, fast point on the accuracy-cost front that costs the one training nothing. When the companion has the one
training's body (the 4-conv net's convolutions), it does not train from scratch: its head is fitted on the trained body,
frozen (``training.frozen``), which takes one forward pass over the data.

Example:
    >>> plan = plan_budget(timeout=100, two_phase=False)
    >>> (plan.search_s, plan.final_s)
    (60.0, 40.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FINAL_SHARE", "FINETUNE_SHARE", "ONE_TRAINING_FIT", "ONE_TRAINING_GRACE", "ONE_TRAINING_WIDER_EPOCHS", "ONE_TRAINING_WIDER_RESERVE", "BudgetPlan", "plan_budget", "one_training_epochs", "one_training_wider_epochs",
           "one_training_plan", "ONE_TRAINING_COMPANION_EPOCHS", "one_training_companion_epochs", "epochs_that_fit"]

FINAL_SHARE = 0.4  # of --timeout, for the final training of the best candidate (train fidelity)
FINETUNE_SHARE = 0.2  # of --timeout, kept for the second phase of a two-phase fidelity (cached, zero-cost)


@dataclass(frozen=True)
class BudgetPlan:
    """Seconds for each phase of a search (``None`` where unbounded), and how the split was chosen."""

    timeout_s: float | None
    search_s: float | None
    finalists_s: float | None
    final_s: float | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetPlan:
        return cls(**{k: data.get(k) for k in ("timeout_s", "search_s", "finalists_s", "final_s")}, note=str(data.get("note", "")))

    def rows(self) -> list[tuple[str, str]]:
        """(phase, budget) rows for a table: the Search page and ``summary.md`` show these."""
        def fmt(s: float | None, off: str = "-") -> str:
            if s is None:
                return "no limit"
            return off if s == 0 else f"{s:,.0f} s" + (f" ({s / self.timeout_s:.0%})" if self.timeout_s else "")

        return [("search (trials)", fmt(self.search_s)), ("finalists (fine-tune)", fmt(self.finalists_s)),
                ("final training of the best", fmt(self.final_s))]

    def markdown(self) -> str:
        lines = ["| phase | budget |", "|---|---:|"] + [f"| {a} | {b} |" for a, b in self.rows()]
        return "\n".join(lines + ["", self.note])


def plan_budget(*, timeout: float | None, two_phase: bool, options: dict[str, Any] | None = None) -> BudgetPlan:
    """The split of ``timeout`` seconds for a search (see the module docstring for the rules)."""
    options = options or {}
    if not timeout:
        note = ("No --timeout: the trials run to --trials; "
                + ("the finalists are fine-tuned after them." if two_phase else "the best trial is the result (no final training)."))
        return BudgetPlan(None, None, None if two_phase else 0.0, 0.0, note)
    timeout = float(timeout)
    if two_phase:
        if "finetune_seconds" in options:
            extra = float(options["finetune_seconds"])
            return BudgetPlan(timeout, timeout, extra, 0.0,
                              f"finetune_seconds: the trials get all {timeout:.0f} s, the finalists {extra:.0f} s after them.")
        share = float(options.get("finetune_share", FINETUNE_SHARE))
        return BudgetPlan(timeout, timeout * (1 - share), timeout * share, 0.0,
                          f"The finalists' end-to-end fine-tune is the final training ({share:.0%} of --timeout).")
    return BudgetPlan(timeout, timeout * (1 - FINAL_SHARE), 0.0, timeout * FINAL_SHARE,
                      f"The best candidate is refit on train + validation with its recipe for as many epochs as the last "
                      f"{FINAL_SHARE:.0%} (and any time the trials left) allows, at most {FINAL_EPOCH_FACTOR}x the search epochs. "
                      f"If the first known-good design, timed at the start, would not train {ONE_TRAINING_FIT} times in the trials' "
                      f"share, or its refit would not fit the final share, it trains once for all of it instead (one training).")

# The final training runs at most this many times the search's --epochs (it runs only with a --timeout, for the epochs the
# time left fits). Digits, the README command, seeds 0-9 in one run: with 2, 40-epoch refits and 8 of 10 seeds >= 0.99;
# with 5, 61-87 epochs in the same 90 s budget and 10 of 10, never worse on a seed, +0.26 pt (95 % paired bootstrap
# +0.07 to +0.44; benchmarks/results/digits_final_epochs.md).
FINAL_EPOCH_FACTOR = 5
ONE_TRAINING_FIT = 2  # a search share that fits fewer trials of --epochs than this trains the first known-good design once
# What a refit of --epochs costs against one epoch of a trial, as the plan decides between the usual plan and the one
# training: its epochs run on train + validation (up to ~1.2x longer), and it is given a quarter of margin on top. This
# was 1.2 / SLACK while the final training's ``search.final_training.SLACK`` was 0.75; it stays at that value now that
# SLACK is 0.9, so raising the refit's fill did not also move which machines run the one training (the hours that set it).
REFIT_COST = 1.2 / 0.75
# The one training may overrun --timeout by this share of it before it is cut: it is the search's only result, and a cut
# one keeps only the model of its last whole epoch, before its schedule has annealed (``train_model(time_up=)``).
ONE_TRAINING_GRACE = 0.1
# The one training takes the first design's wider variant (``search.seeds.WIDER``) when the budget fits at least this
# many epochs of it: the 4-conv net's test accuracy on Fashion-MNIST was flat from 31 to 54 epochs (0.9411-0.9450), and
# 27-33 epochs of the wide net gave 0.9439-0.9474. Fewer are not ahead: on a 2-core AVX2 CPU in float32 its 24 and 22
# epochs gave 0.9420 and 0.9441 (seeds 3 and 6), where the 4-conv net's 36-42 gave 0.9414-0.9450 (seeds 1, 3-5) *and*,
# with its body frozen, the small design's head (0.9402-0.9416 at 96,554 params), which no wide-net hour had time for
# (benchmarks/results/fashion_default_2threads*.json). So 26: the 27-29 epochs a faster machine fits (~103-108 s an
# epoch) still take the wide net; the 20-24 of a slower one take the 4-conv net and its <= 100K point. (25 until a slice
# timing ~20 % slow turned a 27-epoch machine to the 4-conv net; then 22, a judgment that those two hours disproved.)
# Since ONE_TRAINING_WIDER_RESERVE the bar must fit before the companion's reserve, so at an hour on 2 CPU cores the wide
# net rarely trains: a longer budget, or a faster machine where the one training still fires, takes it.
ONE_TRAINING_WIDER_EPOCHS = 26
# The wide net's body is not the small companion's, so a wide one training leaves no head to fit: its <= 100K point must
# train from scratch after it. The wide net then trains only when the budget fits its bar *and*, kept after it, this
# many epochs of the companion (timed; its own trial's length, ``--epochs``' default), and its epochs are fitted to the
# time before that reserve. Otherwise the 4-conv net trains and its head is fitted on its body: 0.9374-0.9416 at 96,554
# params in every hour that ran it, against 0.9322-0.9346 for 12-13 epochs from scratch (seeds 1 and 27, the probe of
# ``seeds.COMPANION``). The wide net's hours at >= 26 epochs (seeds 0, 2, 27) never had a <= 100K point at >= 0.935,
# and did not lead the 4-conv net's on test by more than the seed spread (0.9440-0.9466 against 0.9434-0.9468 on train +
# validation). 0 takes the wide net on its bar alone, as before.
ONE_TRAINING_WIDER_RESERVE = 20
ONE_TRAINING_SLACK = 0.85  # of the time left that its epochs may fill: the per-epoch time was taken on a slice, and the
# trial still measures its model at the end


def one_training_epochs(*, left_s: float, seconds_per_epoch: float, epochs: int) -> int | None:
    """Epochs of the one training that ``left_s`` seconds fit (at least one), or ``None`` when the usual plan fits: its
    search share (``1 - FINAL_SHARE``) fits ONE_TRAINING_FIT trials of ``epochs`` and its final share fits a refit of
    ``epochs`` (:data:`REFIT_COST`).

    Example:
        >>> one_training_epochs(left_s=3600, seconds_per_epoch=120, epochs=20)  # one 20-epoch trial takes 2,400 s
        25
        >>> one_training_epochs(left_s=3600, seconds_per_epoch=85, epochs=20)  # two fit the hour, not its 60 %
        36
        >>> one_training_epochs(left_s=90, seconds_per_epoch=0.7, epochs=20) is None  # digits: plenty of trials fit
        True
    """
    if not (seconds_per_epoch > 0 and math.isfinite(seconds_per_epoch)):
        return None
    trial = epochs * seconds_per_epoch
    if ONE_TRAINING_FIT * trial <= left_s * (1 - FINAL_SHARE) and trial * REFIT_COST <= left_s * FINAL_SHARE:
        return None
    return max(1, epochs_that_fit(left_s, seconds_per_epoch))


def one_training_wider_epochs(*, left_s: float, seconds_per_epoch: float, reserve_s: float = 0.0) -> int | None:
    """Epochs of the one training's wider design that ``left_s`` seconds fit, less ``reserve_s`` kept after it for the
    small companion (:data:`ONE_TRAINING_WIDER_RESERVE`), or ``None`` when they are fewer than
    :data:`ONE_TRAINING_WIDER_EPOCHS` (the first design then trains).

    Example:
        >>> one_training_wider_epochs(left_s=3600, seconds_per_epoch=94)  # Fashion-MNIST, one CPU thread, bf16
        32
        >>> one_training_wider_epochs(left_s=3600, seconds_per_epoch=157) is None  # 19 epochs of 64-64-128-128
        True
        >>> one_training_wider_epochs(left_s=3560, seconds_per_epoch=108, reserve_s=20 * 43) is None  # seed 27: 21 epochs
        True
    """
    fit = epochs_that_fit(left_s - reserve_s, seconds_per_epoch)
    return fit if fit >= ONE_TRAINING_WIDER_EPOCHS else None


# The companion trains only when the time the one training left fits this many epochs of it: on Fashion-MNIST 12 epochs
# gave test 0.9346 (``search.seeds.COMPANION``); fewer leave it short of the 4-conv net's accuracy at a fifth of its size.
# The data the one training trains on: the training and validation splits. With one design and no other to compare, the
# validation split has no choice to make; trained on, it is worth more than a held-out score. Fashion-MNIST, the 4-conv
# net, an hour's compute (34 epochs of 60,000 images against 40 of 51,000), five splits: test +0.16 pt mean, 4 of 5 ahead
# (benchmarks/results/fashion_ensemble_probe_h200.json, fashion_trainval_probe_cpu_split4.json). Test stays unseen.
ONE_TRAINING_SPLIT = "train+val"
ONE_TRAINING_COMPANION_EPOCHS = 12


def one_training_companion_epochs(*, left_s: float, seconds_per_epoch: float) -> int | None:
    """Epochs of the companion that the ``left_s`` seconds after the one training fit, or ``None`` when they are fewer
    than :data:`ONE_TRAINING_COMPANION_EPOCHS` (it is then not trained).

    Example:
        >>> one_training_companion_epochs(left_s=872, seconds_per_epoch=50)  # bf16, the time 27 epochs of the wide net left
        14
        >>> one_training_companion_epochs(left_s=550, seconds_per_epoch=130) is None  # fp32: 3 epochs
        True
    """
    fit = epochs_that_fit(left_s, seconds_per_epoch)
    return fit if fit >= ONE_TRAINING_COMPANION_EPOCHS else None


def epochs_that_fit(left_s: float, seconds_per_epoch: float) -> int:
    """Epochs of ``seconds_per_epoch`` that ONE_TRAINING_SLACK of ``left_s`` holds (0 for an unknown or endless epoch, or
    no time)."""
    if not (seconds_per_epoch > 0 and math.isfinite(seconds_per_epoch)) or left_s <= 0:
        return 0
    return int(left_s * ONE_TRAINING_SLACK / seconds_per_epoch)


def _seconds(s: float) -> str:
    """Seconds as a note writes them: whole seconds, or two significant digits under ten (a digits epoch is ~0.3 s).

    Example:
        >>> _seconds(134.4), _seconds(0.334), _seconds(2.5)
        ('134', '0.33', '2.5')
    """
    return f"{s:,.0f}" if s >= 10 else f"{s:.2g}"


def _companion_sentence(companion: tuple[str, float] | None, head: tuple[str, float] | None) -> str:
    if head:
        return (f"The small design {head[0]} has the same body: if the time it leaves fits ~{_seconds(head[1])} s, that design's "
                f"head is fitted on the trained body, frozen, with the body's features computed once; no other trials. ")
    if companion:
        return (f"The time it leaves trains the small design {companion[0]} (~{_seconds(companion[1])} s an epoch) if it fits "
                f"{ONE_TRAINING_COMPANION_EPOCHS} epochs of it; no other trials. ")
    return "No other trials. "


def one_training_plan(timeout: float, *, design: str, epochs: int, seconds_per_epoch: float, search_epochs: int,
                      first: tuple[str, float] | None = None, companion: tuple[str, float] | None = None,
                      passed_over: tuple[str, float, int] | None = None, companion_head: tuple[str, float] | None = None,
                      reserve: tuple[str, float, int] | None = None, train_images: int | None = None, grow: float = 1.0) -> BudgetPlan:
    """The plan of a one-training run (see the module docstring): all of ``timeout`` for one trial, nothing after it.
    ``first`` is (name, seconds an epoch) of the first known-good design when its wider variant ``design`` trains instead;
    ``companion`` that of the small design the time left may train after it; ``passed_over`` (name, seconds an epoch,
    epochs that fit) that of a wider variant that was timed and fits too few epochs, so the note says why it did not train;
    ``reserve`` (name, seconds, epochs) the time kept after the wider variant for that many epochs of the small design
    (:data:`ONE_TRAINING_WIDER_RESERVE`), when it was weighed;
    ``companion_head`` (name, seconds planned) that of a small design with the same body, whose head is fitted on the
    trained body, frozen (``training.frozen``), instead of a companion trained from scratch. Every seconds figure is an
    epoch of the training split, as timed. ``train_images``, when given, is the size of the training and validation splits
    the one training trains on (``ONE_TRAINING_SPLIT``), whose epochs take ``grow`` times as long."""
    timed = first or (design, seconds_per_epoch)
    kept = (f", less ~{_seconds(reserve[1])} s kept after it for {reserve[2]} epochs of the small design {reserve[0]} from "
            "scratch (its body is not the small design's, so no head is fitted on it)," if reserve else "")
    if first:
        wider = (f" The budget{kept} fits {epochs} epochs (at least {ONE_TRAINING_WIDER_EPOCHS}) of its wider variant, {design} "
                 f"(~{_seconds(seconds_per_epoch)} s an epoch), which trains instead.")
    elif passed_over:
        wider = (f" Its wider variant, {passed_over[0]}, takes ~{_seconds(passed_over[1])} s an epoch here: the budget{kept} fits "
                 f"{passed_over[2]} epochs of it, fewer than {ONE_TRAINING_WIDER_EPOCHS}, so it does not train.")
    else:
        wider = ""
    return BudgetPlan(float(timeout), float(timeout), 0.0, 0.0,
                      f"One training: an epoch of the first known-good design ({timed[0]}) takes ~{_seconds(timed[1])} s here, so "
                      f"--timeout fits fewer than {ONE_TRAINING_FIT} trials of {search_epochs} epochs and a refit.{wider} It trains once, "
                      f"for {epochs} epochs (~{epochs * seconds_per_epoch * grow:,.0f} s)"
                      + (f" on the training and validation splits ({train_images:,} images: with no other design to compare, the "
                         "validation split has no choice to make; its validation score is then not held out, the test split is)"
                         if train_images else "")
                      + ", and is the result: no refit. "
                      + _companion_sentence(companion, companion_head)
                      + "A longer --timeout (or a GPU) lets the search compare designs.")
