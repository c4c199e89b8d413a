"""The fidelity protocol: what a fidelity gets (EvalContext), returns (EvalResult), declares and does, and its registry.

A fidelity is one :class:`Fidelity` subclass in one file, registered with :func:`register_fidelity`; the
search, the CLI and the Search page ask it for everything (its options and their checks, how it prepares a
sampled architecture, how it scores one, whether a second phase follows and what that phase does).
``docs/extending.md`` shows a new fidelity as one file.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

from nas_core.errors import RegistryError
from nas_core.model.assembly import MocaNet
from nas_core.registry import Registry
from nas_core.schema.budget import FINETUNE_SHARE
from nas_core.schema.config import Architecture, TrainingRecipe
from nas_core.training.loop import Diverged, EpochCallback
from nas_core.training.measure import measure_model


@dataclass
class EvalContext:
    """Everything a fidelity needs for one candidate."""

    arch: Architecture
    recipe: TrainingRecipe
    data: Any  # nas_core.data.DatasetSplits
    device: torch.device = torch.device("cpu")
    seed: int = 0
    on_epoch: EpochCallback | None = None
    should_stop: Callable[[], bool] = lambda: False
    # a time-boxed training (the one training and its companion) ends when this turns true and keeps the model it has
    # (``training.loop.train_model``); set only for a fidelity whose ``time_boxed`` says it honours it
    time_up: Callable[[], bool] | None = None
    # seconds until that time box, set with ``time_up``: a training may compress its schedule to end annealed inside it
    # (``train_model(time_left=)``) instead of being cut mid-schedule
    time_left: Callable[[], float] | None = None
    workspace: Any = None  # pathlib.Path for caches
    options: dict[str, Any] = field(default_factory=dict)
    # the ``body.*`` tensors of a trained network with this candidate's body: the candidate keeps it frozen and trains
    # only its head on its features (``training.frozen.fit_head``); set for the one training's small companion
    frozen_body: dict[str, torch.Tensor] | None = None


@dataclass
class EvalResult:
    """Final metrics, per-epoch history and the trained weights of one candidate."""

    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    per_class_accuracy: list[float] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FidelityOption:
    """An option the Search page renders for a fidelity; the CLI sets the same one with --fidelity-option KEY=VALUE.

    With ``choices`` it is a select box, else a whole-number input from ``minimum`` to ``maximum``.
    """

    name: str
    label: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] = ()
    minimum: int = 1
    maximum: int = 50
    key: str = ""  # the widget key (default: the option's name)

    @property
    def widget_key(self) -> str:
        return self.key or self.name


class Fidelity(abc.ABC):
    """How a candidate is scored. Subclass it, set the class attributes, implement :meth:`evaluate`.

    Example (one file; ``docs/extending.md`` runs it as a test)::

        from nas_core.fidelities import EvalContext, EvalResult, Fidelity, register_fidelity

        @register_fidelity("width-only")
        class WidthOnly(Fidelity):
            summary = "scores a network by its width, no training (a smoke test)"

            def evaluate(self, ctx: EvalContext) -> EvalResult:
                ...
    """

    name: str = ""  # set by register_fidelity
    summary: ClassVar[str] = ""
    # Every key --fidelity-option accepts; an unknown key is refused before the search starts.
    options: ClassVar[tuple[str, ...]] = ()
    # The options the Search page shows as select boxes (a subset of ``options``).
    page_options: ClassVar[tuple[FidelityOption, ...]] = ()
    # The page shows the module library next to the fidelity choice.
    uses_library: ClassVar[bool] = False
    # ``evaluate`` honours ``EvalContext.time_up`` (ends its training there and keeps the model; ``time_left`` lets it end
    # annealed before). A search time-boxes the
    # one training and its companion only with such a fidelity; with any other, its deadline stops them, as every trial.
    time_boxed: ClassVar[bool] = False
    # The search screens each candidate before this fidelity evaluates it (``training.screening``: one compressed-schedule
    # epoch ranked with FLOPs) and evaluates only the promising ones; for a fidelity whose evaluation is a full training.
    # Such a fidelity accepts the option ``screen`` (on/off) and checks it (:func:`training.screening.check_screen_option`).
    screens: ClassVar[bool] = False

    def check(self, options: dict[str, Any]) -> None:  # noqa: B027 - optional hook: no option needs a check by default
        """Raise a ConfigError naming the first bad option value (called before a search starts)."""

    def prepare(self, arch: Architecture, *, workspace: Any, data: Any, options: dict[str, Any], seed: int) -> Architecture:
        """The architecture the trial records and evaluates (e.g. cached binds blocks to the module library)."""
        return arch

    @abc.abstractmethod
    def evaluate(self, ctx: EvalContext) -> EvalResult:
        """Score one candidate; report per-epoch values through ``ctx.on_epoch`` and stop when ``ctx.should_stop()``."""

    @property
    def has_final_phase(self) -> bool:
        """Whether :meth:`finalize` runs after the search loop (its time comes out of the budget: see schema.budget)."""
        return type(self).finalize is not Fidelity.finalize

    def finalize(self, *, study: Any, config: Any, data: Any, device: torch.device, workspace: Any, emit: Any = None,  # noqa: B027
                 stop_event: Any = None, deadline: float = math.inf) -> None:  # optional: most fidelities have no second phase
        """The second phase, run once per study after the loop (e.g. fine-tune the top-k); must end by ``deadline``."""

    def proxy(self, options: dict[str, Any]) -> str | None:
        """What a trial's accuracy-like value is when it is not a validation accuracy (``cached``, ``naswot``...), else None."""
        return None

    # The function-style API the registry held before the protocol: ``FIDELITIES.get(name)(ctx)``.
    def __call__(self, ctx: EvalContext) -> EvalResult:
        return self.evaluate(ctx)

    def check_options(self, options: dict[str, Any]) -> None:
        self.check(options)


