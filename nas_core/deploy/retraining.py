"""Retrain a config anywhere (``train --config``), and the snippet that rebuilds a downloaded one."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas_core.deploy.config import build_model, load_config
from nas_core.errors import ConfigError
from nas_core.model.weights import save_weights
from nas_core.schema.config import ModelConfig


def rebuild_snippet(config_name: str = "best_config.json", weights_name: str | None = "best_weights.safetensors") -> str:
    lines = [
        "from nas_core.export import load_config, build_model",
        "",
        f'config = load_config("{config_name}")',
        f'model = build_model(config{", weights=" + repr(weights_name) if weights_name else ""}).eval()',
        "print(config.architecture.summary(), sum(p.numel() for p in model.parameters()), 'params')",
    ]
    return "\n".join(lines)


def retrain(
    config: ModelConfig | str | Path,
    *,
    workspace: str | Path,
    epochs: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    seed: int | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    patience: int | None = None,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Rebuild the config's network (identical parameter count) and train it again; returns the measured metrics.

    The dataset is the one the config was found on (its provenance records how it was given), on its
    full training split unless ``train_samples`` says otherwise. Library blocks referenced by id are
    loaded when the module library is present; otherwise the network trains from scratch and the
    result says so. A config whose provenance has ``body_from`` (the one training's small companion: a head fitted on
    that training's body, frozen) is retrained the same way: the network of ``body_from.config`` first (its own recipe;
    ``epochs`` and ``patience`` apply to the head), then this one's head on that body.
    """
    from dataclasses import replace

    from nas_core.data import load_dataset
    from nas_core.training.loop import cpu_threads, resolve_device, set_seed, threads, train_model
    from nas_core.training.measure import count_params, measure_model
    from nas_core.training.recipes import resolve_precision

    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    prov = cfg.provenance
    seed = int(prov.get("seed", 0)) if seed is None else seed
    dev = resolve_device(device)
    data = load_dataset(
        dataset or prov.get("dataset_arg") or cfg.dataset.name,
        seed=int(prov.get("split_seed", seed)),
        data_dir=data_dir or prov.get("data_dir"),
        train_samples=train_samples,
        val_samples=val_samples,
        cache_dir=Path(workspace) / "cache" / "data",
    )
    if tuple(data.input_shape) != tuple(cfg.dataset.input_shape) or data.num_classes != cfg.dataset.num_classes:
        raise ConfigError(
            f"dataset {data.name} has input {list(data.input_shape)} and {data.num_classes} classes, but the config was made for "
            f"{list(cfg.dataset.input_shape)} and {cfg.dataset.num_classes}; pass the dataset it was searched on (--dataset)."
        )
    set_seed(seed)
    model = build_model(cfg)
    notes = []
    init = "from scratch"
    if any(b.library_id for b in cfg.architecture.blocks()):
        try:
            from nas_core.library import load_library_weights

            loaded = load_library_weights(model, cfg, workspace=workspace)
            init = f"library weights for {loaded} block(s)"
        except Exception as exc:  # noqa: BLE001 - no library here: train from scratch and say so
            notes.append(f"module library not available ({str(exc).splitlines()[0]}); trained from scratch instead")
    body_from = prov.get("body_from")
    body = None
    if isinstance(body_from, dict) and body_from.get("config") is not None:
        import torch

        # the body's network trains first; the head then draws (dropout) from where the search's did: after its own init
        rng = torch.get_rng_state()
        body, note = _retrain_body(cfg, body_from, workspace=workspace, dataset=dataset, data_dir=data_dir, device=device,
                                   train_samples=train_samples, val_samples=val_samples, on_epoch=on_epoch, should_stop=should_stop)
        torch.set_rng_state(rng)
        init, notes = note, notes + [note]
    recipe = cfg.training
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, but got {epochs}.")
        recipe = replace(recipe, epochs=epochs)
    if patience is not None:
        recipe = replace(recipe, patience=patience)
    start = time.perf_counter()
    with threads(cpu_threads(tuple(data.input_shape), dev)):  # the search's thread rule: the same arithmetic
        if body is not None:
            from nas_core.training.frozen import fit_head

            history, _ = fit_head(model, data, recipe, body, device=dev, seed=seed, on_epoch=on_epoch, should_stop=should_stop)
        else:
            history = train_model(model, data, recipe, device=dev, seed=seed, on_epoch=on_epoch, should_stop=should_stop)
        wall = time.perf_counter() - start
        measured = measure_model(model, data, dev)
    ws = Path(workspace)
    weights_path = save_weights(model, ws / "retrained" / f"{cfg.candidate_hash()}.safetensors")
    metrics = dict(measured["metrics"])
    train_size = len(data.y_train)
    if recipe.trains_on_val:  # the validation split was trained on: no held-out score to report
        train_size += len(data.y_val)
        metrics.update(val_accuracy=None, val_macro_f1=None)
        notes.append("trained on the training and validation splits (training.train_split = train+val), so there is no "
                     "held-out validation score; the test split stays unseen")
    return {
        **metrics,
        "params": count_params(model),
        "epochs_trained": len(history),
        "wall_s": wall,
        "dataset": data.name,
        "train_size": train_size,
        "test_size": len(data.y_test),
        "init": init,
        "notes": notes,
        "weights": str(weights_path),
        "history": history,
        "confusion": measured["confusion"],
        "latency_measurement": measured["latency"]["how"],
        "precision": resolve_precision(recipe.precision, dev, tuple(data.input_shape)),
    }


def body_epochs(cfg: ModelConfig) -> int:
    """Epochs of the network ``train --config`` retrains before ``cfg``'s own training: that of ``provenance.body_from``
    (a head fitted on that network's body, frozen), else 0."""
    body_from = cfg.provenance.get("body_from")
    if not isinstance(body_from, dict) or not isinstance(body_from.get("config"), dict):
        return 0
    try:
        return max(0, int((body_from["config"].get("training") or {}).get("epochs") or 0))
    except (TypeError, ValueError):
        return 0


def _retrain_body(cfg: ModelConfig, body_from: dict[str, Any], *, workspace: str | Path, **kwargs: Any) -> tuple[dict[str, Any], str]:
    """Retrain the network whose body ``cfg``'s head was fitted on (``body_from.config``); returns its ``body.*`` tensors
    and a note saying how the body was made."""
    from safetensors.torch import load_file

    from nas_core.training.frozen import body_state, same_body

    parent = ModelConfig.from_dict(body_from["config"])
    if not same_body(parent.architecture, cfg.architecture):
        raise ConfigError("provenance.body_from.config has a different body from this config's architecture; re-download the config.")
    out = retrain(parent, workspace=workspace, **kwargs)
    body = body_state(load_file(str(out["weights"])))
    name = body_from.get("design") or parent.architecture.summary()
    return body, (f"the body of {name}, retrained from its config for {out['epochs_trained']} epochs (test "
                  f"{out['test_accuracy']:.4f}) and frozen; only the head trained, on its features")
