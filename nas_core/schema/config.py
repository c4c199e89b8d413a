"""Architecture genotype: frozen dataclasses <-> JSON (with ``schema_version``), validation, content hash, summary.

The same JSON document is the downloadable "best config": it carries the dataset it was found
on, the architecture, the training recipe, the measured metrics and the provenance, and
:func:`nas_core.export.build_model` rebuilds the identical network from it anywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nas_core.errors import ConfigError, NasCoreError
from nas_core.registry import Registry  # noqa: F401  (re-exported for type users)

__all__ = [
    "SCHEMA_VERSION",
    "BlockSpec",
    "HeadSpec",
    "Architecture",
    "TrainingRecipe",
    "DatasetRef",
    "ModelConfig",
    "OPTIMIZERS",
    "AUGMENTATIONS",
    "SCHEDULES",
    "AUGMENT_OPS",
    "PRECISIONS",
    "parse_augmentation",
]

SCHEMA_VERSION = 1
OPTIMIZERS = ("adam", "adamw", "sgd")
# Named augmentations offered by the spaces; any "+"-join of nas_core.recipes.AUGMENT_OPS is valid in a config.
AUGMENTATIONS = ("none", "shift", "flip", "shift+flip", "crop", "crop+flip", "crop+erase", "crop+flip+erase")
# What each value does is in nas_core.recipes (kept there with the torch code that implements it).
SCHEDULES = ("cosine", "onecycle", "cosine-warmup")
AUGMENT_OPS = ("shift", "flip", "crop", "hflip", "erase")
TRAIN_SPLITS = ("train", "train+val")
# Arithmetic of the training steps: ``fp32``; ``bf16`` (autocast: convolutions and matrix products in bfloat16, weights,
# optimizer and evaluation in float32); ``auto``, bf16 where the device computes it natively (a CUDA GPU with bf16, a CPU
# with AVX512-BF16 or AMX) on inputs larger than 16x16, else fp32 (``training.recipes.resolve_precision``).
PRECISIONS = ("fp32", "bf16", "auto")


def parse_augmentation(text: str) -> tuple[str, ...]:
    """``"crop+erase"`` -> ``("crop", "erase")``; ``"none"`` -> ``()``. Raises ValueError naming the valid ops."""
    if text == "none":
        return ()
    ops = tuple(text.split("+"))
    bad = [op for op in ops if op not in AUGMENT_OPS]
    if bad or len(set(ops)) != len(ops) or not ops:
        raise ValueError(f"augmentation must be 'none' or ops joined by '+' from {', '.join(AUGMENT_OPS)} (each once), but got {text!r}")
    return ops


def _check_keys(where: str, data: Any, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, but got {type(data).__name__}.")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {', '.join(k if str(k).isprintable() else repr(k) for k in unknown)}; allowed keys are {', '.join(sorted(allowed))}."
        )
    missing = sorted(required - set(data))
    if missing:
        raise ConfigError(f"{where} is missing required key(s) {', '.join(missing)}.")
    return data


@dataclass(frozen=True)
class BlockSpec:
    """One block: a registry ``kind`` and its parameters; ``library_id``/``sha256`` pin pretrained weights."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    library_id: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "params": dict(sorted(self.params.items()))}
        if self.library_id:
            d["library_id"] = self.library_id
            d["sha256"] = self.sha256
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "block") -> BlockSpec:
        d = _check_keys(where, data, {"kind", "params", "library_id", "sha256"}, {"kind"})
        params = d.get("params", {})
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.params must be an object, but got {params!r}.")
        return cls(kind=str(d["kind"]), params=dict(params), library_id=d.get("library_id"), sha256=d.get("sha256"))

    def label(self) -> str:
        from nas_core.blocks import BLOCKS, Block

        # The block names itself; a kind this process has not registered (a plug-in not loaded) gets the generic name.
        bits = BLOCKS.get(self.kind).label_parts(self.params) if self.kind in BLOCKS else Block.label_parts(self.params)
        if self.kind not in BLOCKS:
            bits[0] = self.kind
        if self.library_id:
            bits.append("*")
        return "".join(bits[:1]) + ("-" + "-".join(bits[1:]) if len(bits) > 1 else "")


@dataclass(frozen=True)
class HeadSpec:
    """Classifier head: global ``avg`` pooling or ``flatten``, hidden fully-connected layers, dropout."""

    pool: str = "avg"
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    activation: str = "relu"

    def to_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "hidden": list(self.hidden), "dropout": self.dropout, "activation": self.activation}

    @classmethod
    def from_dict(cls, data: Any) -> HeadSpec:
        d = _check_keys("architecture.head", data, {"pool", "hidden", "dropout", "activation"})
        return cls(
            pool=str(d.get("pool", "avg")),
            hidden=tuple(int(h) for h in d.get("hidden", ())),
            dropout=float(d.get("dropout", 0.0)),
            activation=str(d.get("activation", "relu")),
        )