class _FunctionFidelity(Fidelity):
    """A plain ``(EvalContext) -> EvalResult`` function registered the old way (plugins written before the protocol)."""

    def __init__(self, fn: Callable[[EvalContext], EvalResult]) -> None:
        self.fn = fn
        self.options = tuple(getattr(fn, "options", ()))  # type: ignore[misc]

    def check(self, options: dict[str, Any]) -> None:
        check = getattr(self.fn, "check_options", None)
        if check is not None:
            check(options)

    def prepare(self, arch: Architecture, *, workspace: Any, data: Any, options: dict[str, Any], seed: int) -> Architecture:
        prepare = getattr(self.fn, "prepare_architecture", None)
        return arch if prepare is None else prepare(arch, workspace=workspace, data=data, options=options, seed=seed)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        return self.fn(ctx)


class FidelityRegistry(Registry[Fidelity]):
    """The fidelity registry: entries are :class:`Fidelity` instances (a plain function is wrapped on the way in or out)."""

    def add(self, name: str, obj: Any) -> None:
        fidelity = obj() if isinstance(obj, type) and issubclass(obj, Fidelity) else as_fidelity(obj)
        fidelity.name = name
        super().add(name, fidelity)

    def get(self, name: str) -> Fidelity:
        return as_fidelity(super().get(name))


def as_fidelity(obj: Any) -> Fidelity:
    """A registry entry as a Fidelity (tests and old plugins put plain functions there)."""
    return obj if isinstance(obj, Fidelity) else _FunctionFidelity(obj)


FIDELITIES = FidelityRegistry("fidelity")

F = TypeVar("F", bound=type[Fidelity])


def register_fidelity(name: str) -> Callable[[F], F]:
    """Class decorator: register one instance of the Fidelity subclass under ``name`` (a duplicate name is an error)."""

    def decorator(cls: F) -> F:
        FIDELITIES.add(name, cls)
        return cls

    return decorator


def list_fidelities() -> list[str]:
    return FIDELITIES.names()


class _Finalizers:
    """Old read-only view: the fidelities with a second phase, and their ``finalize``."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in FIDELITIES and FIDELITIES.get(name).has_final_phase

    def get(self, name: str) -> Callable[..., None]:
        fidelity = FIDELITIES.get(name)
        if not fidelity.has_final_phase:
            raise RegistryError(f"the {name} fidelity has no second phase; these do: {', '.join(self.names())}.")
        return fidelity.finalize

    def names(self) -> list[str]:
        return [n for n in FIDELITIES.names() if n in self]


FINALIZERS = _Finalizers()


# Options of the second phase (``nas_core.fidelities.cached.finalize_top_k``) that every fidelity with a finalizer accepts.
FINETUNE_OPTIONS = ("finetune_top_k", "finetune_epochs", "finetune_patience", "finetune_seconds", "finetune_share", "finetune_recipe",
                    "finetune_lr", "finetune_batch_size")
FINETUNE_TOP_K = FidelityOption(
    "finetune_top_k", "Finalists trained after the search", 2, minimum=1, maximum=50,
    help="The top-k candidates are trained end to end for their final metrics; the best config is chosen among them. "
         f"With a timeout, the last {FINETUNE_SHARE:.0%} of it is kept for this phase (option finetune_share).")


def finish(model: MocaNet, ctx: EvalContext, history: list[dict[str, float]], train_s: float, **extra: Any) -> EvalResult:
    measured = measure_model(model, ctx.data, ctx.device, should_stop=ctx.should_stop)
    metrics = dict(measured["metrics"])
    metrics["train_seconds"] = train_s
    metrics["epochs_trained"] = len(history)
    if any(not math.isfinite(float(v)) for v in metrics.values()):
        raise Diverged("a metric came out NaN/inf; the model diverged")
    return EvalResult(
        metrics=metrics,
        history=history,
        confusion=measured["confusion"],
        per_class_accuracy=measured["per_class_accuracy"],
        latency=measured["latency"],
        state_dict={k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        extra=dict(extra),
    )
