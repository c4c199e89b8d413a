"""MoCAFT, the ``cached`` fidelity: candidates assembled from frozen library blocks, prefix features cached.

How a candidate is scored:

1. :func:`bind_architecture` swaps every stage block (and the stem) for the nearest library block of
   the same kind (nearest width, then kernel, activation, expansion), keeping the candidate's stride
   (convolution weights do not depend on it; a residual shortcut's structure is checked), pinning its input
   width so the assembler inserts a trainable 1x1 channel adapter where widths disagree. The bound
   architecture is what the trial records (blocks carry ``library_id`` + ``sha256``).
2. The frozen prefix (the stem and the parameter-free layers after it by default; with
   ``cached_train="adapters"`` every layer up to the first trainable one) is run once per dataset split under
   ``torch.no_grad()``; its features are kept in a memory LRU and on disk as safetensors under
   ``<workspace>/cache/features/``, keyed by the prefix's block ids + sha256 and the dataset
   fingerprint, so every candidate sharing the prefix reuses them (:func:`cache_stats`).
3. Everything after the prefix is trained for 1-2 epochs on the cached features: adapters, blocks with no
   library match and the head from scratch, library blocks from their weights (``cached_train="suffix"``,
   the default). ``cached_train="adapters"`` keeps every library block frozen (in eval mode) and trains
   only adapters, unmatched blocks and the head: cheaper per step, but on the fidelity benchmark it ranks
   architectures far worse (it measures how donor features transfer, not how the network learns).

After the search, the ``cached`` finalizer fine-tunes the top-k Pareto candidates end to end
(blocks unfrozen) and records their final metrics beside the proxy ones.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nas_core.blocks import IMAGE, Shape, get_block
from nas_core.errors import LibraryError
from nas_core.fidelities.base import (
    FINETUNE_OPTIONS,
    FINETUNE_TOP_K,
    EvalContext,
    EvalResult,
    Fidelity,
    FidelityOption,
    register_fidelity,
)
from nas_core.library import BlockMeta, Library, build_library, open_library
from nas_core.model.assembly import MocaNet, assemble, plan
from nas_core.schema.config import Architecture, BlockSpec, TrainingRecipe
from nas_core.schema.record import with_records
from nas_core.training.frozen import Trainable
from nas_core.training.loop import set_seed, train_model
from nas_core.training.measure import classification_metrics, count_flops, count_params, measure_latency, model_size_mb
from nas_core.training.stops import Diverged

__all__ = [
    "FeatureCache",
    "CacheStats",
    "feature_cache",
    "cache_stats",
    "reset_cache_stats",
    "bind_architecture",
    "frozen_prefix",
    "cached_fidelity",
    "finalize_top_k",
]

CACHE_VERSION = 1
CACHED_MODES = ("suffix", "adapters")
FINETUNE_EPOCHS = 5  # default fine-tune length of a finalist that starts from its proxy weights


# --- binding a candidate to library blocks ---------------------------------------------------


def _score(meta: BlockMeta, spec: BlockSpec, incoming: int, dataset: str) -> float:
    """Lower is nearer: width first, then an adapter, kernel, expansion/SE, activation, stride, other-dataset blocks."""
    want = spec.params
    score = abs(math.log(meta.out_channels / max(1, int(want.get("out_channels", meta.out_channels)))))
    score += 0.7 * (meta.in_channels != incoming)  # an adapter ends the cached prefix: worth a 2x width difference
    score += 0.3 * (meta.block_params.get("kernel") != want.get("kernel", meta.block_params.get("kernel")))
    for key in ("expansion", "se"):
        if key in meta.block_params:
            score += 0.2 * (meta.block_params[key] != want.get(key, meta.block_params[key]))
    score += 0.1 * (meta.block_params.get("activation") != want.get("activation", meta.block_params.get("activation")))
    score += 0.05 * (meta.block_params.get("stride", 1) != want.get("stride", 1))
    score += 1.0 * (meta.source_dataset != dataset)
    return score


@functools.lru_cache(maxsize=4096)
def _structure(kind: str, params: str, in_c: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Names and shapes of a block's tensors: equal structures can share weights whatever the stride."""
    block = get_block(kind)(Shape(IMAGE, in_c, 8, 8), **json.loads(params))
    return tuple((k, tuple(v.shape)) for k, v in block.state_dict().items())