@dataclass(frozen=True)
class Architecture:
    """A network: optional stem block, stages of blocks, and a head, for a given input shape and class count."""

    input_shape: tuple[int, int, int]
    num_classes: int
    stages: tuple[tuple[BlockSpec, ...], ...]
    head: HeadSpec = HeadSpec()
    stem: BlockSpec | None = None

    def blocks(self) -> list[BlockSpec]:
        out = [self.stem] if self.stem else []
        for stage in self.stages:
            out.extend(stage)
        return out

    def validate(self) -> Architecture:
        """Raise :class:`ConfigError` naming the first broken rule; returns ``self`` for chaining."""
        from nas_core.blocks import BLOCKS, make_activation

        if len(self.input_shape) != 3 or any(int(v) < 1 for v in self.input_shape):
            raise ConfigError(f"input_shape must be three positive integers (C, H, W), but got {list(self.input_shape)}.")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, but got {self.num_classes}.")
        if not self.blocks():
            raise ConfigError("an architecture needs at least one block in its stem or stages.")
        for spec in self.blocks():
            BLOCKS.get(spec.kind).resolve(spec.params)  # unknown kind or parameter -> clear error
        if self.head.pool not in ("avg", "flatten"):
            raise ConfigError(f"head.pool must be 'avg' or 'flatten', but got {self.head.pool!r}.")
        if not 0.0 <= self.head.dropout < 1.0:
            raise ConfigError(f"head.dropout must be in [0, 1), but got {self.head.dropout}.")
        if any(h < 1 for h in self.head.hidden):
            raise ConfigError(f"head.hidden sizes must be positive, but got {list(self.head.hidden)}.")
        make_activation(self.head.activation)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "stem": self.stem.to_dict() if self.stem else None,
            "stages": [[b.to_dict() for b in stage] for stage in self.stages],
            "head": self.head.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        d = _check_keys("architecture", data, {"input_shape", "num_classes", "stem", "stages", "head"},
                        {"input_shape", "num_classes", "stages"})
        stages = d["stages"]
        if not isinstance(stages, list) or not all(isinstance(s, list) for s in stages):
            raise ConfigError("architecture.stages must be a list of lists of blocks.")
        try:
            arch = cls(
                input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore[arg-type]
                num_classes=int(d["num_classes"]),
                stem=BlockSpec.from_dict(d["stem"], "architecture.stem") if d.get("stem") else None,
                stages=tuple(
                    tuple(BlockSpec.from_dict(b, f"architecture.stages[{i}][{j}]") for j, b in enumerate(stage))
                    for i, stage in enumerate(stages)
                ),
                head=HeadSpec.from_dict(d.get("head", {})),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, NasCoreError):
                raise
            raise ConfigError(f"architecture has a value of the wrong type: {exc}.") from None
        return arch.validate()

    def content_hash(self) -> str:
        """sha256 of the canonical JSON: equal networks hash equal, whatever order the JSON keys came in."""
        return _hash(self.to_dict())

    def summary(self) -> str:
        """One line for humans, e.g. ``conv-32 > maxpool | conv-64-k5 > maxpool | head flatten>128 > 10``."""
        parts = []
        if self.stem:
            parts.append("stem " + self.stem.label())
        parts += [" > ".join(b.label() for b in stage) for stage in self.stages if stage]
        head = f"head {self.head.pool}" + "".join(f">{h}" for h in self.head.hidden) + f">{self.num_classes}"
        return " | ".join(parts + [head])


