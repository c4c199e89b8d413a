"""Tests for nas_core.moca: binding to library blocks, prefix-feature cache reuse, the cached fidelity and its fine-tune phase."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nas_core import moca
from nas_core.assemble import assemble
from nas_core.data import load_dataset
from nas_core.evaluate import FIDELITIES, FINALIZERS, EvalContext
from nas_core.export import final_results
from nas_core.genotype import Architecture, BlockSpec, HeadSpec, TrainingRecipe
from nas_core.library import build_library, open_library
from nas_core.moca import FeatureCache, bind_architecture, cache_stats, frozen_prefix, reset_cache_stats


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("moca")
    build_library(dataset="digits", workspace=ws, minutes=0.02, train_samples=300, donors=("conv-a", "sepconv-a"), min_steps=10)
    return ws


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return load_dataset("digits", seed=0, train_samples=300, val_samples=100)


def _arch(head: HeadSpec = HeadSpec()) -> Architecture:
    stem = BlockSpec("conv", {"out_channels": 24, "stride": 1})
    stages = ((BlockSpec("conv", {"out_channels": 64, "stride": 2}), BlockSpec("conv", {"out_channels": 64})),
              (BlockSpec("attention", {"heads": 2}),))
    return Architecture((1, 8, 8), 10, stages, head, stem=stem)


def test_registered() -> None:
    assert "cached" in FIDELITIES and "cached" in FINALIZERS


def test_bind_uses_library_blocks_and_keeps_strides(workspace: Path) -> None:
    lib = open_library(workspace)
    bound = bind_architecture(_arch(), lib, dataset="digits")
    blocks = bound.blocks()
    for spec in blocks[:3]:
        meta = lib.get(spec.library_id)
        assert spec.sha256 == meta.sha256 and spec.kind == meta.kind == "conv"
        assert spec.params["in_channels"] == meta.in_channels
    assert blocks[1].params["stride"] == 2 and blocks[2].params.get("stride", 1) == 1
    assert blocks[3].library_id is None  # attention has no library block at this width: it is trained
    assert bound.to_dict()["stem"]["library_id"]  # the downloadable config names blocks by id + sha256
    model = assemble(bound)
    assert frozen_prefix(model) >= 1


def test_second_candidate_sharing_a_prefix_computes_no_features(workspace: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    reset_cache_stats()
    for f in (workspace / "cache" / "features").glob("*"):
        f.unlink()
    calls = []
    real = moca._run_prefix
    monkeypatch.setattr(moca, "_run_prefix", lambda *a, **k: calls.append(1) or real(*a, **k))
    lib = open_library(workspace)
    first = bind_architecture(_arch(), lib, dataset="digits")
    second = replace(first, head=HeadSpec(hidden=(32,), dropout=0.1))  # same blocks, different head
    recipe = TrainingRecipe(epochs=1)
    r1 = moca.cached_fidelity(EvalContext(arch=first, recipe=recipe, data=data, workspace=workspace))
    assert len(calls) == 3 and r1.extra["cache"]["trial_misses"] == 3  # train, val, test computed once
    r2 = moca.cached_fidelity(EvalContext(arch=second, recipe=recipe, data=data, workspace=workspace))
    assert len(calls) == 3, "the second candidate recomputed prefix features"
    assert r2.extra["cache"]["trial_misses"] == 0 and r2.extra["cache"]["trial_hits"] == 3
    assert cache_stats(workspace).hit_rate == pytest.approx(0.5)
    assert r2.extra["frozen_prefix_layers"] == r1.extra["frozen_prefix_layers"] >= 1
    # a fresh process (empty memory cache) reads the features from disk instead of computing them
    reset_cache_stats()
    moca.cached_fidelity(EvalContext(arch=second, recipe=recipe, data=data, workspace=workspace))
    assert len(calls) == 3 and cache_stats(workspace).disk_hits == 3


@pytest.mark.parametrize("mode", ["adapters", "suffix"])
def test_frozen_blocks_keep_their_library_weights(workspace: Path, data, mode: str) -> None:  # type: ignore[no-untyped-def]
    """"adapters" freezes every library block; "suffix" only the cached prefix (the stem) and fine-tunes the rest."""
    lib = open_library(workspace)
    arch = bind_architecture(_arch(), lib, dataset="digits")
    result = moca.cached_fidelity(EvalContext(arch=arch, recipe=TrainingRecipe(epochs=1), data=data, workspace=workspace,
                                              options={"cached_train": mode}))
    model = assemble(arch)
    model.load_state_dict(result.state_dict)
    k = result.extra["frozen_prefix_layers"]
    unchanged, changed = [], []
    for pos, (info, layer) in enumerate(zip(model.layers_info, model.body)):
        if info.spec is not None and info.spec.library_id and not info.adapter:
            same = all(torch.equal(layer.state_dict()[key], value) for key, value in lib.load_state(info.spec.library_id).items())
            (unchanged if same else changed).append(pos)
            if mode == "adapters" or pos < k:
                assert same, f"{info.name} changed while frozen"
    assert result.extra["proxy"] == "cached" and result.extra["cached_train"] == mode and 0 <= result.extra["proxy_accuracy"] <= 1
    assert result.extra["trainable_params"] < result.metrics["params"]
    if mode == "suffix":
        assert k >= 1 and sum(1 for pos in unchanged if pos < k) == 1  # the stem only
        assert changed, "no library block after the prefix was fine-tuned"
    else:
        assert not changed


def test_unknown_cached_mode_is_refused(workspace: Path, data) -> None:  # type: ignore[no-untyped-def]
    from nas_core.errors import ConfigError

    arch = bind_architecture(_arch(), open_library(workspace), dataset="digits")
    with pytest.raises(ConfigError, match="cached_train"):
        moca.cached_fidelity(EvalContext(arch=arch, recipe=TrainingRecipe(epochs=1), data=data, workspace=workspace,
                                         options={"cached_train": "everything"}))


def test_feature_cache_lru_and_torn_files(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, max_bytes=3 * 100 * 2)  # room for three float16 tensors of 100 values
    for i in range(4):
        cache.get_or_compute(f"k{i}", lambda i=i: torch.full((100,), float(i)))
    assert cache.misses == 4 and "k0" not in cache._mem
    assert float(cache.get_or_compute("k0", lambda: torch.zeros(1))[0]) == 0.0 and cache.disk_hits == 1
    (tmp_path / "k1.safetensors").write_bytes(b"garbage")
    cache._mem.clear()
    assert float(cache.get_or_compute("k1", lambda: torch.full((100,), 7.0))[0]) == 7.0 and cache.misses == 5


def test_cached_search_records_proxy_and_final_and_retrains_from_the_library(workspace: Path, tmp_path: Path) -> None:
    from nas_core.export import load_config, retrain
    from nas_core.search import SearchConfig, run_search

    ws = tmp_path / "ws"
    shutil.copytree(workspace / "library", ws / "library")
    result = run_search(SearchConfig(
        dataset="digits", trials=3, epochs=2, workspace=str(ws), space="modular", fidelity="cached", tracking=False,
        train_samples=200, val_samples=80, study="cached-e2e", known_good=False,  # sampled networks: what binds to the library
        fidelity_options={"finetune_top_k": 1, "finetune_epochs": 1}))
    assert result.n_complete == 3 and result.best_config
    best = json.loads(Path(result.best_config).read_text())
    m = best["metrics"]
    assert m["proxy"] == "cached" and 0 <= m["proxy_accuracy"] <= 1 and m["final_accuracy"] == m["val_accuracy"]
    refs = best["provenance"]["library_blocks"]
    assert refs and all(len(r["sha256"]) == 64 for r in refs)
    assert best["provenance"]["finetune"]["epochs"] == 1
    assert any(b.get("library_id") for stage in best["architecture"]["stages"] for b in stage)
    out = retrain(load_config(result.best_config), workspace=ws, epochs=1, train_samples=100)
    assert out["init"].startswith("library weights") and not out["notes"]
    shutil.rmtree(ws / "library")
    out = retrain(load_config(result.best_config), workspace=ws, epochs=1, train_samples=100)
    assert out["init"] == "from scratch" and "trained from scratch" in out["notes"][0]


def test_a_block_reused_at_another_stride_does_not_share_cached_features(workspace: Path, data) -> None:  # type: ignore[no-untyped-def]
    reset_cache_stats()
    lib = open_library(workspace)
    one = bind_architecture(_arch(), lib, dataset="digits")
    stem = one.stem
    assert stem is not None
    other = replace(one, stem=replace(stem, params={**stem.params, "stride": 2 if stem.params.get("stride", 1) == 1 else 1}))
    recipe = TrainingRecipe(epochs=1)
    moca.cached_fidelity(EvalContext(arch=one, recipe=recipe, data=data, workspace=workspace))
    result = moca.cached_fidelity(EvalContext(arch=other, recipe=recipe, data=data, workspace=workspace))
    assert result.extra["cache"]["trial_hits"] == 0


def test_timeout_is_split_between_the_trials_and_the_fine_tune_phase() -> None:
    from nas_core.search import phase_deadlines

    inf = float("inf")
    assert phase_deadlines(100.0, None, two_phase=True, options={}) == (inf, inf)
    assert phase_deadlines(100.0, 50.0, two_phase=False, options={}) == (150.0, inf)  # train: the trials get all of it
    assert phase_deadlines(100.0, 50.0, two_phase=True, options={}) == pytest.approx((140.0, 150.0))  # default share 0.2
    assert phase_deadlines(100.0, 50.0, two_phase=True, options={"finetune_share": 0.5}) == pytest.approx((125.0, 150.0))
    # an explicit fine-tune time box keeps the old split: all of --timeout for the trials, then the box
    assert phase_deadlines(100.0, 50.0, two_phase=True, options={"finetune_seconds": 7}) == (150.0, inf)


def test_a_timed_cached_search_fine_tunes_within_its_timeout(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from nas_core.search import SearchConfig, run_search

    ws = tmp_path / "ws"
    shutil.copytree(workspace / "library", ws / "library")
    seen: dict[str, float] = {}
    real = moca.finalize_top_k

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        seen["deadline"], seen["now"] = kwargs["deadline"], time.perf_counter()
        return real(**kwargs)

    monkeypatch.setattr(moca, "finalize_top_k", spy)
    cfg = SearchConfig(dataset="digits", trials=2, timeout=3600, epochs=6, workspace=str(ws), space="modular", fidelity="cached",
                       tracking=False, train_samples=200, val_samples=80, study="timed", fidelity_options={"finetune_top_k": 1})
    result = run_search(cfg)
    # the fine-tune phase ends with --timeout (not 20% later, not unbounded), and it ran
    assert seen["now"] < seen["deadline"] < seen["now"] + 3600
    best = json.loads(Path(result.best_config).read_text())
    assert best["metrics"]["final_accuracy"] == best["metrics"]["val_accuracy"]
    # from proxy weights the default fine-tune is short (FINETUNE_EPOCHS), not the search's 6 epochs
    assert best["provenance"]["finetune"]["recipe"]["epochs"] == moca.FINETUNE_EPOCHS == 5


def _searched(workspace: Path, tmp_path: Path, study: str, trials: int):  # type: ignore[no-untyped-def]
    """A finished 1-epoch cached digits search (one finalist fine-tuned) in a copy of the library's workspace: (ws, config, study, data)."""
    import optuna

    from nas_core.search import SearchConfig, run_search
    from nas_core.workspace import default_storage

    ws = tmp_path / "ws"
    shutil.copytree(workspace / "library", ws / "library")
    cfg = SearchConfig(dataset="digits", trials=trials, epochs=1, workspace=str(ws), space="modular", fidelity="cached", tracking=False,
                       train_samples=200, val_samples=80, study=study, fidelity_options={"finetune_top_k": 1})
    run_search(cfg)
    return (ws, cfg, optuna.load_study(study_name=study, storage=default_storage(ws)),
            load_dataset("digits", seed=0, train_samples=200, val_samples=80))