def _rebound_params(meta: BlockMeta, spec: BlockSpec) -> dict[str, Any]:
    """The library block's parameters with the candidate's stride (the resolution downstream depends on it)."""
    params = dict(meta.block_params)
    if "stride" in params:
        params["stride"] = int(spec.params.get("stride", 1))
    return params


def _matches(meta: BlockMeta, spec: BlockSpec, shape: Shape) -> bool:
    if meta.kind != spec.kind or get_block(spec.kind).layout_in != IMAGE or shape.layout != IMAGE:
        return False  # token blocks carry a positional table tied to one token count: they are trained, not bound
    if int(meta.block_params.get("stride", 1)) == int(spec.params.get("stride", 1)):
        return True
    # Convolution weights do not depend on the stride; a residual's shortcut projection does: compare structures.
    mine = _structure(meta.kind, json.dumps(meta.block_params, sort_keys=True), meta.in_channels)
    theirs = _structure(meta.kind, json.dumps(_rebound_params(meta, spec), sort_keys=True), meta.in_channels)
    return mine == theirs


def bind_architecture(arch: Architecture, library: Library, *, dataset: str = "") -> Architecture:
    """The architecture with each block replaced by its nearest library block (when one fits).

    A block keeps its kind and stride (the resolution downstream depends on it); width, kernel,
    activation and mbconv expansion/SE become the library block's. Blocks with no fitting library
    block (e.g. attention at an unseen width) stay as they are and are trained.
    """
    c, h, w = arch.input_shape
    shape = Shape(IMAGE, c, h, w)
    metas = library.blocks()
    bound: list[BlockSpec] = []
    for spec in arch.blocks():
        if shape.layout != IMAGE and get_block(spec.kind).layout_in == IMAGE:
            shape = Shape(IMAGE, shape.c, shape.h, shape.w)  # the assembler inserts to_image first
        incoming = shape.c
        fits = [m for m in metas if _matches(m, spec, shape)] if get_block(spec.kind).library_bindable else []
        if fits:
            best = min(fits, key=lambda m: (_score(m, spec, incoming, dataset), m.id))
            params = _rebound_params(best, spec)
            params["in_channels"] = best.in_channels  # pinned: the assembler adds a channel adapter when widths differ
            spec = BlockSpec(spec.kind, params, library_id=best.id, sha256=best.sha256)
        bound.append(spec)
        # follow the shapes through the plan of the architecture bound so far
        partial = Architecture(arch.input_shape, arch.num_classes, (tuple(bound),), arch.head)
        shape = plan(partial)[-1].out_shape
    stem = bound[0] if arch.stem is not None else None
    rest = bound[1:] if arch.stem is not None else bound
    stages = []
    i = 0
    for stage in arch.stages:
        stages.append(tuple(rest[i : i + len(stage)]))
        i += len(stage)
    return replace(arch, stem=stem, stages=tuple(stages)).validate()


def frozen_prefix(model: MocaNet, max_blocks: int | None = None) -> int:
    """Number of leading body layers that are frozen: library blocks and layers with no parameters.

    ``max_blocks`` caps the library blocks in the prefix (the layers after it train).
    """
    k = blocks = 0
    for info, layer in zip(model.layers_info, model.body):
        library = info.spec is not None and bool(info.spec.library_id) and not info.adapter
        if not (library or not any(True for _ in layer.parameters())):
            break
        if library:
            if max_blocks is not None and blocks >= max_blocks:
                break
            blocks += 1
        k += 1
    return k


def _prefix_key(model: MocaNet, k: int) -> list[Any]:
    """What the prefix's features depend on: each layer's block id + sha256 and its parameters (a library
    block reused at another stride gives other features), plus the shapes."""
    parts: list[Any] = []
    for info in model.layers_info[:k]:
        spec = info.spec.to_dict() if info.spec is not None else {"kind": info.kind}
        parts.append([spec, str(info.in_shape), str(info.out_shape)])
    return parts


# --- the feature cache -----------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    memory_hits: int
    disk_hits: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "memory_hits": self.memory_hits, "disk_hits": self.disk_hits,
                "hit_rate": self.hit_rate}


