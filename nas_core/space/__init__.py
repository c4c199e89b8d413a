"""Search spaces as data, with define-by-run sampling from an Optuna trial and the grammar that turns samples into networks.

A space is a list of :class:`ParamSpec` (choices, ranges, log scale, per-layer repeats and
conditions) plus the ``kind`` of builder that maps sampled values to an :class:`Architecture` and a
:class:`TrainingRecipe`. Because it is data, the dashboard renders and edits it, and a JSON/YAML file
can hold it (``{"base": "seed-cnn", "params": {"lr": {"low": 0.001}}}`` overrides a preset).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from nas_core.blocks import get_block
from nas_core.errors import ConfigError, RegistryError, SearchSpaceError
from nas_core.registry import Registry
from nas_core.schema.config import Architecture, BlockSpec, HeadSpec, TrainingRecipe

__all__ = [
    "ParamSpec",
    "SearchSpace",
    "SPACE_BUILDERS",
    "PRESETS",
    "get_space",
    "load_space",
    "list_spaces",
    "sample_values",
]

PARAM_TYPES = ("int", "float", "categorical", "bool")


class _TrialLike(Protocol):
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class ParamSpec:
    """One searchable parameter.

    ``repeat`` names an int parameter: this one is sampled once per layer (``name_0``, ``name_1``...).
    ``when`` makes it conditional: ``{"stage_block": ["mbconv"]}`` samples it only for MBConv stages
    (a repeated sibling is matched at the same index).
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    repeat: str | None = None
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    help: str = ""

    def validate(self) -> ParamSpec:
        where = f"search-space parameter {self.name!r}"
        if self.type not in PARAM_TYPES:
            raise SearchSpaceError(f"{where}: type must be one of {', '.join(PARAM_TYPES)}, but got {self.type!r}.")
        if self.type in ("int", "float"):
            if self.low is None or self.high is None:
                raise SearchSpaceError(f"{where}: a {self.type} range needs both low and high.")
            if self.low > self.high:
                raise SearchSpaceError(f"{where}: `low <= high` must hold, but got low={self.low}, high={self.high}.")
            if self.log and self.low <= 0:
                raise SearchSpaceError(f"{where}: a log-scale range needs low > 0, but got low={self.low}.")
        if self.type == "categorical" and not self.choices:
            raise SearchSpaceError(f"{where}: a categorical parameter needs at least one choice.")
        return self

    def suggest(self, trial: _TrialLike, name: str) -> Any:
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        if self.type == "float":
            return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]
        if self.type == "bool":
            return trial.suggest_categorical(name, (False, True))
        return trial.suggest_categorical(name, tuple(self.choices))

    def grid_values(self) -> list[Any]:
        """Finite values for the grid sampler: all ints, three points of a float range, every choice."""
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1))  # type: ignore[arg-type]
        if self.type == "float":
            lo, hi = float(self.low), float(self.high)  # type: ignore[arg-type]
            mid = math.sqrt(lo * hi) if self.log else (lo + hi) / 2
            return sorted({lo, mid, hi})
        if self.type == "bool":
            return [False, True]
        return list(self.choices)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "name" and not _empty(v)}
        if "choices" in d:
            d["choices"] = list(d["choices"])
        if "when" in d:
            d["when"] = {k: list(v) for k, v in d["when"].items()}
        d["type"] = self.type
        return d

    @classmethod
    def from_dict(cls, name: str, data: Any) -> ParamSpec:
        if not isinstance(data, dict):
            raise SearchSpaceError(f"search-space parameter {name!r} must be an object, but got {data!r}.")
        allowed = {"type", "low", "high", "log", "choices", "repeat", "when", "help"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SearchSpaceError(
                f"search-space parameter {name!r} has unknown key(s) {', '.join(k if str(k).isprintable() else repr(k) for k in unknown)}; allowed: {', '.join(sorted(allowed))}."
            )
        when = data.get("when") or {}
        if not isinstance(when, dict):
            raise SearchSpaceError(f"search-space parameter {name!r}: when must map parameter names to lists of values.")
        return cls(
            name=name,
            type=str(data.get("type", "categorical")),
            low=data.get("low"),
            high=data.get("high"),
            log=bool(data.get("log", False)),
            choices=tuple(_list_of(data.get("choices"), "choices", f"search-space parameter {name!r}")),
            repeat=data.get("repeat") if data.get("repeat") is None else str(data.get("repeat")),
            when={k: tuple(v if isinstance(v, list) else [v]) for k, v in when.items()},
            help=str(data.get("help", "")),
        ).validate()


def _list_of(value: Any, what: str, source: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise SearchSpaceError(f"{source}: {what} must be a list, but got {value!r}.")
    return list(value)


def _empty(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, (str, tuple, dict)) and not value)


Builder = Callable[[dict[str, Any], tuple[int, int, int], int, int], tuple[Architecture, TrainingRecipe]]
SPACE_BUILDERS: Registry[Builder] = Registry("search-space kind")


@dataclass(frozen=True)
class SearchSpace:
    """A named space: parameters as data plus the builder ``kind`` and its grammar rules (for humans and the UI)."""

    name: str
    kind: str
    params: tuple[ParamSpec, ...]
    rules: tuple[str, ...] = ()
    description: str = ""

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise SearchSpaceError(f"space {self.name!r} has no parameter {name!r}; it has {', '.join(self.names())}.")

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def validate(self) -> SearchSpace:
        if self.kind not in SPACE_BUILDERS:
            raise SearchSpaceError(f"unknown search-space kind {self.kind!r}; use one of {', '.join(SPACE_BUILDERS.names())}.")
        names = set(self.names())
        for p in self.params:
            p.validate()
            if p.repeat is not None:
                if p.repeat not in names or self.param(p.repeat).type != "int":
                    raise SearchSpaceError(f"parameter {p.name!r} repeats over {p.repeat!r}, which is not an int parameter here.")
                if int(self.param(p.repeat).low or 0) < 0:  # type: ignore[arg-type]
                    raise SearchSpaceError(f"repeat count {p.repeat!r} must not go below 0.")
            for cond in p.when:
                if cond not in names:
                    raise SearchSpaceError(f"parameter {p.name!r} is conditional on unknown parameter {cond!r}.")
        missing = sorted(set(REQUIRED.get(self.kind, ())) - names)
        if missing:
            raise SearchSpaceError(f"a {self.kind!r} space needs parameter(s) {', '.join(missing)}.")
        # Build the smallest and the largest corner once, so a broken edit fails here and not in trial 7.
        for pick in (0, -1):
            values = _corner(self, pick)
            try:
                self.build(values, input_shape=(1, 8, 8), num_classes=2, epochs=1)
            except (ConfigError, RegistryError, TypeError, ValueError, KeyError, ArithmeticError) as exc:
                if isinstance(exc, SearchSpaceError):
                    raise
                raise SearchSpaceError(f"space {self.name!r} builds an invalid network at its {'low' if pick == 0 else 'high'} corner: {exc}") from None
        return self

    def sample(self, trial: _TrialLike) -> dict[str, Any]:
        return sample_values(self, trial)

    def build(self, values: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int, epochs: int) -> tuple[Architecture, TrainingRecipe]:
        arch, recipe = SPACE_BUILDERS.get(self.kind)(values, tuple(input_shape), int(num_classes), int(epochs))  # type: ignore[arg-type]
        return arch.validate(), recipe.validate()

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter name this space can suggest, with finite values, for ``GridSampler``."""
        grid: dict[str, list[Any]] = {}
        for p in self.params:
            if p.repeat is None:
                grid[p.name] = p.grid_values()
            else:
                for i in range(int(self.param(p.repeat).high)):  # type: ignore[arg-type]
                    grid[f"{p.name}_{i}"] = p.grid_values()
        size = math.prod(len(v) for v in grid.values())
        if size > 200_000:
            raise SearchSpaceError(
                f"the grid over space {self.name!r} has {size:.3g} points (limit 200000); "
                "narrow the space in a space file or use another sampler (tpe, nsga2, random)."
            )
        return grid

    def with_param(self, name: str, **changes: Any) -> SearchSpace:
        """A copy with one parameter's range or choices edited (validated)."""
        params = tuple(replace(p, **changes).validate() if p.name == name else p for p in self.params)
        if name not in self.names():
            self.param(name)
        return replace(self, params=params).validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "rules": list(self.rules),
            "params": {p.name: p.to_dict() for p in self.params},
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "space") -> SearchSpace:
        try:
            return cls._from_dict(data, source=source)
        except (ConfigError, RegistryError):
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
            # a value of the wrong type or shape deep in a hand-edited file: name the file and the problem, not a traceback
            what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyError) else f"missing value {exc}"
            raise SearchSpaceError(f"{source} is not a valid search space ({what}); start from `python -m nas_core spaces seed-cnn`.") from None

    @classmethod
    def _from_dict(cls, data: Any, *, source: str = "space") -> SearchSpace:
        if not isinstance(data, dict):
            raise SearchSpaceError(f"{source} must be a JSON/YAML object with 'kind' (or 'base') and 'params'.")
        allowed = {"name", "kind", "base", "params", "rules", "description"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SearchSpaceError(f"{source} has unknown key(s) {', '.join(k if str(k).isprintable() else repr(k) for k in unknown)}; allowed: {', '.join(sorted(allowed))}.")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise SearchSpaceError(f"{source}: params must map names to parameter objects.")
        if "base" in data:
            base = get_space(str(data["base"]))
            merged = []
            for p in base.params:
                if p.name in params:
                    merged.append(ParamSpec.from_dict(p.name, {**p.to_dict(), **params[p.name]}))
                else:
                    merged.append(p)
            merged += [ParamSpec.from_dict(n, v) for n, v in params.items() if n not in base.names()]
            space = replace(base, name=str(data.get("name", f"{base.name}-custom")), params=tuple(merged))
        else:
            if "kind" not in data:
                raise SearchSpaceError(f"{source} needs 'kind' (seed-cnn or modular) or 'base' (a preset to override).")
            space = cls(
                name=str(data.get("name", "custom")),
                kind=str(data["kind"]),
                params=tuple(ParamSpec.from_dict(n, v) for n, v in params.items()),
                rules=tuple(str(r) for r in _list_of(data.get("rules"), "rules", source)),
                description=str(data.get("description", "")),
            )
        return space.validate()


def _corner(space: SearchSpace, pick: int) -> dict[str, Any]:
    class Corner:
        def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
            return (low, high)[pick]

        def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
            return (low, high)[pick]

        def suggest_categorical(self, name: str, choices: Any) -> Any:
            return list(choices)[pick]

    return sample_values(space, Corner())


def sample_values(space: SearchSpace, trial: _TrialLike) -> dict[str, Any]:
    """Define-by-run sampling: counts first, then per-layer parameters, conditions honoured."""
    values: dict[str, Any] = {}
    done_groups: set[str] = set()

    def active(p: ParamSpec, index: int | None) -> bool:
        for cond, allowed in p.when.items():
            other = space.param(cond)
            key = f"{cond}_{index}" if (other.repeat is not None and index is not None) else cond
            if values.get(key) not in allowed:
                return False
        return True

    for p in space.params:
        if p.repeat is None:
            if active(p, None):
                values[p.name] = p.suggest(trial, p.name)
            continue
        if p.repeat in done_groups:
            continue
        done_groups.add(p.repeat)
        group = [q for q in space.params if q.repeat == p.repeat]
        for i in range(int(values.get(p.repeat, 0))):
            for q in group:
                if active(q, i):
                    values[f"{q.name}_{i}"] = q.suggest(trial, f"{q.name}_{i}")
    return values


WARMUP = 0.2  # fraction of a run spent warming up under the onecycle and cosine-warmup schedules


def _recipe(v: dict[str, Any], epochs: int) -> TrainingRecipe:
    """The sampled training recipe; parameters a space leaves out keep the recipe of the first release."""
    schedule = str(v.get("schedule", "cosine"))
    return TrainingRecipe(
        optimizer=str(v.get("optimizer", "adam")).lower(),
        lr=float(v.get("lr", 1e-3)),
        weight_decay=float(v.get("weight_decay", 0.0)),
        epochs=epochs,
        batch_size=int(v.get("batch_size", 64)),
        augmentation=str(v.get("augmentation", "none")),
        schedule=schedule,
        warmup=float(v.get("warmup", 0.0 if schedule == "cosine" else WARMUP)),
        label_smoothing=float(v.get("label_smoothing", 0.0)),
        ema_decay=float(v.get("ema_decay", 0.0)),
        precision="auto",  # bf16 where the hardware computes it natively (training.recipes.resolve_precision)
    )


@SPACE_BUILDERS.register("seed-cnn")
def _build_seed_cnn(v: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int, epochs: int) -> tuple[Architecture, TrainingRecipe]:
    act = str(v.get("activation", "relu")).lower()
    block = str(v.get("conv_block", "conv"))
    every = int(v.get("pool_every", 1))
    stages = []
    h, w = input_shape[1], input_shape[2]
    for i in range(int(v["n_conv"])):
        stage = [BlockSpec(block, {"out_channels": int(v[f"conv_filters_{i}"]), "kernel": int(v[f"conv_kernel_{i}"]), "activation": act})]
        # grammar: pool after every ``pool_every``-th conv, only while there is a grid left to halve
        if v.get("pooling") and (i + 1) % every == 0 and min(h, w) >= 2:
            stage.append(BlockSpec("pool", {"mode": "max"}))
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        stages.append(tuple(stage))
    hidden = tuple(int(v[f"fc_units_{i}"]) for i in range(int(v["n_fc"]) - 1))
    head = HeadSpec(pool="flatten", hidden=hidden, dropout=float(v.get("dropout", 0.0)), activation=act)
    return Architecture(input_shape, num_classes, tuple(stages), head), _recipe(v, epochs)


MODULAR_BLOCKS = ("conv", "residual", "sepconv", "mbconv", "dilated", "attention")


def _stage_value(v: dict[str, Any], param: str, stage: int, repeat: int, act: str) -> Any:
    """A stage-level value for one block of the stage (stride applies to the stage's first block only)."""
    if param == "out_channels":
        return int(v[f"stage_channels_{stage}"])
    if param == "kernel":
        return int(v.get(f"stage_kernel_{stage}", 3))
    if param == "stride":
        return int(v.get(f"stage_stride_{stage}", 1)) if repeat == 0 else 1
    if param == "activation":
        return act
    raise SearchSpaceError(f"a modular stage has no value {param!r}; blocks may declare out_channels, kernel, stride, activation.")


@SPACE_BUILDERS.register("modular")
def _build_modular(v: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int, epochs: int) -> tuple[Architecture, TrainingRecipe]:
    act = str(v.get("activation", "relu")).lower()
    stem = BlockSpec("conv", {"out_channels": int(v["stem_channels"]), "stride": int(v.get("stem_stride", 1)), "activation": act})
    stages = []
    for i in range(int(v["n_stages"])):
        kind = str(v[f"stage_block_{i}"])
        blocks = []
        block = get_block(kind)
        for r in range(int(v.get(f"stage_repeats_{i}", 1))):
            params: dict[str, Any] = {p: _stage_value(v, p, i, r, act) for p in block.stage_params}
            for p, choices in block.search_params.items():  # the block's own sampled parameters, typed as its choices
                params[p] = type(choices[0])(v.get(f"stage_{p}_{i}", block.defaults[p]))
            blocks.append(BlockSpec(kind, params))
        stages.append(tuple(blocks))
    hidden = (int(v["head_hidden"]),) if int(v.get("head_hidden", 0)) > 0 else ()
    head = HeadSpec(pool="avg", hidden=hidden, dropout=float(v.get("dropout", 0.0)), activation=act)
    return Architecture(input_shape, num_classes, tuple(stages), head, stem=stem), _recipe(v, epochs)


REQUIRED = {
    "seed-cnn": ("n_conv", "conv_filters", "conv_kernel", "n_fc", "fc_units"),
    "modular": ("stem_channels", "n_stages", "stage_block", "stage_channels"),
}


def _taking(stage_param: str) -> list[str]:
    """The modular blocks that take a stage-level value (the space samples it only for them)."""
    return [b for b in MODULAR_BLOCKS if stage_param in get_block(b).stage_params]


def _block_search_params(kinds: tuple[str, ...]) -> list[ParamSpec]:
    """``stage_<param>`` for every parameter a block declares in ``search_params``, sampled only for that block."""
    out: dict[str, ParamSpec] = {}
    for kind in kinds:
        for p, choices in get_block(kind).search_params.items():
            users = [k for k in kinds if p in get_block(k).search_params]
            if choices == (False, True):
                out.setdefault(p, _p(f"stage_{p}", "bool", repeat="n_stages", when={"stage_block": users}))
            else:
                out.setdefault(p, _p(f"stage_{p}", "categorical", choices=choices, repeat="n_stages", when={"stage_block": users}))
    return list(out.values())


def _p(name: str, type: str, **kw: Any) -> ParamSpec:
    if "choices" in kw:
        kw["choices"] = tuple(kw["choices"])
    if "when" in kw:
        kw["when"] = {k: tuple(v) for k, v in kw["when"].items()}
    return ParamSpec(name=name, type=type, **kw).validate()


_TRAINING = (
    _p("lr", "float", low=1e-4, high=1e-2, log=True, help="learning rate (the peak one under onecycle / cosine-warmup)"),
    _p("optimizer", "categorical", choices=("adam", "adamw", "sgd"), help="sgd is SGD with Nesterov momentum 0.9"),
    _p("batch_size", "categorical", choices=(32, 64, 128)),
    _p("weight_decay", "categorical", choices=(0.0, 5e-4, 5e-2), help="decoupled under adamw, L2 otherwise"),
    _p("schedule", "categorical", choices=("onecycle", "cosine-warmup", "cosine"),
       help=f"learning-rate schedule; onecycle and cosine-warmup warm up over the first {WARMUP:.0%} of the run"),
    _p("augmentation", "categorical", choices=("none", "crop", "crop+erase", "crop+flip", "crop+flip+erase"),
       help="crop: random shift by up to 1/14 of the width, zero-filled; erase: random erasing; flip: horizontal"),
    _p("label_smoothing", "categorical", choices=(0.0, 0.1)),
    _p("ema_decay", "categorical", choices=(0.0, 0.99, 0.999), help="exponential moving average of the weights (0 = off)"),
)

PRESETS: dict[str, SearchSpace] = {
    "seed-cnn": SearchSpace(
        name="seed-cnn",
        kind="seed-cnn",
        description="CNNs: 1-5 conv (or residual) layers with optional max-pool after every 1st or 2nd, 1-4 fully-connected layers",
        rules=("pooling is added after every pool_every-th conv only while the feature map is at least 2x2",
               "the last fully-connected layer is the classifier (n_fc=1 means no hidden layer)"),
        params=(
            _p("n_conv", "int", low=1, high=5, help="number of conv layers"),
            _p("conv_filters", "categorical", choices=(32, 64, 128, 256), repeat="n_conv"),
            _p("conv_kernel", "categorical", choices=(3, 5), repeat="n_conv"),
            _p("conv_block", "categorical", choices=("conv", "residual"), help="plain conv+BN, or a two-conv residual block"),
            _p("activation", "categorical", choices=("relu", "leakyrelu", "elu", "gelu")),
            _p("pooling", "bool", help="max-pool after every pool_every-th conv"),
            _p("pool_every", "categorical", choices=(1, 2), help="pool after every conv (1) or every second one (2)"),
            _p("n_fc", "int", low=1, high=4, help="fully-connected layers, classifier included"),
            _p("fc_units", "categorical", choices=(64, 128, 256, 512), repeat="n_fc"),
            _p("dropout", "float", low=0.0, high=0.5),
            *_TRAINING,
        ),
    ),
    "modular": SearchSpace(
        name="modular",
        kind="modular",
        description="a conv stem, then 1-3 stages of registry blocks (conv, residual, sepconv, mbconv, dilated, attention)",
        rules=("attention only after a token adapter (inserted automatically after image blocks)",
               "attention sees at most 64 tokens: a pooling reduce adapter shrinks larger grids first",
               "stride applies to the first block of a stage; dilated blocks keep the resolution",
               "blocks pinned to an input width get a 1x1 channel adapter"),
        params=(
            _p("stem_channels", "categorical", choices=(16, 24, 32)),
            _p("stem_stride", "categorical", choices=(1, 2)),
            _p("n_stages", "int", low=1, high=3),
            _p("stage_block", "categorical", choices=MODULAR_BLOCKS, repeat="n_stages"),
            _p("stage_channels", "categorical", choices=(16, 32, 64, 96), repeat="n_stages", when={"stage_block": _taking("out_channels")}),
            _p("stage_repeats", "int", low=1, high=2, repeat="n_stages"),
            _p("stage_kernel", "categorical", choices=(3, 5), repeat="n_stages", when={"stage_block": _taking("kernel")}),
            _p("stage_stride", "categorical", choices=(1, 2), repeat="n_stages", when={"stage_block": _taking("stride")}),
            *_block_search_params(MODULAR_BLOCKS),
            _p("activation", "categorical", choices=("relu", "gelu", "silu")),
            _p("head_hidden", "categorical", choices=(0, 64, 128)),
            _p("dropout", "float", low=0.0, high=0.3),
            *_TRAINING,
        ),
    ),
}


def list_spaces() -> list[str]:
    return list(PRESETS)


def get_space(name: str) -> SearchSpace:
    if name not in PRESETS:
        raise SearchSpaceError(f"unknown search space {name!r}; use one of {', '.join(PRESETS)} or a path to a .json/.yaml file.")
    return PRESETS[name]


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A preset by name, or a JSON/YAML file (full space, or ``base`` + overrides)."""
    text = str(name_or_path)
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text)
    if not path.suffix and not path.exists():
        return get_space(text)
    if not path.is_file():
        raise SearchSpaceError(f"search-space file {text} does not exist; pass a preset ({', '.join(PRESETS)}) or an existing file.")
    raw = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file, reported as one line
        raise SearchSpaceError(f"search-space file {text} could not be parsed: {str(exc).splitlines()[0]}.") from None
    return SearchSpace.from_dict(data, source=f"search-space file {path.name}")


# Preset sanity at import: a broken preset is a bug, better caught on the first import than in a search.
for _space in PRESETS.values():
    _space.validate()
del _space