def test_a_fine_tune_phase_with_no_time_left_is_skipped_and_says_why(workspace: Path, tmp_path: Path) -> None:
    import time

    ws, cfg, study, data = _searched(workspace, tmp_path, "late", trials=2)
    before = dict(final_results(study))
    done = moca.finalize_top_k(study=study, config=replace(cfg, fidelity_options={"finetune_top_k": 2}), data=data,
                               device=torch.device("cpu"), workspace=ws, deadline=time.perf_counter() - 1)
    assert done == [] and "--timeout" in study.user_attrs["finetune_skipped"]
    assert final_results(study) == before  # nothing recorded is lost
    # resuming with time to spare fine-tunes the second finalist and clears the note
    done = moca.finalize_top_k(study=study, config=replace(cfg, fidelity_options={"finetune_top_k": 2, "finetune_epochs": 1}), data=data,
                               device=torch.device("cpu"), workspace=ws)
    assert len(done) == 1 and study.user_attrs["finetune_skipped"] is None and len(final_results(study)) == 2


def test_a_fine_tune_phase_cut_short_by_its_deadline_says_how_many_finalists_it_left(workspace: Path, tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    ws, cfg, study, data = _searched(workspace, tmp_path, "cut", trials=3)
    deadline = time.perf_counter() + 0.5
    real = moca.train_model

    def train_then_pass_the_deadline(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        while time.perf_counter() <= deadline:  # the first finalist's training uses up the phase
            time.sleep(0.01)
        return out

    monkeypatch.setattr(moca, "train_model", train_then_pass_the_deadline)
    done = moca.finalize_top_k(study=study, config=replace(cfg, fidelity_options={"finetune_top_k": 3, "finetune_epochs": 1}), data=data,
                               device=torch.device("cpu"), workspace=ws, deadline=deadline)
    # finalist 1 was fine-tuned by the search; the phase trains finalist 2, then has no time for finalist 3
    assert len(done) == 1 and len(final_results(study)) == 2
    assert "1 of 3 finalists not fine-tuned" in study.user_attrs["finetune_skipped"]