class FeatureCache:
    """Prefix features per (prefix blocks, dataset fingerprint, split): a memory LRU over safetensors files.

    Features are stored as float16 (half the memory; the head trains in float32 on them).
    """

    def __init__(self, root: str | Path | None = None, *, max_bytes: int = 2 * 1024**3) -> None:
        self.root = Path(root) if root is not None else None
        self.max_bytes = max_bytes
        self._mem: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.memory_hits = self.disk_hits = 0

    @staticmethod
    def key(prefix: list[Any], fingerprint: str, split: str) -> str:
        text = json.dumps({"v": CACHE_VERSION, "prefix": prefix, "data": fingerprint, "split": split}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.memory_hits, self.disk_hits)

    def _remember(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        self._mem[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes and self._mem:
            _, old = self._mem.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()

    def get_or_compute(self, key: str, compute: Any) -> torch.Tensor:
        """The cached tensor for ``key``, else ``compute()`` once (stored in memory and on disk)."""
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self.hits += 1
                self.memory_hits += 1
                return self._mem[key]
        path = self.root / f"{key}.safetensors" if self.root is not None else None
        if path is not None and path.is_file():
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                value = load_file(str(path))["features"]
            except (SafetensorError, OSError, KeyError, ValueError):
                path.unlink(missing_ok=True)  # a torn or foreign file: recompute it
            else:
                with self._lock:
                    self.hits += 1
                    self.disk_hits += 1
                    self._remember(key, value)
                return value
        value = compute().to(torch.float16).contiguous()
        with self._lock:
            self.misses += 1
            self._remember(key, value)
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{time.time_ns()}.tmp")
            save_file({"features": value}, str(tmp))
            tmp.replace(path)
        return value


_CACHES: dict[str, FeatureCache] = {}
_CACHES_LOCK = threading.Lock()


def feature_cache(workspace: str | Path | None, *, max_bytes: int | None = None) -> FeatureCache:
    """The process-wide cache of a workspace (``<workspace>/cache/features``), memory-only without one."""
    root = str(Path(workspace) / "cache" / "features") if workspace is not None else ""
    with _CACHES_LOCK:
        if root not in _CACHES:
            _CACHES[root] = FeatureCache(root or None, max_bytes=max_bytes or 2 * 1024**3)
        return _CACHES[root]


def cache_stats(workspace: str | Path | None = None) -> CacheStats:
    """Hits and misses of the feature cache (of one workspace, or summed over all)."""
    if workspace is not None:
        return feature_cache(workspace).stats()
    with _CACHES_LOCK:
        caches = list(_CACHES.values())
    return CacheStats(*(sum(getattr(c, k) for c in caches) for k in ("hits", "misses", "memory_hits", "disk_hits")))


def reset_cache_stats() -> None:
    """Forget in-memory features and zero the counters (files on disk stay)."""
    with _CACHES_LOCK:
        _CACHES.clear()


# --- the fidelity ----------------------------------------------------------------------------

_LIB_LOCK = threading.Lock()


_LIBRARIES: dict[str, tuple[tuple[Any, ...], Library]] = {}


def _open_cached(workspace: Path) -> Library:
    """The workspace's library, re-read only when a file in it changed (a search opens it every trial)."""
    root = workspace / "library"
    stamp = tuple(sorted((p.name, st.st_mtime_ns, st.st_size) for p in root.iterdir() for st in (p.stat(),))) if root.is_dir() else ()
    hit = _LIBRARIES.get(str(root))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    lib = open_library(workspace)
    _LIBRARIES[str(root)] = (stamp, lib)
    return lib


def _library_for(ctx: EvalContext) -> Library:
    """The workspace's library; built on the search dataset first (with a note) when there is none."""
    if ctx.workspace is None:
        raise LibraryError("the cached fidelity needs a workspace holding a module library (library/).")
    with _LIB_LOCK:
        lib = _open_cached(Path(ctx.workspace))
        if len(lib):
            return lib
        if not ctx.options.get("auto_build_library", True):
            raise LibraryError(
                f"no module library at {lib.root}; build one with `python -m nas_core library build --dataset {ctx.data.name} "
                f"--workspace {ctx.workspace}`."
            )
        return build_library(dataset=ctx.data.name, workspace=ctx.workspace, minutes=float(ctx.options.get("library_minutes", 2.0)),
                             seed=ctx.seed, data=ctx.data, device=ctx.device)


def prepare_architecture(arch: Architecture, *, workspace: Any, data: Any, options: dict[str, Any] | None = None, seed: int = 0) -> Architecture:
    """Bind a sampled architecture to the workspace's library (the search records the bound one)."""
    ctx = EvalContext(arch=arch, recipe=TrainingRecipe(), data=data, workspace=workspace, options=dict(options or {}), seed=seed)
    return bind_architecture(arch, _library_for(ctx), dataset=data.name)


def _load_library(model: MocaNet, library: Library) -> list[dict[str, Any]]:
    used = []
    for pos, (info, layer) in enumerate(zip(model.layers_info, model.body)):
        if info.spec is not None and info.spec.library_id and not info.adapter:
            library.load_into(layer, info.spec.library_id, sha256=info.spec.sha256)
            used.append({"id": info.spec.library_id, "sha256": info.spec.sha256, "kind": info.spec.kind, "layer": pos})
    return used


@torch.no_grad()
def _run_prefix(model: MocaNet, x: torch.Tensor, k: int, device: torch.device, batch: int = 512) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        out.append(model.features(x[i : i + batch].to(device), upto=k).cpu())
    return torch.cat(out) if out else x[:0]


def _subset(n: int, limit: int | None, seed: int) -> torch.Tensor | None:
    if not limit or limit >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def cached_fidelity(ctx: EvalContext) -> EvalResult:
    """MoCAFT: library blocks joined by trainable adapters, the frozen prefix's features cached, one short epoch.

    Options (``SearchConfig.fidelity_options``): ``cached_train`` ("suffix": every layer after the cached
    prefix trains, library blocks from their weights; "adapters": library blocks stay frozen and only adapters,
    unmatched blocks and the head train; see benchmarks/results/fidelity.md for how each ranks),
    ``cached_prefix_blocks`` (library blocks in the cached frozen prefix: 1, the stem, for "suffix"; all
    leading ones for "adapters"), ``cached_epochs`` (1), ``cached_lr`` (1e-3 for "suffix", 1e-2 for "adapters": one epoch must fit a head on
    small-scale frozen features), ``cached_batch_size`` (32), ``cached_train_samples`` (all), ``cached_test_samples`` (2000: the proxy's
    test accuracy is measured on a fixed subset; the fine-tune phase measures the full test split), ``cache_mb`` (2048),
    ``auto_build_library`` (True), ``library_minutes`` (2).
    """
    opts = ctx.options
    check_cached_options(opts)
    mode = str(opts.get("cached_train", "suffix"))
    set_seed(ctx.seed)
    library = _library_for(ctx)
    arch = ctx.arch if any(b.library_id for b in ctx.arch.blocks()) else bind_architecture(ctx.arch, library, dataset=ctx.data.name)
    model = assemble(arch).to(ctx.device)
    used = _load_library(model, library)
    # "suffix" caches the stem only by default: a longer frozen prefix trains less of the network and ranks worse
    prefix_blocks = opts.get("cached_prefix_blocks", 1 if mode == "suffix" else None)
    k = frozen_prefix(model, None if prefix_blocks is None else int(prefix_blocks))
    frozen = {i for i, info in enumerate(model.layers_info) if info.spec is not None and info.spec.library_id and not info.adapter}
    if mode == "suffix":
        frozen = {i for i in frozen if i < k}  # after the cached prefix, library blocks fine-tune from their weights
    for i in frozen:
        model.body[i].requires_grad_(False)
    model.eval()
    cache = feature_cache(ctx.workspace, max_bytes=int(opts.get("cache_mb", 2048)) * 1024**2)
    before = cache.stats()
    prefix = _prefix_key(model, k)
    data = ctx.data
    feats: dict[str, torch.Tensor] = {}
    t_start = time.perf_counter()
    test_pick = _subset(len(data.x_test), opts.get("cached_test_samples", 2000), 12345)
    y_test = data.y_test if test_pick is None else data.y_test[test_pick]
    for split in ("train", "val", "test"):
        x = getattr(data, f"x_{split}")
        tag = split
        if split == "test" and test_pick is not None:
            x, tag = x[test_pick], f"test[{len(test_pick)}]"
        if k == 0:
            feats[split] = x
        else:
            feats[split] = cache.get_or_compute(FeatureCache.key(prefix, data.fingerprint, tag), lambda x=x: _run_prefix(model, x, k, ctx.device))
    feature_s = time.perf_counter() - t_start
    pick = _subset(len(feats["train"]), opts.get("cached_train_samples"), ctx.seed)
    x_train = feats["train"] if pick is None else feats["train"][pick]
    view = data if pick is None else _View(data, y_train=data.y_train[pick])
    trainable_layers = [model.body[i] for i in range(k, len(model.body)) if i not in frozen]
    parts = Trainable(trainable_layers + [model.head])
    params = [p for p in parts.parameters() if p.requires_grad]

    def forward(f: torch.Tensor) -> torch.Tensor:
        return model.head(model.pool(model.features(f.float(), start=k)))

    model.eval()  # frozen blocks keep the donor's batch-norm statistics; train_model switches only `parts` to train mode

    recipe = TrainingRecipe(optimizer="adam", lr=float(opts.get("cached_lr", 1e-3 if mode == "suffix" else 1e-2)), weight_decay=0.0,
                            epochs=int(opts.get("cached_epochs", 1)), batch_size=int(opts.get("cached_batch_size", 32)),
                            augmentation="none", patience=10)
    t0 = time.perf_counter()
    val_pred: list[torch.Tensor] = []
    history = train_model(parts, view, recipe, device=ctx.device, seed=ctx.seed, on_epoch=ctx.on_epoch, should_stop=ctx.should_stop,
                          params=params, forward=forward, x_train=x_train, x_val=feats["val"], val_predictions=val_pred)
    train_s = time.perf_counter() - t0
    model.eval()
    val = val_pred[0].numpy() if val_pred else _predict(forward, feats["val"], ctx.device)
    test = _predict(forward, feats["test"], ctx.device)
    vm = classification_metrics(data.y_val.numpy(), val, data.num_classes)
    tm = classification_metrics(y_test.numpy(), test, data.num_classes)
    shape = tuple(data.input_shape)
    latency = measure_latency(model, shape, should_stop=ctx.should_stop)
    metrics = {
        "val_accuracy": vm["accuracy"], "test_accuracy": tm["accuracy"], "macro_f1": tm["macro_f1"], "val_macro_f1": vm["macro_f1"],
        "params": count_params(model), "flops": count_flops(model, shape), "latency_ms": latency["latency_ms"],
        "size_mb": model_size_mb(model), "train_seconds": train_s + feature_s, "epochs_trained": len(history),
        "proxy_accuracy": vm["accuracy"], "test_samples": len(y_test),
    }
    if any(not math.isfinite(float(v)) for v in metrics.values()):
        raise Diverged("a metric came out NaN/inf; the model diverged")
    after = cache.stats()
    trial_hits, trial_misses = after.hits - before.hits, after.misses - before.misses
    extra = {
        "proxy": "cached",
        "cached_train": mode,
        "proxy_accuracy": vm["accuracy"],
        "library_blocks": used,
        "frozen_prefix_layers": k,
        "frozen_blocks": len(frozen),
        "trainable_params": sum(p.numel() for p in params),
        "adapters": sum(1 for info in model.layers_info if info.kind == "channel"),
        "feature_seconds": feature_s,
        "cache": {"trial_hits": trial_hits, "trial_misses": trial_misses, **after.to_dict()},
        "cache_hit_rate": after.hit_rate,
        "bound_architecture": arch.to_dict() if arch is not ctx.arch else None,
    }
    return EvalResult(metrics=metrics, history=history, confusion=tm["confusion"], per_class_accuracy=tm["per_class_accuracy"],
                      latency=latency, state_dict={k_: v.detach().cpu().contiguous() for k_, v in model.state_dict().items()}, extra=extra)


_POSITIVE_INT = ("cached_epochs", "cached_batch_size", "cached_train_samples", "cached_test_samples", "cache_mb", "finetune_top_k",
                 "finetune_epochs", "finetune_patience", "finetune_batch_size")
_POSITIVE_FLOAT = ("cached_lr", "library_minutes", "finetune_seconds", "finetune_lr")


def check_cached_options(opts: dict[str, Any]) -> None:
    """Raise a :class:`ConfigError` naming the first bad option value (checked before a search starts)."""
    from nas_core.errors import ConfigError

    mode = opts.get("cached_train", "suffix")
    if mode not in CACHED_MODES:
        raise ConfigError(f"unknown cached_train {mode!r}; choose one of {', '.join(CACHED_MODES)}.")
    share = opts.get("finetune_share")
    if share is not None and not (isinstance(share, (int, float)) and not isinstance(share, bool) and 0 < share < 1):
        raise ConfigError(f"fidelity option finetune_share must be a fraction of --timeout between 0 and 1, e.g. 0.2, but got {share!r}.")
    if opts.get("finetune_recipe", "fixed") not in ("fixed", "sampled"):
        raise ConfigError(f"finetune_recipe must be fixed or sampled, but got {opts['finetune_recipe']!r}.")
    for key in (*_POSITIVE_INT, *_POSITIVE_FLOAT, "cached_prefix_blocks"):
        if key not in opts:
            continue
        value = opts[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and key in _POSITIVE_INT + ("cached_prefix_blocks",):
            ok = float(value).is_integer() and value >= (0 if key == "cached_prefix_blocks" else 1)
        elif ok:
            ok = value > 0
        if not ok:
            kind = "a whole number >= 0" if key == "cached_prefix_blocks" else ("a positive whole number" if key in _POSITIVE_INT else "a positive number")
            raise ConfigError(f"fidelity option {key} must be {kind}, but got {value!r}.")


class _View:
    """A dataset stand-in with some fields replaced (a training subsample)."""

    def __init__(self, data: Any, **fields: Any) -> None:
        self._data, self._fields = data, fields

    def __getattr__(self, name: str) -> Any:
        return self._fields[name] if name in self._fields else getattr(self._data, name)


@torch.no_grad()
def _predict(forward: Any, x: torch.Tensor, device: torch.device) -> Any:
    out = [forward(x[i : i + 512].to(device)).argmax(1).cpu() for i in range(0, len(x), 512)]
    return torch.cat(out).numpy() if out else torch.zeros(0, dtype=torch.long).numpy()


# --- second phase: fine-tune the top-k end to end ----------------------------------------------


def _top_k(study: Any, k: int) -> list[Any]:
    """The k best distinct complete trials: by non-dominated rank, then validation accuracy."""
    from optuna.trial import TrialState

    from nas_core.results.pareto import nondominated_sort

    trials = [t for t in with_records(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
              if t.values is not None and "config" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    if not trials:
        return []
    dirs = [d.name.lower() for d in study.directions]
    ranks = nondominated_sort([list(t.values) for t in trials], dirs)
    # ties: the proxy's own score where it has one (zero-cost), else the (proxy-phase) validation accuracy
    acc = [float((m := t.user_attrs.get("metrics", {})).get("proxy_score", m.get("val_accuracy", 0.0))) for t in trials]
    order = sorted(range(len(trials)), key=lambda i: (ranks[i], -acc[i], trials[i].number))
    return [trials[i] for i in order[:k]]


def finalize_top_k(*, study: Any, config: Any, data: Any, device: torch.device, workspace: Any, emit: Any = None,
                   stop_event: Any = None, init: str = "library", proxy: str = "cached", deadline: float = math.inf) -> list[dict[str, Any]]:
    """Train the top-k candidates end to end and record final metrics beside the proxy ones.

    ``init="library"`` starts from the trial's saved weights (library blocks + trained adapters and
    head) or the library; ``"scratch"`` from a fresh initialisation. Optuna freezes finished trials, so
    each fine-tuned trial's new ``metrics``/``config`` (with ``final_accuracy``, ``proxy_accuracy`` and
    the final validation/test accuracy) go to the study attribute ``final_result.<number>``, which
    :func:`nas_core.export.with_final_results` lays over the trial; its saved weights become the
    fine-tuned ones. Options:
    ``finetune_top_k`` (2), ``finetune_epochs`` (:data:`FINETUNE_EPOCHS` (5) from proxy weights, at most the search's epochs;
    the search's epochs from scratch), ``finetune_patience`` (the search's patience, at most 3),
    ``finetune_seconds`` (no limit: a time box for the whole phase; a candidate cut short keeps its weights so far;
    ``deadline``, a ``time.perf_counter()`` value, ends the phase too: the search passes the end of ``--timeout``),
    ``finetune_share`` (read by :func:`nas_core.search.phase_deadlines`),
    ``finetune_recipe`` ("fixed": Adam, ``finetune_lr`` 1e-3, ``finetune_batch_size`` 64, recorded as the
    config's training recipe; "sampled": the trial's own recipe).
    """
    from nas_core import events as ev
    from nas_core.results.tables import final_results, record_final_result
    from nas_core.schema.config import ModelConfig
    from nas_core.training.measure import measure_model
    from nas_core.training.stops import StopRequested
    from nas_core.workspace import study_dir

    opts = dict(getattr(config, "fidelity_options", {}) or {})
    k = int(opts.get("finetune_top_k", 2))
    # Finalists that start from their proxy weights get a short annealed fine-tune (cosine over FINETUNE_EPOCHS): on the
    # same digits finalists it matched the accuracy of fine-tuning to an early stop in about 3/4 of the time; 4 epochs
    # cost 0.1-0.4 points (benchmarks/results/finetune.md). Finalists trained from scratch (zero-cost) get the search's epochs.
    default_epochs = min(int(config.epochs), FINETUNE_EPOCHS) if init == "library" else int(config.epochs)
    epochs = int(opts.get("finetune_epochs", default_epochs))
    # the finalists start from trained weights: they plateau sooner than a network trained from scratch
    patience = int(opts.get("finetune_patience", min(3, int(getattr(config, "patience", 5)))))
    out_dir = study_dir(workspace, study.study_name)
    deadline = min(deadline, time.perf_counter() + float(opts.get("finetune_seconds", math.inf)))
    done: list[dict[str, Any]] = []
    if time.perf_counter() >= deadline:
        study.set_user_attr("finetune_skipped", "no time was left of --timeout / finetune_seconds for the fine-tune phase; the best "
                                                "config is the proxy's (raise --timeout or the finetune_share option)")
        return done
    if study.user_attrs.get("finetune_skipped"):
        study.set_user_attr("finetune_skipped", None)  # an earlier run's note; this run fine-tunes
    finalists = _top_k(study, k)
    left_out = 0  # finalists the deadline gave no time at all
    for i, trial in enumerate(finalists):
        if stop_event is not None and stop_event.is_set():
            break
        if str(trial.number) in final_results(study):
            continue  # a resumed study: already fine-tuned
        if time.perf_counter() > deadline:
            finished = final_results(study)  # one storage read, not one per finalist left
            left_out = sum(1 for t in finalists[i:] if str(t.number) not in finished)
            break
        cfg = ModelConfig.from_dict(trial.user_attrs["config"])
        seed = int(cfg.provenance.get("seed", config.seed))
        set_seed(seed)
        model = assemble(cfg.architecture)
        weights = out_dir / "weights" / f"trial_{trial.number}.safetensors"
        how = "scratch"
        if init == "library":
            if weights.exists():
                from nas_core.model.weights import load_weights

                load_weights(model, weights)
                how = "proxy weights (library blocks + trained adapters/head)"
            else:
                _load_library(model, open_library(workspace))
                how = "library blocks"
        for p in model.parameters():
            p.requires_grad_(True)
        # The proxy phase never evaluated the sampled optimizer/learning rate, so by default the fine-tune uses a
        # robust fixed one; the config records the recipe that produced its final metrics.
        if opts.get("finetune_recipe", "fixed") == "sampled":
            recipe = replace(cfg.training, epochs=epochs, patience=patience)
        else:
            recipe = replace(TrainingRecipe(), optimizer="adam", lr=float(opts.get("finetune_lr", 1e-3)), weight_decay=0.0,
                             batch_size=int(opts.get("finetune_batch_size", 64)), epochs=epochs, patience=patience)

        def on_epoch(epoch: int, total: int, row: dict[str, float], _n: int = trial.number) -> None:
            if emit is not None:
                try:
                    emit(ev.EpochProgress(study.study_name, number=_n, epoch=epoch, epochs=total, metrics={**row, "phase": "finetune"}))
                except Exception:  # noqa: BLE001 - a broken listener must not break the fine-tune
                    pass

        t0 = time.perf_counter()
        user_stop = stop_event.is_set if stop_event is not None else (lambda: False)
        rows: list[dict[str, float]] = []

        def keep(epoch: int, total: int, row: dict[str, float]) -> None:
            rows.append(row)  # noqa: B023 - called within this iteration
            on_epoch(epoch, total, row)

        try:
            history = train_model(model, data, recipe, device=device, seed=seed, on_epoch=keep,
                                  should_stop=lambda: user_stop() or time.perf_counter() > deadline)  # noqa: B023 - called within this iteration
        except Diverged:
            continue
        except StopRequested:
            if user_stop():
                break
            history = rows  # the phase's time budget ran out mid-epoch: the weights so far are the result
        wall = time.perf_counter() - t0
        try:
            measured = measure_model(model, data, device, should_stop=user_stop)
        except StopRequested:
            break
        m_old = dict(trial.user_attrs.get("metrics", {}))
        proxy_acc = m_old.get("proxy_accuracy")  # None for a zero-cost proxy, whose score is no accuracy
        final = dict(measured["metrics"])
        new_metrics = {**m_old, **final, "proxy_accuracy": proxy_acc, "proxy_test_accuracy": m_old.get("test_accuracy"),
                       "final_accuracy": final["val_accuracy"], "final_test_accuracy": final["test_accuracy"],
                       "finetune_seconds": wall, "finetune_epochs": len(history)}
        if "proxy_score" in m_old:
            new_metrics["proxy_score"] = m_old["proxy_score"]
        cfg_dict = dict(trial.user_attrs["config"])
        cfg_metrics = {**cfg_dict.get("metrics", {}), **new_metrics}
        cfg_metrics["proxy"] = proxy
        cfg_dict["metrics"] = cfg_metrics
        cfg_dict["training"] = replace(recipe, epochs=int(cfg.training.epochs), patience=int(cfg.training.patience)).to_dict()
        cfg_dict["provenance"] = {**cfg_dict.get("provenance", {}),
                                  "finetune": {"init": how, "epochs": len(history), "seconds": round(wall, 2), "recipe": recipe.to_dict()}}
        # Optuna freezes finished trials: the final record is a study attribute of this trial's own (read by
        # nas_core.export.with_final_results), never a shared one rewritten by every finalist.
        record_final_result(study, trial.number, json.loads(json.dumps(
            {"metrics": new_metrics, "config": cfg_dict, "finetune_history": history}, default=str)))
        if weights.parent.exists() or getattr(config, "save_weights", True):
            from nas_core.model.weights import save_weights

            save_weights(model, weights)
        done.append({"trial": trial.number, "proxy_accuracy": proxy_acc, "final_accuracy": final["val_accuracy"],
                     "test_accuracy": final["test_accuracy"], "seconds": wall, "init": how})
    if done:
        study.set_user_attr("finetune", done)
    if left_out:
        study.set_user_attr("finetune_skipped", f"the fine-tune phase ran out of time (--timeout / finetune_seconds) with {left_out} of "
                                                f"{len(finalists)} finalists not fine-tuned; the best config is chosen among the fine-tuned ones "
                                                "(raise --timeout or the finetune_share option, or run the same study again to "
                                                "fine-tune the rest)")
    return done


@register_fidelity("cached")
class Cached(Fidelity):
    summary = "library blocks, stem features cached, one short epoch, then the top-k fine-tuned"
    options = ("cached_train", "cached_prefix_blocks", "cached_epochs", "cached_lr", "cached_batch_size", "cached_train_samples",
               "cached_test_samples", "cache_mb", "auto_build_library", "library_minutes", *FINETUNE_OPTIONS)
    page_options = (
        FidelityOption("cached_train", "Proxy training", "suffix", choices=CACHED_MODES,
                       help="suffix (default): everything after the cached stem trains one epoch, library blocks from their weights. "
                            "adapters: library blocks stay frozen, only adapters and head train (cheaper, ranks far worse)."),
        FINETUNE_TOP_K,
    )
    uses_library = True

    def check(self, options: dict[str, Any]) -> None:
        check_cached_options(options)

    def prepare(self, arch: Architecture, *, workspace: Any, data: Any, options: dict[str, Any], seed: int) -> Architecture:
        return prepare_architecture(arch, workspace=workspace, data=data, options=options, seed=seed)

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        return cached_fidelity(ctx)

    def finalize(self, *, study: Any, config: Any, data: Any, device: torch.device, workspace: Any, emit: Any = None,
                 stop_event: Any = None, deadline: float = math.inf) -> None:
        finalize_top_k(study=study, config=config, data=data, device=device, workspace=workspace, emit=emit,
                       stop_event=stop_event, init="library", proxy="cached", deadline=deadline)

    def proxy(self, options: dict[str, Any]) -> str | None:
        return "cached"