@dataclass(frozen=True)
class TrainingRecipe:
    """How to train: optimizer, learning rate, weight decay, epochs, batch size, augmentation, patience,
    schedule (with its warm-up fraction), label smoothing, weight averaging (EMA decay, 0 = off), the data it
    trains on (``train``, early-stopped on validation; or ``train+val``, a refit that keeps the last epoch) and the
    arithmetic of its steps (``precision``: ``fp32``, ``bf16`` or ``auto``, see :data:`PRECISIONS`).

    Keys added after the first release default to what configs without them were trained with
    (per-epoch cosine annealing, no warm-up, no smoothing, no averaging, float32), so an old config retrains as before.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    augmentation: str = "none"
    patience: int = 5
    schedule: str = "cosine"
    warmup: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    train_split: str = "train"
    precision: str = "fp32"

    @property
    def trains_on_val(self) -> bool:
        """Whether the validation split is trained on too (a refit): its validation score is then not a held-out one."""
        return self.train_split == "train+val"

    def validate(self) -> TrainingRecipe:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"training.optimizer must be one of {', '.join(OPTIMIZERS)}, but got {self.optimizer!r}.")
        if not (0 < self.lr < 10):
            raise ConfigError(f"training.lr must be in (0, 10), but got {self.lr}.")
        if self.weight_decay < 0:
            raise ConfigError(f"training.weight_decay must be >= 0, but got {self.weight_decay}.")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError(
                f"training.epochs, batch_size and patience must be >= 1, but got "
                f"{self.epochs}, {self.batch_size}, {self.patience}."
            )
        try:
            parse_augmentation(self.augmentation)
        except ValueError:
            raise ConfigError(
                f"training.augmentation must be one of {', '.join(AUGMENTATIONS)} (or another '+'-join of {', '.join(AUGMENT_OPS)}), "
                f"but got {self.augmentation!r}."
            ) from None
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"training.schedule must be one of {', '.join(SCHEDULES)}, but got {self.schedule!r}.")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"training.warmup is a fraction of the run and must be in [0, 1), but got {self.warmup}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"training.label_smoothing must be in [0, 1), but got {self.label_smoothing}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"training.ema_decay must be in [0, 1) (0 turns weight averaging off), but got {self.ema_decay}.")
        if self.train_split not in TRAIN_SPLITS:
            raise ConfigError(f"training.train_split must be one of {', '.join(TRAIN_SPLITS)}, but got {self.train_split!r}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"training.precision must be one of {', '.join(PRECISIONS)}, but got {self.precision!r}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainingRecipe:
        d = _check_keys("training", data, set(cls.__dataclass_fields__))
        try:
            d = {k: type(getattr(cls(), k))(v) for k, v in d.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"training has a value of the wrong type: {exc}.") from None
        return cls(**d).validate()


@dataclass(frozen=True)
class DatasetRef:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    classes: tuple[str, ...] = ()
    fingerprint: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "fingerprint": self.fingerprint,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: Any) -> DatasetRef:
        d = _check_keys("dataset", data, {"name", "input_shape", "num_classes", "classes", "fingerprint", "mean", "std"},
                        {"name", "input_shape", "num_classes"})
        return cls(
            name=str(d["name"]),
            input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore[arg-type]
            num_classes=int(d["num_classes"]),
            classes=tuple(str(c) for c in d.get("classes", ())),
            fingerprint=str(d.get("fingerprint", "")),
            mean=tuple(float(v) for v in d.get("mean", ())),
            std=tuple(float(v) for v in d.get("std", ())),
        )


@dataclass(frozen=True)
class ModelConfig:
    """The downloadable config: dataset + architecture + training + metrics + provenance."""

    dataset: DatasetRef
    architecture: Architecture
    training: TrainingRecipe = TrainingRecipe()
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def candidate_hash(self) -> str:
        """Identity of a candidate: architecture + training recipe (what a trial actually trains)."""
        return _hash({"architecture": self.architecture.to_dict(), "training": self.training.to_dict()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "dataset": self.dataset.to_dict(),
            "architecture": self.architecture.to_dict(),
            "training": self.training.to_dict(),
            "metrics": _jsonable(self.metrics),
            "provenance": _jsonable(self.provenance),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)  # atomic: a reader never sees half a file
        return path

    def with_metrics(self, **metrics: Any) -> ModelConfig:
        return replace(self, metrics={**self.metrics, **metrics})

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        try:
            return cls._from_dict(data)
        except NasCoreError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
            # a value of the wrong type deep in a hand-edited config: one line naming it, not a traceback
            what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyError) else f"missing value {exc}"
            raise ConfigError(f"config is not a valid MoCA-NAS config ({what}); re-download it or compare it with a fresh best_config.json.") from None

    @classmethod
    def _from_dict(cls, data: Any) -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, but got {type(data).__name__}.")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise ConfigError("config has no integer schema_version; is this a MoCA-NAS best_config.json?")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"config schema_version {version} is newer than this MoCA-NAS understands ({SCHEMA_VERSION}); "
                "upgrade moca-nas (pip install -U -r requirements.txt) to read it."
            )
        if version < 1:
            raise ConfigError(f"config schema_version must be >= 1, but got {version}.")
        d = _check_keys("config", data, {"schema_version", "dataset", "architecture", "training", "metrics", "provenance"},
                        {"dataset", "architecture"})
        dataset = DatasetRef.from_dict(d["dataset"])
        arch = Architecture.from_dict(d["architecture"])
        if tuple(arch.input_shape) != tuple(dataset.input_shape) or arch.num_classes != dataset.num_classes:
            raise ConfigError(
                f"architecture is for input {list(arch.input_shape)} with {arch.num_classes} classes but the dataset "
                f"says {list(dataset.input_shape)} with {dataset.num_classes}; fix one so they agree."
            )
        for key in ("metrics", "provenance"):
            if not isinstance(d.get(key, {}), dict):
                raise ConfigError(f"config.{key} must be an object.")
        return cls(
            dataset=dataset,
            architecture=arch,
            training=TrainingRecipe.from_dict(d.get("training", {})),
            metrics=dict(d.get("metrics", {})),
            provenance=dict(d.get("provenance", {})),
            schema_version=version,
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "config") -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}); re-download or fix it.") from None
        return cls.from_dict(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
